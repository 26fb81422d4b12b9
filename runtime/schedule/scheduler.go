package schedule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
)

// Runner runs the fires this instance claims. The runtime's executor is
// one (see ExecutorRunner).
type Runner interface {
	// Run runs the schedule's task once for fire f (its run id is f.RunID)
	// and returns the run's outcome. An error means it did not run.
	Run(ctx context.Context, s *Schedule, f Fire) (outcome string, err error)
	// Abandoned records that f's run was abandoned: its instance stopped
	// during the run (its lease ended). A record the run left is marked
	// failed; a missing one is written.
	Abandoned(ctx context.Context, s *Schedule, f Fire) error
}

// Defaults of Options.
const (
	// DefaultLease is how long a claimed run is another instance's without
	// a renewal (renewed every third of it): an instance that dies during a
	// run holds its schedule (overlap: skip) at most this long.
	DefaultLease = 15 * time.Second
	// DefaultKeepFires is how long fires are kept in the store at least
	// (and three periods of the schedule, and the last run): the run
	// records keep the history; the development store scans a collection
	// for each query, so it is kept short.
	DefaultKeepFires = 2 * time.Minute
	// StopWait is how long Stop waits, after the grace period, for the
	// cancelled runs to return and record their end.
	StopWait = 5 * time.Second
)

// Options configure a Scheduler.
type Options struct {
	Store  Store
	Runner Runner
	// Clock is the scheduler's time (nil: the real clock). Tests pass a
	// fake one.
	Clock clockwork.Clock
	// Instance names this process in the store (host:pid).
	Instance string
	Log      zerolog.Logger
	// Metrics, if set, receives the scheduler's metrics.
	Metrics prometheus.Registerer
	// Lease: DefaultLease when zero.
	Lease time.Duration
	// KeepFires: DefaultKeepFires when zero.
	KeepFires time.Duration
}

// Scheduler runs a deployment's enabled schedules on this instance. Each
// instance of a deployment runs one; at each fire time they all try to
// claim it in the store and one runs it. There is no leader.
type Scheduler struct {
	o         Options
	schedules []*Schedule
	m         *metrics

	stop     chan struct{}
	stopOnce sync.Once
	loops    sync.WaitGroup
	runs     sync.WaitGroup
	active   atomic.Int64
	runCtx   context.Context
	cancel   context.CancelFunc
	started  atomic.Bool
	// reapMu makes this instance's reaps one at a time: on FerretDB two
	// concurrent conditional updates can both match.
	reapMu sync.Mutex
}

