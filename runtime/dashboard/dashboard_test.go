package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/dashboard"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

const secret = "s3cr3t-value-that-must-never-show"

// tasks: one that logs its params and a secret by mistake, one that fails,
// one served over HTTP only.
func tasks() []runtime.Task {
	return []runtime.Task{
		{Name: "echo", Description: "logs its params", Vars: []runtime.Var{{Name: "API_KEY", Secret: true}, {Name: "GREETING", Optional: true}},
			Run: func(ctx context.Context, env *runtime.Env) error {
				env.Log.Info().RawJSON("params", env.Params).Msg("hello " + env.Var("GREETING"))
				env.Log.Warn().Str("oops", env.Var("API_KEY")).Msg("logged a secret by mistake")
				return nil
			}},
		{Name: "fails", Run: func(ctx context.Context, env *runtime.Env) error { return errors.New("it broke") }},
		{Name: "web", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(c echo.Context, env *runtime.Env) error { return nil }}, Access: runtime.Public},
	}
}

type fixture struct {
	srv  *httptest.Server
	log  *runtimetest.Buffer
	core *runtime.Core
}

func start(t *testing.T, production bool, token string) *fixture {
	t.Helper()
	reg, err := runtime.NewRegistry(tasks()...)
	if err != nil {
		t.Fatal(err)
	}
	dep := deployment.New("dev", production, map[string]string{"API_KEY": secret, "GREETING": "world"}, "API_KEY")
	logs := &runtimetest.Buffer{}
	log := zerolog.New(logs)
	core, err := runtime.NewCore(context.Background(), reg, dep, runtime.Options{Log: log, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close(context.Background()) })
	reqs := dashboard.NewRequestLog(reg.Names(), 3)
	d, err := dashboard.New(dashboard.Options{Deployment: dep, Registry: reg, Runner: core.Executor(), Runs: core.Executor().Store(),
		Requests: reqs, Log: log, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		return &fixture{log: logs, core: core}
	}
	reqs.Observe(dashboard.Request{Task: "invented-by-a-client", Method: "GET", RequestID: "reqz"})
	for i := 0; i < 5; i++ {
		reqs.Observe(dashboard.Request{Time: time.Now(), Task: "web", Method: "GET", Status: 200 + i, RequestID: "req" + string(rune('a'+i))})
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, log: logs, core: core}
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)

func csrf(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	_, page := get(t, c, base+"/_/")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

func post(t *testing.T, c *http.Client, u, token, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-CSRF-Token", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stream reads a live run's events until "done".
func stream(t *testing.T, c *http.Client, u string) (logs []string, done map[string]any) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("live stream: %d %s", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			if event == "done" {
				if err := json.Unmarshal([]byte(data), &done); err != nil {
					t.Fatal(err)
				}
				return logs, done
			}
			logs = append(logs, data)
		}
	}
	t.Fatalf("the stream ended without a done event; logs: %v", logs)
	return nil, nil
}

func TestPagesAndARunFromThePage(t *testing.T) {
	f := start(t, false, "")
	c := f.srv.Client()
	code, page := get(t, c, f.srv.URL+"/_/")
	if code != 200 || !strings.Contains(page, "echo") || !strings.Contains(page, "GET /web") || !strings.Contains(page, "Development dashboard") {
		t.Fatalf("tasks page: %d\n%s", code, page)
	}
	tok := csrf(t, c, f.srv.URL)
	code, body := post(t, c, f.srv.URL+"/_/api/run", tok, `{"task":"echo","params":{"n":1}}`)
	if code != http.StatusAccepted {
		t.Fatalf("start a run: %d %s", code, body)
	}
	var started struct{ ID, Live, Run string }
	json.Unmarshal([]byte(body), &started)
	logs, done := stream(t, c, f.srv.URL+started.Live)
	all := strings.Join(logs, "\n")
	if !strings.Contains(all, "hello world") || !strings.Contains(all, `"n":1`) {
		t.Errorf("live lines miss the run's logs: %v", logs)
	}
	if done["outcome"] != runtime.Succeeded || done["id"] != started.ID {
		t.Errorf("done event: %v", done)
	}
	// A late reader still gets every line, from the first.
	if again, _ := stream(t, c, f.srv.URL+started.Live); len(again) != len(logs) {
		t.Errorf("a second reader got %d lines, want %d", len(again), len(logs))
	}
	code, page = get(t, c, f.srv.URL+started.Run)
	if code != 200 || !strings.Contains(page, "hello world") || !strings.Contains(page, "dashboard") {
		t.Errorf("run page: %d\n%s", code, page)
	}
	code, page = get(t, c, f.srv.URL+"/_/runs?trigger=dashboard&task=echo")
	if code != 200 || !strings.Contains(page, started.ID) {
		t.Errorf("runs page does not list the run: %d\n%s", code, page)
	}
	if _, page = get(t, c, f.srv.URL+"/_/runs?outcome=failed"); strings.Contains(page, started.ID) {
		t.Error("the failed filter lists a succeeded run")
	}
	// The requests page: bounded to 3 per task, newest first.
	_, page = get(t, c, f.srv.URL+"/_/requests")
	if strings.Count(page, "<code>req") != 3 || strings.Index(page, "reqe") > strings.Index(page, "reqc") {
		t.Errorf("requests page should list the 3 newest, newest first:\n%s", page)
	}
	for _, p := range []string{"/_/deployment", "/_/schedules", "/_/jobs", "/_/refused", "/_/tasks/echo", "/_/tasks/web", "/_/static/app.js", "/_/static/app.css"} {
		if code, _ := get(t, c, f.srv.URL+p); code != 200 {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	if code, _ := get(t, c, f.srv.URL+"/_/tasks/nope"); code != 404 {
		t.Errorf("unknown task page: %d", code)
	}
	if code, _ := get(t, c, f.srv.URL+"/_/runs/nope"); code != 404 {
		t.Errorf("unknown run page: %d", code)
	}
}

// No masked value reaches the browser: not on the deployment page, not in
// a run's live lines or its page, even when the task logged it.
func TestSecretsNeverReachThePage(t *testing.T) {
	f := start(t, false, "")
	c := f.srv.Client()
	tok := csrf(t, c, f.srv.URL)
	_, body := post(t, c, f.srv.URL+"/_/api/run", tok, `{"task":"echo","params":{"copy":"`+secret+`"}}`)
	var started struct{ ID, Live, Run string }
	json.Unmarshal([]byte(body), &started)
	logs, _ := stream(t, c, f.srv.URL+started.Live)
	var seen []string
	seen = append(seen, logs...)
	for _, p := range []string{"/_/", "/_/deployment", "/_/tasks/echo", started.Run, "/_/runs"} {
		_, page := get(t, c, f.srv.URL+p)
		seen = append(seen, page)
	}
	for i, s := range seen {
		if strings.Contains(s, secret) {
			t.Errorf("response %d shows the secret:\n%s", i, s)
		}
	}
	_, dep := get(t, c, f.srv.URL+"/_/deployment")
	if !strings.Contains(dep, "API_KEY") || !strings.Contains(dep, deployment.Mask) || !strings.Contains(dep, "world") {
		t.Errorf("deployment page should list API_KEY masked and GREETING:\n%s", dep)
	}
}

func TestBadRunRequests(t *testing.T) {
	f := start(t, false, "")
	c := f.srv.Client()
	tok := csrf(t, c, f.srv.URL)
	cases := []struct {
		body string
		code int
		want string
	}{
		{`not json`, 400, "must be JSON"},
		{`{"task":"nope"}`, 404, "no task"},
		{`{"task":"web"}`, 400, "no on-demand entry point"},
		{`{"task":"echo","params":[1,2]}`, 400, "JSON object"},
		{`{"task":"echo","params":"x"}`, 400, "JSON object"},
		{`{"task":"echo","params":{"big":"` + strings.Repeat("x", dashboard.MaxParams+10) + `"}}`, 413, "larger than"},
		{`{"task":"` + strings.Repeat("n", 5000) + `"}`, 404, "no task"},
	}
	for _, tc := range cases {
		code, body := post(t, c, f.srv.URL+"/_/api/run", tok, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) || len(body) > 300 {
			t.Errorf("POST %.40q: %d %s, want %d %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	// No CSRF token, a wrong one, a cross-site request: refused, nothing run.
	for _, h := range [][]string{{}, {"X-CSRF-Token", "forged"}, {"X-CSRF-Token", tok, "Sec-Fetch-Site", "cross-site"}, {"X-CSRF-Token", tok, "Origin", "http://evil.example"}} {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/_/api/run", strings.NewReader(`{"task":"echo"}`))
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with %v: %d, want 403", h, resp.StatusCode)
		}
	}
	runs, err := f.core.Executor().Store().ListRuns(context.Background(), runtime.RunFilter{})
	if err != nil || len(runs) != 0 {
		t.Errorf("refused requests ran something: %v %v", runs, err)
	}
	if code, body := post(t, c, f.srv.URL+"/_/api/schedules/x/pause", tok, ``); code != 501 || !strings.Contains(body, "not enabled") {
		t.Errorf("schedule action without schedules: %d %s", code, body)
	}
	if code, _ := post(t, c, f.srv.URL+"/_/api/jobs/x/explode", tok, ``); code != 501 {
		t.Errorf("job action without queues: %d", code)
	}
}

// A development dashboard answers loopback connections only.
func TestDevelopmentIsLoopbackOnly(t *testing.T) {
	reg, _ := runtime.NewRegistry(tasks()...)
	dep := deployment.New("dev", false, nil)
	d, err := dashboard.New(dashboard.Options{Deployment: dep, Registry: reg})
	if err != nil || d == nil {
		t.Fatal(d, err)
	}
	for _, tc := range []struct {
		local, remote string
		code          int
	}{
		{"127.0.0.1:6060", "127.0.0.1:5000", 200},
		{"[::1]:6060", "[::1]:5000", 200},
		{"10.1.2.3:6060", "127.0.0.1:5000", 404},
		{"127.0.0.1:6060", "192.0.2.7:5000", 404},
	} {
		r := httptest.NewRequest(http.MethodGet, "/_/", nil)
		local, _ := net.ResolveTCPAddr("tcp", tc.local)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%s <- %s: %d, want %d", tc.local, tc.remote, w.Code, tc.code)
		}
	}
}

func TestProductionNeedsAToken(t *testing.T) {
	if f := start(t, true, ""); f.srv != nil {
		t.Fatal("a production deployment without DASHBOARD_TOKEN serves a dashboard")
	}
	f := start(t, true, "correct-horse-battery")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(f.srv.URL + "/_/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/_/login" {
		t.Fatalf("not logged in: %d %s, want a redirect to the login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := post(t, c, f.srv.URL+"/_/api/run", "x", `{"task":"echo"}`); code != http.StatusUnauthorized {
		t.Errorf("action without a session: %d", code)
	}
	login := func(token string, hdr ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/_/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := login("wrong"); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Errorf("wrong token: %d %v", r.StatusCode, r.Cookies())
	}
	if r := login("correct-horse-battery", "Sec-Fetch-Site", "cross-site"); r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site login: %d", r.StatusCode)
	}
	r := login("correct-horse-battery")
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("login: %d %v", r.StatusCode, r.Cookies())
	}
	ck := r.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/_/" {
		t.Errorf("session cookie flags: %+v", ck)
	}
	code, page := get(t, c, f.srv.URL+"/_/")
	if code != 200 || !strings.Contains(page, "echo") || !strings.Contains(page, "Log out") {
		t.Fatalf("logged in: %d\n%s", code, page)
	}
	tok := csrfRE.FindStringSubmatch(page)[1]
	if code, body := post(t, c, f.srv.URL+"/_/api/run", tok, `{"task":"fails"}`, "Sec-Fetch-Site", "cross-site"); code != 403 {
		t.Errorf("cross-site action: %d %s", code, body)
	}
	code, body := post(t, c, f.srv.URL+"/_/api/run", tok, `{"task":"fails"}`)
	if code != http.StatusAccepted {
		t.Fatalf("run: %d %s", code, body)
	}
	var started struct{ Live string }
	json.Unmarshal([]byte(body), &started)
	if _, done := stream(t, c, f.srv.URL+started.Live); done["outcome"] != runtime.Failed || done["error"] != "it broke" {
		t.Errorf("failed run's done event: %v", done)
	}
	if !strings.Contains(f.log.String(), `"action":"run"`) || !strings.Contains(f.log.String(), `"session":"`) {
		t.Errorf("the action is not logged with its session:\n%s", f.log.String())
	}
	// A forged or tampered cookie is no session.
	for _, v := range []string{"abc", ck.Value + "x", strings.Replace(ck.Value, ".", "0.", 1)} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/_/deployment", nil)
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: v})
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("cookie %q: %d, want a redirect to the login", v, resp.StatusCode)
		}
	}
}
