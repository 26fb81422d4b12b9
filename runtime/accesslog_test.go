package runtime_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// With Options.AccessLog the access lines go there, stamped as zerolog's
// Timestamp stamps the others, and a client's request id holding a secret
// is replaced (those lines skip the redactor).
func TestHostAccessLogWriter(t *testing.T) {
	const secret = "Sup3r.S3cret_Key-42" // of the request ids' charset
	dep := testDep(map[string]string{"API_KEY": secret}, "API_KEY")
	dep.Dir = t.TempDir()
	reg, err := runtime.NewRegistry(webTask())
	if err != nil {
		t.Fatal(err)
	}
	logs, access := &runtimetest.Buffer{}, &runtimetest.Buffer{}
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{
		Log: runtime.NewLogger(logs, dep.Secrets()), AccessLog: access, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	do := func(id string) string {
		req := httptest.NewRequest(http.MethodGet, "/web", nil)
		if id != "" {
			req.Header.Set(runtime.RequestIDHeader, id)
		}
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /web: %d", rec.Code)
		}
		return rec.Header().Get(runtime.RequestIDHeader)
	}
	before := time.Now().Truncate(time.Second)
	kept := do("lb-1234")
	secretID := "x-" + secret // a well-formed id that holds a secret
	replaced := do(secretID)
	do("")
	after := time.Now()
	if kept != "lb-1234" {
		t.Errorf("a plain incoming id was replaced by %q", kept)
	}
	if replaced == secretID || !hexID.MatchString(replaced) {
		t.Errorf("an incoming id holding a secret became %q", replaced)
	}
	lines := logLines(t, access.String())
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3:\n%s", len(lines), access.String())
	}
	for i, l := range lines {
		if l["message"] != "request" || l["path"] != "/web" || l["status"] != 200.0 || l["level"] != "info" {
			t.Errorf("line %d: %v", i, l)
		}
		ts, err := time.Parse(time.RFC3339, l["time"].(string))
		if err != nil || ts.Before(before) || ts.After(after) {
			t.Errorf("line %d: time %v (%v), want between %v and %v", i, l["time"], err, before, after)
		}
	}
	if lines[1]["request_id"] != replaced {
		t.Errorf("access line's id %v, answer's %q", lines[1]["request_id"], replaced)
	}
	for _, out := range []string{access.String(), logs.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("a secret is in the logs:\n%s", out)
		}
	}
	if strings.Contains(logs.String(), `"message":"request"`) {
		t.Errorf("access lines also went to the runtime's log:\n%s", logs.String())
	}
}

// A task's log lines carry the task and the request id, also through a
// logger derived from env.Log.
func TestHostTaskLogHasRequestID(t *testing.T) {
	task := runtime.Task{Name: "logs", Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{
		http.MethodGet: func(c echo.Context, env *runtime.Env) error {
			env.Log.Info().Msg("direct")
			l := env.Log.With().Str("step", "two").Logger()
			l.Info().Msg("derived")
			return c.NoContent(http.StatusNoContent)
		}}}
	h := runtimetest.New(t, testDep(nil), task)
	resp := h.Do("GET", "/logs", nil)
	id := resp.Header.Get(runtime.RequestIDHeader)
	for _, msg := range []string{"direct", "derived"} {
		line := findLog(t, h.Logs.String(), msg)
		if line["request_id"] != id || line["task"] != "logs" {
			t.Errorf("%s: %v, want request_id %q and task logs", msg, line, id)
		}
	}
}
