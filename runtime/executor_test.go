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
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

func newCore(t *testing.T, dep *deployment.Deployment, opts runtime.Options, tasks ...runtime.Task) *runtime.Core {
	t.Helper()
	reg, err := runtime.NewRegistry(tasks...)
	if err != nil {
		t.Fatal(err)
	}
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	c, err := runtime.NewCore(context.Background(), reg, dep, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// The record says what triggered the run, and where it ran; the store has
// the same record.
func TestExecutorRecordFields(t *testing.T) {
	c := newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil)}, jobTask())
	fire := time.Date(2030, 1, 2, 3, 0, 0, 0, time.FixedZone("x", 3600))
	rec, err := c.Executor().Run(context.Background(), runtime.RunRequest{Task: "job", Params: json.RawMessage(`{"do":"fail"}`),
		Trigger: runtime.TriggerSchedule, ID: "nightly-20300102T0200", Schedule: "nightly", FireTime: fire})
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	want := runtime.Record{ID: "nightly-20300102T0200", Task: "job", Deployment: "testing", Trigger: runtime.TriggerSchedule,
		Schedule: "nightly", FireTime: fire.UTC(), Instance: fmt.Sprintf("%s:%d", host, os.Getpid()),
		Outcome: runtime.Failed, Error: "step 2: the data is bad"}
	got := *rec
	got.Start, got.Duration, got.Params, got.Logs = time.Time{}, 0, nil, ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record\n%+v\nwant\n%+v", got, want)
	}
	if rec.FireTime.Location() != time.UTC || rec.Start.Location() != time.UTC || rec.Duration <= 0 {
		t.Errorf("times %v %v %v", rec.FireTime, rec.Start, rec.Duration)
	}
	saved, err := c.Executor().Store().GetRun(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Outcome != runtime.Failed || saved.Schedule != "nightly" || !saved.FireTime.Equal(fire) || saved.Logs != rec.Logs || compact(saved.Params) != `{"do":"fail"}` {
		t.Errorf("saved %+v", saved)
	}

	// A queue job's attempt, with a custom instance name.
	c = newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil), Instance: "worker-7"}, jobTask())
	rec, err = c.Executor().Run(context.Background(), runtime.RunRequest{Task: "job", Trigger: runtime.TriggerQueue, JobID: "j1", Attempt: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rec.JobID != "j1" || rec.Attempt != 3 || rec.Instance != "worker-7" || rec.Trigger != runtime.TriggerQueue || !rec.FireTime.IsZero() || rec.Outcome != runtime.Succeeded {
		t.Errorf("record %+v", rec)
	}
}

// A second run with a fixed id is refused before it runs.
func TestExecutorDuplicateID(t *testing.T) {
	var runs atomic.Int32
	task := runtime.Task{Name: "once", Run: func(ctx context.Context, env *runtime.Env) error { runs.Add(1); return nil }}
	c := newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil)}, task)
	req := runtime.RunRequest{Task: "once", Trigger: runtime.TriggerSchedule, ID: "hourly-1", Schedule: "hourly"}
	if _, err := c.Executor().Run(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Executor().Run(context.Background(), req)
	if !errors.Is(err, runtime.ErrDuplicateRun) || rec != nil {
		t.Fatalf("second run = %v, %v; want ErrDuplicateRun", rec, err)
	}
	if runs.Load() != 1 {
		t.Errorf("the task ran %d times", runs.Load())
	}
}

func TestExecutorRefusals(t *testing.T) {
	c := newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil)}, jobTask())
	for _, tt := range []struct {
		req  runtime.RunRequest
		want string
	}{
		{runtime.RunRequest{Task: "job"}, `unknown trigger "" (valid: cli, dashboard, queue, schedule)`},
		{runtime.RunRequest{Task: "job", Trigger: "http"}, `unknown trigger "http"`},
		{runtime.RunRequest{Task: "job", Trigger: runtime.TriggerCLI, ID: "../etc"}, `invalid run id "../etc"`},
		{runtime.RunRequest{Task: "job", Trigger: runtime.TriggerCLI, ID: strings.Repeat("a", 65)}, "invalid run id"},
		{runtime.RunRequest{Task: "nope", Trigger: runtime.TriggerCLI}, `unknown task "nope"`},
	} {
		if rec, err := c.Executor().Run(context.Background(), tt.req); err == nil || rec != nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) = %v, %v; want %q", tt.req, rec, err, tt.want)
		}
	}
	if recs, _ := c.Executor().Store().ListRuns(context.Background(), runtime.RunFilter{}); len(recs) != 0 {
		t.Errorf("refused runs were recorded: %v", recs)
	}
}

