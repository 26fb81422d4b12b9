package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// MaxJobParams caps a job's params: 5 MB of JSON, like CloudCode's.
const MaxJobParams = 5 << 20

// Job asks for a later run of a task's Run through the deployment's queue
// (Env.Enqueue, `runtime enqueue`). The run happens at least once, on any
// instance of the deployment.
type Job struct {
	// Task names a registered task that has a Run.
	Task string
	// Params are the run's parameters: JSON, at most MaxJobParams; empty:
	// none.
	Params json.RawMessage
	// At is when to run it (zero: now); After is a delay from now instead.
	// At most one of them is set.
	At    time.Time
	After time.Duration
	// Queue names a serial queue (^[a-z0-9_-]{1,64}$): no two of its jobs
	// run at once, on any instance, and they start in enqueue order. Empty:
	// no queue; such jobs run in parallel.
	Queue string
	// Key is an optional idempotency key: while a job of this task with
	// this key is pending or running, enqueueing it again returns that
	// job's id and stores nothing. At most 200 bytes.
	Key string
	// Attempts is how many times a run that returns an error is tried
	// (0: once, like CloudCode). Retries back off exponentially, with
	// jitter; then the job is kept as dead with its last error.
	Attempts int
}

// Enqueuer stores jobs; package queue implements it on the deployment's
// store.
type Enqueuer interface {
	Enqueue(ctx context.Context, j Job) (id string, err error)
}

// ErrNoQueue is what Env.Enqueue returns in a process that has no queue.
var ErrNoQueue = errors.New("this process has no job queue (jobs are enqueued by a deployment's tasks and by `runtime enqueue`)")

// Enqueue stores a job for a later run of a task and returns its id. A
// task calls it from an HTTP handler, a Run or upload's Customise; a job
// enqueued for now starts at once when this instance has a free worker.
// Bad input (an unknown task, a task without Run, params that are not JSON
// or over MaxJobParams, both At and After, a bad queue name) is an error
// and nothing is stored.
func (e *Env) Enqueue(ctx context.Context, j Job) (string, error) {
	if e.enqueuer == nil {
		return "", ErrNoQueue
	}
	return e.enqueuer.Enqueue(ctx, j)
}

// SetEnqueuer makes e what Env.Enqueue uses in every request and run of
// the core from now on (cmd/runtime passes the deployment's queue). Call
// it before serving or running anything.
func (c *Core) SetEnqueuer(e Enqueuer) { c.exec.enqueuer = e }
