// Package cli implements the runtime's subcommands. main passes in the
// arguments, the process environment, the output streams and the tasks.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Exit codes.
const (
	OK      = 0
	Failure = 1
	Usage   = 2
)

const usage = `runtime: serve and run the tasks under tasks/.

usage:
  runtime deploy <deployment> [--listen HOST:PORT]   serve the deployment's HTTP tasks
  runtime test <task> [--deployment NAME] [--params JSON|@file]
                                                    run a task once, logs captured
  runtime logs <task> [--run ID]                    show a task's latest (or given) run
  runtime env <deployment>                          list the resolved variables, masked
  runtime tasks                                     list the tasks
  runtime new <task> [--http]                       scaffold a task under tasks/

every command takes --root DIR: the project folder (default: the nearest
folder above the working directory that holds deployments/).
`

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
}

// Main runs the CLI and returns the process exit code.
func Main(a App) int {
	if len(a.Args) == 0 {
		fmt.Fprint(a.Stderr, usage)
		return Usage
	}
	cmd, args := a.Args[0], a.Args[1:]
	var err error
	switch cmd {
	case "deploy":
		err = a.deploy(args)
	case "test":
		err = a.test(args)
	case "logs":
		err = a.logs(args)
	case "env":
		err = a.env(args)
	case "tasks":
		err = a.tasks(args)
	case "new":
		err = a.newTask(args)
	case "help", "-h", "--help":
		fmt.Fprint(a.Stdout, usage)
		return OK
	default:
		err = usageErr("unknown command %q", cmd)
	}
	var ue *usageError
	switch {
	case err == nil:
		return OK
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "runtime %s: %v\n\n%s", cmd, err, usage)
		return Usage
	case errors.Is(err, errRunFailed):
		return Failure
	default:
		fmt.Fprintf(a.Stderr, "runtime %s: %v\n", cmd, err)
		return Failure
	}
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
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

// parse parses flags placed before or after the positional arguments and
// returns the positionals.
func parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErr("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		return nil, usageErr("want %d argument(s), got %d", want, len(pos))
	}
	return pos, nil
}

// command parses a command's flags (flags declares its own; --root is
// common to all) and opens the project.
func (a App) command(name string, args []string, want int, flags func(*flag.FlagSet)) (*project, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	root := fs.String("root", "", "project folder")
	if flags != nil {
		flags(fs)
	}
	pos, err := parse(fs, args, want)
	if err != nil {
		return nil, nil, err
	}
	p, err := a.project(*root)
	return p, pos, err
}

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
	root string
	reg  *runtime.Registry
}

func (a App) project(root string) (*project, error) {
	r, err := FindRoot(root)
	if err != nil {
		return nil, err
	}
	reg, err := runtime.NewRegistry(a.Tasks...)
	if err != nil {
		return nil, fmt.Errorf("the tasks are not valid:\n%w", err)
	}
	return &project{root: r, reg: reg}, nil
}

func (p *project) stateDir() string { return filepath.Join(p.root, ".runtime") }

func (p *project) load(name string, environ []string, reg *runtime.Registry) (*deployment.Deployment, error) {
	var known, secret []string
	for _, v := range reg.Vars() {
		known = append(known, v.Name)
		if v.Secret {
			secret = append(secret, v.Name)
		}
	}
	return deployment.Load(filepath.Join(p.root, "deployments"), name,
		deployment.Options{Environ: environ, Known: known, Secret: secret})
}

