package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/internal/suggest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// runLine is one line of `runtime runs --json`.
type runLine struct {
	ID         string          `json:"id"`
	Task       string          `json:"task"`
	Deployment string          `json:"deployment"`
	Trigger    runtime.Trigger `json:"trigger"`
	Schedule   string          `json:"schedule,omitempty"`
	FireTime   *time.Time      `json:"fire_time,omitempty"`
	JobID      string          `json:"job_id,omitempty"`
	Attempt    int             `json:"attempt,omitempty"`
	Instance   string          `json:"instance"`
	Start      time.Time       `json:"start"`
	DurationMS float64         `json:"duration_ms"`
	Outcome    string          `json:"outcome"`
	Error      string          `json:"error,omitempty"`
	Params     json.RawMessage `json:"params,omitempty"`
}

func newRunLine(r *runtime.Record) runLine {
	l := runLine{ID: r.ID, Task: r.Task, Deployment: r.Deployment, Trigger: r.Trigger, Schedule: r.Schedule,
		JobID: r.JobID, Attempt: r.Attempt, Instance: r.Instance, Start: r.Start.UTC(),
		DurationMS: float64(r.Duration.Microseconds()) / 1000, Outcome: r.Outcome, Error: r.Error, Params: r.Params}
	if !r.FireTime.IsZero() {
		ft := r.FireTime.UTC()
		l.FireTime = &ft
	}
	return l
}

type runsFlags struct {
	task, trigger, outcome, since, dep string
	limit                              int
	out                                listing
}

func (a *App) runsCmd() *cobra.Command {
	var f runsFlags
	c := &cobra.Command{
		Use:   "runs",
		Short: "list a deployment's runs, newest first",
		Long: `runtime runs: list the runs of a deployment's tasks, newest first, one line
each: id, task, trigger, start, duration, outcome.

Runs are read from the deployment's run store (testing unless --deployment
says otherwise): its MongoDB when MONGO_URI is set, so every instance's runs
are there; else the files under .runtime/runs/. --json prints one JSON
object per line (id, task, deployment, trigger, schedule, fire_time,
job_id, attempt, instance, start in RFC 3339, duration_ms, outcome, error,
params), for scripts.`,
		Example: "  runtime runs --task generate_keys --outcome failed --since 2d\n  runtime runs --deployment production --json --limit 1000",
		Args:    noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return a.runs(c, f)
		},
	}
	c.Flags().StringVar(&f.task, "task", "", "only the runs of task `T`")
	c.Flags().StringVar(&f.trigger, "trigger", "", "only runs started by `X`: "+strings.Join(triggerNames(), ", "))
	c.Flags().StringVar(&f.outcome, "outcome", "", "only runs whose outcome is `O`: "+strings.Join(runtime.Outcomes(), ", "))
	c.Flags().StringVar(&f.since, "since", "", "only runs started in the last `D` (such as 90m, 1h, 2d)")
	c.Flags().IntVar(&f.limit, "limit", runtime.DefaultRunLimit, fmt.Sprintf("at most `N` runs (1 to %d)", runtime.MaxRunLimit))
	c.Flags().StringVar(&f.dep, "deployment", "testing", "list the runs of deployment `NAME`")
	f.out.flags(c)
	return c
}

func triggerNames() []string {
	var out []string
	for _, t := range runtime.Triggers() {
		out = append(out, string(t))
	}
	return out
}

// filter checks the flags, each a usage error listing the valid values.
func (f runsFlags) filter(p *project, now time.Time) (runtime.RunFilter, error) {
	rf := runtime.RunFilter{Limit: f.limit}
	if f.task != "" {
		var onDemand []string
		for _, t := range p.reg.Tasks() {
			if t.Run != nil {
				onDemand = append(onDemand, t.Name)
			}
		}
		t, err := p.reg.Lookup(f.task)
		switch {
		case err != nil:
			return rf, usageErr("--task: unknown task %q%s; tasks with runs: %s", f.task, suggest.Hint(f.task, onDemand), strings.Join(onDemand, ", "))
		case t.Run == nil:
			return rf, usageErr("--task: task %s is served over HTTP only, so it has no runs; tasks with runs: %s", f.task, strings.Join(onDemand, ", "))
		}
		rf.Task = f.task
	}
	if f.trigger != "" {
		t, err := runtime.ParseTrigger(f.trigger)
		if err != nil {
			return rf, usageErr("--trigger: %v", err)
		}
		rf.Trigger = t
	}
	if f.outcome != "" {
		o, err := runtime.ParseOutcome(f.outcome)
		if err != nil {
			return rf, usageErr("--outcome: %v", err)
		}
		rf.Outcome = o
	}
	if f.since != "" {
		d, err := deployment.ParseDays(f.since)
		if err != nil {
			return rf, usageErr("--since: %v", err)
		}
		rf.Since = now.Add(-d)
	}
	if f.limit < 1 || f.limit > runtime.MaxRunLimit {
		return rf, usageErr("--limit: want 1 to %d, got %d", runtime.MaxRunLimit, f.limit)
	}
	return rf, nil
}

func (a *App) runs(c *cobra.Command, f runsFlags) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	rf, err := f.filter(p, time.Now())
	if err != nil {
		return err
	}
	ctx := c.Context()
	dep, store, closeStore, err := a.openRuns(ctx, p, f.dep)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	defer func() { _ = closeStore(context.Background()) }()
	recs, err := store.ListRuns(ctx, rf)
	if err != nil {
		return fmt.Errorf("listing the runs of deployment %s: %w", dep.Name, err)
	}
	w := c.OutOrStdout()
	if f.out.json {
		enc := json.NewEncoder(w)
		for _, r := range recs {
			if err := enc.Encode(newRunLine(r)); err != nil {
				return err
			}
		}
		return nil
	}
	t := table{header: []string{"ID", "TASK", "TRIGGER", "START", "DURATION", "OUTCOME"}}
	for _, r := range recs {
		t.add(r.ID, r.Task, string(r.Trigger), r.Start.UTC().Format(time.RFC3339), roundDuration(r.Duration), r.Outcome)
	}
	switch {
	case len(recs) == 0:
		t.after = []string{fmt.Sprintf("(no runs of deployment %s match)", dep.Name)}
	case len(recs) == rf.Max():
		t.after = []string{fmt.Sprintf("(the newest %d; --limit for more, runtime logs <task> --run ID for one)", len(recs))}
	default:
		t.after = []string{fmt.Sprintf("(%d runs; runtime logs <task> --run ID shows one)", len(recs))}
	}
	return t.write(w, f.out.wide)
}

// roundDuration keeps three significant places or so: 1.234s, 56ms, 789µs.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// openRuns loads a deployment (a usage error unless it exists) and opens
// its run store without setting up any task.
func (a *App) openRuns(ctx context.Context, p *project, depName string) (*deployment.Deployment, runtime.RunStore, func(context.Context) error, error) {
	if err := p.checkDeployment(depName, "deployment"); err != nil {
		return nil, nil, nil, err
	}
	dep, err := p.load(depName, a.Environ, p.reg)
	if err != nil {
		return nil, nil, nil, err
	}
	// Only warnings: a listing is not the place for "connected to MongoDB".
	log := runtime.NewLogger(a.Stderr, dep.Secrets()).Level(zerolog.WarnLevel)
	store, closeStore, err := runtime.OpenRunStore(ctx, dep, a.options(log, p))
	if err != nil {
		return nil, nil, nil, redactErr(err, dep.Secrets())
	}
	return dep, store, closeStore, nil
}