// Params are kept masked; the task gets them as given.
func TestExecutorMasksParams(t *testing.T) {
	const secret = "s3cr3t-t0ken-value"
	dep := testDep(map[string]string{"API_KEY": secret, "PIN": "12345678"}, "API_KEY", "PIN")
	var seen string
	task := runtime.Task{Name: "job", Run: func(ctx context.Context, env *runtime.Env) error {
		seen = string(env.Params)
		env.Log.Info().RawJSON("params", env.Params).Msg("got")
		return errors.New("refused " + secret)
	}}
	state := t.TempDir()
	c := newCore(t, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil), StateDir: state}, task)
	var live bytes.Buffer
	for _, params := range []string{`{"key":"` + secret + `","n":1}`, `{"pin":12345678}`} {
		rec, err := c.Executor().Run(context.Background(), runtime.RunRequest{Task: "job", Params: json.RawMessage(params), Trigger: runtime.TriggerCLI, Live: &live})
		if err != nil {
			t.Fatal(err)
		}
		if seen != params {
			t.Errorf("the task got params %s, want %s", seen, params)
		}
		if !json.Valid(rec.Params) || !strings.Contains(string(rec.Params), deployment.Mask) {
			t.Errorf("record params %s: want valid JSON with a mask", rec.Params)
		}
		for what, s := range map[string]string{"params": string(rec.Params), "logs": rec.Logs, "error": rec.Error, "live": live.String()} {
			if strings.Contains(s, secret) || strings.Contains(s, "12345678") {
				t.Errorf("the record's %s show a secret: %s", what, s)
			}
		}
	}
	_ = filepath.Walk(state, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("12345678")) {
				t.Errorf("%s holds a secret", path)
			}
		}
		return err
	})
}

