package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// RunRequest asks the Executor for one run of a task's Run.
type RunRequest struct {
	Task    string
	Params  json.RawMessage
	Trigger Trigger
	// ID is an optional fixed run id (a schedule derives it from its name
	// and fire time, so that a second run of one fire time is refused with
	// ErrDuplicateRun). Empty: a random one.
	ID string
	// Schedule and FireTime say which schedule fire started the run.
	Schedule string
	FireTime time.Time
	// JobID and Attempt say which queue job attempt started the run.
	JobID   string
	Attempt int
	// Live, if set, receives the run's log lines (JSON, masked) as they are
	// written: a terminal, a dashboard stream.
	Live io.Writer
	// Output, if set, receives what the task writes to Env.Output (masked):
	// its result, apart from its logs and not kept in the record. `runtime
	// test` gives its standard output. Nil: each line goes to the run's
	// log instead.
	Output io.Writer
}

// Executor is the one path by which a task's Run runs, whatever triggered
// it: it bounds the run by the task's timeout, turns a panic into a failed
// run with its stack in the logs, captures and caps the logs, masks every
// secret of the deployment (logs, error, params) and keeps a Record in the
// RunStore: inserted when the run starts (outcome "running"), its logs
// updated every ProgressInterval while it runs, and its outcome at the end.
// When the store fails, the run still happens and its record waits in a
// bounded buffer that is retried (see pending).
type Executor struct {
	reg      *Registry
	dep      *deployment.Deployment
	log      zerolog.Logger
	secrets  []string
	forms    [][]byte
	store    RunStore
	instance string
	pending  *pending
	enqueuer Enqueuer // Env.Enqueue's (Core.SetEnqueuer)

	// Retention, applied after saves at most once per PruneInterval.
	retention   time.Duration
	keepPerTask int
	pruneMu     sync.Mutex
	lastPrune   time.Time
	pruning     sync.WaitGroup
}

// Timing of the executor's store writes.
const (
	// ProgressInterval is how often a running record's logs are written.
	ProgressInterval = time.Second
	// StoreTimeout bounds each write of a record.
	StoreTimeout = 5 * time.Second
	// PruneInterval is how often one process applies retention.
	PruneInterval = 10 * time.Minute
)

// Retention defaults (deployment settings runs.retention and
// runs.keep_per_task override them).
const (
	DefaultRunRetention = 14 * 24 * time.Hour
	DefaultRunsPerTask  = 1000
)

func newExecutor(reg *Registry, dep *deployment.Deployment, log zerolog.Logger, store RunStore, instance string, dropped *Counter) *Executor {
	x := &Executor{reg: reg, dep: dep, log: log, secrets: dep.Secrets(), store: store, instance: instance,
		retention: DefaultRunRetention, keepPerTask: DefaultRunsPerTask}
	x.forms = secretForms(x.secrets)
	if dep.RunRetention > 0 {
		x.retention = dep.RunRetention
	}
	if dep.RunsPerTask > 0 {
		x.keepPerTask = dep.RunsPerTask
	}
	x.pending = newPending(store, log, dropped)
	return x
}

// Store returns the executor's run store (nil: records are not kept).
func (x *Executor) Store() RunStore { return x.store }

// Instance is this process's name in records: host name and process id.
func (x *Executor) Instance() string { return x.instance }

