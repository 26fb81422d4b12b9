package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
)

// paramsFlag reads --params: JSON, or @file.
func paramsFlag(v string) (json.RawMessage, error) {
	raw := []byte(v)
	if strings.HasPrefix(v, "@") {
		var err error
		if raw, err = os.ReadFile(strings.TrimPrefix(v, "@")); err != nil {
			return nil, usageErr("--params: %v", err)
		}
	}
	if len(raw) > 0 && !json.Valid(raw) {
		return nil, usageErr("--params is not valid JSON")
	}
	return raw, nil
}

// timeLayouts are what --at accepts; without a zone, local time.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04"}

func parseAt(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageErr("--at: want a time such as 2026-03-04T10:00:00Z or \"2026-03-04 10:00\" (local time), got %q", s)
}

type enqueueFlags struct {
	params, after, at, queue, key, dep string
	attempts                           int
}

func (a *App) enqueueCmd() *cobra.Command {
	var f enqueueFlags
	c := &cobra.Command{
		Use:   "enqueue <task>",
		Short: "enqueue a run of a task; prints the job id",
		Long: `runtime enqueue: store a job, a later run of a task's Run, in the
deployment's database (testing unless --deployment says otherwise), where
any instance of ` + "`runtime deploy`" + ` takes it: at once, at --at or after
--after. Jobs of one --queue run one at a time, in enqueue order; with
--key, a job of the task with that key that is pending or running is
returned instead of a new one. A failed run is retried up to --attempts
times, with backoff. Prints the job's id; ` + "`runtime jobs`" + ` lists the jobs.`,
		Example: "  runtime enqueue send_mail --params '{\"to\":\"a@example.com\"}' --after 5m\n" +
			"  runtime enqueue recompute --queue totals --key list-42 --attempts 3",
		Args: a.taskArg,
		RunE: func(c *cobra.Command, args []string) error {
			return a.enqueue(c, args[0], f)
		},
	}
	c.Flags().StringVar(&f.params, "params", "", "the run's parameters: `JSON`, or @file (at most 5 MB)")
	c.Flags().StringVar(&f.after, "after", "", "run it after `D` (such as 30s, 5m, 2h, 1d)")
	c.Flags().StringVar(&f.at, "at", "", "run it at `TIME` (RFC 3339, or \"2006-01-02 15:04\" in local time)")
	c.Flags().StringVar(&f.queue, "queue", "", "the serial queue `NAME` (a-z, 0-9, _ and -, up to 64)")
	c.Flags().StringVar(&f.key, "key", "", "idempotency key `K`: while a job of the task with it is unfinished, that job is returned")
	c.Flags().IntVar(&f.attempts, "attempts", 1, fmt.Sprintf("try a failing run up to `N` times (1 to %d)", queue.MaxAttempts))
	c.Flags().StringVar(&f.dep, "deployment", "testing", "enqueue in deployment `NAME`")
	return c
}