// While a run runs, its record says so and its logs so far are in the
// store (what `runtime logs --follow` reads from another process).
func TestExecutorRunningRecord(t *testing.T) {
	release := make(chan struct{})
	logged := make(chan struct{})
	task := runtime.Task{Name: "slow", Run: func(ctx context.Context, env *runtime.Env) error {
		env.Log.Info().Msg("first step")
		close(logged)
		<-release
		env.Log.Info().Msg("second step")
		return nil
	}}
	c := newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(io.Discard, nil)}, task)
	done := make(chan *runtime.Record)
	go func() {
		rec, err := c.Executor().Run(context.Background(), runtime.RunRequest{Task: "slow", Trigger: runtime.TriggerDashboard, ID: "watched"})
		if err != nil {
			t.Error(err)
		}
		done <- rec
	}()
	<-logged
	st := c.Executor().Store()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := st.GetRun(context.Background(), "watched")
		if err == nil && r.Outcome == runtime.Running && strings.Contains(r.Logs, "first step") {
			if r.Trigger != runtime.TriggerDashboard || r.Duration <= 0 {
				t.Errorf("running record %+v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running record with the first log line: %+v, %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(release)
	rec := <-done
	r, err := st.GetRun(context.Background(), "watched")
	if err != nil || r.Outcome != runtime.Succeeded || r.Logs != rec.Logs || !strings.Contains(r.Logs, "second step") {
		t.Errorf("final record %+v, %v", r, err)
	}
}

// A store that cannot take records does not stop runs; their records are
// written when it is back.
func TestExecutorStoreDown(t *testing.T) {
	state := t.TempDir()
	runs := filepath.Join(state, "runs")
	// A file where the store's folder goes: every write fails.
	if err := os.WriteFile(runs, []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs safeBuffer
	c := newCore(t, testDep(nil), runtime.Options{Log: runtime.NewLogger(&logs, nil), StateDir: state}, jobTask())
	var ids []string
	for range 3 {
		rec, err := c.Executor().Run(context.Background(), runtime.RunRequest{Task: "job", Trigger: runtime.TriggerCLI})
		if err != nil || rec.Outcome != runtime.Succeeded {
			t.Fatalf("run with the store down = %+v, %v", rec, err)
		}
		ids = append(ids, rec.ID)
		time.Sleep(2 * time.Millisecond) // starts are kept to the millisecond
	}
	if n := c.Executor().Pending(); n != 3 {
		t.Errorf("%d records pending, want 3", n)
	}
	if !strings.Contains(logs.String(), "cannot record the start of a run") {
		t.Errorf("no log line about the store:\n%s", logs.String())
	}
	// The store comes back: the retrier writes them, in order.
	if err := os.Remove(runs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Executor().Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still pending", c.Executor().Pending())
		}
		time.Sleep(20 * time.Millisecond)
	}
	recs, err := c.Executor().Store().ListRuns(context.Background(), runtime.RunFilter{})
	if err != nil || len(recs) != 3 {
		t.Fatalf("ListRuns = %v, %v", recs, err)
	}
	for i, r := range recs {
		if r.ID != ids[2-i] || r.Outcome != runtime.Succeeded {
			t.Errorf("record %d: %+v", i, r)
		}
	}
}

// Records that the store never takes are dropped at shutdown, counted in
// /metrics and logged.
func TestExecutorDropsAtShutdown(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "runs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := runtime.NewRegistry(jobTask())
	if err != nil {
		t.Fatal(err)
	}
	var logs safeBuffer
	h, err := runtime.NewHost(context.Background(), reg, testDep(nil), runtime.Options{Log: runtime.NewLogger(&logs, nil), StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.Run(context.Background(), "job", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = h.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s", d)
	}
	if !strings.Contains(logs.String(), "dropped run records") || !strings.Contains(logs.String(), "job/"+rec.ID) {
		t.Errorf("no log line about the dropped record:\n%s", logs.String())
	}
	resp := httptest.NewRecorder()
	h.Handler().ServeHTTP(resp, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(resp.Body.String(), runtime.DroppedRecordsMetric+`{deployment="testing",reason="shutdown"} 1`) {
		t.Errorf("metrics:\n%s", resp.Body.String())
	}
}

// On-demand runs need no HTTP layer: a Core holds nothing of Echo or
// net/http's server, whatever it reaches through its fields.
func TestCoreHasNoHTTPLayer(t *testing.T) {
	forbidden := map[reflect.Type]bool{
		reflect.TypeFor[echo.Echo]():     true,
		reflect.TypeFor[http.Server]():   true,
		reflect.TypeFor[runtime.Host]():  true,
		reflect.TypeFor[echo.Router]():   true,
		reflect.TypeFor[http.ServeMux](): true,
	}
	seen := map[reflect.Type]bool{}
	var walk func(ty reflect.Type, path string)
	walk = func(ty reflect.Type, path string) {
		if seen[ty] {
			return
		}
		seen[ty] = true
		if forbidden[ty] {
			t.Errorf("a Core reaches %s through %s", ty, path)
			return
		}
		switch ty.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
			walk(ty.Elem(), path+"[]")
		case reflect.Map:
			walk(ty.Key(), path+"[key]")
			walk(ty.Elem(), path+"[]")
		case reflect.Struct:
			for i := range ty.NumField() {
				walk(ty.Field(i).Type, path+"."+ty.Field(i).Name)
			}
		}
	}
	walk(reflect.TypeFor[runtime.Core](), "Core")
	// The walk does reach what a Core holds (it is not vacuous).
	if !seen[reflect.TypeFor[runtime.Executor]()] || !seen[reflect.TypeFor[deployment.Deployment]()] {
		t.Error("the walk missed the executor or the deployment")
	}
	// And a Host does hold the HTTP layer.
	found := false
	for i := range reflect.TypeFor[runtime.Host]().NumField() {
		if reflect.TypeFor[runtime.Host]().Field(i).Type == reflect.TypeFor[*echo.Echo]() {
			found = true
		}
	}
	if !found {
		t.Error("a Host holds no *echo.Echo: the check above proves nothing")
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// After a save the executor applies the deployment's retention: runs older
// than runs.retention go, and all but runs.keep_per_task of each task.
func TestExecutorRetention(t *testing.T) {
	state := t.TempDir()
	st := runtime.NewFileRunStore(state, "testing")
	ctx := context.Background()
	now := time.Now().UTC()
	for i, age := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute, 15 * 24 * time.Hour} {
		r := &runtime.Record{ID: fmt.Sprintf("old%d", i), Task: "job", Trigger: runtime.TriggerCLI, Start: now.Add(-age), Outcome: runtime.Succeeded}
		if err := st.SaveRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Another task's recent run, older than the deployment's 1h: it goes.
	if err := st.SaveRun(ctx, &runtime.Record{ID: "other", Task: "other", Start: now.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	dep := testDep(nil)
	dep.RunRetention, dep.RunsPerTask = time.Hour, 3
	reg, err := runtime.NewRegistry(jobTask())
	if err != nil {
		t.Fatal(err)
	}
	c, err := runtime.NewCore(ctx, reg, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil), StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.Run(ctx, "job", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx) // waits for the pruning
	recs, err := st.ListRuns(ctx, runtime.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	if want := []string{rec.ID, "old0", "old1"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("after retention: %v, want %v", ids, want)
	}
}
