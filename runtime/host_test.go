package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

func testDep(vars map[string]string, secret ...string) *deployment.Deployment {
	return deployment.New("testing", false, vars, secret...)
}

// body reads a JSON error body.
func errBody(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	var m map[string]any
	runtimetest.JSON(t, resp, &m)
	return m
}

// logLines parses the captured JSON log lines.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func findLog(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	for _, l := range logLines(t, logs) {
		if l["message"] == msg {
			return l
		}
	}
	t.Fatalf("no log line with message %q in:\n%s", msg, logs)
	return nil
}

var hexID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// webTask serves a few behaviours at /web, chosen by the query parameter do.
func webTask() runtime.Task {
	return runtime.Task{
		Name:   "web",
		Access: runtime.Public,
		HTTP: map[string]runtime.HTTPFunc{
			http.MethodGet: func(c echo.Context, env *runtime.Env) error {
				switch c.QueryParam("do") {
				case "panic":
					panic("boom in handler")
				case "plain":
					return fmt.Errorf("loading: %w", errors.New("db: connection refused"))
				case "client":
					return fmt.Errorf("checking: %w", runtime.BadRequest("bad op").With("op_index", 3).
						WithHeader("X-Extra", "yes").Wrap(errors.New("hidden cause")))
				case "conflict":
					return runtime.Errorf(http.StatusConflict, "version mismatch")
				case "internal":
					return runtime.Errorf(http.StatusInternalServerError, "secret detail")
				case "unavailable":
					return runtime.Unavailable(5, errors.New("mongo down"), "storage unavailable")
				case "unencodable":
					return runtime.BadRequest("bad").With("ch", make(chan int))
				case "echo":
					return fmt.Errorf("wrapped: %w", echo.NewHTTPError(http.StatusTeapot, "short and stout"))
				case "env":
					return c.JSON(http.StatusOK, map[string]any{"id": env.ID, "task": env.Task,
						"var": env.Var("GREETING"), "deployment": env.Deployment.Name, "params": len(env.Params)})
				}
				return c.JSON(http.StatusOK, map[string]string{"hello": "world"})
			},
			http.MethodPost: func(c echo.Context, env *runtime.Env) error {
				b, err := io.ReadAll(c.Request().Body)
				if err != nil {
					return err
				}
				return c.JSON(http.StatusCreated, map[string]int{"len": len(b)})
			},
			http.MethodPut: func(c echo.Context, env *runtime.Env) error {
				var v map[string]any
				if err := c.Bind(&v); err != nil {
					return err
				}
				return c.JSON(http.StatusOK, v)
			},
		},
		Vars: []runtime.Var{{Name: "GREETING", Optional: true}},
	}
}