func (a *App) enqueue(c *cobra.Command, task string, f enqueueFlags) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	job := runtime.Job{Task: task, Queue: f.queue, Key: f.key, Attempts: f.attempts}
	if job.Params, err = paramsFlag(f.params); err != nil {
		return err
	}
	if f.after != "" {
		if job.After, err = deployment.ParseDays(f.after); err != nil {
			return usageErr("--after: %v", err)
		}
	}
	if f.at != "" {
		if job.At, err = parseAt(f.at); err != nil {
			return err
		}
	}
	if f.attempts < 1 {
		return usageErr("--attempts: want 1 to %d, got %d", queue.MaxAttempts, f.attempts)
	}
	// Checked before anything is opened: bad input stores nothing.
	if _, err := queue.Validate(p.reg, job, time.Now()); err != nil {
		return usageErr("%v", err)
	}
	ctx := c.Context()
	dep, q, closeQueue, err := a.openQueue(ctx, p, f.dep)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	defer func() { _ = closeQueue(context.Background()) }()
	id, err := q.Enqueue(ctx, job)
	var inv *queue.InvalidError
	if errors.As(err, &inv) {
		return usageErr("%v", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(c.OutOrStdout(), id)
	return nil
}

// openQueue loads a deployment (a usage error unless it exists) and opens
// its job store without setting up any task, for a queue that only
// enqueues.
func (a *App) openQueue(ctx context.Context, p *project, depName string) (*deployment.Deployment, *queue.Queue, func(context.Context) error, error) {
	if err := p.checkDeployment(depName, "deployment"); err != nil {
		return nil, nil, nil, err
	}
	dep, err := p.load(depName, a.Environ, p.reg)
	if err != nil {
		return nil, nil, nil, err
	}
	if a.OpenJobs == nil {
		return nil, nil, nil, errors.New("this build of the runtime has no job store")
	}
	log := runtime.NewLogger(a.Stderr, dep.Secrets())
	s, closeSetup := runtime.NewSetup(dep, a.options(log, p), "queue")
	st, err := a.OpenJobs(ctx, s)
	if err == nil {
		var q *queue.Queue
		if q, err = queue.New(queue.Options{Store: st, Registry: p.reg, Log: log}); err == nil {
			return dep, q, closeSetup, nil
		}
	}
	_ = closeSetup(context.Background())
	return nil, nil, nil, redactErr(fmt.Errorf("opening the job store of deployment %s: %w", dep.Name, err), dep.Secrets())
}

// jobLine is one job in `runtime jobs --json`.
type jobLine struct {
	ID          string     `json:"id"`
	Task        string     `json:"task"`
	Queue       string     `json:"queue,omitempty"`
	Key         string     `json:"key,omitempty"`
	State       string     `json:"state"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	Failures    int        `json:"failures"`
	Lost        int        `json:"lost,omitempty"`
	RunAt       time.Time  `json:"run_at"`
	Created     time.Time  `json:"created"`
	Started     *time.Time `json:"started,omitempty"`
	Finished    *time.Time `json:"finished,omitempty"`
	Worker      string     `json:"worker,omitempty"`
	LeaseUntil  *time.Time `json:"lease_until,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastRun     string     `json:"last_run,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func newJobLine(j *queue.Job) jobLine {
	return jobLine{ID: j.ID, Task: j.Task, Queue: j.Queue, Key: j.Key, State: string(j.State), Attempt: j.Attempt,
		MaxAttempts: j.MaxAttempts, Failures: j.Failures, Lost: j.Lost, RunAt: j.RunAt, Created: j.Created,
		Started: optTime(j.Started), Finished: optTime(j.Finished), Worker: j.Worker, LeaseUntil: optTime(j.LeaseUntil),
		LastError: j.LastError, LastRun: j.LastRun}
}

type jobsFlags struct {
	state, queue, task, dep string
	limit                   int
	out                     listing
}

func stateNames() []string {
	var out []string
	for _, s := range queue.States() {
		out = append(out, string(s))
	}
	return out
}

func (a *App) jobsCmd() *cobra.Command {
	var f jobsFlags
	c := &cobra.Command{
		Use:   "jobs",
		Short: "list a deployment's jobs; cancel or retry one",
		Long: `runtime jobs: list the jobs of a deployment (testing unless --deployment
says otherwise), newest first: id, task, queue, state, attempts, when it
is due, last error. ` + "`runtime jobs cancel ID`" + ` cancels a pending job (a
running one stops at its next check, within seconds); ` + "`runtime jobs retry ID`" + `
makes a dead or cancelled job pending again with its attempts renewed, or
a pending one due now.`,
		Example: "  runtime jobs --state dead\n  runtime jobs --queue totals --json\n  runtime jobs retry mx4rp9rg13736719bbaf8bfa",
		Args:    noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return a.jobs(c, f)
		},
	}
	c.Flags().StringVar(&f.state, "state", "", "only jobs in state `S`: "+strings.Join(stateNames(), ", "))
	c.Flags().StringVar(&f.queue, "queue", "", "only the jobs of queue `Q`")
	c.Flags().StringVar(&f.task, "task", "", "only the jobs of task `T`")
	c.Flags().IntVar(&f.limit, "limit", queue.DefaultListLimit, "at most `N` jobs (1 to 10000)")
	c.Flags().StringVar(&f.dep, "deployment", "testing", "list the jobs of deployment `NAME`")
	f.out.flags(c)
	c.AddCommand(a.jobCmd("cancel", "cancel a pending job, or stop a running one"), a.jobCmd("retry", "run a dead or cancelled job again, or a pending one now"))
	return c
}

func (a *App) jobs(c *cobra.Command, f jobsFlags) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	filter := queue.Filter{Queue: f.queue, Task: f.task, Limit: f.limit}
	if f.state != "" {
		if filter.State, err = queue.ParseState(f.state); err != nil {
			return usageErr("--state: %v", err)
		}
	}
	if f.queue != "" && !queue.QueueRE.MatchString(f.queue) {
		return usageErr("--queue: invalid queue name %q: want 1 to 64 of a-z, 0-9, _ and -", f.queue)
	}
	if f.task != "" {
		if _, err := p.reg.Lookup(f.task); err != nil {
			return usageErr("--task: %v", err)
		}
	}
	if f.limit < 1 || f.limit > 10000 {
		return usageErr("--limit: want 1 to 10000, got %d", f.limit)
	}
	ctx := c.Context()
	dep, q, closeQueue, err := a.openQueue(ctx, p, f.dep)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	defer func() { _ = closeQueue(context.Background()) }()
	jobs, err := q.Store().List(ctx, filter)
	if err != nil {
		return fmt.Errorf("listing the jobs of deployment %s: %w", dep.Name, err)
	}
	js := make([]jobLine, 0, len(jobs))
	t := table{header: []string{"ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "RUN AT", "LAST ERROR"}}
	for _, j := range jobs {
		js = append(js, newJobLine(j))
		qn := j.Queue
		if qn == "" {
			qn = "-"
		}
		errText := strings.Join(strings.Fields(j.LastError), " ")
		t.add(j.ID, j.Task, qn, string(j.State), fmt.Sprintf("%d/%d", j.Failures, j.MaxAttempts), j.RunAt.UTC().Format(time.RFC3339), errText)
	}
	if len(jobs) == 0 {
		t.after = []string{fmt.Sprintf("(no jobs of deployment %s match)", dep.Name)}
	} else if len(jobs) == filter.Limit {
		t.after = []string{fmt.Sprintf("(the newest %d; --limit for more)", len(jobs))}
	}
	return f.out.print(c.OutOrStdout(), js, t)
}

// jobCmd is `runtime jobs cancel ID` or `runtime jobs retry ID`.
func (a *App) jobCmd(name, short string) *cobra.Command {
	var dep string
	c := &cobra.Command{
		Use:   name + " <job id>",
		Short: short,
		Args: usageArgs(func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("want one job id, got %d arguments", len(args))
			}
			return nil
		}),
		RunE: func(c *cobra.Command, args []string) (err error) {
			p, err := a.project()
			if err != nil {
				return err
			}
			ctx := c.Context()
			d, q, closeQueue, err := a.openQueue(ctx, p, dep)
			if err != nil {
				return err
			}
			defer func() { err = redactErr(err, d.Secrets()) }()
			defer func() { _ = closeQueue(context.Background()) }()
			var (
				j         *queue.Job
				requested bool
			)
			if name == "cancel" {
				j, requested, err = q.Store().Cancel(ctx, args[0], time.Now())
			} else {
				j, err = q.Store().Retry(ctx, args[0], time.Now())
			}
			var inv *queue.InvalidError
			switch {
			case errors.Is(err, queue.ErrNotFound):
				return usageErr("no job %q in deployment %s (runtime jobs lists them)", args[0], d.Name)
			case errors.As(err, &inv):
				return usageErr("%v", err)
			case err != nil:
				return err
			}
			w := c.OutOrStdout()
			switch {
			case requested:
				fmt.Fprintf(w, "job %s is running on %s: asked to stop; it ends as cancelled within %s\n", j.ID, j.Worker, queue.CancelCheck)
			case name == "cancel":
				fmt.Fprintf(w, "job %s cancelled\n", j.ID)
			default:
				fmt.Fprintf(w, "job %s is pending, due now\n", j.ID)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dep, "deployment", "testing", "the job's deployment `NAME`")
	return c
}

// startQueue runs the deployment's job queue on this instance, and makes
// it what Env.Enqueue uses. No job store (a build without one): none.
func (a *App) startQueue(ctx context.Context, h *runtime.Host, log zerolog.Logger) (*queue.Queue, error) {
	if a.OpenJobs == nil {
		return nil, nil
	}
	st, err := a.OpenJobs(ctx, h.Setup("queue"))
	if err != nil {
		return nil, fmt.Errorf("opening the job store: %w", err)
	}
	dep, x := h.Deployment(), h.Executor()
	q, err := queue.New(queue.Options{Store: st, Registry: h.Registry(), Run: queue.ExecutorRunner(x),
		Workers: dep.QueueWorkers, Poll: dep.QueuePoll, Retention: dep.QueueRetention, MaxLease: dep.QueueLease, Instance: x.Instance(),
		Log: log.With().Str("component", "queue").Logger(), Registerer: h.Registerer()})
	if err != nil {
		return nil, err
	}
	h.SetEnqueuer(q)
	q.Start()
	return q, nil
}

// stopOn calls stop when ctx ends or wait is called, with grace to let
// what runs finish; wait returns stop's error.
func stopOn(ctx context.Context, stop func(context.Context) error, grace time.Duration) (wait func() error) {
	quit, done := make(chan struct{}), make(chan error, 1)
	go func() {
		select {
		case <-ctx.Done():
		case <-quit:
		}
		gctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		done <- stop(gctx)
	}()
	return func() error {
		close(quit)
		return <-done
	}
}