// New checks the options and registers the metrics; Start runs it.
func New(schedules []Schedule, o Options) (*Scheduler, error) {
	if o.Store == nil || o.Runner == nil {
		return nil, errors.New("schedule.New: a Store and a Runner are required")
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.KeepFires <= 0 {
		o.KeepFires = DefaultKeepFires
	}
	s := &Scheduler{o: o, stop: make(chan struct{})}
	for i := range schedules {
		if schedules[i].Enabled {
			s.schedules = append(s.schedules, &schedules[i])
		}
	}
	m, err := newMetrics(o.Metrics, s.active.Load)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.runCtx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Schedules are the enabled schedules it runs, sorted by name.
func (s *Scheduler) Schedules() []*Schedule { return s.schedules }

// Store is the store it claims fire times in.
func (s *Scheduler) Store() Store { return s.o.Store }

// Active is the number of runs this instance has claimed and not finished.
func (s *Scheduler) Active() int { return int(s.active.Load()) }

// Start starts one loop per schedule, and the sweeper that reaps the runs
// of instances that stopped during a run. It returns at once: the store is
// reached in the background, and retried while it is down.
func (s *Scheduler) Start() {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	start := s.o.Clock.Now()
	for _, sc := range s.schedules {
		s.loops.Add(1)
		go s.loop(sc, start)
	}
	if len(s.schedules) > 0 {
		s.loops.Add(1)
		go s.sweep()
	}
}

// Stop stops claiming fire times and waits for this instance's runs until
// ctx ends (the grace period); then it cancels them and waits StopWait
// more for them to record their end.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.loops.Wait()
	done := make(chan struct{})
	go func() {
		s.runs.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	n := s.Active()
	s.o.Log.Warn().Int("runs", n).Msg("schedules: the grace period ended; cancelling the scheduled runs still running")
	s.cancel()
	select {
	case <-done:
		return nil
	case <-time.After(StopWait):
		return fmt.Errorf("schedules: %d scheduled runs did not return within %s of being cancelled", s.Active(), StopWait)
	}
}

// stopping reports whether Stop was called.
func (s *Scheduler) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// sleep waits d on the scheduler's clock; false when stopped meanwhile.
func (s *Scheduler) sleep(d time.Duration) bool {
	if d <= 0 {
		return !s.stopping()
	}
	t := s.o.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return true
	case <-s.stop:
		return false
	}
}

// storeCtx bounds one store call.
func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// retry calls fn until it succeeds, backing off from 100 ms to 5 s, while
// not stopped and before deadline (zero: none). It reports whether fn
// succeeded.
func (s *Scheduler) retry(what string, sc *Schedule, deadline time.Time, fn func(ctx context.Context) error) bool {
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ctx, cancel := storeCtx()
		err := fn(ctx)
		cancel()
		if err == nil {
			return true
		}
		ev := s.o.Log.Warn()
		if attempt > 0 {
			ev = s.o.Log.Debug()
		}
		ev.Err(err).Str("schedule", sc.Name).Msg("schedules: " + what + " failed; retrying")
		if !deadline.IsZero() && !s.o.Clock.Now().Add(backoff).Before(deadline) {
			return false
		}
		if !s.sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Scheduler) register(sc *Schedule) (State, bool) {
	var st State
	ok := s.retry("registering", sc, time.Time{}, func(ctx context.Context) error {
		var err error
		st, err = s.o.Store.Register(ctx, sc.Name, s.o.Clock.Now())
		return err
	})
	return st, ok
}

// loop runs one schedule: it claims each fire time as it comes.
func (s *Scheduler) loop(sc *Schedule, start time.Time) {
	defer s.loops.Done()
	log := s.o.Log.With().Str("schedule", sc.Name).Logger()
	st, ok := s.register(sc)
	if !ok {
		return
	}
	s.reap(sc, st.Running)
	// Fire times before this instance started were missed, unless another
	// instance claims them. catchup: latest runs the latest one, if the
	// schedule was known then.
	// A fire time at start itself is due, not missed.
	beforeStart := start.Add(-time.Nanosecond)
	if sc.Catchup == CatchupLatest {
		notBefore := st.LastFire
		if since := st.KnownSince.Add(-time.Nanosecond); since.After(notBefore) {
			notBefore = since
		}
		if l := sc.Spec.Latest(beforeStart, notBefore); !l.IsZero() {
			log.Info().Time("fire_time", l).Msg("schedules: catching up the latest fire time missed (catchup: latest)")
			s.fire(sc, l, true)
		}
	}
	next := sc.Spec.Next(beforeStart)
	lastPrune := time.Time{}
	for !next.IsZero() {
		if !s.sleep(s.o.Clock.Until(next)) {
			return
		}
		now := s.o.Clock.Now()
		if now.Before(next) { // a timer that fired early: wait again
			continue
		}
		// Woken later than the following fire time too (a paused process,
		// an overloaded machine): the latest one is due, the ones between
		// were missed.
		if n2 := sc.Spec.Next(next); !n2.After(now) {
			next = sc.Spec.Latest(now, next)
		}
		if s.fire(sc, next, false) && now.Sub(lastPrune) >= time.Minute {
			lastPrune = now
			s.prune(sc, now)
		}
		next = sc.Spec.Next(next)
	}
	log.Warn().Msg("schedules: no fire time within five years; the schedule stops")
}

// fire claims fire time at and, when this instance gets it, runs it. It
// reports whether this instance claimed or skipped it.
func (s *Scheduler) fire(sc *Schedule, at time.Time, catchup bool) bool {
	log := s.o.Log.With().Str("schedule", sc.Name).Time("fire_time", at).Logger()
	var res ClaimResult
	var f Fire
	deadline := sc.Spec.Next(at) // give up once the next fire time is due
	ok := s.retry("claiming a fire time", sc, deadline, func(ctx context.Context) error {
		now := s.o.Clock.Now()
		f = Fire{Schedule: sc.Name, RunID: RunID(sc.Name, at), Time: at, By: s.o.Instance, Claimed: now, Until: now.Add(s.o.Lease)}
		var err error
		res, err = s.o.Store.Claim(ctx, Claim{Fire: f, Exclusive: sc.Overlap == OverlapSkip})
		if errors.Is(err, ErrNotRegistered) {
			if _, rerr := s.o.Store.Register(ctx, sc.Name, now); rerr != nil {
				return rerr
			}
			res, err = s.o.Store.Claim(ctx, Claim{Fire: f, Exclusive: sc.Overlap == OverlapSkip})
		}
		return err
	})
	if !ok {
		if !s.stopping() {
			log.Error().Msg("schedules: could not reach the store before the next fire time; this fire time may be missed")
		}
		return false
	}
	if res.Outcome == Taken {
		log.Debug().Msg("schedules: fire time taken by another instance")
		return false
	}
	if res.Outcome == Paused {
		log.Info().Msg("schedules: fire time skipped: the schedule is paused")
		s.m.skipped.WithLabelValues(sc.Name, "paused").Inc()
		return true
	}
	if !res.Prev.IsZero() {
		if n := sc.Spec.Between(res.Prev, at, 1_000_000); n > 0 {
			log.Warn().Int("skipped", n).Time("after", res.Prev).
				Msgf("schedules: %d fire times were missed: no instance was running (catchup: %s)", n, sc.Catchup)
			s.m.skipped.WithLabelValues(sc.Name, "missed").Add(float64(n))
		}
	}
	s.reap(sc, res.Expired)
	if res.Outcome == Held {
		log.Warn().Str("running", res.Holder).Msg("schedules: fire time skipped: the previous run is still running (overlap: skip)")
		s.m.skipped.WithLabelValues(sc.Name, "overlap").Inc()
		return true
	}
	late := s.o.Clock.Now().Sub(at) // the claim's round trips included: when the run starts
	s.m.lateness.WithLabelValues(sc.Name).Observe(late.Seconds())
	log.Info().Str("run_id", f.RunID).Str("task", sc.Task).Float64("late_s", late.Seconds()).Bool("catchup", catchup).Msg("schedules: fire")
	s.active.Add(1)
	s.runs.Add(1)
	go s.run(sc, f)
	return true
}

// run runs one claimed fire, renewing its lease while it runs.
func (s *Scheduler) run(sc *Schedule, f Fire) {
	defer s.runs.Done()
	defer s.active.Add(-1)
	log := s.o.Log.With().Str("schedule", sc.Name).Str("run_id", f.RunID).Logger()
	stopRenew := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := s.o.Clock.NewTicker(s.o.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stopRenew:
				return
			case <-t.Chan():
			}
			r := f
			r.Until = s.o.Clock.Now().Add(s.o.Lease)
			ctx, cancel := storeCtx()
			err := s.o.Store.Renew(ctx, r)
			cancel()
			switch {
			case errors.Is(err, ErrLost):
				log.Error().Msg("schedules: this run's lease ended before it could be renewed, and another instance marked it abandoned")
				return
			case err != nil:
				log.Warn().Err(err).Msg("schedules: renewing the run's lease")
			}
		}
	}()
	outcome, err := s.o.Runner.Run(s.runCtx, sc, f)
	close(stopRenew)
	<-renewed
	if err != nil {
		log.Error().Err(err).Msg("schedules: the run did not start")
		outcome = "not_run"
	}
	s.m.runs.WithLabelValues(sc.Name, outcome).Inc()
	f.Outcome, f.Finished = outcome, s.o.Clock.Now()
	ev := log.Debug()
	if outcome != runtime.Succeeded {
		ev = log.Warn()
	}
	ev.Str("outcome", outcome).Float64("duration_s", f.Finished.Sub(f.Claimed).Seconds()).Msg("schedules: run finished")
	s.retry("recording a run's end", sc, s.o.Clock.Now().Add(30*time.Second), func(ctx context.Context) error {
		return s.o.Store.Finish(ctx, f)
	})
}

