package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// Core is the tasks of one registry set up in one deployment, in one
// process: their variables checked, their Init run, the shared resources
// they opened, the deployment's secrets, and the Executor that runs them.
// It serves nothing: the HTTP host (NewHost, NewHTTPHost) is one user of
// it, and an on-demand run (`runtime test`) uses it alone.
type Core struct {
	reg      *Registry
	dep      *deployment.Deployment
	log      zerolog.Logger
	stateDir string
	res      *resources
	metrics  *metrics
	secrets  [][]byte  // the forms of the deployment's secrets, for redaction
	access   io.Writer // Options.AccessLog
	exec     *Executor
}

// Options configure a Core (and a Host).
type Options struct {
	// Log receives the runtime's and the tasks' logs (see NewLogger).
	Log zerolog.Logger
	// AccessLog, if set, receives the access log's JSON lines (one per
	// request) instead of Log, without Log's redactor: those lines hold
	// only values the runtime chose or bounded (see Host.accessLog), never
	// a secret. Nil: they go to Log.
	AccessLog io.Writer
	// StateDir is the git-ignored folder for local state (run records,
	// development stores).
	StateDir string
	// OpenRuns opens the run store. Nil: files under StateDir (none when
	// StateDir is empty too: records are then only returned).
	OpenRuns RunStoreOpener
	// Instance names this process in run records (default: host:pid).
	Instance string
}

// NewCore checks that every variable the tasks require is set, then runs
// each task's Init in name order, then opens the run store. Any failure
// closes what was opened and returns one error naming every problem.
func NewCore(ctx context.Context, reg *Registry, dep *deployment.Deployment, opts Options) (*Core, error) {
	m := newMetrics(dep.Name)
	c := &Core{reg: reg, dep: dep, log: opts.Log, stateDir: opts.StateDir, res: newResources(m), metrics: m,
		secrets: secretForms(dep.Secrets()), access: opts.AccessLog}
	// Every problem in one message: the missing variables, a production
	// deployment's placeholders, then what each task's Init finds (tasks
	// with a missing variable are not started).
	var pre []error
	if err := c.checkVars(); err != nil {
		pre = append(pre, err)
	}
	if p := dep.Placeholders(reg.varNames(), reg.serves()); dep.Production && len(p) > 0 {
		pre = append(pre, fmt.Errorf("production deployment %q still has placeholder values (YOUR-..., example domains): %s; set the real ones",
			dep.Name, strings.Join(p, ", ")))
	}
	// Tasks that share a resource fail alike: say each problem once, with
	// every task it stops.
	var (
		errs    []error
		byMsg   = map[string]int{}
		tasksOf [][]string
	)
	for _, t := range reg.tasks {
		if t.Init == nil || c.lacksVars(t) {
			continue
		}
		s := c.setup(t.Name, c.log.With().Str("task", t.Name).Logger())
		err := safeInit(ctx, t, s)
		if err == nil {
			continue
		}
		parts := []error{err} // an errors.Join: each problem on its own
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			parts = j.Unwrap()
		}
		for _, err := range parts {
			if i, ok := byMsg[err.Error()]; ok {
				tasksOf[i] = append(tasksOf[i], t.Name)
				continue
			}
			byMsg[err.Error()] = len(errs)
			errs = append(errs, err)
			tasksOf = append(tasksOf, []string{t.Name})
		}
	}
	for i, err := range errs {
		errs[i] = fmt.Errorf("task %s: %w", strings.Join(tasksOf[i], ", "), err)
	}
	if err := errors.Join(append(pre, errs...)...); err != nil {
		cerr := c.res.close(ctx)
		if len(pre) == 1 && len(errs) == 0 {
			return nil, errors.Join(pre[0], cerr) // says which deployment
		}
		return nil, errors.Join(fmt.Errorf("deployment %q cannot start:\n%w", dep.Name, err), cerr)
	}
	s := c.setup("", c.log.With().Str("component", "runs").Logger())
	store, err := openRunStore(ctx, s, opts.OpenRuns)
	if errors.Is(err, ErrNoRunStore) {
		s.Log.Warn().Err(err).Msg("run records are not kept")
		store, err = nil, nil
	}
	if err != nil {
		cerr := c.res.close(ctx)
		return nil, errors.Join(fmt.Errorf("deployment %q: opening the run store: %w", dep.Name, err), cerr)
	}
	instance := opts.Instance
	if instance == "" {
		instance = instanceName()
	}
	dropped := s.Counter(DroppedRecordsMetric, "Run records dropped because the run store could not take them, by reason.", "reason")
	c.exec = newExecutor(reg, dep, s.Log, store, instance, dropped)
	return c, nil
}

