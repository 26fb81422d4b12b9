// Package runstoretest checks that a runtime.RunStore keeps the contract
// the executor and the CLI rely on. Each implementation's tests call Test
// with a way to open fresh stores on a real backend (files, a MongoDB-wire
// server).
package runstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime"
)

// Opener opens the store of a deployment; stores it opens for different
// deployments share one backend (one folder, one database).
type Opener func(deployment string) runtime.RunStore

// Test runs the contract's checks. fresh returns an Opener on an empty
// backend for each check.
func Test(t *testing.T, fresh func(t *testing.T) Opener) {
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("SaveGet", func(t *testing.T) {
		st := fresh(t)("testing")
		r := Record("0123456789abcdef", "job", t0)
		r.Trigger, r.Schedule, r.FireTime = runtime.TriggerSchedule, "nightly", t0.Add(-time.Minute)
		r.JobID, r.Attempt = "job-1", 2
		r.Error, r.Dropped = "step 2: bad", 7
		if err := st.SaveRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		Equal(t, got, r)
		if _, err := st.GetRun(ctx, "ffffffffffffffff"); !errors.Is(err, runtime.ErrRunNotFound) {
			t.Errorf("GetRun(unknown) = %v, want ErrRunNotFound", err)
		}
	})

	t.Run("Duplicate", func(t *testing.T) {
		st := fresh(t)("testing")
		r := Record("nightly-20300102T0304", "job", t0)
		if err := st.SaveRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		again := Record(r.ID, "job", t0.Add(time.Second))
		again.Outcome = runtime.Failed
		if err := st.SaveRun(ctx, again); !errors.Is(err, runtime.ErrDuplicateRun) {
			t.Fatalf("second SaveRun = %v, want ErrDuplicateRun", err)
		}
		// The same id under another task is a duplicate too: ids are unique
		// in a deployment.
		if err := st.SaveRun(ctx, Record(r.ID, "other", t0)); !errors.Is(err, runtime.ErrDuplicateRun) {
			t.Fatalf("SaveRun of the id under another task = %v, want ErrDuplicateRun", err)
		}
		got, err := st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		Equal(t, got, r)
		// Many instances saving one id at once: exactly one wins.
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.SaveRun(ctx, Record("race", "job", t0.Add(time.Duration(i)*time.Millisecond)))
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, runtime.ErrDuplicateRun):
				t.Errorf("racing SaveRun: %v", err)
			}
		}
		if won != 1 {
			t.Errorf("%d racing saves of one id succeeded, want 1", won)
		}
	})

	t.Run("Update", func(t *testing.T) {
		st := fresh(t)("testing")
		r := Record("abc", "job", t0)
		r.Outcome, r.Logs = runtime.Running, ""
		if err := st.UpdateRun(ctx, r); !errors.Is(err, runtime.ErrRunNotFound) {
			t.Errorf("UpdateRun before SaveRun = %v, want ErrRunNotFound", err)
		}
		if err := st.SaveRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		done := *r
		done.Outcome, done.Duration, done.Logs, done.Error = runtime.Failed, 3*time.Second, "{\"message\":\"x\"}\n", "bad"
		if err := st.UpdateRun(ctx, &done); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		Equal(t, got, &done)
	})

	t.Run("List", func(t *testing.T) {
		open := fresh(t)
		st := open("testing")
		// Ten runs, a second apart, of two tasks, three triggers; two runs
		// share a start (ordered by id).
		var all []*runtime.Record
		for i := range 10 {
			task := []string{"job", "other"}[i%2]
			r := Record(fmt.Sprintf("run%02d", i), task, t0.Add(time.Duration(i)*time.Second))
			r.Trigger = []runtime.Trigger{runtime.TriggerCLI, runtime.TriggerSchedule, runtime.TriggerQueue}[i%3]
			if i%4 == 0 {
				r.Outcome = runtime.Failed
			}
			if i == 9 {
				r.Start = all[8].Start
			}
			all = append(all, r)
		}
		for _, i := range []int{3, 0, 9, 1, 8, 2, 7, 4, 6, 5} { // not in order
			if err := st.SaveRun(ctx, all[i]); err != nil {
				t.Fatal(err)
			}
		}
		// Another deployment in the same backend is not listed.
		if err := open("staging").SaveRun(ctx, Record("elsewhere", "job", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		ids := func(f runtime.RunFilter) []string {
			t.Helper()
			recs, err := st.ListRuns(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			out := []string{}
			for _, r := range recs {
				if r.Logs != "" {
					t.Errorf("ListRuns returned the logs of %s", r.ID)
				}
				out = append(out, r.ID)
			}
			return out
		}
		for _, tt := range []struct {
			f    runtime.RunFilter
			want []string
		}{
			{runtime.RunFilter{}, []string{"run09", "run08", "run07", "run06", "run05", "run04", "run03", "run02", "run01", "run00"}},
			{runtime.RunFilter{Limit: 3}, []string{"run09", "run08", "run07"}},
			{runtime.RunFilter{Task: "job"}, []string{"run08", "run06", "run04", "run02", "run00"}},
			{runtime.RunFilter{Trigger: runtime.TriggerSchedule}, []string{"run07", "run04", "run01"}},
			{runtime.RunFilter{Outcome: runtime.Failed}, []string{"run08", "run04", "run00"}},
			{runtime.RunFilter{Task: "job", Outcome: runtime.Failed, Limit: 2}, []string{"run08", "run04"}},
			{runtime.RunFilter{Since: t0.Add(7 * time.Second)}, []string{"run09", "run08", "run07"}},
			{runtime.RunFilter{Task: "nope"}, []string{}},
		} {
			if got := ids(tt.f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ListRuns(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		}
		// The listing has every field but the logs.
		recs, err := st.ListRuns(ctx, runtime.RunFilter{Limit: 1, Task: "other"})
		if err != nil || len(recs) != 1 {
			t.Fatalf("ListRuns = %v, %v", recs, err)
		}
		want := *all[9]
		want.Logs = ""
		Equal(t, recs[0], &want)
	})

	t.Run("Prune", func(t *testing.T) {
		open := fresh(t)
		st := open("testing")
		now := time.Now().UTC().Truncate(time.Millisecond)
		// job: 5 runs of the last hour and 2 older than a day; other: 2 recent.
		for i := range 5 {
			must(t, st.SaveRun(ctx, Record(fmt.Sprintf("job-new%d", i), "job", now.Add(-time.Duration(i)*time.Minute))))
		}
		must(t, st.SaveRun(ctx, Record("job-old0", "job", now.Add(-25*time.Hour))))
		must(t, st.SaveRun(ctx, Record("job-old1", "job", now.Add(-48*time.Hour))))
		must(t, st.SaveRun(ctx, Record("other-new0", "other", now)))
		must(t, st.SaveRun(ctx, Record("other-new1", "other", now.Add(-time.Minute))))
		must(t, open("staging").SaveRun(ctx, Record("staging-old", "job", now.Add(-48*time.Hour))))

		n, err := st.PruneRuns(ctx, now.Add(-24*time.Hour), 3)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 { // the 2 old ones, and job-new3, job-new4 beyond 3 per task
			t.Errorf("PruneRuns removed %d, want 4", n)
		}
		recs, err := st.ListRuns(ctx, runtime.RunFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.ID)
		}
		want := []string{"other-new0", "job-new0", "other-new1", "job-new1", "job-new2"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("after pruning: %v, want %v", got, want)
		}
		for _, id := range []string{"job-old0", "job-new4"} {
			if _, err := st.GetRun(ctx, id); !errors.Is(err, runtime.ErrRunNotFound) {
				t.Errorf("GetRun(%s) after pruning = %v, want ErrRunNotFound", id, err)
			}
		}
		// A pruned id can be used again.
		must(t, st.SaveRun(ctx, Record("job-old0", "job", now)))
		// Other deployments keep theirs.
		if _, err := open("staging").GetRun(ctx, "staging-old"); err != nil {
			t.Errorf("pruning testing removed a run of staging: %v", err)
		}
		if n, err := st.PruneRuns(ctx, now.Add(-24*time.Hour), 3); err != nil || n != 1 {
			t.Errorf("second PruneRuns = %d, %v; want 1 (job has 4 now)", n, err)
		}
	})
}

// Record returns a finished record with every field a store keeps set.
func Record(id, task string, start time.Time) *runtime.Record {
	return &runtime.Record{ID: id, Task: task, Deployment: "testing", Trigger: runtime.TriggerCLI,
		Instance: "host-a:123", Start: start, Duration: 1500 * time.Microsecond, Outcome: runtime.Succeeded,
		Params: json.RawMessage(`{"n":1,"s":"x"}`), Logs: `{"level":"info","message":"hi"}` + "\n"}
}

// Equal fails the test unless two records are the same (params compared
// as JSON, times as instants).
func Equal(t *testing.T, got, want *runtime.Record) {
	t.Helper()
	g, w := *got, *want
	if !jsonEqual(g.Params, w.Params) {
		t.Errorf("params %s, want %s", g.Params, w.Params)
	}
	g.Params, w.Params = nil, nil
	if g.Start.Equal(w.Start) {
		g.Start = w.Start
	}
	if g.FireTime.Equal(w.FireTime) {
		g.FireTime = w.FireTime
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("record\n%+v\nwant\n%+v", g, w)
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
