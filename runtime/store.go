package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Trigger says what started a run.
type Trigger string

// Triggers of a run.
const (
	TriggerCLI       Trigger = "cli"       // `runtime test`
	TriggerSchedule  Trigger = "schedule"  // a schedule's fire time
	TriggerQueue     Trigger = "queue"     // a job on a queue
	TriggerDashboard Trigger = "dashboard" // the dashboard's Test button
)

// Triggers returns every trigger, sorted.
func Triggers() []Trigger {
	return []Trigger{TriggerCLI, TriggerDashboard, TriggerQueue, TriggerSchedule}
}

// ParseTrigger checks a trigger name; the error lists the valid ones.
func ParseTrigger(s string) (Trigger, error) {
	for _, t := range Triggers() {
		if string(t) == s {
			return t, nil
		}
	}
	names := make([]string, 0, 4)
	for _, t := range Triggers() {
		names = append(names, string(t))
	}
	return "", fmt.Errorf("unknown trigger %q (valid: %s)", s, strings.Join(names, ", "))
}

// Outcomes returns every outcome a record can have, in the order a run
// goes through them.
func Outcomes() []string { return []string{Running, Succeeded, Failed} }

// ParseOutcome checks an outcome name; the error lists the valid ones.
func ParseOutcome(s string) (string, error) {
	for _, o := range Outcomes() {
		if o == s {
			return o, nil
		}
	}
	return "", fmt.Errorf("unknown outcome %q (valid: %s)", s, strings.Join(Outcomes(), ", "))
}

// ErrDuplicateRun is returned by RunStore.SaveRun, and by Executor.Run
// before running anything, when a run with the record's id is already
// recorded.
var ErrDuplicateRun = errors.New("a run with this id is already recorded")

// ErrRunNotFound is returned by RunStore.GetRun and UpdateRun for an
// unknown id.
var ErrRunNotFound = errors.New("no such run")

// RunStore keeps the run records of one deployment, for every instance of
// it. The runtime declares it; implementations live elsewhere (files under
// .runtime/ in this package, MongoDB in internal/mongostore) and main
// chooses one, as database/sql/driver does. Every method is one atomic
// operation on one record, or a query.
type RunStore interface {
	// SaveRun inserts a record; ErrDuplicateRun when r.ID exists.
	SaveRun(ctx context.Context, r *Record) error
	// UpdateRun replaces the record r.ID (a running record's logs so far,
	// then its outcome); ErrRunNotFound when it does not exist.
	UpdateRun(ctx context.Context, r *Record) error
	// GetRun returns one record with its logs; ErrRunNotFound.
	GetRun(ctx context.Context, id string) (*Record, error)
	// ListRuns returns the matching records newest first (by start, then
	// id), without their logs (GetRun has them).
	ListRuns(ctx context.Context, f RunFilter) ([]*Record, error)
	// PruneRuns removes the records that started before before, then all
	// but the newest keepPerTask of each task, and says how many it removed.
	PruneRuns(ctx context.Context, before time.Time, keepPerTask int) (int, error)
}

// RunFilter selects runs. Zero fields match everything.
type RunFilter struct {
	Task    string
	Trigger Trigger
	Outcome string
	// Since keeps runs that started at or after it.
	Since time.Time
	// Limit caps the number of records (DefaultRunLimit when <= 0,
	// MaxRunLimit at most).
	Limit int
}

// Limits of RunFilter.Limit.
const (
	DefaultRunLimit = 100
	MaxRunLimit     = 10_000
)

// Max returns the filter's effective limit.
func (f RunFilter) Max() int {
	switch {
	case f.Limit <= 0:
		return DefaultRunLimit
	case f.Limit > MaxRunLimit:
		return MaxRunLimit
	}
	return f.Limit
}

// Match reports whether a record passes the filter (Limit aside), for
// stores that filter in Go.
func (f RunFilter) Match(r *Record) bool {
	return (f.Task == "" || r.Task == f.Task) &&
		(f.Trigger == "" || r.Trigger == f.Trigger) &&
		(f.Outcome == "" || r.Outcome == f.Outcome) &&
		(f.Since.IsZero() || !r.Start.Before(f.Since))
}

// ErrNoRunStore, wrapped with the reason, is what a RunStoreOpener returns
// for a deployment that has nowhere to keep runs (a production deployment
// without its database): its runs still run, unrecorded, with a warning.
var ErrNoRunStore = errors.New("no run store")

// RunStoreOpener opens the run store of a deployment. It gets a Setup (with
// the deployment, the state folder and the process-wide Shared resources,
// so that it can share the database client that tasks use). main passes
// one in Options.OpenRuns; nil means files under the state folder.
type RunStoreOpener func(ctx context.Context, s *Setup) (RunStore, error)
