package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
)

// Runner runs one attempt of a job and returns its run id. A nil error is
// success; any other error fails the attempt.
type Runner func(ctx context.Context, j *Job) (runID string, err error)

// ExecutorRunner runs each attempt through the executor: a run with
// trigger queue, the job's id and the attempt number.
func ExecutorRunner(x *runtime.Executor) Runner {
	return func(ctx context.Context, j *Job) (string, error) {
		rec, err := x.Run(ctx, runtime.RunRequest{Task: j.Task, Params: j.Params, Trigger: runtime.TriggerQueue,
			JobID: j.ID, Attempt: j.Attempt})
		if err != nil {
			return "", err
		}
		if rec.Outcome != runtime.Succeeded {
			if rec.Error == "" {
				return rec.ID, errors.New("the run failed")
			}
			return rec.ID, errors.New(rec.Error)
		}
		return rec.ID, nil
	}
}

// Opener opens a deployment's job store (cmd/runtime passes
// mongostore.OpenJobs).
type Opener func(ctx context.Context, s *runtime.Setup) (Store, error)

// Defaults of the deployment's queue: settings.
const (
	DefaultWorkers   = 8
	DefaultPoll      = time.Second
	MaxPoll          = time.Second
	DefaultRetention = 7 * 24 * time.Hour
)

// Timing of the workers.
const (
	// RepairInterval is how often an instance runs Store.Repair (a queue
	// that a dying instance left without a head waits no longer),
	// CountInterval how often it counts the jobs for its metrics, and
	// SweepInterval how often it runs Store.Sweep (retention).
	RepairInterval = 5 * time.Second
	CountInterval  = 15 * time.Second
	SweepInterval  = time.Minute
	// DefaultMaxLease caps a lease (Options.MaxLease); a longer run
	// renews it every third of it.
	DefaultMaxLease = time.Minute
	// CancelCheck is how often a running job looks for a cancel request
	// (after its first CancelCheck).
	CancelCheck = 2 * time.Second
	// StopWait is how long Stop waits, after the grace period, for the
	// runs it cancelled to return before it gives their leases back.
	StopWait = time.Second
	// storeTimeout bounds each store operation of the workers.
	storeTimeout = 10 * time.Second
)

// LeaseFor is the lease of a task's attempts: its timeout and a quarter
// (a second at least), at most maxLease. A run cannot last longer than
// its timeout, so most attempts never renew.
func LeaseFor(timeout, maxLease time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = runtime.DefaultTimeout
	}
	return min(timeout+max(timeout/4, time.Second), maxLease)
}

// Options configure a Queue.
type Options struct {
	Store    Store
	Registry *runtime.Registry
	// Run runs attempts; nil: this process only enqueues (the CLI).
	Run Runner
	// Workers is how many jobs this instance runs at once (0: DefaultWorkers).
	Workers int
	// Poll is how often an idle instance looks for due jobs (0:
	// DefaultPoll; at most MaxPoll). Jobs enqueued in this process wake it
	// at once.
	Poll time.Duration
	// Retention is how long finished jobs are kept (0: DefaultRetention).
	Retention time.Duration
	// MaxLease caps the leases (0: DefaultMaxLease): how long the jobs of
	// an instance that died wait before another instance runs them.
	MaxLease time.Duration
	// BackoffBase and BackoffMax bound the delays between retries (0:
	// the package's BackoffBase and BackoffMax).
	BackoffBase, BackoffMax time.Duration
	// Instance names this process in leases (host:pid).
	Instance string
	Log      zerolog.Logger
	// Registerer receives the queue's metrics (nil: none).
	Registerer prometheus.Registerer
}

// Queue enqueues jobs (it is the runtime.Enqueuer of Env.Enqueue) and,
// once started, runs them on this instance's workers.
type Queue struct {
	o    Options
	m    *metrics
	wake chan struct{} // look in the store: a worker is free, or polling
	hint chan *Job     // a job enqueued here is due

	mu       sync.Mutex
	more     bool // the last look in the store filled every free worker: more may be due
	started  bool
	stopping bool
	active   map[string]*attempt
	stop     chan struct{}
	loopCtx  context.Context // the dispatcher's and the sweeper's: cancelled by Stop
	stopLoop context.CancelFunc
	loops    sync.WaitGroup // the dispatcher and the sweeper
	attempts sync.WaitGroup
}

