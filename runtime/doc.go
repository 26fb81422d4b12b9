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
// process environment. NewHost checks that every required variable is set,
// then runs each task's Init, which parses configuration and opens what
// tasks share (Shared: opened once per process, closed in reverse order by
// Close; Setup.Check adds a readiness check, Setup.Counter a metric).
//
// The Host serves the HTTP tasks (Handler, Serve with a graceful shutdown)
// next to /healthz, /readyz and /metrics, and runs on-demand tasks (Run),
// capturing their logs into a Record saved under the state folder.
// Handlers return errors: an *Error (Errorf, BadRequest, Unauthorized,
// Unavailable) keeps its status and message; any other error or a panic
// becomes an opaque 500 carrying the request id, with the chain and stack
// in the log only. Every log line, error body and run record has the
// deployment's masked values replaced by a mask.
//
// Package runtimetest serves and runs tasks in tests, through the same Host.
package runtime