// Run runs a task's on-demand entry point once and returns its record. The
// error is about the request or the runtime (unknown task, no Run, invalid
// params, ErrDuplicateRun); the task's own failure is in the record. A
// record the store could not take is kept for a retry: Run still returns it.
func (x *Executor) Run(ctx context.Context, req RunRequest) (*Record, error) {
	t, err := x.reg.Lookup(req.Task)
	if err != nil {
		return nil, err
	}
	if t.Run == nil {
		return nil, fmt.Errorf("task %q has no on-demand entry point (it is served over HTTP: %s /%s)", t.Name, strings.Join(t.Methods(), ", "), t.Name)
	}
	if len(req.Params) > 0 && !json.Valid(req.Params) {
		return nil, errors.New("params are not valid JSON")
	}
	if _, err := ParseTrigger(string(req.Trigger)); err != nil {
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = newID()
	} else if !validRunID(id) {
		return nil, fmt.Errorf("invalid run id %q: want 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'", id)
	}
	timeout := t.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	// Start has the precision of a BSON date, so that every store keeps
	// it as is; the duration is the task's own, on the monotonic clock.
	started := time.Now()
	rec := &Record{ID: id, Task: t.Name, Deployment: x.dep.Name, Trigger: req.Trigger,
		Schedule: req.Schedule, FireTime: req.FireTime.UTC(), JobID: req.JobID, Attempt: req.Attempt,
		Instance: x.instance, Start: started.UTC().Truncate(time.Millisecond), Outcome: Running,
		Params: x.mask(req.Params)}
	if req.FireTime.IsZero() {
		rec.FireTime = time.Time{}
	}

	// Insert the running record first: it claims a fixed id before
	// anything runs, and lets `runtime logs --follow` see the run.
	inserted := false
	if x.store != nil && !x.pending.failing() {
		sctx, cancel := storeContext(ctx)
		err := x.store.SaveRun(sctx, rec)
		cancel()
		switch {
		case errors.Is(err, ErrDuplicateRun):
			return nil, fmt.Errorf("run %s of task %s: %w", id, t.Name, ErrDuplicateRun)
		case err != nil:
			x.log.Warn().Err(x.maskErr(err)).Str("run_id", id).Msg("run store: cannot record the start of a run; its record is kept for later")
		default:
			inserted = true
		}
	}

	buf := &CappedBuffer{Max: MaxRunLog}
	var w io.Writer = buf
	if req.Live != nil {
		w = zerolog.MultiLevelWriter(buf, req.Live)
	}
	log := zerolog.New(Redact(w, x.secrets)).With().Timestamp().Str("task", t.Name).Str("run_id", id).Logger()
	out := &lineLog{log: log}
	env := &Env{ID: id, Task: t.Name, Deployment: x.dep, Log: log, Params: req.Params, Output: out, enqueuer: x.enqueuer}
	if req.Output != nil {
		env.Output = Redact(req.Output, x.secrets)
	}
	rctx, cancel := context.WithTimeout(log.WithContext(ctx), timeout)
	defer cancel()

	stopProgress := func() {}
	if inserted {
		stopProgress = x.progress(ctx, rec, buf)
	}
	began := time.Now()
	runErr := safeRun(rctx, t.Run, env)
	out.flush()
	rec.Duration = time.Since(began)
	stopProgress()
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
	rec.Error = string(redactBytes([]byte(rec.Error), x.forms))
	if x.store != nil {
		x.save(ctx, rec, inserted)
	}
	return rec, nil
}

// save writes a finished record, or hands it to the retry buffer.
func (x *Executor) save(ctx context.Context, rec *Record, inserted bool) {
	final := *rec
	if !x.pending.failing() {
		sctx, cancel := storeContext(ctx)
		err := writeRecord(sctx, x.store, &final, inserted)
		cancel()
		if err == nil {
			x.maybePrune()
			return
		}
		if errors.Is(err, ErrDuplicateRun) {
			x.log.Error().Str("run_id", rec.ID).Str("task", rec.Task).Msg("run store: a run with this id was recorded meanwhile; this run's record is dropped")
			return
		}
		x.log.Warn().Err(x.maskErr(err)).Str("run_id", rec.ID).Msg("run store: cannot save a run's record; it is kept for later")
	}
	x.pending.add(&final, inserted)
}

// writeRecord inserts or replaces a record. A record whose start was never
// inserted may still have been (the insert timed out after the server took
// it): then it is replaced.
func writeRecord(ctx context.Context, st RunStore, r *Record, inserted bool) error {
	if inserted {
		err := st.UpdateRun(ctx, r)
		if !errors.Is(err, ErrRunNotFound) {
			return err
		}
	}
	err := st.SaveRun(ctx, r)
	if errors.Is(err, ErrDuplicateRun) && !inserted {
		// Ours if it is still running on this instance from this start.
		old, gerr := st.GetRun(ctx, r.ID)
		if gerr == nil && old.Outcome == Running && old.Instance == r.Instance && old.Start.Equal(r.Start) {
			return st.UpdateRun(ctx, r)
		}
	}
	return err
}

