package queue

import (
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/taskrun/taskrun/runtime"
)

// State is where a job is in its life.
type State string

// States of a job. Pending covers a job waiting for its time, for its
// turn in a named queue and for its next retry.
const (
	Pending   State = "pending"
	Running   State = "running"
	Succeeded State = "succeeded"
	Dead      State = "dead"
	Cancelled State = "cancelled"
)

// States lists every state, in life order.
func States() []State { return []State{Pending, Running, Succeeded, Dead, Cancelled} }

// Finished reports whether a job in state s will not run again (unless
// retried by hand).
func (s State) Finished() bool { return s == Succeeded || s == Dead || s == Cancelled }

// ParseState checks a state name, listing the valid ones when it is not.
func ParseState(s string) (State, error) {
	for _, st := range States() {
		if string(st) == s {
			return st, nil
		}
	}
	names := make([]string, 0, 5)
	for _, st := range States() {
		names = append(names, string(st))
	}
	return "", Invalidf("unknown job state %q (valid: %s)", s, strings.Join(names, ", "))
}

// Job is one stored job.
type Job struct {
	ID     string
	Task   string
	Params json.RawMessage
	// Queue is the named serial queue ("" for none); Seq orders its jobs.
	Queue string
	Seq   int64
	// Key is the idempotency key as given ("" for none).
	Key   string
	State State
	// RunAt is when the job is due: its first run, or its next retry.
	RunAt time.Time
	// Attempt counts the attempts started (each one a run, numbered from 1).
	Attempt int
	// MaxAttempts is how many failed runs make it dead.
	MaxAttempts int
	// Failures counts the attempts whose run returned an error; Lost the
	// attempts whose worker died or stopped renewing its lease.
	Failures int
	Lost     int
	// LastError is the error of the last failed attempt.
	LastError string
	// LastRun is the run id of the last attempt (`runtime logs --run`).
	LastRun string
	// Created, Started (the current or last attempt) and Finished.
	Created  time.Time
	Started  time.Time
	Finished time.Time
	// Worker holds the lease of a running job (instance name) until
	// LeaseUntil.
	Worker     string
	LeaseUntil time.Time
	// Rev is the store's revision of the job, for its concurrency control.
	Rev int64
}

// Limits on what a job may ask for.
const (
	MaxKey      = 200
	MaxAttempts = 100
	// MaxDelay is how far ahead a job may be enqueued.
	MaxDelay = 366 * 24 * time.Hour
	// MaxLost is how many lost attempts (a worker that died or stopped
	// renewing) a job survives before it is dead: a task that kills its
	// process each time must not loop forever.
	MaxLost = 5
)

// QueueRE is what a queue name must match.
var QueueRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// InvalidError is bad input to Enqueue or to a listing: nothing is stored,
// and the CLI exits 2.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

// Invalidf returns an *InvalidError.
func Invalidf(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Validate checks a job request against the registry and returns the job
// to store, due at runAt.
func Validate(reg *runtime.Registry, r runtime.Job, now time.Time) (*Job, error) {
	t, err := reg.Lookup(r.Task)
	if err != nil {
		return nil, &InvalidError{msg: err.Error()}
	}
	if t.Run == nil {
		return nil, Invalidf("task %q has no Run, so it cannot be enqueued (it is served over HTTP only)", r.Task)
	}
	if len(r.Params) > runtime.MaxJobParams {
		return nil, Invalidf("params are %d bytes, over the limit of %d (5 MB)", len(r.Params), runtime.MaxJobParams)
	}
	if len(r.Params) > 0 && !json.Valid(r.Params) {
		return nil, Invalidf("params are not valid JSON")
	}
	if r.Queue != "" && !QueueRE.MatchString(r.Queue) {
		return nil, Invalidf("invalid queue name %q: want 1 to 64 of a-z, 0-9, _ and -", clip(r.Queue))
	}
	if len(r.Key) > MaxKey || !utf8.ValidString(r.Key) {
		return nil, Invalidf("invalid key: want at most %d bytes of UTF-8", MaxKey)
	}
	if r.Attempts < 0 || r.Attempts > MaxAttempts {
		return nil, Invalidf("attempts must be between 1 and %d (0: 1), not %d", MaxAttempts, r.Attempts)
	}
	runAt := now
	switch {
	case !r.At.IsZero() && r.After != 0:
		return nil, Invalidf("give a time (at) or a delay (after), not both")
	case r.After < 0:
		return nil, Invalidf("delay %s is negative", r.After)
	case r.After > MaxDelay:
		return nil, Invalidf("delay %s is over the limit of %s", r.After, MaxDelay)
	case r.After > 0:
		runAt = now.Add(r.After)
	case !r.At.IsZero():
		if r.At.After(now.Add(MaxDelay)) {
			return nil, Invalidf("time %s is more than %s ahead", r.At.Format(time.RFC3339), MaxDelay)
		}
		if r.At.After(now) {
			runAt = r.At // a past time means now
		}
	}
	attempts := r.Attempts
	if attempts == 0 {
		attempts = 1
	}
	var params json.RawMessage
	if len(r.Params) > 0 {
		params = append(json.RawMessage(nil), r.Params...)
	}
	return &Job{
		ID: NewID(now), Task: r.Task, Params: params, Queue: r.Queue, Key: r.Key,
		State: Pending, RunAt: runAt.UTC(), MaxAttempts: attempts, Created: now.UTC(),
	}, nil
}

func clip(s string) string {
	if len(s) > 70 {
		return s[:64] + "..."
	}
	return s
}

// NewID returns a job id: the enqueue time in milliseconds (base 36, so
// ids sort roughly by age) and 64 random bits.
func NewID(now time.Time) string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return strconv.FormatInt(now.UnixMilli(), 36) + hex.EncodeToString(b[:])
}

// Backoff is the delay before the retry that follows failure number n
// (from 1): exponential from BackoffBase, capped at BackoffMax, with full
// jitter in its upper half so that jobs that failed together do not retry
// together.
func Backoff(n int, base, max time.Duration) time.Duration {
	if n < 1 {
		n = 1
	}
	d := float64(base) * math.Pow(2, float64(n-1))
	if d > float64(max) || math.IsInf(d, 0) {
		d = float64(max)
	}
	return time.Duration(d/2 + rand.Float64()*d/2)
}

// Default backoff bounds.
const (
	BackoffBase = time.Second
	BackoffMax  = 10 * time.Minute
)
