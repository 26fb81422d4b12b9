package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/internal/suggest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// Exit codes.
const (
	OK      = 0
	Failure = 1
	Usage   = 2
)

// App is one invocation of the CLI.
type App struct {
	Args    []string
	Environ []string
	Stdout  io.Writer
	Stderr  io.Writer
	Tasks   []runtime.Task
	// Signals, if set, replaces SIGINT/SIGTERM handling (for tests).
	Signals <-chan os.Signal
	// LogInterval is how often `deploy` writes batched log lines when
	// Stdout is not a terminal (0: every 100 ms).
	LogInterval time.Duration
	// BuildInfo, if set, replaces debug.ReadBuildInfo for `version`.
	BuildInfo func() (*debug.BuildInfo, bool)
	// OpenRuns opens a deployment's run store (nil: files under .runtime/).
	OpenRuns runtime.RunStoreOpener
	// OpenSchedules opens a deployment's schedule store (nil: a deployment
	// with schedules cannot start).
	OpenSchedules schedule.Opener
	// OpenJobs opens a deployment's job store (nil: no queue; Env.Enqueue
	// fails).
	OpenJobs queue.Opener
	// Vars are the deployment variables the runtime itself reads (such as
	// the database that OpenRuns uses), read and masked like the tasks'.
	Vars []runtime.Var
	// Dashboard adds pages to the dashboard of `deploy`.
	Dashboard DashboardParts
	// ServeLock, if set, is called by `deploy` before the tasks' Init, with
	// the address it serves: it refuses a second `deploy` of a deployment
	// that only one process may serve (cmd/runtime: store.ClaimServing, for
	// the development store). release runs at exit.
	ServeLock func(dep *deployment.Deployment, stateDir, url string) (release func(), err error)
	// HoldStore, if set, is called by `dev` to run the deployment's
	// development store in the supervising process, so that it keeps
	// running while the served processes restart (cmd/runtime: store.Hold).
	HoldStore HoldStoreFunc

	root    string   // --root
	proj    *project // opened once by project()
	helpErr error    // from the help function, which cannot return one
}

// commands lists every command, in the order help shows them. Add a new
// one here (see the package doc).
func (a *App) commands() []*cobra.Command {
	return []*cobra.Command{
		a.deployCmd(),
		a.devCmd(),
		a.testCmd(),
		a.runsCmd(),
		a.logsCmd(),
		a.schedulesCmd(),
		a.enqueueCmd(),
		a.jobsCmd(),
		a.envCmd(),
		a.tasksCmd(),
		a.newCmd(),
		a.versionCmd(),
	}
}

const summary = "runtime: serve and run the tasks under tasks/."

// Main runs the CLI and returns the process exit code.
func Main(a App) int {
	root := a.rootCmd()
	ctx, stop := a.signalContext()
	defer stop()
	// A nil slice would make cobra read os.Args.
	root.SetArgs(append([]string{}, a.Args...))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		err = a.helpErr
	}
	if err == nil {
		return OK
	}
	name := "runtime"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		if ue.quiet {
			return Usage
		}
		fmt.Fprintf(a.Stderr, "%s: %v\n", name, err)
		if cmd != nil && cmd != root {
			fmt.Fprintf(a.Stderr, "usage: %s\n", cmd.UseLine())
		}
		fmt.Fprintf(a.Stderr, "Run '%s --help' for usage.\n", name)
		return Usage
	case errors.Is(err, errRunFailed):
		return Failure
	default:
		fmt.Fprintf(a.Stderr, "%s: %v\n", name, err)
		return Failure
	}
}