// progress writes the running record's logs every ProgressInterval while
// they grow; the returned func stops it and waits.
func (x *Executor) progress(ctx context.Context, rec *Record, buf *CappedBuffer) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	snapshot := *rec
	go func() {
		defer close(done)
		tick := time.NewTicker(ProgressInterval)
		defer tick.Stop()
		written := 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			logs, dropped := buf.Bytes()
			if len(logs)+dropped == written {
				continue
			}
			written = len(logs) + dropped
			snapshot.Logs, snapshot.Dropped = string(logs), dropped
			snapshot.Duration = time.Since(rec.Start)
			sctx, cancel := storeContext(ctx)
			if err := x.store.UpdateRun(sctx, &snapshot); err != nil {
				x.log.Debug().Err(x.maskErr(err)).Str("run_id", rec.ID).Msg("run store: cannot write a running record's logs")
			}
			cancel()
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// maybePrune applies retention in the background, at most once per
// PruneInterval in this process.
func (x *Executor) maybePrune() {
	x.pruneMu.Lock()
	defer x.pruneMu.Unlock()
	if time.Since(x.lastPrune) < PruneInterval {
		return
	}
	x.lastPrune = time.Now()
	x.pruning.Add(1)
	go func() {
		defer x.pruning.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := x.store.PruneRuns(ctx, time.Now().Add(-x.retention), x.keepPerTask)
		if err != nil {
			x.log.Warn().Err(x.maskErr(err)).Msg("run store: applying retention")
		}
		if n > 0 {
			x.log.Info().Int("removed", n).Dur("retention", x.retention).Int("keep_per_task", x.keepPerTask).Msg("run store: removed old runs")
		}
	}()
}

// Prune applies retention now and says how many records it removed.
func (x *Executor) Prune(ctx context.Context) (int, error) {
	if x.store == nil {
		return 0, nil
	}
	return x.store.PruneRuns(ctx, time.Now().Add(-x.retention), x.keepPerTask)
}

// Pending is the number of records waiting for the store.
func (x *Executor) Pending() int { return x.pending.len() }

// Close waits for retention to finish, then writes the records still
// waiting for the store until ctx ends; those it cannot write are dropped,
// counted and logged.
func (x *Executor) Close(ctx context.Context) {
	x.pruning.Wait()
	x.pending.close(ctx)
}

func (x *Executor) mask(p json.RawMessage) json.RawMessage {
	if len(p) == 0 {
		return nil
	}
	m := redactBytes([]byte(string(p)), x.forms)
	if !json.Valid(m) {
		// A secret written as a bare number or literal: keep the masked
		// text as a JSON string.
		m, _ = json.Marshal(string(m))
	}
	return json.RawMessage(m)
}

func (x *Executor) maskErr(err error) error {
	if msg := string(redactBytes([]byte(err.Error()), x.forms)); msg != err.Error() {
		return errors.New(msg)
	}
	return err
}

// storeContext bounds a store write by StoreTimeout, whatever happens to
// the run's context (a record is written even when the caller gave up).
func storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), StoreTimeout)
}

func safeRun(ctx context.Context, fn RunFunc, env *Env) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: debug.Stack()}
		}
	}()
	return fn(ctx, env)
}

// validRunID reports whether s can be a run id: it names files.
func validRunID(s string) bool { return validID(s) && s[0] != '.' }

// instanceName is host:pid.
func instanceName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "unknown"
	}
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}

// lineLog writes a run's output to its log, one line an entry, when the
// caller did not ask for the output (RunRequest.Output nil).
type lineLog struct {
	mu      sync.Mutex
	log     zerolog.Logger
	partial []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.log.Info().Bool("output", true).Msg(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// flush logs a last line without a newline.
func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.log.Info().Bool("output", true).Msg(string(l.partial))
		l.partial = nil
	}
}