// New returns a Queue; call Start to run jobs.
func New(o Options) (*Queue, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("queue: a store and a registry are required")
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	o.Poll = min(o.Poll, MaxPoll)
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxLease <= 0 {
		o.MaxLease = DefaultMaxLease
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = BackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = BackoffMax
	}
	q := &Queue{o: o, wake: make(chan struct{}, 1), hint: make(chan *Job, hints), active: map[string]*attempt{}, stop: make(chan struct{})}
	q.loopCtx, q.stopLoop = context.WithCancel(context.Background())
	var err error
	if q.m, err = newMetrics(o.Registerer, o.Registry, q.running); err != nil {
		return nil, err
	}
	return q, nil
}

// Enqueue implements runtime.Enqueuer: it checks r (an *InvalidError
// when it is bad, and nothing is stored) and stores the job.
func (q *Queue) Enqueue(ctx context.Context, r runtime.Job) (string, error) {
	now := time.Now()
	j, err := Validate(q.o.Registry, r, now)
	if err != nil {
		return "", err
	}
	got, existing, err := q.o.Store.Enqueue(ctx, j)
	if err != nil {
		return "", fmt.Errorf("enqueueing a job of task %s: %w", r.Task, err)
	}
	if !existing {
		q.m.enqueued.WithLabelValues(q.m.task(j.Task)).Inc()
		if d := time.Until(j.RunAt); d <= 0 {
			q.hinted(got)
		} else if d < q.o.Poll {
			time.AfterFunc(d, func() { q.hinted(got) })
		}
	}
	return got.ID, nil
}

// Store returns the queue's store.
func (q *Queue) Store() Store { return q.o.Store }

// notify wakes the dispatcher to look in the store: a worker is free.
func (q *Queue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// hints bounds the jobs enqueued here that wait for the dispatcher; more
// are found by its next look in the store.
const hints = 256

// hinted hands a job enqueued here to the dispatcher, which claims it
// directly (no read of the due jobs) when a worker is free.
func (q *Queue) hinted(j *Job) {
	q.mu.Lock()
	started := q.started && !q.stopping
	q.mu.Unlock()
	if !started {
		return
	}
	select {
	case q.hint <- j:
	default:
		q.notify()
	}
}

// Start runs jobs on this instance until Stop.
func (q *Queue) Start() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.o.Run == nil {
		return
	}
	q.started = true
	q.loops.Add(2)
	go q.dispatch()
	go q.maintain()
}

func (q *Queue) running() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.active)
}

func (q *Queue) lease(task string) time.Duration {
	t, err := q.o.Registry.Lookup(task)
	if err != nil {
		return LeaseFor(0, q.o.MaxLease)
	}
	return LeaseFor(t.Timeout, q.o.MaxLease)
}

// jitter spreads d by ±10%, so that instances do not poll in step.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// dispatch claims due jobs while workers are free: a job enqueued here at
// once, and the store's due jobs when a worker is freed and every poll
// interval.
func (q *Queue) dispatch() {
	defer q.loops.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false
	for {
		select {
		case <-q.stop:
			return
		case j := <-q.hint:
			q.claimHint(j)
			continue
		case <-q.wake:
		case <-timer.C:
			timer.Reset(jitter(q.o.Poll))
		}
		for {
			free := q.o.Workers - q.running()
			if free <= 0 {
				break
			}
			ctx, cancel := context.WithTimeout(q.loopCtx, storeTimeout)
			jobs, err := q.o.Store.Claim(ctx, q.o.Instance, free, time.Now(), q.lease)
			cancel()
			for _, j := range jobs {
				q.start(j)
			}
			if err != nil {
				if !failing {
					q.o.Log.Warn().Err(err).Msg("queue: cannot claim jobs; trying again every poll interval")
				}
				failing = true
				break
			}
			if failing {
				q.o.Log.Info().Msg("queue: claiming jobs again")
				failing = false
			}
			q.mu.Lock()
			q.more = len(jobs) == free
			q.mu.Unlock()
			if len(jobs) < free {
				break
			}
		}
	}
}

// claimHint claims a job enqueued here, if a worker is free (else a freed
// worker finds it in the store).
func (q *Queue) claimHint(j *Job) {
	if q.running() >= q.o.Workers {
		return
	}
	ctx, cancel := context.WithTimeout(q.loopCtx, storeTimeout)
	got, err := q.o.Store.ClaimJob(ctx, j, q.o.Instance, time.Now(), q.lease(j.Task))
	cancel()
	if err != nil {
		q.o.Log.Warn().Err(err).Str("job_id", j.ID).Msg("queue: cannot claim a job enqueued here; the next poll will")
		return
	}
	if got != nil {
		q.start(got)
	}
}

