package queue

import (
	"context"
	"errors"
	"time"
)

// Store keeps the jobs of one deployment where every instance sees them.
// internal/mongostore implements it on the deployment's MongoDB (also the
// embedded development store). Every change that two instances may make at
// once must be decided by one atomic operation of the store, so that a job
// is claimed by one worker per attempt and one job per named queue runs at
// a time.
type Store interface {
	// Enqueue stores a pending job (assigning j.Seq when it has a queue).
	// When j.Key is set and a pending or running job of j.Task has the
	// same key, nothing is stored and that job is returned with existing
	// true.
	Enqueue(ctx context.Context, j *Job) (got *Job, existing bool, err error)

	// Claim takes up to max jobs that are due (pending, their turn in
	// their queue, RunAt passed) or whose lease expired, for worker, each
	// with a lease of lease(task) from now: State Running, Attempt + 1
	// (Lost + 1 for an expired lease), Started now.
	Claim(ctx context.Context, worker string, max int, now time.Time, lease func(task string) time.Duration) ([]*Job, error)

	// ClaimJob claims one job as Claim does, if it is due and free: the
	// fast path for a job enqueued in this process. nil: it is not.
	ClaimJob(ctx context.Context, j *Job, worker string, now time.Time, lease time.Duration) (*Job, error)

	// Renew extends the lease of a job that worker holds (j as Claim
	// returned it). ErrLost: the lease is not worker's any more.
	Renew(ctx context.Context, j *Job, until time.Time) error

	// Finish records the end of an attempt of a job worker holds (j as
	// Claim returned it, with State, RunAt, Failures, LastError and
	// LastRun set by the caller): a finished state, or Pending for a retry
	// at RunAt (or a lease given back, due at once). A finished job of a
	// named queue lets the queue's next job start: next, for the caller to
	// claim. ErrLost: the lease is not worker's any more, and nothing is
	// written.
	Finish(ctx context.Context, j *Job) (next *Job, err error)

	// CancelRequested reports whether someone asked to cancel attempt
	// j.Attempt of a running job.
	CancelRequested(ctx context.Context, j *Job) (bool, error)

	// Get returns a job. ErrNotFound when there is none.
	Get(ctx context.Context, id string) (*Job, error)
	// List returns the jobs that match f, newest first, at most f.Limit.
	List(ctx context.Context, f Filter) ([]*Job, error)
	// Cancel cancels a pending job at once (it is kept as cancelled), or
	// asks the worker of a running one to stop it (requested true). A
	// finished job is an InvalidError.
	Cancel(ctx context.Context, id string, now time.Time) (j *Job, requested bool, err error)
	// Retry makes a dead or cancelled job pending again with its attempts
	// renewed (at the end of its queue), or a pending one due now. A
	// running or succeeded job is an InvalidError.
	Retry(ctx context.Context, id string, now time.Time) (*Job, error)

	// Sweep does what keeps the store healthy, any instance at any time:
	// it forgets finished jobs older than retention and repairs what a
	// process that died between two writes left (a named queue whose next
	// job was not let start).
	Sweep(ctx context.Context, now time.Time, retention time.Duration) error
	// Repair lets a named queue whose next job was not let start (a
	// process died between finishing a job and advancing its queue) move
	// on; cheap when nothing is stuck, and part of Sweep.
	Repair(ctx context.Context) error
	// Counts returns the pending and running jobs by task and state, and
	// how many are due and not started.
	Counts(ctx context.Context, now time.Time) (Counts, error)
}

// Filter selects jobs in a listing. Zero fields select everything.
type Filter struct {
	State State
	Queue string
	Task  string
	Limit int // 0: DefaultListLimit
}

// DefaultListLimit bounds a listing that asks for no limit.
const DefaultListLimit = 100

// Counts is a snapshot of the unfinished jobs, for metrics.
type Counts struct {
	ByTask map[string]map[State]int // pending and running
	Due    int                      // pending, their turn, RunAt passed
}

// Errors of a Store.
var (
	ErrLost     = errors.New("the job's lease is not this worker's any more")
	ErrNotFound = errors.New("no such job")
)
