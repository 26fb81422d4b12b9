package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
)

func (a *App) testCmd() *cobra.Command {
	var depName, params string
	c := &cobra.Command{
		Use:   "test <task>",
		Short: "run a task once, its logs saved as a run record",
		Long: `runtime test: run a task's on-demand entry point once.

It runs in a deployment's environment (testing unless --deployment says
otherwise), with --params as JSON or @file. Its logs print to standard
error as they happen and are saved, with the outcome, as a run record
(runtime logs <task>). Standard output gets the task's result only (what
it writes to env.Output), ready to pipe:

  runtime test generate_keys >> deployments/staging.local.env`,
		Example: "  runtime test generate_keys\n  runtime test generate_keys --params '{\"alg\":\"EdDSA\"}'",
		Args:    a.taskArg,
		RunE: func(c *cobra.Command, args []string) error {
			return a.test(c.Context(), args[0], depName, params)
		},
	}
	c.Flags().StringVar(&depName, "deployment", "testing", "run in deployment `NAME`")
	c.Flags().StringVar(&params, "params", "", "the run's parameters: `JSON`, or @file")
	return c
}

func (a *App) test(ctx context.Context, task, depName, params string) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	only, err := p.reg.Only(task)
	if err != nil {
		return usageErr("%v", err)
	}
	if t, _ := only.Lookup(task); t.Run == nil {
		return usageErr("task %q has no on-demand entry point; it is served over HTTP (%s /%s)", t.Name, strings.Join(t.Methods(), ", "), t.Name)
	}
	raw, err := paramsFlag(params)
	if err != nil {
		return err
	}
	if err := p.checkDeployment(depName, "deployment"); err != nil {
		return err
	}
	dep, err := p.load(depName, a.Environ, only)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	log := runtime.NewLogger(a.Stderr, dep.Secrets())
	// An on-demand run needs the tasks set up and the executor, never the
	// HTTP host.
	core, err := runtime.NewCore(ctx, only, dep, a.options(log, p))
	if err != nil {
		return err
	}
	defer func() { _ = core.Close(context.Background()) }()
	term := runtime.Console(a.Stderr)
	rec, err := core.Executor().Run(ctx, runtime.RunRequest{Task: task, Params: raw, Trigger: runtime.TriggerCLI, Live: term, Output: a.Stdout})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stderr, "run %s of %s %s in %s (runtime logs %s --run %s)\n", rec.ID, rec.Task, rec.Outcome, rec.Duration.Round(1000), rec.Task, rec.ID)
	if n := core.Executor().Pending(); n > 0 {
		fmt.Fprintf(a.Stderr, "runtime test: the run store does not answer: trying once more (up to %s) to save the record, else it is dropped (the logs above are all there is)\n", runtime.FlushTimeout)
	}
	if rec.Outcome != runtime.Succeeded {
		fmt.Fprintf(a.Stderr, "runtime test: %s failed: %s\n", rec.Task, rec.Error)
		return errRunFailed
	}
	return nil
}