// maintain repairs the store every RepairInterval, counts its jobs every
// CountInterval and sweeps it every SweepInterval.
func (q *Queue) maintain() {
	defer q.loops.Done()
	var lastSweep, lastCount time.Time
	for {
		ctx, cancel := context.WithTimeout(q.loopCtx, storeTimeout)
		now := time.Now()
		var err error
		if now.Sub(lastSweep) >= SweepInterval {
			lastSweep = now
			err = q.o.Store.Sweep(ctx, now, q.o.Retention)
		} else {
			err = q.o.Store.Repair(ctx)
		}
		if err != nil && q.loopCtx.Err() == nil {
			q.o.Log.Warn().Err(err).Msg("queue: sweeping the job store")
		}
		if now.Sub(lastCount) >= CountInterval {
			lastCount = now
			if c, err := q.o.Store.Counts(ctx, now); err == nil {
				q.m.counts(c)
			}
		}
		cancel()
		select {
		case <-q.stop:
			return
		case <-time.After(jitter(RepairInterval)):
		}
	}
}

// attempt is one running attempt of a job on this instance.
type attempt struct {
	job    *Job
	cancel context.CancelFunc

	mu          sync.Mutex
	until       time.Time // the lease, as last renewed
	settled     bool      // its end is written, or given back
	interrupted bool      // Stop cancelled it: give it back
	lost        bool      // its lease is not ours any more
	cancelled   bool      // someone asked to cancel it
}

func (a *attempt) flag(f *bool) {
	a.mu.Lock()
	*f = true
	a.mu.Unlock()
	a.cancel()
}

// settle reports whether the caller is first to end the attempt.
func (a *attempt) settle() (interrupted, lost, cancelled, first bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	first = !a.settled
	a.settled = true
	return a.interrupted, a.lost, a.cancelled, first
}

func (q *Queue) start(j *Job) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &attempt{job: j, cancel: cancel, until: j.LeaseUntil}
	q.mu.Lock()
	if q.stopping {
		q.mu.Unlock()
		cancel()
		a.interrupted = true
		_ = q.end(a, "", nil)
		return
	}
	q.active[j.ID] = a
	q.attempts.Add(1)
	q.mu.Unlock()
	if d := j.Started.Sub(j.RunAt); j.Lost == 0 && d >= 0 {
		q.m.delay.Observe(d.Seconds())
	}
	go q.run(ctx, a)
}

func (q *Queue) run(ctx context.Context, a *attempt) {
	defer q.attempts.Done()
	defer a.cancel()
	j := a.job
	var (
		runID  string
		runErr error
	)
	if j.Lost > MaxLost {
		runErr = fmt.Errorf("its worker died or stopped renewing its lease %d times", j.Lost)
		j.Failures = j.MaxAttempts - 1 // dead now
	}
	// The lease is renewed until the attempt's end is written: a store
	// slow to take it must not let another instance run the job again.
	stop, watched := make(chan struct{}), make(chan struct{})
	go q.watch(a, *j, stop, watched)
	if runErr == nil {
		runID, runErr = q.o.Run(ctx, j)
	}
	next := q.end(a, runID, runErr)
	close(stop)
	<-watched
	q.mu.Lock()
	delete(q.active, j.ID)
	more := q.more
	q.mu.Unlock()
	switch {
	case next != nil:
		q.hinted(next) // the queue's next job: claimed here, at once
	case more:
		q.notify() // more due jobs
	}
}

// watch renews the lease of a running attempt every third of it, and
// looks for a cancel request every CancelCheck. j is a copy of the job as
// claimed (the attempt's goroutine writes its own).
func (q *Queue) watch(a *attempt, j Job, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	lease := j.LeaseUntil.Sub(j.Started)
	renewEvery := max(lease/3, 10*time.Millisecond)
	tick := time.NewTicker(min(renewEvery, CancelCheck))
	defer tick.Stop()
	nextRenew, nextCheck := time.Now().Add(renewEvery), time.Now().Add(CancelCheck)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		if !now.Before(nextRenew) {
			ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, renewEvery))
			err := q.o.Store.Renew(ctx, &j, now.Add(lease))
			cancel()
			switch {
			case errors.Is(err, ErrLost):
				q.o.Log.Warn().Str("job_id", j.ID).Int("attempt", j.Attempt).Msg("queue: the job's lease was taken over; stopping its run")
				a.flag(&a.lost)
				return
			case err != nil && time.Until(j.LeaseUntil) < renewEvery:
				// Another instance may take it once the lease expires:
				// stop before that.
				q.o.Log.Warn().Err(err).Str("job_id", j.ID).Msg("queue: cannot renew the job's lease; stopping its run")
				a.flag(&a.lost)
				return
			case err == nil:
				nextRenew = now.Add(renewEvery)
				a.mu.Lock()
				a.until = j.LeaseUntil
				a.mu.Unlock()
			}
		}
		if !now.Before(nextCheck) {
			nextCheck = now.Add(CancelCheck)
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			yes, err := q.o.Store.CancelRequested(ctx, &j)
			cancel()
			if err == nil && yes {
				q.o.Log.Info().Str("job_id", j.ID).Msg("queue: cancel requested; stopping the job's run")
				a.flag(&a.cancelled)
			}
		}
	}
}

