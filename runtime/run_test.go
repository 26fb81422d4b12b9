package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// jobTask's run does what its params say.
func jobTask() runtime.Task {
	return runtime.Task{
		Name:    "job",
		Timeout: 2 * time.Second,
		Vars:    []runtime.Var{{Name: "GREETING", Optional: true}},
		Run: func(ctx context.Context, env *runtime.Env) error {
			var p struct {
				Do    string
				Lines int
				Sleep time.Duration
			}
			if len(env.Params) > 0 {
				if err := json.Unmarshal(env.Params, &p); err != nil {
					return err
				}
			}
			env.Log.Info().Str("greeting", env.Var("GREETING")).Msg("started")
			// zerolog.Ctx finds the run's logger in the context.
			zerolog.Ctx(ctx).Info().Msg("from the context logger")
			for i := 0; i < p.Lines; i++ {
				env.Log.Info().Int("i", i).Str("pad", strings.Repeat("x", 100)).Msg("line")
			}
			switch p.Do {
			case "fail":
				return fmt.Errorf("step 2: %w", errors.New("the data is bad"))
			case "panic":
				var m map[string]int
				m["x"] = 1 // nil map: a runtime panic
			case "wait":
				<-ctx.Done()
				return ctx.Err()
			case "ignore-timeout":
				time.Sleep(p.Sleep)
				return nil
			}
			env.Log.Warn().Msg("done")
			return nil
		},
	}
}

func TestRunRecord(t *testing.T) {
	h := runtimetest.New(t, testDep(map[string]string{"GREETING": "hello"}), jobTask())
	before := time.Now().UTC()
	var term bytes.Buffer
	rec, err := h.Run(context.Background(), "job", json.RawMessage(`{"do":"ok"}`), &term)
	if err != nil {
		t.Fatal(err)
	}
	if !hexID.MatchString(rec.ID) || rec.Task != "job" || rec.Deployment != "testing" ||
		rec.Outcome != runtime.Succeeded || rec.Error != "" || string(rec.Params) != `{"do":"ok"}` || rec.Dropped != 0 {
		t.Errorf("record %+v", rec)
	}
	if rec.Start.Before(before.Add(-time.Second)) || rec.Start.After(time.Now()) || rec.Start.Location() != time.UTC {
		t.Errorf("start %v", rec.Start)
	}
	if rec.Duration <= 0 || rec.Duration > 2*time.Second {
		t.Errorf("duration %v", rec.Duration)
	}
	lines := logLines(t, rec.Logs)
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3:\n%s", len(lines), rec.Logs)
	}
	for _, l := range lines {
		if l["task"] != "job" || l["run_id"] != rec.ID || l["time"] == nil {
			t.Errorf("log line not tagged: %v", l)
		}
	}
	if lines[0]["greeting"] != "hello" || lines[1]["message"] != "from the context logger" || lines[2]["level"] != "warn" {
		t.Errorf("logs:\n%s", rec.Logs)
	}
	// The terminal gets the same lines.
	if term.String() != rec.Logs {
		t.Errorf("terminal:\n%s\nrecord:\n%s", term.String(), rec.Logs)
	}
	// Nothing in the host's own log for a successful run.
	if strings.Contains(h.Logs.String(), "run failed") {
		t.Errorf("host logs: %s", h.Logs.String())
	}
}

func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		params  string
		outcome string
		errWant []string
		logWant []string
	}{
		{`{}`, runtime.Succeeded, nil, []string{"done"}},
		{``, runtime.Succeeded, nil, []string{"done"}},
		{`{"do":"fail"}`, runtime.Failed, []string{"step 2: the data is bad"}, []string{"run failed", "the data is bad"}},
		{`{"do":"panic"}`, runtime.Failed, []string{"panic: assignment to entry in nil map"},
			[]string{"run failed", `"stack":`, "run_test.go", "goroutine"}},
		{`{"do":"wait"}`, runtime.Failed, []string{"timed out after 2s", "context deadline exceeded"}, []string{"run failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.params, func(t *testing.T) {
			task := jobTask()
			if strings.Contains(tt.params, "wait") {
				task.Timeout = 50 * time.Millisecond
				tt.errWant[0] = "timed out after 50ms"
			}
			h := runtimetest.New(t, testDep(nil), task)
			rec, err := h.Run(context.Background(), "job", []byte(tt.params), nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Outcome != tt.outcome {
				t.Fatalf("outcome %s (%s), want %s", rec.Outcome, rec.Error, tt.outcome)
			}
			for _, w := range tt.errWant {
				if !strings.Contains(rec.Error, w) {
					t.Errorf("error %q does not contain %q", rec.Error, w)
				}
			}
			if tt.errWant == nil && rec.Error != "" {
				t.Errorf("error %q", rec.Error)
			}
			for _, w := range tt.logWant {
				if !strings.Contains(rec.Logs, w) {
					t.Errorf("logs do not contain %q:\n%s", w, rec.Logs)
				}
			}
			if strings.Contains(rec.Error, "goroutine") {
				t.Errorf("the stack is in the error, not only the logs: %s", rec.Error)
			}
			// The host survives and runs again.
			if rec2, err := h.Run(context.Background(), "job", nil, nil); err != nil || rec2.Outcome != runtime.Succeeded {
				t.Errorf("second run: %v %+v", err, rec2)
			}
		})
	}
}

