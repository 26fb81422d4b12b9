// The dashboard's only script: the Test form of a task page. It checks the
// params are a JSON object, starts the run with a POST carrying the CSRF
// token, then streams the run's log lines (server-sent events) into the page.
"use strict";
(function () {
  const form = document.getElementById("run");
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const params = document.getElementById("params");
  const errorBox = document.getElementById("params-error");
  const button = document.getElementById("run-button");
  const status = document.getElementById("run-status");
  const live = document.getElementById("live");

  function check() {
    const text = params.value.trim();
    if (text === "") return {};
    let v;
    try { v = JSON.parse(text); } catch (e) { throw new Error("params are not valid JSON: " + e.message); }
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("params must be a JSON object");
    return v;
  }

  function line(text, cls) {
    const span = document.createElement("span");
    span.className = "line" + (cls ? " " + cls : "");
    span.textContent = text + "\n";
    live.appendChild(span);
    live.scrollTop = live.scrollHeight;
  }

  function render(raw) {
    let v;
    try { v = JSON.parse(raw); } catch (e) { line(raw); return; }
    const t = (v.time || "").replace(/^.*T/, "").replace(/Z$/, "");
    const extra = Object.keys(v).filter(k => !["time", "level", "message", "task", "run_id"].includes(k))
      .sort().map(k => k + "=" + (typeof v[k] === "string" ? v[k] : JSON.stringify(v[k]))).join(" ");
    line([t, (v.level || "").toUpperCase().slice(0, 3), v.message || "", extra].filter(Boolean).join(" "), v.level);
  }

  params.addEventListener("input", () => {
    try { check(); errorBox.hidden = true; } catch (e) { errorBox.textContent = e.message; errorBox.hidden = false; }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let p;
    try { p = check(); } catch (e) { errorBox.textContent = e.message; errorBox.hidden = false; return; }
    errorBox.hidden = true;
    button.disabled = true;
    live.hidden = false;
    live.textContent = "";
    status.textContent = "starting…";
    let res, body;
    try {
      res = await fetch("/_/api/run", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ task: form.dataset.task, params: p }),
      });
      body = await res.json();
    } catch (e) {
      status.textContent = "could not start the run: " + e.message;
      button.disabled = false;
      return;
    }
    if (!res.ok) {
      status.textContent = body.error || ("HTTP " + res.status);
      button.disabled = false;
      return;
    }
    status.textContent = "running…";
    const es = new EventSource(body.live);
    es.addEventListener("log", (e) => render(e.data));
    es.addEventListener("done", (e) => {
      es.close();
      const r = JSON.parse(e.data);
      status.innerHTML = "";
      const a = document.createElement("a");
      a.href = "/_/runs/" + r.id;
      a.textContent = "run " + r.id;
      const o = document.createElement("span");
      o.className = "outcome " + (r.outcome || "");
      o.id = "run-outcome";
      o.textContent = r.outcome || "unknown";
      status.append(a, " ", o, " in " + (r.duration_ms || 0).toFixed(1) + " ms" + (r.error ? ": " + r.error : ""));
      button.disabled = false;
    });
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) button.disabled = false; };
  });
})();