func (a *App) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "runtime",
		Short: summary,
		Long: summary + `

Every command takes --root DIR (anywhere on the line): the project folder
(default: the nearest folder above the working directory that holds
deployments/). Exit codes: 0 success, 1 failure (a failed run, a deployment
that cannot start), 2 usage error.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Unknown commands come here (a root with Args set is not checked
		// by cobra itself), so that they are usage errors with a hint.
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(c, args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			writeHelp(a.Stderr, c)
			return &usageError{quiet: true}
		},
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.PersistentFlags().StringVar(&a.root, "root", "", "use `DIR` as the project folder (default: the nearest folder above the working directory that holds deployments/)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErr("%v", err) })
	root.SetHelpFunc(func(c *cobra.Command, _ []string) {
		// `runtime deplyo --help` lands here, on the root: the command is
		// unknown, which is not a request for the root's help.
		if c == root && c.Flags().NArg() > 0 {
			a.helpErr = unknownCommand(c, c.Flags().Arg(0))
			return
		}
		writeHelp(c.OutOrStdout(), c)
	})
	root.SetHelpCommand(a.helpCmd())
	root.AddCommand(a.commands()...)
	return root
}

// helpCmd replaces cobra's: an unknown topic is a usage error with a hint.
func (a *App) helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "show the help of the CLI or of one command",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			if len(args) == 0 {
				writeHelp(c.OutOrStdout(), root)
				return nil
			}
			sub, _, err := root.Find(args)
			if err != nil || sub == root {
				return unknownCommand(root, args[0])
			}
			writeHelp(c.OutOrStdout(), sub)
			return nil
		},
	}
}

func unknownCommand(root *cobra.Command, name string) error {
	var names []string
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() || c.Name() == "help" {
			names = append(names, c.Name())
		}
	}
	return usageErr("unknown command %q%s", name, suggest.Hint(name, names))
}

type usageError struct {
	msg   string
	quiet bool // the usage was printed already
}

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// usageArgs turns cobra's argument errors into usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return usageErr("%v", err)
		}
		return nil
	}
}

// noArgs refuses positional arguments.
var noArgs = usageArgs(func(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments, got %q", strings.Join(args, " "))
	}
	return nil
})

// taskArg wants one argument, the name of a registered task.
func (a *App) taskArg(c *cobra.Command, args []string) error {
	p, err := a.project()
	if err != nil {
		return err
	}
	names := p.reg.Names()
	switch {
	case len(args) == 0:
		return usageErr("missing the task name; tasks: %s", strings.Join(names, ", "))
	case len(args) > 1:
		return usageErr("want one task, got %d arguments: %s", len(args), strings.Join(args, " "))
	}
	if _, err := p.reg.Lookup(args[0]); err != nil {
		if h := suggest.Hint(args[0], names); h != "" {
			return usageErr("unknown task %q%s", args[0], h)
		}
		return usageErr("%v", err)
	}
	return nil
}

// deploymentArg wants one argument, the name of a deployment.
func (a *App) deploymentArg(c *cobra.Command, args []string) error {
	if len(args) > 1 {
		return usageErr("want one deployment, got %d arguments: %s", len(args), strings.Join(args, " "))
	}
	p, err := a.project()
	if err != nil {
		return err
	}
	name := ""
	if len(args) == 1 {
		name = args[0]
	}
	return p.checkDeployment(name, "")
}

var errRunFailed = errors.New("run failed")

// redactErr masks the deployment's secrets in an error's message (an Init
// error may quote a key), keeping the chain for errors.Is and errors.As.
func redactErr(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	if msg := runtime.RedactString(err.Error(), secrets); msg != err.Error() {
		return &redactedError{msg: msg, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// FindRoot returns dir if set, else the nearest folder above the working
// directory that holds deployments/.
func FindRoot(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, "deployments")); err == nil && st.IsDir() {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no deployments/ folder in %s or above it (use --root)", wd)
		}
	}
}

// project is what most commands need: the root, the registry, a deployment.
type project struct {
	root  string
	reg   *runtime.Registry
	extra []runtime.Var // the runtime's own variables (App.Vars)
}

// options are the runtime options of every command that opens a deployment.
func (a *App) options(log zerolog.Logger, p *project) runtime.Options {
	return runtime.Options{Log: log, StateDir: p.stateDir(), OpenRuns: a.OpenRuns}
}

// project finds the root (--root) and checks the tasks, once.
func (a *App) project() (*project, error) {
	if a.proj != nil {
		return a.proj, nil
	}
	r, err := FindRoot(a.root)
	if err != nil {
		return nil, err
	}
	reg, err := runtime.NewRegistry(a.Tasks...)
	if err != nil {
		return nil, fmt.Errorf("the tasks are not valid:\n%w", err)
	}
	a.proj = &project{root: r, reg: reg, extra: append(slices.Clip(a.Vars), dashboardVar)}
	return a.proj, nil
}

func (p *project) stateDir() string { return filepath.Join(p.root, ".runtime") }

func (p *project) deploymentsDir() string { return filepath.Join(p.root, "deployments") }

// checkDeployment is a usage error unless name is a deployment: a missing
// name is answered with the list, a misspelled one with the closest. flag
// names the flag that gave it ("" for an argument).
func (p *project) checkDeployment(name, flag string) error {
	known := deployment.Known(p.deploymentsDir())
	list := strings.Join(known, ", ")
	if len(known) == 0 {
		list = "none yet: add deployments/<name>.yaml"
	}
	prefix := ""
	if flag != "" {
		prefix = "--" + flag + ": "
	}
	switch {
	case name == "":
		return usageErr("%smissing the deployment name; deployments: %s", prefix, list)
	case !slices.Contains(known, name):
		return usageErr("%sunknown deployment %q%s; deployments: %s", prefix, name, suggest.Hint(name, known), list)
	}
	return nil
}

func (p *project) load(name string, environ []string, reg *runtime.Registry) (*deployment.Deployment, error) {
	var known, secret []string
	for _, v := range append(reg.Vars(), p.extra...) {
		known = append(known, v.Name)
		if v.Secret {
			secret = append(secret, v.Name)
		}
	}
	return deployment.Load(p.deploymentsDir(), name,
		deployment.Options{Environ: environ, Known: known, Secret: secret})
}

func (a *App) signalContext() (context.Context, context.CancelFunc) {
	if a.Signals == nil {
		return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-a.Signals:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
