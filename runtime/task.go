package runtime

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// Task is one folder under tasks/. Each task package exports
// `func Task() runtime.Task`; tasks/all.go lists them.
type Task struct {
	// Name is the folder name, the URL path and the CLI argument.
	Name        string
	Description string

	// HTTP maps a method (GET, POST, ...) to its handler; nil: not served.
	HTTP map[string]HTTPFunc
	// Access says who may call the HTTP handlers. Required when HTTP is set.
	Access Access

	// Run is the on-demand entry point (`runtime test <task>`); nil: HTTP only.
	Run RunFunc
	// Schedule, if set, runs Run on a cron schedule in every deployment
	// (a deployment's schedules: section may change or disable it).
	Schedule *Schedule

	// Vars are the deployment variables the task reads. Required ones must be
	// set before the deployment is served or the task is run.
	Vars []Var

	// Timeout bounds each request and each run (DefaultTimeout when zero).
	Timeout time.Duration
	// NoDeadline serves the HTTP requests without a deadline in their
	// context, for handlers that never wait on anything (jwks answers bytes
	// made at start): making the deadline would be a good part of their
	// work. Runs keep Timeout.
	NoDeadline bool

	// Init, if set, runs once when a deployment starts (before anything is
	// served) and before an on-demand run. It parses configuration, opens
	// shared clients and may refuse the deployment with an error.
	Init func(ctx context.Context, s *Setup) error

	// Describe, if set, lists what the task makes of the deployment's
	// structured sections (upload: its write rules), one line per entry,
	// for `runtime env`; or returns the error that would stop the
	// deployment. It reads the deployment only: it opens nothing.
	Describe func(dep *deployment.Deployment) ([]string, error)
}

// DefaultTimeout bounds requests and runs of tasks that set no Timeout.
const DefaultTimeout = 30 * time.Second

// Var declares a deployment variable that a task reads.
type Var struct {
	Name     string
	Help     string // one line: what it holds, what format
	Optional bool   // required unless set
	Secret   bool   // masked in every listing and log
	// Default is what the task does when the variable is unset, as
	// `runtime env` shows it: a value ("5m"), or in parentheses a
	// description ("(an embedded development store)"). The task applies
	// it; the runtime only shows it.
	Default string
}

// HTTPFunc handles one request. c gives the request and response; env gives
// the deployment, the request id and a logger tagged with both.
type HTTPFunc func(c echo.Context, env *Env) error

// RunFunc is an on-demand entry point. Its logs go to env.Log, which the
// runtime captures into the run's record.
type RunFunc func(ctx context.Context, env *Env) error

// Env is what a task receives for one request or one run.
type Env struct {
	ID         string // request or run id
	Task       string
	Deployment *deployment.Deployment
	Log        zerolog.Logger
	// Params are the run's parameters (`--params`), JSON; empty for requests.
	Params json.RawMessage
	// Output takes a run's result, apart from its logs: lines for the caller
	// to pipe or paste (`runtime test` writes them to standard output, its
	// logs to standard error). Not kept in the run's record unless the
	// caller gave no output, then each line is logged. Nil for requests.
	Output io.Writer
	// Subject is whatever the task's authenticator returned: for example the
	// verified user id of a token. Nil for public tasks and runs.
	Subject any

	enqueuer Enqueuer // see Enqueue
}

// Var returns a deployment variable.
func (e *Env) Var(name string) string { return e.Deployment.Get(name) }

// Access is a task's policy for HTTP callers: Public, or an authenticator.
type Access struct {
	public bool
	auth   AuthFunc
}

// AuthFunc accepts a request (returning what it learnt of the caller, such
// as a user id) or refuses it with an error, usually Unauthorized.
type AuthFunc func(c echo.Context, env *Env) (subject any, err error)

// Public lets anyone call the task. Say so explicitly: a task with handlers
// and no Access is refused at registration.
var Public = Access{public: true}

// Authenticated runs fn before every handler of the task.
func Authenticated(fn AuthFunc) Access { return Access{auth: fn} }

func (a Access) set() bool { return a.public || a.auth != nil }
