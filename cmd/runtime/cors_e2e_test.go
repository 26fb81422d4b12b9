package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// corsPage is a web app's page: it asks the backend for a token as
// fetchCredentials() does, then uploads a batch as uploadData() does, and
// returns what the browser let it see.
const corsPage = `<!doctype html><title>app</title><script>
async function run(backend, user) {
  const out = {};
  try {
    const r = await fetch(backend + "/token?user_id=" + user);
    out.token = r.status;
    const t = await r.json();
    const batch = {batch: [{op: "PUT", table: "lists", id: "from-" + user, data: {name: "made in a browser"}}]};
    const u = await fetch(backend + "/upload", {method: "POST",
      headers: {"Authorization": "Bearer " + t.token, "Content-Type": "application/json"}, body: JSON.stringify(batch)});
    out.upload = u.status;
    out.applied = (await u.json()).applied;
    out.request_id = u.headers.get("X-Request-Id") || "";
    const bad = await fetch(backend + "/upload", {method: "POST",
      headers: {"Authorization": "Bearer nope", "Content-Type": "application/json"}, body: "{}"});
    out.refused = bad.status;
    out.refused_error = (await bad.json()).error;
  } catch (e) {
    out.error = String(e);
  }
  return out;
}
</script>`

type corsResult struct {
	Token        int    `json:"token"`
	Upload       int    `json:"upload"`
	Applied      int    `json:"applied"`
	RequestID    string `json:"request_id"`
	Refused      int    `json:"refused"`
	RefusedError string `json:"refused_error"`
	Error        string `json:"error"`
}

func pageServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, corsPage)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestCORSInBrowser: headless Chromium loads a page from one loopback
// origin that calls /token and /upload of the deployment (the built
// binary) on another; an origin in cors_origins may, another may not.
func TestCORSInBrowser(t *testing.T) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("this test needs Chromium: apt-get install chromium (.ci/run installs it)")
	}
	allowed, refused := pageServer(t), pageServer(t)
	s := edgeServer(t, fmt.Sprintf("cors_origins: [%q]", allowed))

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()

	call := func(page, user string) corsResult {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
			t.Fatalf("browser: %v", err)
		}
		res, err := chromedp.Run(ctx, chromedp.Evaluate[corsResult](fmt.Sprintf("run(%q, %q)", s.url, user), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		return res
	}
	start := time.Now()
	ok := call(allowed, "alice")
	if ok.Error != "" || ok.Token != 200 || ok.Upload != 200 || ok.Applied != 1 || ok.RequestID == "" {
		t.Errorf("from the allowed origin %s: %+v", allowed, ok)
	}
	if ok.Refused != 401 || !strings.Contains(ok.RefusedError, "token") {
		t.Errorf("an error answer is not readable from the allowed origin: %+v", ok)
	}
	no := call(refused, "mallory")
	if !strings.Contains(no.Error, "Failed to fetch") || no.Token != 0 {
		t.Errorf("from the refused origin %s: %+v, want the browser to refuse", refused, no)
	}
	t.Logf("browser calls took %s", time.Since(start))
}