// reap marks the expired fires abandoned and records their runs so.
func (s *Scheduler) reap(sc *Schedule, expired []Fire) {
	if len(expired) == 0 {
		return
	}
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	for _, e := range expired {
		ctx, cancel := storeCtx()
		ok, err := s.o.Store.Reap(ctx, e, s.o.Clock.Now())
		if err == nil && ok {
			s.o.Log.Warn().Str("schedule", sc.Name).Str("run_id", e.RunID).Str("instance", e.By).Time("lease_end", e.Until).
				Msg("schedules: an instance stopped during a scheduled run; the run is recorded as abandoned")
			s.m.runs.WithLabelValues(sc.Name, FireAbandoned).Inc()
			err = s.o.Runner.Abandoned(ctx, sc, e)
		}
		cancel()
		if err != nil {
			s.o.Log.Warn().Err(err).Str("schedule", sc.Name).Str("run_id", e.RunID).Msg("schedules: recording an abandoned run")
		}
	}
}

// sweep reaps, every lease, the runs whose instance stopped: the claims
// of a schedule report them too, but a daily schedule claims once a day.
func (s *Scheduler) sweep() {
	defer s.loops.Done()
	byName := map[string]*Schedule{}
	for _, sc := range s.schedules {
		byName[sc.Name] = sc
	}
	for s.sleep(s.o.Lease) {
		ctx, cancel := storeCtx()
		states, err := s.o.Store.States(ctx)
		cancel()
		if err != nil {
			s.o.Log.Debug().Err(err).Msg("schedules: sweeping for abandoned runs")
			continue
		}
		now := s.o.Clock.Now()
		for _, st := range states {
			sc := byName[st.Name]
			if sc == nil {
				continue
			}
			var expired []Fire
			for _, r := range st.Running {
				if r.Until.Before(now) {
					expired = append(expired, r)
				}
			}
			s.reap(sc, expired)
		}
	}
}

// prune removes the schedule's fires older than KeepFires and three
// periods.
func (s *Scheduler) prune(sc *Schedule, now time.Time) {
	keep := s.o.KeepFires
	if n1 := sc.Spec.Next(now); !n1.IsZero() {
		if n2 := sc.Spec.Next(n1); !n2.IsZero() {
			keep = max(keep, 3*n2.Sub(n1))
		}
	}
	ctx, cancel := storeCtx()
	defer cancel()
	if _, err := s.o.Store.Prune(ctx, sc.Name, now.Add(-keep)); err != nil {
		s.o.Log.Debug().Err(err).Str("schedule", sc.Name).Msg("schedules: pruning old fires")
	}
}
