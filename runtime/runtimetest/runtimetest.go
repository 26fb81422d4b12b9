// Package runtimetest helps tests serve and run tasks in process, through
// the same Host that `runtime deploy` uses.
package runtimetest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Host is a runtime.Host built for a test, with every log line captured.
type Host struct {
	*runtime.Host
	Logs *Buffer
}

// Buffer is a goroutine-safe log buffer.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// New starts a host for dep (see deployment.New) with the given tasks, with
// its state folder in t.TempDir(), and closes it when the test ends.
func New(t testing.TB, dep *deployment.Deployment, tasks ...runtime.Task) *Host {
	t.Helper()
	h, err := Start(t, dep, tasks...)
	if err != nil {
		t.Fatalf("starting the host: %v", err)
	}
	return h
}

// Start is New that returns the error instead of failing the test, for tests
// of refusals at start.
func Start(t testing.TB, dep *deployment.Deployment, tasks ...runtime.Task) (*Host, error) {
	t.Helper()
	reg, err := runtime.NewRegistry(tasks...)
	if err != nil {
		return nil, err
	}
	if dep.Dir == "" {
		dep.Dir = t.TempDir()
	}
	logs := &Buffer{}
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{
		Log:      runtime.NewLogger(logs, dep.Secrets()),
		StateDir: t.TempDir(),
	})
	if err != nil {
		return &Host{Logs: logs}, err
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return &Host{Host: h, Logs: logs}, nil
}

// Do sends one request to the host's handler and returns the response.
func (h *Host) Do(method, target string, body io.Reader, header ...string) *http.Response {
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, req)
	return rec.Result()
}

// JSON decodes a response body into v, failing the test if it is not JSON.
func JSON(t testing.TB, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("response body is not JSON (%v): %q", err, b)
	}
}