// Setup returns a Setup over the Core's shared resources, for the
// runtime's own components that share the tasks' clients (the dashboard's
// view of the dead letters, the stores): name tags its log.
func (c *Core) Setup(name string) *Setup {
	return c.setup(name, c.log.With().Str("component", name).Logger())
}

func (c *Core) setup(task string, log zerolog.Logger) *Setup {
	return &Setup{Deployment: c.dep, Log: log, StateDir: c.stateDir, Task: task, res: c.res}
}

func openRunStore(ctx context.Context, s *Setup, open RunStoreOpener) (RunStore, error) {
	if open != nil {
		return open(ctx, s)
	}
	if s.StateDir == "" {
		return nil, nil
	}
	return NewFileRunStore(s.StateDir, s.Deployment.Name), nil
}

// OpenRunStore opens a deployment's run store without setting up its tasks
// (for `runtime runs` and `runtime logs`). close releases what it opened.
func OpenRunStore(ctx context.Context, dep *deployment.Deployment, opts Options) (store RunStore, close func(context.Context) error, err error) {
	res := newResources(newMetrics(dep.Name))
	s := &Setup{Deployment: dep, Log: opts.Log, StateDir: opts.StateDir, res: res}
	store, err = openRunStore(ctx, s, opts.OpenRuns)
	if err == nil && store == nil {
		err = errors.New("no run store: no state folder and no opener")
	}
	if err != nil {
		return nil, nil, errors.Join(err, res.close(ctx))
	}
	return store, res.close, nil
}

// NewSetup returns a Setup over shared resources of its own, for a command
// that opens a deployment's stores without setting up its tasks (`runtime
// schedules`): name tags its log; close releases what was opened through
// it.
func NewSetup(dep *deployment.Deployment, opts Options, name string) (s *Setup, close func(context.Context) error) {
	res := newResources(newMetrics(dep.Name))
	return &Setup{Deployment: dep, Log: opts.Log.With().Str("component", name).Logger(), StateDir: opts.StateDir, res: res}, res.close
}

func safeInit(ctx context.Context, t Task, s *Setup) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in Init: %v", p)
		}
	}()
	return t.Init(ctx, s)
}

// lacksVars reports whether a required variable of t is unset.
func (c *Core) lacksVars(t Task) bool {
	for _, v := range t.Vars {
		if _, ok := c.dep.Lookup(v.Name); !ok && !v.Optional {
			return true
		}
	}
	return false
}

func (c *Core) checkVars() error {
	// One line per missing variable, naming every task that needs it.
	var order []string
	users, help := map[string][]string{}, map[string]string{}
	for _, t := range c.reg.tasks {
		for _, v := range t.Vars {
			if _, ok := c.dep.Lookup(v.Name); ok || v.Optional {
				continue
			}
			if _, seen := users[v.Name]; !seen {
				order = append(order, v.Name)
			}
			users[v.Name] = append(users[v.Name], t.Name)
			if help[v.Name] == "" {
				help[v.Name] = v.Help
			}
		}
	}
	if len(order) == 0 {
		return nil
	}
	missing := make([]string, len(order))
	for i, n := range order {
		missing[i] = fmt.Sprintf("  %s (needed by %s)", n, strings.Join(users[n], ", "))
		if help[n] != "" {
			missing[i] += ": " + help[n]
		}
	}
	return fmt.Errorf("deployment %q is missing %d variable(s):\n%s\nset each in deployments/%s.yaml (vars), in the git-ignored deployments/%s.local.env, or in the process environment",
		c.dep.Name, len(missing), strings.Join(missing, "\n"), c.dep.Name, c.dep.Name)
}

// Registry returns the tasks.
func (c *Core) Registry() *Registry { return c.reg }

// Deployment returns the deployment.
func (c *Core) Deployment() *deployment.Deployment { return c.dep }

// Executor returns the one path by which the tasks' Run functions run.
func (c *Core) Executor() *Executor { return c.exec }

// Log is the runtime's logger.
func (c *Core) Log() zerolog.Logger { return c.log }

// Run runs a task's Run once from the CLI (Trigger "cli"), its log lines
// also going to terminal if not nil: Executor().Run for the common case.
func (c *Core) Run(ctx context.Context, name string, params json.RawMessage, terminal io.Writer) (*Record, error) {
	return c.exec.Run(ctx, RunRequest{Task: name, Params: params, Trigger: TriggerCLI, Live: terminal})
}

// FlushTimeout bounds how long Close waits for an unreachable run store to
// take the records it still holds.
const FlushTimeout = 5 * time.Second

// Close writes the run records still waiting for the store (within
// FlushTimeout or ctx's deadline), then closes the shared resources that
// tasks opened, in reverse order.
func (c *Core) Close(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, FlushTimeout)
	c.exec.Close(fctx)
	cancel()
	return c.res.close(ctx)
}
