package runtime_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// blockingTask's GET handler says it started, then waits for release (or
// for its request to be cancelled).
func blockingTask(started chan<- struct{}, release <-chan struct{}) runtime.Task {
	return runtime.Task{Name: "block", Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{
		http.MethodGet: func(c echo.Context, env *runtime.Env) error {
			started <- struct{}{}
			select {
			case <-release:
				return c.String(http.StatusOK, "finished")
			case <-c.Request().Context().Done():
				return c.Request().Context().Err()
			}
		},
	}}
}

type result struct {
	status int
	body   string
	err    error
}

func get(url string) result {
	resp, err := http.Get(url)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: string(b)}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestServeGracefulShutdown(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	dep := testDep(nil)
	dep.Grace = 5 * time.Second
	h := runtimetest.New(t, dep, blockingTask(started, release))
	ln := listen(t)
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx, ln) }()

	if r := get(url + "/healthz"); r.status != 200 {
		t.Fatalf("healthz: %+v", r)
	}
	inflight := make(chan result, 1)
	go func() { inflight <- get(url + "/block") }()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not start")
	}
	cancel() // SIGTERM
	select {
	case err := <-served:
		t.Fatalf("Serve returned before the in-flight request finished: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// New connections are refused while the in-flight request finishes.
	if r := get(url + "/healthz"); r.err == nil {
		t.Errorf("a new request was served during shutdown: %+v", r)
	}
	close(release)
	r := <-inflight
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("in-flight request: %+v", r)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if !strings.Contains(h.Logs.String(), "shutting down") {
		t.Errorf("logs:\n%s", h.Logs.String())
	}
}

func TestServeGraceOver(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	dep := testDep(nil)
	dep.Grace = 100 * time.Millisecond
	h := runtimetest.New(t, dep, blockingTask(started, release))
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx, ln) }()
	inflight := make(chan result, 1)
	go func() { inflight <- get("http://" + ln.Addr().String() + "/block") }()
	<-started
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("Serve returned after %s, grace 100ms", d)
	}
	if r := <-inflight; r.err == nil && r.status == 200 {
		t.Errorf("the request outlived the grace period: %+v", r)
	}
	if !strings.Contains(h.Logs.String(), "grace period over") {
		t.Errorf("logs:\n%s", h.Logs.String())
	}
}

func TestServeListenerError(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	ln := listen(t)
	ln.Close()
	err := h.Serve(context.Background(), ln)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve on a closed listener: %v", err)
	}
}