func (a App) signalContext() (context.Context, context.CancelFunc) {
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

func (a App) deploy(args []string) (err error) {
	var listen string
	p, pos, err := a.command("deploy", args, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&listen, "listen", "", "HOST:PORT to serve on (default: the deployment's listen)")
	})
	if err != nil {
		return err
	}
	dep, err := p.load(pos[0], a.Environ, p.reg)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	// Not on a terminal, log lines are batched: one write per 100 ms or
	// 64 KiB instead of one per request. What start-up logged is written
	// as soon as it is serving, for whoever waits for that line.
	out := a.Stdout
	flush := func() {}
	if f, ok := out.(*os.File); !ok || !isatty.IsTerminal(f.Fd()) {
		interval := a.LogInterval
		if interval <= 0 {
			interval = 100 * time.Millisecond
		}
		bw := runtime.NewBufferedWriter(out, 64<<10, interval)
		defer bw.Close()
		out, flush = bw, func() { _ = bw.Flush() }
	}
	log := runtime.NewLogger(out, dep.Secrets())
	ctx, stop := a.signalContext()
	defer stop()
	h, err := runtime.NewHost(ctx, p.reg, dep, runtime.Options{Log: log, StateDir: p.stateDir()})
	if err != nil {
		return err
	}
	defer func() {
		if err := h.Close(context.Background()); err != nil {
			log.Error().Err(err).Msg("closing shared resources")
		}
	}()
	addr := dep.Listen
	if listen != "" {
		addr = listen
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	url := "http://" + ln.Addr().String()
	for _, t := range p.reg.Tasks() {
		if t.HTTP != nil {
			log.Info().Str("task", t.Name).Strs("methods", t.Methods()).Str("url", url+"/"+t.Name).Msg("mounted")
		}
	}
	log.Info().Str("deployment", dep.Name).Bool("production", dep.Production).Str("url", url).
		Msg("serving " + dep.Name + " at " + url + " (health: /healthz, /readyz; metrics: /metrics)")
	flush()
	if err := h.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

func (a App) test(args []string) (err error) {
	var depName, params string
	p, pos, err := a.command("test", args, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&depName, "deployment", "testing", "deployment whose variables the run gets")
		fs.StringVar(&params, "params", "", "run parameters: JSON, or @file")
	})
	if err != nil {
		return err
	}
	only, err := p.reg.Only(pos[0])
	if err != nil {
		return usageErr("%v", err)
	}
	if t, _ := only.Lookup(pos[0]); t.Run == nil {
		return usageErr("task %q has no on-demand entry point; it is served over HTTP (%s /%s)", t.Name, strings.Join(t.Methods(), ", "), t.Name)
	}
	raw := []byte(params)
	if strings.HasPrefix(params, "@") {
		if raw, err = os.ReadFile(strings.TrimPrefix(params, "@")); err != nil {
			return usageErr("--params: %v", err)
		}
	}
	if len(raw) > 0 && !json.Valid(raw) {
		return usageErr("--params is not valid JSON")
	}
	dep, err := p.load(depName, a.Environ, only)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	log := runtime.NewLogger(a.Stderr, dep.Secrets())
	ctx, stop := a.signalContext()
	defer stop()
	h, err := runtime.NewHost(ctx, only, dep, runtime.Options{Log: log, StateDir: p.stateDir()})
	if err != nil {
		return err
	}
	defer func() { _ = h.Close(context.Background()) }()
	term := runtime.Console(a.Stdout)
	rec, err := h.Run(ctx, pos[0], raw, term)
	if err != nil && rec == nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "run %s of %s %s in %s (runtime logs %s --run %s)\n", rec.ID, rec.Task, rec.Outcome, rec.Duration.Round(1000), rec.Task, rec.ID)
	if err != nil {
		return err
	}
	if rec.Outcome != runtime.Succeeded {
		fmt.Fprintf(a.Stderr, "runtime test: %s failed: %s\n", rec.Task, rec.Error)
		return errRunFailed
	}
	return nil
}

func (a App) logs(args []string) error {
	var id string
	p, pos, err := a.command("logs", args, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&id, "run", "", "run id (default: the latest run)")
	})
	if err != nil {
		return err
	}
	if _, err := p.reg.Lookup(pos[0]); err != nil {
		return usageErr("%v", err)
	}
	rec, err := runtime.LoadRecord(p.stateDir(), pos[0], id)
	if err != nil {
		return err
	}
	rec.Print(a.Stdout)
	return nil
}

func (a App) env(args []string) error {
	p, pos, err := a.command("env", args, 1, nil)
	if err != nil {
		return err
	}
	dep, err := p.load(pos[0], a.Environ, p.reg)
	if err != nil {
		return err
	}
	users := map[string][]string{}
	for _, t := range p.reg.Tasks() {
		for _, v := range t.Vars {
			users[v.Name] = append(users[v.Name], t.Name)
		}
	}
	declared := map[string]runtime.Var{}
	for _, v := range p.reg.Vars() {
		declared[v.Name] = v
	}
	names := map[string]bool{}
	for _, v := range dep.Vars() {
		names[v.Name] = true
	}
	for n := range declared {
		names[n] = true
	}
	fmt.Fprintf(a.Stdout, "deployment %s (production: %t, listen: %s)\n", dep.Name, dep.Production, dep.Listen)
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE\tSOURCE\tUSED BY")
	for _, n := range slices.Sorted(maps.Keys(names)) {
		v := dep.Var(n)
		source := v.Source
		if v.Value == "" {
			source = "unset"
			if d, ok := declared[n]; ok && !d.Optional {
				source = "MISSING (required)"
			}
		}
		used := strings.Join(users[n], ",")
		if used == "" {
			used = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, v.Display(), source, used)
	}
	fmt.Fprintf(tw, "\nprecedence: process environment > %s > %s\n",
		filepath.Join("deployments", dep.Name+".local.env"), filepath.Join("deployments", dep.Name+".yaml"))
	return tw.Flush()
}

func (a App) tasks(args []string) error {
	p, _, err := a.command("tasks", args, 0, nil)
	if err != nil {
		return err
	}
	reg := p.reg
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSERVES\tVARIABLES\tDESCRIPTION")
	for _, t := range reg.Tasks() {
		var serves []string
		if t.HTTP != nil {
			serves = append(serves, strings.Join(t.Methods(), ",")+" /"+t.Name)
		}
		if t.Run != nil {
			serves = append(serves, "on demand")
		}
		var vars []string
		for _, v := range t.Vars {
			n := v.Name
			if v.Optional {
				n += "?"
			}
			vars = append(vars, n)
		}
		vs := strings.Join(vars, ",")
		if vs == "" {
			vs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, strings.Join(serves, "; "), vs, t.Description)
	}
	fmt.Fprintln(tw, "\n(VAR? = optional)")
	return tw.Flush()
}
