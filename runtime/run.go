package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// MaxRunLog caps the logs kept in a run's record.
const MaxRunLog = 1 << 20

// Record is what is kept of one on-demand run.
type Record struct {
	ID         string          `json:"id"`
	Task       string          `json:"task"`
	Deployment string          `json:"deployment"`
	Start      time.Time       `json:"start"`
	Duration   time.Duration   `json:"duration_ns"`
	Outcome    string          `json:"outcome"` // "succeeded" or "failed"
	Error      string          `json:"error,omitempty"`
	Params     json.RawMessage `json:"params,omitempty"`
	Logs       string          `json:"logs"` // JSON lines
	Dropped    int             `json:"dropped_log_bytes,omitempty"`
}

// Outcomes of a run.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
)

// Run runs a task's on-demand entry point once. Its logs go to terminal (if
// not nil) and into the returned record, which is also saved under the
// state folder. A panic is a failed run with its stack in the logs. The
// error is about the runtime itself; the task's own failure is in the record.
func (h *Host) Run(ctx context.Context, name string, params json.RawMessage, terminal io.Writer) (*Record, error) {
	t, err := h.reg.Lookup(name)
	if err != nil {
		return nil, err
	}
	if t.Run == nil {
		return nil, fmt.Errorf("task %q has no on-demand entry point (it is served over HTTP: %s /%s)", name, strings.Join(t.Methods(), ", "), name)
	}
	if len(params) > 0 && !json.Valid(params) {
		return nil, errors.New("params are not valid JSON")
	}
	timeout := t.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	rec := &Record{ID: newID(), Task: name, Deployment: h.dep.Name, Start: time.Now().UTC(), Params: params}
	buf := &CappedBuffer{Max: MaxRunLog}
	var w io.Writer = buf
	if terminal != nil {
		w = zerolog.MultiLevelWriter(buf, terminal)
	}
	log := zerolog.New(Redact(w, h.dep.Secrets())).With().Timestamp().Str("task", name).Str("run_id", rec.ID).Logger()
	env := &Env{ID: rec.ID, Task: name, Deployment: h.dep, Log: log, Params: params}
	rctx, cancel := context.WithTimeout(log.WithContext(ctx), timeout)
	defer cancel()
	runErr := safeRun(rctx, t.Run, env)
	rec.Duration = time.Since(rec.Start)
	rec.Outcome = Succeeded
	if runErr != nil {
		rec.Outcome = Failed
		if rctx.Err() == context.DeadlineExceeded {
			runErr = fmt.Errorf("timed out after %s: %w", timeout, runErr)
		}
		rec.Error = runErr.Error()
		ev := log.Error().Err(runErr)
		var pe *panicError
		if errors.As(runErr, &pe) {
			ev = ev.Str("stack", string(pe.stack))
		}
		ev.Msg("run failed")
	}
	logs, dropped := buf.Bytes()
	rec.Logs, rec.Dropped = string(logs), dropped
	rec.Error = string(redactBytes([]byte(rec.Error), h.secrets))
	if h.stateDir != "" {
		if err := SaveRecord(h.stateDir, rec); err != nil {
			return rec, fmt.Errorf("saving the run record: %w", err)
		}
	}
	return rec, nil
}

func safeRun(ctx context.Context, fn RunFunc, env *Env) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: debug.Stack()}
		}
	}()
	return fn(ctx, env)
}

func runsDir(stateDir, task string) string { return filepath.Join(stateDir, "runs", task) }

// SaveRecord writes a record as <state>/runs/<task>/<start>-<id>.json, mode 0600.
func SaveRecord(stateDir string, rec *Record) error {
	dir := runsDir(stateDir, rec.Task)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%s.json", rec.Start.Format("20060102T150405.000000000Z"), rec.ID)
	return os.WriteFile(filepath.Join(dir, name), b, 0o600)
}

// LoadRecord reads the run id of a task, or its latest run when id is "".
func LoadRecord(stateDir, task, id string) (*Record, error) {
	files, _ := filepath.Glob(filepath.Join(runsDir(stateDir, task), "*.json"))
	sort.Strings(files)
	var path string
	for i := len(files) - 1; i >= 0; i-- {
		if id == "" || strings.HasSuffix(files[i], "-"+id+".json") {
			path = files[i]
			break
		}
	}
	if path == "" {
		if id == "" {
			return nil, fmt.Errorf("no runs of task %q yet (run it with `runtime test %s`)", task, task)
		}
		return nil, fmt.Errorf("no run %q of task %q", id, task)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rec, nil
}

// Print writes a record readably: a header, then the logs in console format.
func (r *Record) Print(w io.Writer) {
	fmt.Fprintf(w, "run %s of task %s in deployment %s\n", r.ID, r.Task, r.Deployment)
	fmt.Fprintf(w, "started %s, took %s, %s\n", r.Start.Format(time.RFC3339), r.Duration.Round(time.Microsecond), r.Outcome)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	fmt.Fprintln(w, "--- logs")
	cw := zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: time.TimeOnly, FieldsExclude: []string{"task", "run_id"}}
	for _, line := range strings.Split(strings.TrimRight(r.Logs, "\n"), "\n") {
		if line != "" {
			_, _ = cw.Write([]byte(line + "\n"))
		}
	}
	if r.Dropped > 0 {
		fmt.Fprintf(w, "... %d more bytes of logs were dropped (cap %d)\n", r.Dropped, MaxRunLog)
	}
}