func TestRunCancelledByCaller(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), jobTask())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	rec, err := h.Run(ctx, "job", []byte(`{"do":"wait"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Outcome != runtime.Failed || !strings.Contains(rec.Error, "context canceled") || strings.Contains(rec.Error, "timed out") {
		t.Errorf("record %+v", rec)
	}
}

func TestRunRefusals(t *testing.T) {
	web := runtime.Task{Name: "web_only", Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{
		http.MethodGet:  func(c echo.Context, env *runtime.Env) error { return nil },
		http.MethodPost: func(c echo.Context, env *runtime.Env) error { return nil },
	}}
	h := runtimetest.New(t, testDep(nil), jobTask(), web)
	tests := []struct {
		task, params string
		want         []string
	}{
		{"nope", "", []string{`unknown task "nope"`, "known: job, web_only"}},
		{"web_only", "", []string{`task "web_only" has no on-demand entry point`, "GET, POST /web_only"}},
		{"job", "{not json", []string{"params are not valid JSON"}},
	}
	for _, tt := range tests {
		rec, err := h.Run(context.Background(), tt.task, []byte(tt.params), nil)
		if err == nil || rec != nil {
			t.Errorf("Run(%s, %s) = %+v, %v", tt.task, tt.params, rec, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
	}
}

func TestRunLogsCapped(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), jobTask())
	n := runtime.MaxRunLog/150 + 500 // more than the cap
	rec, err := h.Run(context.Background(), "job", []byte(fmt.Sprintf(`{"lines":%d}`, n)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Logs) > runtime.MaxRunLog || len(rec.Logs) < runtime.MaxRunLog-1000 {
		t.Errorf("kept %d bytes, cap %d", len(rec.Logs), runtime.MaxRunLog)
	}
	if rec.Dropped <= 0 {
		t.Errorf("dropped %d", rec.Dropped)
	}
	// What is kept is whole lines.
	logLines(t, rec.Logs)
	var out bytes.Buffer
	rec.Print(&out)
	if !strings.Contains(out.String(), fmt.Sprintf("... %d more bytes of logs were dropped", rec.Dropped)) {
		t.Errorf("Print does not say logs were dropped: ...%s", out.String()[max(0, out.Len()-300):])
	}
}

// Runs through a Host are kept in the file store under the state folder.
func TestRunsAreSaved(t *testing.T) {
	state := t.TempDir()
	reg, err := runtime.NewRegistry(jobTask())
	if err != nil {
		t.Fatal(err)
	}
	h, err := runtime.NewHost(context.Background(), reg, testDep(nil), runtime.Options{Log: zerolog.Nop(), StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	var ids []string
	for _, p := range []string{`{}`, `{"do":"fail"}`, `{"lines":2}`} {
		rec, err := h.Run(context.Background(), "job", []byte(p), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
		time.Sleep(2 * time.Millisecond) // starts are kept to the millisecond
	}
	files, _ := filepath.Glob(filepath.Join(state, "runs", "testing", "job", "*.json"))
	if len(files) != 3 {
		t.Fatalf("files %v", files)
	}
	st := runtime.NewFileRunStore(state, "testing")
	recs, err := st.ListRuns(context.Background(), runtime.RunFilter{Task: "job"})
	if err != nil || len(recs) != 3 || recs[0].ID != ids[2] || recs[2].ID != ids[0] {
		t.Fatalf("ListRuns = %v, %v; want %v newest first", recs, err, ids)
	}
	failed, err := st.GetRun(context.Background(), ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if failed.Outcome != runtime.Failed || failed.Error != "step 2: the data is bad" || compact(failed.Params) != `{"do":"fail"}` ||
		failed.Task != "job" || failed.Deployment != "testing" || failed.Trigger != runtime.TriggerCLI ||
		failed.Duration <= 0 || failed.Start.IsZero() || !strings.Contains(failed.Logs, "run failed") {
		t.Errorf("loaded %+v", failed)
	}
}

func TestRecordPrint(t *testing.T) {
	rec := &runtime.Record{
		ID: "0123456789abcdef", Task: "job", Deployment: "testing", Trigger: runtime.TriggerSchedule,
		Schedule: "nightly", FireTime: time.Date(2030, 5, 6, 7, 8, 0, 0, time.UTC), Instance: "host-a:42",
		Start: time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC), Duration: 1234567 * time.Nanosecond,
		Outcome: runtime.Failed, Error: "step 2: bad",
		Logs: `{"level":"info","task":"job","run_id":"0123456789abcdef","n":3,"time":"2030-05-06T07:08:09Z","message":"first line"}` + "\n" +
			`{"level":"error","task":"job","run_id":"0123456789abcdef","error":"bad","time":"2030-05-06T07:08:10Z","message":"run failed"}` + "\n",
	}
	var b bytes.Buffer
	rec.Print(&b)
	out := b.String()
	for _, w := range []string{
		"run 0123456789abcdef of task job in deployment testing\n",
		"trigger schedule (schedule nightly, fire time 2030-05-06T07:08:00Z) on host-a:42\n",
		"started 2030-05-06T07:08:09Z, took 1.235ms, failed\n",
		"error: step 2: bad\n",
		"--- logs\n",
		"INF first line n=3",
		"ERR run failed error=bad",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("Print output does not contain %q:\n%s", w, out)
		}
	}
	// Readable: no JSON, no colour codes, no repeated task and run id.
	for _, no := range []string{`{"level"`, "\x1b[", "run_id="} {
		if strings.Contains(out, no) {
			t.Errorf("Print output contains %q:\n%s", no, out)
		}
	}
	if strings.Count(out, "\n") != 7 {
		t.Errorf("%d lines:\n%s", strings.Count(out, "\n"), out)
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &runtime.CappedBuffer{Max: 20}
	for _, s := range []string{"0123456789\n", "abc\n", "too long to fit\n", "xy\n", "no newline at all"} {
		n, err := b.Write([]byte(s))
		if n != len(s) || err != nil {
			t.Errorf("Write(%q) = %d, %v", s, n, err)
		}
	}
	got, dropped := b.Bytes()
	if string(got) != "0123456789\nabc\nxy\n" || dropped != len("too long to fit\n")+len("no newline at all") {
		t.Errorf("kept %q, dropped %d", got, dropped)
	}
	// A write that crosses the cap keeps its whole lines only.
	b = &runtime.CappedBuffer{Max: 10}
	_, _ = b.Write([]byte("abc\ndef\nghijkl\n"))
	got, dropped = b.Bytes()
	if string(got) != "abc\ndef\n" || dropped != 7 {
		t.Errorf("kept %q, dropped %d", got, dropped)
	}
	// Bytes returns a copy.
	got[0] = 'X'
	if again, _ := b.Bytes(); again[0] != 'a' {
		t.Error("Bytes does not copy")
	}
}

func TestCappedBufferConcurrent(t *testing.T) {
	b := &runtime.CappedBuffer{Max: 10_000}
	line := []byte(strings.Repeat("z", 99) + "\n")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, _ = b.Write(line)
				if i%10 == 0 {
					b.Bytes()
				}
			}
		}()
	}
	wg.Wait()
	got, dropped := b.Bytes()
	if len(got) != 10_000 || dropped != 8*50*100-10_000 {
		t.Errorf("kept %d, dropped %d", len(got), dropped)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
		if len(l) != 99 {
			t.Fatalf("interleaved line of %d bytes", len(l))
		}
	}
}

// A run's logger is used from several goroutines at once (zerolog does not
// serialise writes): the record still holds whole lines.
func TestRunLoggerConcurrent(t *testing.T) {
	task := runtime.Task{Name: "fan", Run: func(ctx context.Context, env *runtime.Env) error {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 100; i++ {
					env.Log.Info().Int("g", g).Int("i", i).Msg("work")
				}
			}(g)
		}
		wg.Wait()
		return nil
	}}
	h := runtimetest.New(t, deployment.New("testing", false, nil), task)
	var term bytes.Buffer
	rec, err := h.Run(context.Background(), "fan", nil, &lockedWriter{w: &term})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(logLines(t, rec.Logs)); n != 800 {
		t.Errorf("%d lines, want 800", n)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func compact(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return "invalid JSON: " + string(b)
	}
	return out.String()
}
