// Package runtime serves and runs tasks.
//
// A task is one Go package under tasks/<name>/ that exports
// `func Task() runtime.Task`. Its name is the folder name, the URL path
// (/<name>) and the CLI argument (`runtime test <name>`). A task may have
// HTTP handlers (one per method; every HTTP task states its Access: Public,
// or an authenticator that runs before each handler), an on-demand Run
// function, or both. It declares the deployment variables it reads (Vars),
// a Timeout, and an optional Init that runs once before anything is served.
//
// tasks/all.go lists every task (`runtime new` writes it). main passes that
// list to NewRegistry, which checks every task and reports every problem at
// once; there is no global registry.
//
// A deployment (package deployment) holds settings and variables, layered
// from deployments/<name>.yaml, the git-ignored <name>.local.env and the
// process environment. NewCore checks that every required variable is set,
// then runs each task's Init, which parses configuration and opens what
// tasks share (Shared: opened once per process, closed in reverse order by
// Close; Setup.Check adds a readiness check, Setup.Counter a metric).
//
// The Core is the runtime without any HTTP: the tasks set up, the shared
// resources, the secrets and the Executor, the one path by which a task's
// Run runs whatever triggered it (RunRequest: the CLI, a schedule, a queue,
// the dashboard). The Executor bounds the run, turns a panic into a failed
// run, captures and caps its logs and keeps a Record in a RunStore: an
// interface this package declares (files under the state folder here,
// MongoDB in internal/mongostore, chosen by main through
// Options.OpenRuns), retried from a bounded buffer when the store fails.
//
// The Host (NewHost, or NewHTTPHost over a Core) is the HTTP side: it
// serves the HTTP tasks (Handler, Serve with a graceful shutdown) next to
// /healthz, /readyz and /metrics (one Prometheus registry per Core, which
// Setup.Registerer and Core.Registerer hand out). Its edge (edge.go)
// bounds what a client can hold: a body read deadline (408), no waiting for
// a body no handler reads, lingering close so that a 413 is read, net/http's
// own answers as JSON; cors.go answers browsers from cors_origins.
// Handlers return errors: an *Error (Errorf, BadRequest, Unauthorized,
// Unavailable) keeps its status and message; any other error or a panic
// becomes an opaque 500 carrying the request id, with the chain and stack
// in the log only. Every log line, error body and run record has the
// deployment's masked values replaced by a mask.
//
// Package runtimetest serves and runs tasks in tests, through the same Host.
package runtime