func TestHostRoutes(t *testing.T) {
	h := runtimetest.New(t, testDep(map[string]string{"GREETING": "hi"}), webTask(), runTask("ondemand"))
	tests := []struct {
		method, target string
		body           string
		status         int
		want           string // substring of the body
		allow          string
	}{
		{"GET", "/web", "", 200, `"hello":"world"`, ""},
		{"POST", "/web", "abcd", 201, `"len":4`, ""},
		{"PUT", "/web", `{"a":1}`, 200, `"a":1`, ""},
		{"GET", "/", "", 404, `"error":"no task at /"`, ""},
		{"GET", "/nope", "", 404, `"error":"no task at /nope"`, ""},
		{"GET", "/ondemand", "", 404, `no task at /ondemand`, ""}, // tasks without HTTP are not served
		{"POST", "/web/sub", "", 404, `no task at /web/sub`, ""},
		{"DELETE", "/web", "", 405, `method DELETE not allowed on /web`, "GET, POST, PUT"},
		{"PATCH", "/healthz", "", 405, `not allowed`, "GET"},
		{"GET", "/healthz", "", 200, `"status":"ok"`, ""},
		{"GET", "/readyz", "", 200, `"status":"ready"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp := h.Do(tt.method, tt.target, body, "Content-Type", "application/json")
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("body %s does not contain %s", b, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if tt.allow != "" {
				got := strings.Join(strings.Fields(strings.ReplaceAll(resp.Header.Get("Allow"), ",", " ")), ", ")
				// Echo may add OPTIONS; every method of the task must be there.
				for _, m := range strings.Split(tt.allow, ", ") {
					if !strings.Contains(got, m) {
						t.Errorf("Allow %q does not list %s", resp.Header.Get("Allow"), m)
					}
				}
			}
			if tt.status >= 400 {
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("error body is not JSON: %s", b)
				}
				if m["request_id"] != resp.Header.Get(runtime.RequestIDHeader) || m["request_id"] == "" {
					t.Errorf("request_id %v, header %q", m["request_id"], resp.Header.Get(runtime.RequestIDHeader))
				}
			}
		})
	}
}

func TestHostEnv(t *testing.T) {
	h := runtimetest.New(t, testDep(map[string]string{"GREETING": "hi"}), webTask())
	resp := h.Do("GET", "/web?do=env", nil)
	var m map[string]any
	runtimetest.JSON(t, resp, &m)
	if m["task"] != "web" || m["var"] != "hi" || m["deployment"] != "testing" || m["params"] != 0.0 {
		t.Errorf("env = %v", m)
	}
	if m["id"] != resp.Header.Get(runtime.RequestIDHeader) {
		t.Errorf("env.ID %v is not the request id %q", m["id"], resp.Header.Get(runtime.RequestIDHeader))
	}
}

func TestHostErrorMapping(t *testing.T) {
	tests := []struct {
		do      string
		status  int
		msg     string
		fields  map[string]any
		header  map[string]string
		notBody []string // never in the body
		inLog   []string // in the "request failed" log line
	}{
		{do: "panic", status: 500, msg: "internal error", notBody: []string{"boom", "goroutine"},
			inLog: []string{"boom in handler", "goroutine", "host_test.go"}},
		{do: "plain", status: 500, msg: "internal error", notBody: []string{"db:", "loading"},
			inLog: []string{"loading: db: connection refused"}},
		{do: "internal", status: 500, msg: "internal error", notBody: []string{"secret detail"},
			inLog: []string{"secret detail"}},
		{do: "client", status: 400, msg: "bad op", fields: map[string]any{"op_index": 3.0},
			header: map[string]string{"X-Extra": "yes"}, notBody: []string{"hidden cause", "checking"}},
		{do: "conflict", status: 409, msg: "version mismatch"},
		{do: "unavailable", status: 503, msg: "storage unavailable", header: map[string]string{"Retry-After": "5"},
			notBody: []string{"mongo down"}, inLog: []string{"mongo down"}},
		{do: "echo", status: http.StatusTeapot},
		{do: "unencodable", status: 500, msg: "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.do, func(t *testing.T) {
			h := runtimetest.New(t, testDep(nil), webTask())
			resp := h.Do("GET", "/web?do="+tt.do, nil)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("body is not JSON: %s", b)
			}
			id := resp.Header.Get(runtime.RequestIDHeader)
			if m["request_id"] != id || !hexID.MatchString(id) {
				t.Errorf("request_id %v, header %q", m["request_id"], id)
			}
			if tt.msg != "" && m["error"] != tt.msg {
				t.Errorf("error %v, want %q", m["error"], tt.msg)
			}
			if _, ok := m["error"].(string); !ok {
				t.Errorf("no error message in %s", b)
			}
			for k, v := range tt.fields {
				if m[k] != v {
					t.Errorf("field %s = %v, want %v", k, m[k], v)
				}
			}
			for k, v := range tt.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			for _, s := range tt.notBody {
				if strings.Contains(string(b), s) {
					t.Errorf("body %s contains %q", b, s)
				}
			}
			if len(tt.inLog) > 0 {
				line := findLog(t, h.Logs.String(), "request failed")
				if line["request_id"] != id {
					t.Errorf("log request_id %v, want %s", line["request_id"], id)
				}
				all, _ := json.Marshal(line)
				for _, s := range tt.inLog {
					if !strings.Contains(string(all), s) {
						t.Errorf("failure log %s does not contain %q", all, s)
					}
				}
			}
			// The access log line has the status and the request id.
			acc := findLog(t, h.Logs.String(), "request")
			if acc["status"] != float64(tt.status) || acc["request_id"] != id {
				t.Errorf("access log %v", acc)
			}
		})
	}
}

func TestHostPanicStackOnlyInLog(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	resp := h.Do("GET", "/web?do=panic", nil)
	m := errBody(t, resp)
	if len(m) != 2 {
		t.Errorf("panic body has more than error and request_id: %v", m)
	}
	line := findLog(t, h.Logs.String(), "request failed")
	stack, _ := line["stack"].(string)
	if !strings.Contains(stack, "runtime/debug.Stack") && !strings.Contains(stack, "goroutine") {
		t.Errorf("no stack in the log line: %v", line)
	}
	if line["level"] != "error" {
		t.Errorf("level %v", line["level"])
	}
	// The host survives: the next request is served.
	if resp := h.Do("GET", "/web", nil); resp.StatusCode != 200 {
		t.Errorf("after a panic: status %d", resp.StatusCode)
	}
}

func TestHostBodyLimit(t *testing.T) {
	dep := testDep(nil)
	dep.BodyLimit = 100
	h := runtimetest.New(t, dep, webTask())
	big := strings.Repeat("x", 101)
	small := strings.Repeat("x", 100)

	serve := func(method, body string, chunked bool) (*http.Response, string) {
		req := httptest.NewRequest(method, "/web", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if chunked {
			req.ContentLength = -1
			req.TransferEncoding = []string{"chunked"}
		}
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, req)
		return rec.Result(), rec.Body.String()
	}
	tests := []struct {
		name    string
		method  string
		body    string
		chunked bool
		status  int
	}{
		{"content-length at the limit", "POST", small, false, 201},
		{"content-length over the limit", "POST", big, false, 413},
		{"chunked at the limit", "POST", small, true, 201},
		{"chunked over, read by the handler", "POST", big, true, 413},
		{"chunked over, bound by echo", "PUT", `{"a":"` + big + `"}`, true, 413},
		{"content-length over, bound by echo", "PUT", `{"a":"` + big + `"}`, false, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := serve(tt.method, tt.body, tt.chunked)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.status == 413 && !strings.Contains(body, "larger than the limit of 100 bytes") {
				t.Errorf("body %s", body)
			}
		})
	}
}

// TestDeploymentRequestTimeout: a deployment's request_timeout bounds
// tasks whose own timeout is longer.
func TestDeploymentRequestTimeout(t *testing.T) {
	task := runtime.Task{
		Name: "slow", Access: runtime.Public, Timeout: time.Minute,
		HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(c echo.Context, env *runtime.Env) error {
			<-c.Request().Context().Done()
			return c.Request().Context().Err()
		}},
	}
	dep := testDep(nil)
	dep.RequestTimeout = 40 * time.Millisecond
	h := runtimetest.New(t, dep, task)
	resp := h.Do("GET", "/slow", nil)
	if m := errBody(t, resp); resp.StatusCode != http.StatusGatewayTimeout || m["error"] != "the task did not finish within 40ms" {
		t.Fatalf("status %d %v, want 504 after 40ms", resp.StatusCode, m)
	}
}

// TestNoDeadline: a NoDeadline task's requests carry no deadline, other
// tasks' do, and the deployment's request_timeout does not add one.
func TestNoDeadline(t *testing.T) {
	deadline := func(c echo.Context, env *runtime.Env) error {
		_, ok := c.Request().Context().Deadline()
		return c.JSON(200, map[string]bool{"deadline": ok})
	}
	tasks := []runtime.Task{
		{Name: "free", Access: runtime.Public, NoDeadline: true, HTTP: map[string]runtime.HTTPFunc{http.MethodGet: deadline}},
		{Name: "bounded", Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{http.MethodGet: deadline}},
	}
	dep := testDep(nil)
	dep.RequestTimeout = time.Minute
	h := runtimetest.New(t, dep, tasks...)
	for path, want := range map[string]bool{"/free": false, "/bounded": true} {
		var got struct{ Deadline bool }
		resp := h.Do("GET", path, nil)
		runtimetest.JSON(t, resp, &got)
		if resp.StatusCode != 200 || got.Deadline != want {
			t.Errorf("%s: status %d, deadline %v, want %v", path, resp.StatusCode, got.Deadline, want)
		}
	}
}

func TestHostTimeout(t *testing.T) {
	var finished atomic.Bool
	task := runtime.Task{
		Name: "slow", Access: runtime.Public, Timeout: 50 * time.Millisecond,
		HTTP: map[string]runtime.HTTPFunc{
			http.MethodGet: func(c echo.Context, env *runtime.Env) error {
				select {
				case <-c.Request().Context().Done():
					return fmt.Errorf("waiting: %w", c.Request().Context().Err())
				case <-time.After(5 * time.Second):
					finished.Store(true)
					return c.NoContent(200)
				}
			},
			// A task that says what went wrong keeps its own error.
			http.MethodPost: func(c echo.Context, env *runtime.Env) error {
				<-c.Request().Context().Done()
				return runtime.Unavailable(1, c.Request().Context().Err(), "upstream too slow")
			},
		},
	}
	h := runtimetest.New(t, testDep(nil), task)
	start := time.Now()
	resp := h.Do("GET", "/slow", nil)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	m := errBody(t, resp)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504: %v", resp.StatusCode, m)
	}
	if m["error"] != "the task did not finish within 50ms" {
		t.Errorf("error %v", m["error"])
	}
	if finished.Load() {
		t.Error("the handler was not cancelled")
	}
	line := findLog(t, h.Logs.String(), "request failed")
	if !strings.Contains(fmt.Sprint(line["error"]), "context deadline exceeded") {
		t.Errorf("the cause is not in the log: %v", line)
	}
	resp = h.Do("POST", "/slow", nil)
	if m := errBody(t, resp); resp.StatusCode != 503 || m["error"] != "upstream too slow" {
		t.Errorf("POST: %d %v", resp.StatusCode, m)
	}
}

func TestHostRequestID(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		resp := h.Do("GET", "/web", nil)
		id := resp.Header.Get(runtime.RequestIDHeader)
		if !hexID.MatchString(id) || seen[id] {
			t.Errorf("generated id %q (seen: %v)", id, seen)
		}
		seen[id] = true
	}
	tests := []struct {
		in   string
		keep bool
	}{
		{"lb-1234.abc_DEF", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"has space", false},
		{"<script>alert(1)</script>", false},
		{"id\"quote", false},
		{"ünïcode", false},
		{"a/b", false},
	}
	for _, tt := range tests {
		resp := h.Do("GET", "/nope", nil, runtime.RequestIDHeader, tt.in)
		id := resp.Header.Get(runtime.RequestIDHeader)
		m := errBody(t, resp)
		if tt.keep && id != tt.in {
			t.Errorf("incoming id %q replaced by %q", tt.in, id)
		}
		if !tt.keep && (id == tt.in || !hexID.MatchString(id)) {
			t.Errorf("hostile id %q kept as %q", tt.in, id)
		}
		if m["request_id"] != id {
			t.Errorf("body request_id %v, header %q", m["request_id"], id)
		}
		if !tt.keep && strings.Contains(h.Logs.String(), tt.in) {
			t.Errorf("hostile id %q is in the log", tt.in)
		}
	}
}

func TestHostAccess(t *testing.T) {
	var ran atomic.Int32
	task := runtime.Task{
		Name: "private",
		Access: runtime.Authenticated(func(c echo.Context, env *runtime.Env) (any, error) {
			if env.Task != "private" || env.ID == "" {
				return nil, fmt.Errorf("authenticator got env %+v", env)
			}
			switch c.Request().Header.Get("Authorization") {
			case "Bearer good":
				return "user-42", nil
			case "Bearer broken":
				return nil, errors.New("key store unreachable")
			}
			return nil, runtime.Unauthorized("missing or invalid token").WithHeader("WWW-Authenticate", "Bearer")
		}),
		HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(c echo.Context, env *runtime.Env) error {
			ran.Add(1)
			return c.JSON(200, map[string]any{"subject": env.Subject})
		}},
	}
	h := runtimetest.New(t, testDep(nil), task, webTask())

	resp := h.Do("GET", "/private", nil)
	if m := errBody(t, resp); resp.StatusCode != 401 || m["error"] != "missing or invalid token" {
		t.Errorf("no token: %d %v", resp.StatusCode, m)
	}
	if resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
	}
	resp = h.Do("GET", "/private", nil, "Authorization", "Bearer bad")
	if resp.StatusCode != 401 {
		t.Errorf("bad token: %d", resp.StatusCode)
	}
	resp = h.Do("GET", "/private", nil, "Authorization", "Bearer broken")
	if m := errBody(t, resp); resp.StatusCode != 500 || m["error"] != "internal error" {
		t.Errorf("failing authenticator: %d %v", resp.StatusCode, m)
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("the handler ran %d times for refused requests", n)
	}
	resp = h.Do("GET", "/private", nil, "Authorization", "Bearer good")
	var m map[string]any
	runtimetest.JSON(t, resp, &m)
	if resp.StatusCode != 200 || m["subject"] != "user-42" {
		t.Errorf("good token: %d %v", resp.StatusCode, m)
	}
	if ran.Load() != 1 {
		t.Errorf("handler ran %d times", ran.Load())
	}
	// The public task next to it needs nothing.
	if resp := h.Do("GET", "/web", nil); resp.StatusCode != 200 {
		t.Errorf("public task: %d", resp.StatusCode)
	}
}

func TestHostReadiness(t *testing.T) {
	var healthy atomic.Bool
	task := runtime.Task{
		Name: "db", Run: okRun,
		Init: func(ctx context.Context, s *runtime.Setup) error {
			s.Check("mongo", func(ctx context.Context) error {
				if !healthy.Load() {
					return errors.New("no primary")
				}
				return nil
			})
			s.Check("mongo", func(ctx context.Context) error { return errors.New("second registration wins?") })
			s.Check("cache", func(ctx context.Context) error { return nil })
			return nil
		},
	}
	h := runtimetest.New(t, testDep(nil), task)
	for _, tt := range []struct {
		healthy bool
		status  int
		word    string
		mongo   string
	}{
		{false, 503, "unavailable", "failed"}, // the error itself only in the log
		{true, 200, "ready", "ok"},
	} {
		healthy.Store(tt.healthy)
		resp := h.Do("GET", "/readyz", nil)
		var m struct {
			Status     string
			Deployment string
			Checks     map[string]string
		}
		runtimetest.JSON(t, resp, &m)
		if resp.StatusCode != tt.status || m.Status != tt.word || m.Deployment != "testing" {
			t.Errorf("readyz: %d %+v", resp.StatusCode, m)
		}
		if m.Checks["mongo"] != tt.mongo || m.Checks["cache"] != "ok" || len(m.Checks) != 2 {
			t.Errorf("checks %v", m.Checks)
		}
		if !tt.healthy {
			if l := findLog(t, h.Logs.String(), "readiness check failed"); l["check"] != "mongo" || l["error"] != "no primary" {
				t.Errorf("readiness log %v", l)
			}
		}
		// Liveness does not depend on the checks.
		if resp := h.Do("GET", "/healthz", nil); resp.StatusCode != 200 {
			t.Errorf("healthz %d", resp.StatusCode)
		}
	}
}

func TestHostMetrics(t *testing.T) {
	task := runtime.Task{
		Name: "count", Access: runtime.Public,
		Init: func(ctx context.Context, s *runtime.Setup) error {
			c := s.Counter("app_ops_total", "Operations, by kind.", "kind")
			if s.Counter("app_ops_total", "again", "kind") != c {
				return errors.New("Counter returned a new counter for the same name")
			}
			return nil
		},
		HTTP: map[string]runtime.HTTPFunc{http.MethodPost: func(c echo.Context, env *runtime.Env) error {
			return c.NoContent(204)
		}},
	}
	var ctr *runtime.Counter
	task2 := runtime.Task{Name: "other", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		ctr = s.Counter("app_ops_total", "", "")
		return nil
	}}
	h := runtimetest.New(t, deployment.New("staging", false, nil), task, task2)
	ctr.Add("put", 2)
	ctr.Add("delete", 1)
	ctr.Add("put", 1)
	for i := 0; i < 3; i++ {
		h.Do("POST", "/count", nil)
	}
	h.Do("GET", "/count", nil)
	h.Do("GET", "/missing", nil)
	resp := h.Do("GET", "/metrics", nil)
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, w := range []string{
		`runtime_inflight_requests{deployment="staging"} 1`, // the /metrics request itself
		`runtime_requests_total{deployment="staging",method="POST",status="204",task="count"} 3`,
		`runtime_requests_total{deployment="staging",method="GET",status="405",task="-"} 1`, // the task did not run
		`runtime_requests_total{deployment="staging",method="GET",status="404",task="-"} 1`,
		`runtime_request_duration_seconds_count{deployment="staging",method="POST",status="204",task="count"} 3`,
		`runtime_request_duration_seconds_bucket{deployment="staging",method="POST",status="204",task="count",le="+Inf"} 3`,
		`go_goroutines{deployment="staging"}`,
		`process_open_fds{deployment="staging"}`,
		"# TYPE app_ops_total counter",
		"# HELP app_ops_total Operations, by kind.",
		`app_ops_total{deployment="staging",kind="delete"} 1`,
		`app_ops_total{deployment="staging",kind="put"} 3`,
	} {
		if !strings.Contains(text, w) {
			t.Errorf("metrics do not contain %s:\n%s", w, text)
		}
	}
	// Every sample line is name{labels} value.
	sample := regexp.MustCompile(`^[a-z_0-9]+\{[^}]*deployment="staging"[^}]*\} ([0-9.e+-]+|NaN)$`)
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(l, "#") && !sample.MatchString(l) {
			t.Errorf("malformed sample line %q", l)
		}
	}
}

func TestHostAccessLogHasNoQueryString(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	h.Do("GET", "/web?token=s3cr3t-token-value&x=1", nil, "Authorization", "Bearer header-token-value")
	logs := h.Logs.String()
	line := findLog(t, logs, "request")
	if line["path"] != "/web" || line["method"] != "GET" || line["status"] != 200.0 {
		t.Errorf("access log %v", line)
	}
	for _, k := range []string{"request_id", "bytes", "duration"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log has no %s: %v", k, line)
		}
	}
	for _, s := range []string{"s3cr3t-token-value", "token=", "header-token-value"} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains %q:\n%s", s, logs)
		}
	}
}

func TestHostHEAD(t *testing.T) {
	task := runtime.Task{Name: "h", Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{
		http.MethodHead: func(c echo.Context, env *runtime.Env) error { return runtime.BadRequest("nope") },
	}}
	h := runtimetest.New(t, testDep(nil), task)
	resp := h.Do("HEAD", "/h", nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || len(b) != 0 {
		t.Errorf("HEAD error: %d %q", resp.StatusCode, b)
	}
	if resp.Header.Get(runtime.RequestIDHeader) == "" {
		t.Error("no request id on HEAD")
	}
}

func TestNewHostMissingVars(t *testing.T) {
	a := runtime.Task{Name: "a", Run: okRun, Vars: []runtime.Var{
		{Name: "MONGO_URI", Help: "mongodb://user:pass@host/db"},
		{Name: "OPTIONAL_ONE", Optional: true},
		{Name: "SET_ONE"},
		{Name: "EMPTY_ONE"},
	}}
	b := runtime.Task{Name: "b", Run: okRun, Vars: []runtime.Var{{Name: "JWT_KEY", Secret: true}}}
	var inited atomic.Bool
	c := runtime.Task{Name: "c", Run: okRun, Vars: []runtime.Var{{Name: "JWT_KEY", Help: "the signing key"}}, Init: func(ctx context.Context, s *runtime.Setup) error {
		inited.Store(true)
		return nil
	}}
	_, err := runtimetest.Start(t, testDep(map[string]string{"SET_ONE": "x", "EMPTY_ONE": ""}), a, b, c)
	if err == nil {
		t.Fatal("host started with missing variables")
	}
	msg := err.Error()
	for _, w := range []string{
		`deployment "testing" is missing 3 variable(s)`,
		"MONGO_URI (needed by a): mongodb://user:pass@host/db",
		"EMPTY_ONE (needed by a)",
		"JWT_KEY (needed by b, c): the signing key", // once, naming both tasks
		"deployments/testing.yaml", "deployments/testing.local.env", "process environment",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
	for _, no := range []string{"OPTIONAL_ONE", "SET_ONE"} {
		if strings.Contains(msg, no) {
			t.Errorf("error names %s:\n%s", no, msg)
		}
	}
	if inited.Load() {
		t.Error("Init ran although variables are missing")
	}
}

func TestNewHostInitErrors(t *testing.T) {
	var closed []string
	opener := func(name string) func(ctx context.Context, s *runtime.Setup) (string, func(context.Context) error, error) {
		return func(ctx context.Context, s *runtime.Setup) (string, func(context.Context) error, error) {
			return name, func(context.Context) error { closed = append(closed, name); return nil }, nil
		}
	}
	ok1 := runtime.Task{Name: "a_ok", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		_, err := runtime.Shared(s, "client", opener("client"))
		return err
	}}
	bad1 := runtime.Task{Name: "b_bad", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		return errors.New("parsing the key: bad PEM")
	}}
	panics := runtime.Task{Name: "c_panics", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		panic("init exploded")
	}}
	ok2 := runtime.Task{Name: "d_ok", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		_, err := runtime.Shared(s, "keys", opener("keys"))
		return err
	}}
	failOpen := runtime.Task{Name: "e_open", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		_, err := runtime.Shared(s, "broken", func(ctx context.Context, s *runtime.Setup) (int, func(context.Context) error, error) {
			return 0, func(context.Context) error { closed = append(closed, "broken"); return nil }, errors.New("dial refused")
		})
		return err
	}}
	_, err := runtimetest.Start(t, testDep(nil), failOpen, ok2, panics, bad1, ok1)
	if err == nil {
		t.Fatal("host started")
	}
	msg := err.Error()
	for _, w := range []string{
		`deployment "testing" cannot start`,
		"task b_bad: parsing the key: bad PEM",
		"task c_panics: panic in Init: init exploded",
		"task e_open: dial refused",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
	// Init runs in name order; what was opened is closed in reverse.
	if want := []string{"keys", "client"}; fmt.Sprint(closed) != fmt.Sprint(want) {
		t.Errorf("closed %v, want %v", closed, want)
	}
}

func TestSharedOpensOnceAndClosesInReverse(t *testing.T) {
	var opens atomic.Int32
	var closed []string
	open := func(key string) func(ctx context.Context, s *runtime.Setup) (*string, func(context.Context) error, error) {
		return func(ctx context.Context, s *runtime.Setup) (*string, func(context.Context) error, error) {
			opens.Add(1)
			v := key + "-value"
			return &v, func(context.Context) error {
				closed = append(closed, key)
				if key == "second" {
					return errors.New("close failed")
				}
				return nil
			}, nil
		}
	}
	var got []*string
	mk := func(name string, keys ...string) runtime.Task {
		return runtime.Task{Name: name, Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
			if s.Task != name || s.Deployment == nil || s.StateDir == "" {
				return fmt.Errorf("setup %+v", s)
			}
			for _, k := range keys {
				v, err := runtime.Shared(s, k, open(k))
				if err != nil {
					return err
				}
				got = append(got, v)
			}
			return nil
		}}
	}
	typeClash := runtime.Task{Name: "z_clash", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		_, err := runtime.Shared(s, "first", func(ctx context.Context, s *runtime.Setup) (int, func(context.Context) error, error) {
			return 1, nil, nil
		})
		if err == nil || !strings.Contains(err.Error(), `shared "first" holds a *string, not a int`) {
			return fmt.Errorf("type clash error = %v", err)
		}
		return nil
	}}
	reg, err := runtime.NewRegistry(mk("a", "first", "second"), mk("b", "first", "third"), typeClash)
	if err != nil {
		t.Fatal(err)
	}
	h, err := runtime.NewHost(context.Background(), reg, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if opens.Load() != 3 {
		t.Errorf("opened %d times, want 3", opens.Load())
	}
	if got[0] != got[2] {
		t.Error("the second Shared call of a key returned another value")
	}
	err = h.Close(context.Background())
	if want := []string{"third", "second", "first"}; fmt.Sprint(closed) != fmt.Sprint(want) {
		t.Errorf("closed %v, want %v", closed, want)
	}
	if err == nil || !strings.Contains(err.Error(), "closing second: close failed") {
		t.Errorf("Close error = %v", err)
	}
	// Closing again closes nothing twice.
	closed = nil
	if err := h.Close(context.Background()); err != nil || len(closed) != 0 {
		t.Errorf("second Close: %v, closed %v", err, closed)
	}
}

func TestHostAccessors(t *testing.T) {
	dep := testDep(nil)
	h := runtimetest.New(t, dep, runTask("x"))
	if h.Deployment() != dep {
		t.Error("Deployment() is not the deployment")
	}
	if got := h.Registry().Names(); len(got) != 1 || got[0] != "x" {
		t.Errorf("Registry().Names() = %v", got)
	}
}

func TestConcurrentRequests(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	done := make(chan int, 20)
	for i := 0; i < 20; i++ {
		go func(i int) {
			var resp *http.Response
			if i%2 == 0 {
				resp = h.Do("POST", "/web", bytes.NewReader(make([]byte, i)))
			} else {
				resp = h.Do("GET", "/web?do=panic", nil)
			}
			done <- resp.StatusCode
		}(i)
	}
	count := map[int]int{}
	for i := 0; i < 20; i++ {
		count[<-done]++
	}
	if count[201] != 10 || count[500] != 10 {
		t.Errorf("statuses %v", count)
	}
	resp := h.Do("GET", "/metrics", nil)
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `method="POST",status="201",task="web"} 10`) {
		t.Errorf("metrics:\n%s", b)
	}
}
