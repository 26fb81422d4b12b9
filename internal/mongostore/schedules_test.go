package mongostore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/schedule"
)

var t0 = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

func fire(name string, at, now time.Time, by string, lease time.Duration) schedule.Fire {
	return schedule.Fire{Schedule: name, RunID: schedule.RunID(name, at), Time: at, By: by, Claimed: now, Until: now.Add(lease)}
}

func claim(t *testing.T, s *mongostore.Schedules, f schedule.Fire, exclusive bool) schedule.ClaimResult {
	t.Helper()
	res, err := s.Claim(context.Background(), schedule.Claim{Fire: f, Exclusive: exclusive})
	if err != nil {
		t.Fatalf("claim of %s by %s: %v", f.RunID, f.By, err)
	}
	return res
}

func TestSchedulesRegister(t *testing.T) {
	ctx := context.Background()
	s := mongostore.NewSchedules(storetest.Database(t))
	st, err := s.Register(ctx, "cleanup", t0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "cleanup" || !st.KnownSince.Equal(t0) || !st.LastFire.IsZero() || len(st.Running) != 0 || st.LastRun.RunID != "" || !st.LastRun.Time.IsZero() {
		t.Fatalf("new state = %+v", st)
	}
	// A second instance registering later keeps the first's known_since.
	st, err = s.Register(ctx, "cleanup", t0.Add(time.Hour))
	if err != nil || !st.KnownSince.Equal(t0) {
		t.Fatalf("second Register = %+v, %v; want known since %s", st, err, t0)
	}
	if _, err := s.Claim(ctx, schedule.Claim{Fire: fire("other", t0, t0, "a", time.Minute)}); !errors.Is(err, schedule.ErrNotRegistered) {
		t.Errorf("Claim of an unregistered schedule: %v, want ErrNotRegistered", err)
	}
}

// Instances race for every fire time, each with its own client: each fire
// time is claimed exactly once, and an older one cannot be claimed after a
// newer one. (On FerretDB the conditional update alone lets two through:
// the unique insert is what holds.)
func TestSchedulesClaimOncePerFireTime(t *testing.T) {
	ctx := context.Background()
	db := storetest.Database(t)
	const instances, fireTimes = 4, 6
	stores := make([]*mongostore.Schedules, instances)
	for i := range stores {
		c, err := mongo.Connect(options.Client().ApplyURI(storetest.URI(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
		stores[i] = mongostore.NewSchedules(c.Database(db.Name()))
	}
	var wg sync.WaitGroup
	for _, s := range stores { // registering at once, too
		wg.Go(func() {
			if _, err := s.Register(ctx, "tick", t0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, exclusive := range []bool{false, true} {
		base := t0.Add(time.Hour)
		if exclusive {
			base = t0.Add(2 * time.Hour)
		}
		wins := make([]int, fireTimes)
		var mu sync.Mutex
		for f := range fireTimes {
			at := base.Add(time.Duration(f) * time.Second)
			for i, s := range stores {
				wg.Go(func() {
					fr := fire("tick", at, at, fmt.Sprintf("instance-%d", i), time.Minute)
					res, err := s.Claim(ctx, schedule.Claim{Fire: fr, Exclusive: exclusive})
					if err != nil {
						t.Error(err)
						return
					}
					switch res.Outcome {
					case schedule.Claimed:
						mu.Lock()
						wins[f]++
						mu.Unlock()
						// Finish at once, so that an exclusive schedule is
						// free for the next fire time.
						fr.Outcome, fr.Finished = "succeeded", at
						if err := s.Finish(ctx, fr); err != nil {
							t.Error(err)
						}
					case schedule.Taken:
					default:
						t.Errorf("fire %d: outcome %v, want Claimed or Taken", f, res.Outcome)
					}
				})
			}
			wg.Wait()
		}
		for f, n := range wins {
			if n != 1 {
				t.Errorf("exclusive=%t: fire time %d claimed %d times, want 1", exclusive, f, n)
			}
		}
		old := base.Add(-time.Second)
		if res := claim(t, stores[0], fire("tick", old, base.Add(time.Minute), "late", time.Minute), exclusive); res.Outcome != schedule.Taken {
			t.Errorf("claim of an older fire time = %+v; want Taken", res)
		}
	}
	states, err := stores[0].States(ctx)
	if err != nil || len(states) != 1 {
		t.Fatalf("States = %+v, %v", states, err)
	}
	last := t0.Add(2*time.Hour + (fireTimes-1)*time.Second)
	if st := states[0]; len(st.Running) != 0 || !st.LastFire.Equal(last) || !st.LastRun.Time.Equal(last) || st.LastRun.Outcome != "succeeded" {
		t.Errorf("state after the races = %+v", st)
	}
	fires, err := stores[0].Fires(ctx, "tick", t0, 100)
	if err != nil || len(fires) != 2*fireTimes {
		t.Fatalf("Fires = %d, %v; want %d", len(fires), err, 2*fireTimes)
	}
	for _, f := range fires {
		if f.State != schedule.FireDone {
			t.Errorf("fire %s is %s, want done", f.RunID, f.State)
		}
	}
}

func TestSchedulesHoldSkipAndReap(t *testing.T) {
	ctx := context.Background()
	s := mongostore.NewSchedules(storetest.Database(t))
	if _, err := s.Register(ctx, "slow", t0); err != nil {
		t.Fatal(err)
	}
	const lease = 90 * time.Second
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	f1 := fire("slow", m(1), m(1), "a", lease)
	if res := claim(t, s, f1, true); res.Outcome != schedule.Claimed || !res.Prev.IsZero() || res.Holder != "" {
		t.Fatalf("first claim = %+v", res)
	}
	// While f1 runs, the next fire time is recorded as skipped, once.
	res := claim(t, s, fire("slow", m(2), m(2), "b", lease), true)
	if res.Outcome != schedule.Held || res.Holder != f1.RunID || !res.Prev.Equal(m(1)) {
		t.Fatalf("claim while held = %+v; want Held by %s after %s", res, f1.RunID, m(1))
	}
	if res := claim(t, s, fire("slow", m(2), m(2), "c", lease), true); res.Outcome != schedule.Taken {
		t.Fatalf("second claim of a skipped fire time = %+v; want Taken", res)
	}
	// Renewing keeps f1 running past its first lease.
	f1.Until = m(3).Add(lease)
	if err := s.Renew(ctx, f1); err != nil {
		t.Fatal(err)
	}
	if res := claim(t, s, fire("slow", m(3), m(3), "b", lease), true); res.Outcome != schedule.Held {
		t.Fatalf("claim after the renewal = %+v; want Held", res)
	}
	// overlap: allow runs anyway.
	f4 := fire("slow", m(4), m(4), "b", time.Minute)
	if res := claim(t, s, f4, false); res.Outcome != schedule.Claimed || !res.Prev.Equal(m(3)) {
		t.Fatalf("non-exclusive claim while held = %+v; want Claimed", res)
	}

	// a and b die: their leases end. The next claim runs, and reports both
	// as expired; only one caller reaps each.
	f6 := fire("slow", m(6), m(6), "c", lease)
	res = claim(t, s, f6, true)
	if res.Outcome != schedule.Claimed || len(res.Expired) != 2 || res.Expired[0].RunID != f1.RunID || res.Expired[1].RunID != f4.RunID {
		t.Fatalf("claim after the leases ended = %+v; want Claimed with %s and %s expired", res, f1.RunID, f4.RunID)
	}
	for _, e := range res.Expired {
		reaped := 0
		for range 3 {
			ok, err := s.Reap(ctx, e, m(6))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				reaped++
			}
		}
		if reaped != 1 {
			t.Errorf("%s reaped %d times, want 1", e.RunID, reaped)
		}
	}
	if err := s.Renew(ctx, f1); !errors.Is(err, schedule.ErrLost) {
		t.Errorf("Renew of a reaped fire: %v, want ErrLost", err)
	}
	if ok, err := s.Reap(ctx, f6, m(6).Add(time.Second)); err != nil || ok {
		t.Errorf("Reap of a live fire = %t, %v; want false", ok, err)
	}

	states, err := s.States(ctx)
	if err != nil || len(states) != 1 {
		t.Fatalf("States = %+v, %v", states, err)
	}
	if st := states[0]; !st.LastFire.Equal(m(6)) || len(st.Running) != 1 || st.Running[0].RunID != f6.RunID || st.Running[0].By != "c" {
		t.Errorf("state = %+v", st)
	}
	fires, err := s.Fires(ctx, "slow", m(2), 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fires {
		got = append(got, f.Time.Format("15:04")+" "+f.State+" "+f.Holder)
	}
	want := []string{"10:02 skipped " + f1.RunID, "10:03 skipped " + f1.RunID, "10:04 abandoned ", "10:06 running "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("fires since 10:02:\n got %q\nwant %q", got, want)
	}

	// The last run is the latest fire time finished, whatever finished
	// last.
	f6.Outcome, f6.Finished = "failed", m(7)
	if err := s.Finish(ctx, f6); err != nil {
		t.Fatal(err)
	}
	f4.Outcome, f4.Finished = "succeeded", m(8)
	if err := s.Finish(ctx, f4); err != nil {
		t.Fatal(err)
	}
	states, _ = s.States(ctx)
	if st := states[0]; st.LastRun.RunID != f6.RunID || st.LastRun.Outcome != "failed" || !st.LastRun.Finished.Equal(m(7)) || len(st.Running) != 0 {
		t.Errorf("state after finishing = %+v", st)
	}

	// Pruning keeps what is running and the last run.
	f9 := fire("slow", m(9), m(9), "c", lease)
	claim(t, s, f9, true)
	n, err := s.Prune(ctx, "slow", m(9).Add(time.Minute))
	if err != nil || n != 4 {
		t.Errorf("Prune = %d, %v; want 4 (every fire but the last run and the running one)", n, err)
	}
	if fires, _ := s.Fires(ctx, "slow", t0, 100); len(fires) != 2 || fires[0].RunID != f6.RunID || fires[1].RunID != f9.RunID {
		t.Errorf("fires after pruning = %+v", fires)
	}
	states, _ = s.States(ctx)
	if st := states[0]; st.LastRun.RunID != f6.RunID || st.LastRun.Outcome != "failed" {
		t.Errorf("last run after pruning = %+v", st.LastRun)
	}
}

func TestSchedulesStatesSorted(t *testing.T) {
	ctx := context.Background()
	s := mongostore.NewSchedules(storetest.Database(t))
	for _, n := range []string{"zeta", "alpha", "mid"} {
		if _, err := s.Register(ctx, n, t0); err != nil {
			t.Fatal(err)
		}
	}
	states, err := s.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range states {
		names = append(names, st.Name)
	}
	if fmt.Sprint(names) != "[alpha mid zeta]" {
		t.Errorf("names = %v", names)
	}
}

// A paused schedule's fire times are taken and skipped, by one instance
// each; resumed, they run again.
func TestSchedulesPause(t *testing.T) {
	ctx := context.Background()
	s := mongostore.NewSchedules(storetest.Database(t))
	if err := s.SetPaused(ctx, "nightly", true); !errors.Is(err, schedule.ErrNotRegistered) {
		t.Errorf("pausing an unregistered schedule: %v, want ErrNotRegistered", err)
	}
	if _, err := s.Register(ctx, "nightly", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPaused(ctx, "nightly", true); err != nil {
		t.Fatal(err)
	}
	states, err := s.States(ctx)
	if err != nil || len(states) != 1 || !states[0].Paused {
		t.Fatalf("states after pausing: %+v, %v", states, err)
	}
	at := t0.Add(time.Minute)
	res, err := s.Claim(ctx, schedule.Claim{Fire: fire("nightly", at, at, "a", time.Minute)})
	if err != nil || res.Outcome != schedule.Paused {
		t.Fatalf("claim while paused: %+v, %v; want Paused", res, err)
	}
	if res, err := s.Claim(ctx, schedule.Claim{Fire: fire("nightly", at, at, "b", time.Minute)}); err != nil || res.Outcome != schedule.Taken {
		t.Errorf("a second instance's claim of the paused fire time: %+v, %v; want Taken", res, err)
	}
	if fires, err := s.Fires(ctx, "nightly", t0, 10); err != nil || len(fires) != 0 {
		t.Errorf("a paused fire time left fires: %+v, %v", fires, err)
	}
	if err := s.SetPaused(ctx, "nightly", false); err != nil {
		t.Fatal(err)
	}
	at = at.Add(time.Minute)
	if res, err := s.Claim(ctx, schedule.Claim{Fire: fire("nightly", at, at, "a", time.Minute)}); err != nil || res.Outcome != schedule.Claimed {
		t.Errorf("claim after resuming: %+v, %v; want Claimed", res, err)
	}
}

// The claim is the fire's unique insert, made before last_fire moves: an
// instance that dies between the two leaves the fire claimed (its lease
// reaps it), and the others neither lose that fire time nor claim it
// twice. Advancing last_fire first lost fire times whose claimant died
// right after (the schedules e2e test, SIGKILL a few ms after a fire).
func TestSchedulesClaimSurvivesAClaimantDyingMidway(t *testing.T) {
	ctx := context.Background()
	db := storetest.Database(t)
	s := mongostore.NewSchedules(db)
	if _, err := s.Register(ctx, "tick", t0); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Second)
	if res := claim(t, s, fire("tick", at, at, "a", time.Minute), true); res.Outcome != schedule.Claimed {
		t.Fatalf("first claim: %+v", res)
	}
	// a dies before advancing last_fire: put it back.
	if _, err := db.Collection(mongostore.SchedulesCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: "tick"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "last_fire", Value: time.Unix(0, 0).UTC()}}}}); err != nil {
		t.Fatal(err)
	}
	if res := claim(t, s, fire("tick", at, at.Add(10*time.Millisecond), "b", time.Minute), true); res.Outcome != schedule.Taken {
		t.Errorf("b's claim of a's fire time: %+v, want Taken", res)
	}
	fires, err := s.Fires(ctx, "tick", t0, 10)
	if err != nil || len(fires) != 1 || fires[0].By != "a" || fires[0].State != schedule.FireRunning {
		t.Fatalf("fires: %+v, %v; want a's one, running", fires, err)
	}
	next := at.Add(time.Second)
	if res := claim(t, s, fire("tick", next, next, "b", time.Minute), false); res.Outcome != schedule.Claimed {
		t.Errorf("b's claim of the next fire time: %+v, want Claimed", res)
	}
	// Whoever claims, last_fire follows: a later claimant is turned away
	// before it tries the insert.
	if res := claim(t, s, fire("tick", next, next, "c", time.Minute), false); res.Outcome != schedule.Taken {
		t.Errorf("c's claim of b's fire time: %+v, want Taken", res)
	}
	var d struct {
		LastFire time.Time `bson:"last_fire"`
	}
	if err := db.Collection(mongostore.SchedulesCollection).FindOne(ctx, bson.D{{Key: "_id", Value: "tick"}}).Decode(&d); err != nil || !d.LastFire.Equal(next) {
		t.Errorf("last_fire %s, %v; want %s", d.LastFire, err, next)
	}
}