// end writes how an attempt ended, unless Stop gave it back already.
// next is the job of the same queue that may start now.
func (q *Queue) end(a *attempt, runID string, runErr error) (next *Job) {
	interrupted, lost, cancelled, first := a.settle()
	if !first {
		return nil
	}
	j := a.job
	log := q.o.Log.With().Str("job_id", j.ID).Str("task", j.Task).Int("attempt", j.Attempt).Logger()
	if lost {
		q.m.finished.WithLabelValues(q.m.task(j.Task), "lost").Inc()
		return nil
	}
	if runID != "" {
		j.LastRun = runID
	}
	outcome := ""
	now := time.Now()
	switch {
	case interrupted:
		j.State, j.RunAt, outcome = Pending, now, "given_back"
	case cancelled:
		j.State, j.LastError, outcome = Cancelled, "cancelled", "cancelled"
	case runErr == nil:
		j.State, outcome = Succeeded, "succeeded"
	default:
		j.Failures++
		j.LastError = clipError(runErr.Error())
		if j.Failures >= j.MaxAttempts {
			j.State, outcome = Dead, "dead"
		} else {
			j.State, j.RunAt, outcome = Pending, now.Add(Backoff(j.Failures, q.o.BackoffBase, q.o.BackoffMax)), "failed"
		}
	}
	if j.State.Finished() {
		j.Finished = now
	}
	// Write it while the lease holds: after, another instance may have it.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		n, err := q.o.Store.Finish(ctx, j)
		cancel()
		if err == nil {
			next = n
			break
		}
		if errors.Is(err, ErrLost) {
			log.Warn().Msg("queue: the job's lease was taken over before its end was written; the other worker's attempt counts")
			outcome = "lost"
			break
		}
		a.mu.Lock()
		until := a.until
		a.mu.Unlock()
		if time.Until(until) < time.Second {
			log.Error().Err(err).Msg("queue: cannot write the end of the attempt; the job runs again once its lease expires")
			outcome = "lost"
			break
		}
		log.Warn().Err(err).Msg("queue: cannot write the end of the attempt yet; retrying")
		time.Sleep(time.Second)
	}
	q.m.finished.WithLabelValues(q.m.task(j.Task), outcome).Inc()
	if outcome == "dead" {
		log.Warn().Str("error", j.LastError).Int("failures", j.Failures).Msg("queue: job is dead")
	}
	return next
}

// MaxError caps a job's last error as stored.
const MaxError = 4 << 10

func clipError(s string) string {
	if len(s) <= MaxError {
		return s
	}
	return s[:MaxError] + "..."
}

// Stop stops claiming, lets the running attempts finish until ctx is done
// (the grace period), then cancels the others and gives their leases
// back, so that another instance takes them at once.
func (q *Queue) Stop(ctx context.Context) error {
	q.mu.Lock()
	if !q.started || q.stopping {
		q.mu.Unlock()
		return nil
	}
	q.stopping = true
	close(q.stop)
	q.stopLoop()
	q.mu.Unlock()
	q.loops.Wait()
	done := make(chan struct{})
	go func() {
		q.attempts.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	var left []*attempt
	for _, a := range q.active {
		left = append(left, a)
	}
	q.mu.Unlock()
	for _, a := range left {
		a.flag(&a.interrupted)
	}
	select {
	case <-done:
	case <-time.After(StopWait):
	}
	n := 0
	for _, a := range left {
		a.mu.Lock()
		settled := a.settled
		a.mu.Unlock()
		if !settled {
			n++
			_ = q.end(a, "", nil) // its run ignores its context: give the lease back anyway
		}
	}
	q.o.Log.Warn().Int("jobs", len(left)).Int("unresponsive", n).
		Msg("queue: grace period over: the leases of the running jobs were given back")
	return nil
}
