package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
)

// followPoll is how often `logs --follow` reads the store; the executor
// writes a running record's logs every runtime.ProgressInterval.
const followPoll = 250 * time.Millisecond

func (a *App) logsCmd() *cobra.Command {
	var id, depName string
	var follow bool
	c := &cobra.Command{
		Use:   "logs <task>",
		Short: "show a task's latest (or given) run record",
		Long: `runtime logs: show a run of a task: where it ran, what triggered it, its
outcome and its logs.

Runs are read from the deployment's run store (testing unless --deployment
says otherwise): its MongoDB when MONGO_URI is set, so runs of every
instance are there; else the files under .runtime/runs/. --follow waits
for the task's next run (or follows --run ID while it runs) and prints its
logs as they are written (about every second), until it ends.`,
		Example: "  runtime logs generate_keys\n  runtime logs nightly_report --follow --deployment production",
		Args:    a.taskArg,
		RunE: func(c *cobra.Command, args []string) error {
			return a.logs(c, args[0], depName, id, follow)
		},
	}
	c.Flags().StringVar(&id, "run", "", "show run `ID` (default: the latest run)")
	c.Flags().StringVar(&depName, "deployment", "testing", "read the runs of deployment `NAME`")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "print the next run's logs as they are written")
	return c
}

func (a *App) logs(c *cobra.Command, task, depName, id string, follow bool) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	t, err := p.reg.Lookup(task)
	if err != nil {
		return usageErr("%v", err)
	}
	if t.Run == nil {
		return fmt.Errorf("task %s is served over HTTP only (%s /%s), so it has no runs: its request logs go to the output of `runtime deploy <deployment>`, one JSON line per request with its request_id (the X-Request-Id response header)",
			t.Name, strings.Join(t.Methods(), ", "), t.Name)
	}
	ctx := c.Context()
	dep, store, closeStore, err := a.openRuns(ctx, p, depName)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	defer func() { _ = closeStore(context.Background()) }()
	w := c.OutOrStdout()
	if follow {
		return followRun(ctx, w, store, t.Name, id)
	}
	if id == "" {
		recs, err := store.ListRuns(ctx, runtime.RunFilter{Task: t.Name, Limit: 1})
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("no runs of task %q in deployment %s yet (run it with `runtime test %s`)", t.Name, dep.Name, t.Name)
		}
		id = recs[0].ID
	}
	rec, err := getRun(ctx, store, t.Name, id)
	if err != nil {
		return fmt.Errorf("%w in deployment %s", err, dep.Name)
	}
	rec.Print(w)
	return nil
}

// getRun reads run id of task.
func getRun(ctx context.Context, store runtime.RunStore, task, id string) (*runtime.Record, error) {
	rec, err := store.GetRun(ctx, id)
	if errors.Is(err, runtime.ErrRunNotFound) || err == nil && rec.Task != task {
		return nil, fmt.Errorf("no run %q of task %q", id, task)
	}
	return rec, err
}

// followRun waits for the task's next run (or takes run id), then prints
// its logs as the store gets them, until it is no longer running or ctx
// ends (Ctrl-C: not an error).
func followRun(ctx context.Context, w io.Writer, store runtime.RunStore, task, id string) error {
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	if id == "" {
		since := time.Now().Truncate(time.Millisecond)
		fmt.Fprintf(w, "waiting for the next run of %s (Ctrl-C to stop)\n", task)
		for id == "" {
			if !wait() {
				return nil
			}
			recs, err := store.ListRuns(ctx, runtime.RunFilter{Task: task, Since: since})
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				id = recs[len(recs)-1].ID // the first to start
			}
		}
	}
	printed := 0
	for first := true; ; first = false {
		rec, err := getRun(ctx, store, task, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if first {
			fmt.Fprintf(w, "run %s of task %s in deployment %s\n%s\nstarted %s\n--- logs\n", rec.ID, rec.Task, rec.Deployment, rec.Origin(), rec.Start.Format(time.RFC3339))
		}
		if len(rec.Logs) > printed {
			runtime.PrintLogs(w, rec.Logs[printed:])
			printed = len(rec.Logs)
		}
		if rec.Outcome != runtime.Running {
			fmt.Fprintf(w, "--- %s after %s\n", rec.Outcome, rec.Duration.Round(time.Microsecond))
			if rec.Error != "" {
				fmt.Fprintf(w, "error: %s\n", rec.Error)
			}
			if rec.Dropped > 0 {
				fmt.Fprintf(w, "... %d more bytes of logs were dropped (cap %d)\n", rec.Dropped, runtime.MaxRunLog)
			}
			return nil
		}
		if !wait() {
			return nil
		}
	}
}
