package schedule

import (
	"context"
	"errors"
	"time"

	"github.com/taskrun/taskrun/runtime"
)

// Store keeps each schedule's shared state for every instance of a
// deployment: a record per schedule (when it became known, the latest fire
// time claimed, its last run) and a record per fire time claimed (who runs
// it, its lease, how it ended). Every time is passed in by the caller (the
// scheduler's clock), never read from the server.
//
// A fire time is claimed by inserting its record under a unique id, the
// one operation that is atomic on every server this runs on: on the
// embedded development store (FerretDB 1.x) a conditional update reads
// and then writes, so two instances can both see the condition hold.
// Before the insert, a conditional update advances the schedule's latest
// fire time; on MongoDB it alone keeps the others from trying.
type Store interface {
	// Register makes sure the schedule's record exists (a new one is known
	// since now and has no fire time yet) and returns it.
	Register(ctx context.Context, name string, now time.Time) (State, error)
	// Claim claims one fire time for this instance: it succeeds for one
	// instance only, and never for a fire time at or before the latest one
	// claimed. ErrNotRegistered when the schedule has no record.
	Claim(ctx context.Context, c Claim) (ClaimResult, error)
	// Renew extends a running fire's lease to f.Until; ErrLost when it is
	// no longer running (another instance reaped it).
	Renew(ctx context.Context, f Fire) error
	// Finish records how a claimed fire's run ended (f.Outcome,
	// f.Finished).
	Finish(ctx context.Context, f Fire) error
	// Reap marks a running fire whose lease ended before now as abandoned
	// (its instance stopped during the run) and reports whether this call
	// did.
	Reap(ctx context.Context, f Fire, now time.Time) (bool, error)
	// Prune removes the finished and skipped fires of a schedule whose fire
	// time is before before, but its last run, and says how many.
	Prune(ctx context.Context, name string, before time.Time) (int, error)
	// States returns every schedule's record with its running fires,
	// sorted by name.
	States(ctx context.Context) ([]State, error)
	// Fires returns a schedule's fires from since on, oldest first, at
	// most limit.
	Fires(ctx context.Context, name string, since time.Time, limit int) ([]Fire, error)
	// SetPaused pauses a schedule (its fire times are skipped, on every
	// instance, until it is resumed) or resumes it. ErrNotRegistered when
	// the schedule has no record.
	SetPaused(ctx context.Context, name string, paused bool) error
}

// Store errors.
var (
	ErrNotRegistered = errors.New("the schedule has no record in the store")
	ErrLost          = errors.New("the fire is no longer running: its lease ended and it was reaped")
)

// State is the shared record of one schedule.
type State struct {
	Name string
	// KnownSince is when an instance first registered the schedule: catchup
	// never runs fire times from before it.
	KnownSince time.Time
	// LastFire is the latest fire time claimed, run or skipped (zero:
	// none). No fire time at or before it can be claimed.
	LastFire time.Time
	// LastRun is the latest finished (or abandoned) fire; zero RunID:
	// none yet.
	LastRun Fire
	// Running are the fires claimed and not finished, oldest first.
	Running []Fire
	// Paused: its fire times are skipped until it is resumed (the
	// dashboard's Pause button).
	Paused bool
}

// States of a fire.
const (
	FireRunning   = "running"   // claimed, its run not finished
	FireDone      = "done"      // its run finished (Outcome says how)
	FireSkipped   = "skipped"   // overlap: skip, while Holder ran
	FireAbandoned = "abandoned" // its instance stopped during the run
)

// Fire is one claimed fire time of a schedule.
type Fire struct {
	Schedule string
	RunID    string
	Time     time.Time // the fire time
	By       string    // instance (host:pid)
	Claimed  time.Time // when it was claimed
	Until    time.Time // its lease while running: renewed as it runs
	State    string    // one of the Fire* states
	Holder   string    // the run that held the schedule, for a skipped fire
	Outcome  string    // the run's outcome, once done
	Finished time.Time
}

// Claim asks for one fire time.
type Claim struct {
	// Fire has Schedule, RunID, Time, By, Claimed (now) and Until (the
	// lease).
	Fire Fire
	// Exclusive (overlap: skip) runs the fire time only while no run of
	// the schedule is running; otherwise it is recorded as skipped.
	Exclusive bool
}

// ClaimOutcome is what became of a claim.
type ClaimOutcome int

// Outcomes of a claim.
const (
	// Claimed: this instance runs the fire time.
	Claimed ClaimOutcome = iota + 1
	// Held: a run of the schedule was running (overlap: skip); this
	// instance recorded the fire time as skipped.
	Held
	// Taken: another instance claimed or skipped this fire time or a later
	// one; nothing to do.
	Taken
	// Paused: the schedule is paused; this instance took the fire time
	// (no other instance runs it) and skipped it.
	Paused
)

// ClaimResult says what became of a claim.
type ClaimResult struct {
	Outcome ClaimOutcome
	// Prev is the latest fire time claimed before this one (zero: none),
	// when Claimed or Held: the fire times between were missed by every
	// instance.
	Prev time.Time
	// Holder is the run that was running, when Held.
	Holder string
	// Expired are running fires whose lease had ended at the claim, when
	// Claimed or Held: their instance stopped without finishing them.
	Expired []Fire
}

// RunID is the run id of a schedule's fire time: the same on every
// instance, so that the run store refuses a second record of one fire
// time.
func RunID(name string, fire time.Time) string {
	return name + "." + fire.UTC().Format("20060102T150405Z")
}

// Opener opens a deployment's Store through a runtime.Setup, so that it
// shares the process's database client. cmd/runtime passes the MongoDB
// one (internal/mongostore.OpenSchedules).
type Opener func(ctx context.Context, s *runtime.Setup) (Store, error)
