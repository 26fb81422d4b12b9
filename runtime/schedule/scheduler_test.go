package schedule_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// world is one deployment's store, run store and clock, shared by the
// instances a test starts. Instances are real schedulers running real
// tasks through the runtime's executor; only time is fake.
type world struct {
	t     *testing.T
	clock *clockwork.FakeClock
	store *mongostore.Schedules
	runs  runtime.RunStore
	reg   *runtime.Registry
	dep   *deployment.Deployment
	lease time.Duration

	mu      sync.Mutex
	release chan struct{} // closed to let the slow task's runs return
	insts   []*instance
}

type instance struct {
	name    string
	s       *schedule.Scheduler
	metrics *prometheus.Registry
	stopped bool
}

var base = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC) // a minute's start

func newWorld(t *testing.T, start time.Time, yaml string) *world {
	t.Helper()
	w := &world{t: t, clock: clockwork.NewFakeClockAt(start), store: mongostore.NewSchedules(storetest.Database(t)),
		lease: schedule.DefaultLease, release: make(chan struct{})}
	w.runs = runtime.NewFileRunStore(t.TempDir(), "testing")
	var err error
	w.reg, err = runtime.NewRegistry(
		runtime.Task{Name: "tick", Run: func(context.Context, *runtime.Env) error { return nil }},
		runtime.Task{Name: "slow", Timeout: time.Minute, Run: func(ctx context.Context, env *runtime.Env) error {
			w.mu.Lock()
			release := w.release
			w.mu.Unlock()
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	w.dep = deployment.New("testing", false, nil)
	w.dep.RunRetention = 100 * 365 * 24 * time.Hour // records of fake times are not old
	if err := w.dep.SetSections("deployments/testing.yaml", []byte(yaml)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.letGo()
		for _, in := range w.insts {
			if !in.stopped {
				_ = in.s.Stop(context.Background())
			}
		}
	})
	return w
}

// letGo lets every slow run return.
func (w *world) letGo() {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.release:
	default:
		close(w.release)
	}
}

// start starts an instance of the deployment.
func (w *world) start(name string) *instance {
	w.t.Helper()
	scheds, err := schedule.Resolve(w.reg, w.dep)
	if err != nil {
		w.t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(w.t)).With().Str("instance", name).Logger()
	core, err := runtime.NewCore(context.Background(), w.reg, w.dep, runtime.Options{Log: log, Instance: name,
		OpenRuns: func(context.Context, *runtime.Setup) (runtime.RunStore, error) { return w.runs, nil }})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = core.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	s, err := schedule.New(scheds, schedule.Options{Store: w.store, Runner: schedule.ExecutorRunner{X: core.Executor(), Deployment: "testing"},
		Clock: w.clock, Instance: name, Log: log, Metrics: reg, Lease: w.lease})
	if err != nil {
		w.t.Fatal(err)
	}
	in := &instance{name: name, s: s, metrics: reg}
	w.insts = append(w.insts, in)
	s.Start()
	return in
}

func (w *world) stop(in *instance) {
	w.t.Helper()
	if err := in.s.Stop(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	in.stopped = true
}

// settle waits until every running instance waits on its clock with
// active runs in flight in all (each renewing its lease on a ticker).
func (w *world) settle(active int) {
	w.t.Helper()
	timers := active
	for _, in := range w.insts {
		if !in.stopped {
			timers += len(in.s.Schedules()) + 1 // a loop each, and the sweeper
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if err := w.clock.BlockUntilContext(ctx, timers); err != nil {
			w.t.Fatalf("instances did not settle with %d timers and %d runs: %v", timers, active, err)
		}
		n := 0
		for _, in := range w.insts {
			n += in.s.Active()
		}
		if n == active {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// advance moves the clock in steps, settling after each.
func (w *world) advance(step time.Duration, steps int, active int) {
	w.t.Helper()
	for range steps {
		w.clock.Advance(step)
		w.settle(active)
	}
}

// records lists the schedule's run records as "fire time outcome", by
// fire time.
func (w *world) records(sched string) []string {
	w.t.Helper()
	recs, err := w.runs.ListRuns(context.Background(), runtime.RunFilter{Trigger: runtime.TriggerSchedule, Limit: 1000})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if r.Schedule != sched {
			continue
		}
		if r.ID != schedule.RunID(sched, r.FireTime) {
			w.t.Errorf("record %s of fire time %s: want id %s", r.ID, r.FireTime, schedule.RunID(sched, r.FireTime))
		}
		out = append(out, r.FireTime.UTC().Format(time.RFC3339)+" "+r.Outcome)
	}
	slices.Sort(out)
	return out
}

func minutes(from time.Time, outcome string, ns ...int) []string {
	var out []string
	for _, n := range ns {
		out = append(out, from.Add(time.Duration(n)*time.Minute).Format(time.RFC3339)+" "+outcome)
	}
	return out
}

func (w *world) want(sched string, want []string) {
	w.t.Helper()
	if got := w.records(sched); strings.Join(got, "\n") != strings.Join(want, "\n") {
		w.t.Errorf("runs of %s:\n got %s\nwant %s", sched, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// metric sums a metric's series that have the given labels, over the
// instances.
func (w *world) metric(name string, labels ...string) float64 {
	w.t.Helper()
	var sum float64
	for _, in := range w.insts {
		mfs, err := in.metrics.Gather()
		if err != nil {
			w.t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		series:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for i := 0; i+1 < len(labels); i += 2 {
					if have[labels[i]] != labels[i+1] {
						continue series
					}
				}
				switch {
				case m.Counter != nil:
					sum += m.Counter.GetValue()
				case m.Histogram != nil:
					sum += float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	return sum
}

func TestSchedulerRunsEachFireTimeOnce(t *testing.T) {
	w := newWorld(t, base.Add(10*time.Second), `schedules:
  - task: tick
    cron: "* * * * *"
  - name: every20
    task: tick
    cron: "@every 20s"
    overlap: allow
`)
	for i := range 3 {
		w.start(fmt.Sprintf("instance-%d", i))
	}
	w.settle(0)
	w.advance(20*time.Second, 9, 0) // three minutes
	w.want("tick", minutes(base, "succeeded", 1, 2, 3))
	var every20 []string
	for s := 20; s <= 180; s += 20 {
		every20 = append(every20, base.Add(time.Duration(s)*time.Second).Format(time.RFC3339)+" succeeded")
	}
	w.want("every20", every20)
	if n := w.metric("schedule_runs_total", "schedule", "tick", "outcome", "succeeded"); n != 3 {
		t.Errorf("schedule_runs_total{tick,succeeded} = %v over the instances, want 3", n)
	}
	if n := w.metric("schedule_lateness_seconds", "schedule", "tick"); n != 3 {
		t.Errorf("lateness observed %v times, want 3", n)
	}
	if n := w.metric("schedule_skipped_total"); n != 0 {
		t.Errorf("skipped %v fire times, want none", n)
	}
}

func TestSchedulerAcrossDaylightSaving(t *testing.T) {
	const yaml = `schedules:
  - task: tick
    cron: "30 2 * * *"
    tz: Europe/Berlin
`
	for _, c := range []struct {
		name  string
		start time.Time
		want  []string
	}{
		// Clocks skip 02:00-03:00 on 29 March: that day it runs at 03:00.
		{"spring", time.Date(2026, 3, 27, 23, 0, 0, 0, time.UTC),
			[]string{"2026-03-28T01:30:00Z succeeded", "2026-03-29T01:00:00Z succeeded", "2026-03-30T00:30:00Z succeeded"}},
		// Clocks repeat 02:00-03:00 on 25 October: it runs once.
		{"fall", time.Date(2026, 10, 23, 23, 0, 0, 0, time.UTC),
			[]string{"2026-10-24T00:30:00Z succeeded", "2026-10-25T00:30:00Z succeeded", "2026-10-26T01:30:00Z succeeded"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, c.start, yaml)
			w.lease = 24 * time.Hour // the sweeper sleeps through
			w.start("a")
			w.settle(0)
			w.advance(time.Hour, 3*24, 0) // three days
			w.want("tick", c.want)
		})
	}
}

func TestSchedulerCatchup(t *testing.T) {
	w := newWorld(t, base.Add(30*time.Second), `schedules:
  - name: skipper
    task: tick
    cron: "@every 1m"
  - name: latest
    task: tick
    cron: "@every 1m"
    catchup: latest
`)
	a := w.start("a")
	w.settle(0)
	w.advance(time.Minute, 2, 0)
	w.stop(a)
	// Every instance is down for 5 minutes: fire times 3 to 7 are missed.
	w.clock.Advance(5 * time.Minute)
	w.start("b")
	w.start("c")
	w.settle(0)
	w.want("skipper", minutes(base, "succeeded", 1, 2))
	w.want("latest", minutes(base, "succeeded", 1, 2, 7))
	w.advance(30*time.Second, 1, 0)
	w.want("skipper", minutes(base, "succeeded", 1, 2, 8))
	w.want("latest", minutes(base, "succeeded", 1, 2, 7, 8))
	if n := w.metric("schedule_skipped_total", "schedule", "skipper", "reason", "missed"); n != 5 {
		t.Errorf("skipper: %v missed fire times counted, want 5", n)
	}
	if n := w.metric("schedule_skipped_total", "schedule", "latest", "reason", "missed"); n != 4 {
		t.Errorf("latest: %v missed fire times counted, want 4 (the latest ran)", n)
	}

	// A schedule first known now has nothing to catch up.
	w2 := newWorld(t, base.Add(30*time.Second), `schedules:
  - task: tick
    cron: "@every 1m"
    catchup: latest
`)
	w2.start("d")
	w2.settle(0)
	w2.want("tick", nil)
}

func TestSchedulerOverlap(t *testing.T) {
	w := newWorld(t, base.Add(30*time.Second), `schedules:
  - name: held
    task: slow
    cron: "@every 1m"
  - name: alongside
    task: slow
    cron: "@every 1m"
    overlap: allow
`)
	w.lease = time.Hour // a minute's jump of the fake clock is not a frozen process
	w.start("a")
	w.start("b")
	w.settle(0)
	w.advance(time.Minute, 1, 2) // held and alongside run
	w.advance(time.Minute, 1, 3) // held is skipped, a second alongside runs
	w.advance(time.Minute, 1, 4)
	w.letGo()
	w.settle(0)
	w.advance(time.Minute, 1, 0)
	w.want("held", minutes(base, "succeeded", 1, 4))
	w.want("alongside", minutes(base, "succeeded", 1, 2, 3, 4))
	if n := w.metric("schedule_skipped_total", "schedule", "held", "reason", "overlap"); n != 2 {
		t.Errorf("held: %v fire times skipped for overlap, want 2", n)
	}
	fires, err := w.store.Fires(context.Background(), "held", base, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fires {
		got = append(got, f.Time.Format("15:04")+" "+f.State+" "+f.Holder)
	}
	holder := schedule.RunID("held", base.Add(time.Minute))
	if want := []string{"10:01 done ", "10:02 skipped " + holder, "10:03 skipped " + holder, "10:04 done "}; !slices.Equal(got, want) {
		t.Errorf("fires of held:\n got %q\nwant %q", got, want)
	}
}

// An instance that dies during a run leaves its fire running: once its
// lease ends another instance records the run as abandoned (failing the
// record the run left, or writing one), and the schedule runs again.
func TestSchedulerReapsAbandonedRuns(t *testing.T) {
	w := newWorld(t, base.Add(30*time.Second), `schedules:
  - name: withrecord
    task: tick
    cron: "@every 1m"
  - name: norecord
    task: tick
    cron: "@every 1m"
  - name: daily
    task: tick
    cron: "@daily"
`)
	w.lease = 90 * time.Second
	ctx := context.Background()
	dead := func(name string, at time.Time, record bool) {
		t.Helper()
		if _, err := w.store.Register(ctx, name, base.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		f := schedule.Fire{Schedule: name, RunID: schedule.RunID(name, at), Time: at, By: "dead:1", Claimed: at, Until: at.Add(w.lease)}
		if res, err := w.store.Claim(ctx, schedule.Claim{Fire: f, Exclusive: true}); err != nil || res.Outcome != schedule.Claimed {
			t.Fatalf("dead instance's claim: %+v, %v", res, err)
		}
		if record {
			if err := w.runs.SaveRun(ctx, &runtime.Record{ID: f.RunID, Task: "tick", Deployment: "testing", Trigger: runtime.TriggerSchedule,
				Schedule: name, FireTime: at, Instance: "dead:1", Start: at, Outcome: runtime.Running}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dead("withrecord", base, true)
	dead("norecord", base, false)
	dead("daily", base.Add(-10*time.Hour), false) // a daily run of last midnight, reaped by the sweeper
	w.start("a")
	w.settle(0)
	w.advance(time.Minute, 1, 0) // 10:01: the dead run's lease runs to 10:01:30: held
	w.want("withrecord", []string{base.Format(time.RFC3339) + " running"})
	w.advance(time.Minute, 1, 0) // 10:02: reaped, and run
	for _, name := range []string{"withrecord", "norecord"} {
		w.want(name, []string{base.Format(time.RFC3339) + " failed", base.Add(2*time.Minute).Format(time.RFC3339) + " succeeded"})
		rec, err := w.runs.GetRun(ctx, schedule.RunID(name, base))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Instance != "dead:1" || !strings.Contains(rec.Error, "abandoned: instance dead:1 stopped during the run") {
			t.Errorf("%s: abandoned record = %+v", name, rec)
		}
	}
	w.want("daily", []string{base.Add(-10*time.Hour).Format(time.RFC3339) + " failed"})
	if n := w.metric("schedule_runs_total", "outcome", "abandoned"); n != 3 {
		t.Errorf("%v abandoned runs counted, want 3", n)
	}
	if n := w.metric("schedule_skipped_total", "schedule", "withrecord", "reason", "overlap"); n != 1 {
		t.Errorf("%v fire times skipped while the dead run held the schedule, want 1", n)
	}
}

// runningSlow starts an instance whose schedule's run is in flight.
func runningSlow(t *testing.T) (*world, *instance) {
	w := newWorld(t, base.Add(30*time.Second), "schedules:\n  - task: slow\n    cron: \"@every 1m\"\n")
	in := w.start("a")
	w.settle(0)
	w.advance(time.Minute, 1, 1)
	return w, in
}

func TestSchedulerStop(t *testing.T) {
	w, a := runningSlow(t)

	// Stop waits for the run within the grace period, and claims nothing
	// more.
	stopped := make(chan error, 1)
	go func() { stopped <- a.s.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a run was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	w.clock.Advance(time.Minute)
	w.letGo()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	a.stopped = true
	w.want("slow", minutes(base, "succeeded", 1))

	// Past the grace period, the run is cancelled and recorded so.
	w2, b := runningSlow(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b.stopped = true
	w2.want("slow", minutes(base, "failed", 1))
}
