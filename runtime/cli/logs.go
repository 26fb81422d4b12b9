package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
)

func (a *App) logsCmd() *cobra.Command {
	var id, depName string
	c := &cobra.Command{
		Use:   "logs <task>",
		Short: "show a task's latest (or given) run record",
		Long: `runtime logs: show a run of a task: where it ran, what triggered it, its
outcome and its logs.

Runs are read from the deployment's run store (testing unless --deployment
says otherwise): its MongoDB when MONGO_URI is set, so runs of every
instance are there; else the files under .runtime/runs/.`,
		Args: a.taskArg,
		RunE: func(c *cobra.Command, args []string) error {
			return a.logs(c, args[0], depName, id)
		},
	}
	c.Flags().StringVar(&id, "run", "", "show run `ID` (default: the latest run)")
	c.Flags().StringVar(&depName, "deployment", "testing", "read the runs of deployment `NAME`")
	return c
}

func (a *App) logs(c *cobra.Command, task, depName, id string) (err error) {
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
	if err := p.checkDeployment(depName, "deployment"); err != nil {
		return err
	}
	dep, err := p.load(depName, a.Environ, p.reg)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	ctx := c.Context()
	store, closeStore, err := runtime.OpenRunStore(ctx, dep, a.options(runtime.NewLogger(a.Stderr, dep.Secrets()), p))
	if err != nil {
		return err
	}
	defer func() { _ = closeStore(context.Background()) }()
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
	rec, err := store.GetRun(ctx, id)
	if errors.Is(err, runtime.ErrRunNotFound) || err == nil && rec.Task != t.Name {
		return fmt.Errorf("no run %q of task %q in deployment %s", id, t.Name, dep.Name)
	}
	if err != nil {
		return err
	}
	rec.Print(c.OutOrStdout())
	return nil
}
