package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// Schedules: three instances of one deployment on the store, with three
// schedules of @every 1s, for a fixed window. Every fire time must run
// exactly once; lateness is each run's start (its record) minus its fire
// time, and the claiming instance logs when it had the claim.
const (
	schedInstances = 3
	schedNames     = 3
	schedDep       = "bench-sched"
)

func (b *bench) measureSchedules(ctx context.Context) error {
	window := max(3*time.Second, 5*b.cfg.duration) // 10 s by default
	b.logf("schedules: %d instances, %d schedules of @every 1s, %s", schedInstances, schedNames, window)
	if err := b.writeScheduleDeployment(); err != nil {
		return err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			b.stopRuntime(p)
		}
	}()
	for range schedInstances {
		p, err := b.deployNamed(b.bin, schedDep)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	from := time.Now().Truncate(time.Second).Add(2 * time.Second)
	to := from.Add(window - time.Second)
	time.Sleep(time.Until(to.Add(1500 * time.Millisecond))) // the last runs start and finish
	for _, p := range procs {
		b.stopRuntime(p)
	}
	procs = nil

	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	recs, err := mongostore.NewRuns(b.db, schedDep).ListRuns(lctx, runtime.RunFilter{Trigger: runtime.TriggerSchedule, Since: from.Add(-time.Second), Limit: 10_000})
	if err != nil {
		return err
	}
	seen := map[string]int{}
	var late []time.Duration
	failed := 0
	for _, r := range recs {
		if r.FireTime.Before(from) || r.FireTime.After(to) {
			continue
		}
		seen[r.ID]++
		late = append(late, r.Start.Sub(r.FireTime))
		if r.Outcome != runtime.Succeeded {
			failed++
		}
	}
	missing := 0
	for at := from; !at.After(to); at = at.Add(time.Second) {
		for i := range schedNames {
			if seen[schedule.RunID(fmt.Sprintf("s%d", i), at)] == 0 {
				missing++
			}
		}
	}
	claimLate, claims := b.claimLateness(from, to)
	slices.Sort(late)
	slices.Sort(claimLate)
	want := schedNames * (int(to.Sub(from)/time.Second) + 1)
	dup := claims - len(late)
	b.metrics = append(b.metrics, Metric{
		Name:    fmt.Sprintf("schedule fire lateness, %d instances", schedInstances),
		Value:   fmt.Sprintf("p50 %s, p99 %s", dur(percentile(late, 50)), dur(percentile(late, 99))),
		Target:  "each fire time run once",
		Verdict: verdict(missing == 0 && dup == 0 && failed == 0 && len(late) == want),
		Note: fmt.Sprintf("run start minus fire time over %d fire times (%d schedules of @every 1s, %s) on the store; claimed (as logged) p50 %s p99 %s; %d missing, %d claimed twice, %d failed",
			len(late), schedNames, window, dur(percentile(claimLate, 50)), dur(percentile(claimLate, 99)), missing, max(dup, 0), failed),
	})
	return nil
}

// claimLateness reads the "schedules: fire" lines of the instances' logs:
// how late each claim of the window was, and how many claims there were.
func (b *bench) claimLateness(from, to time.Time) ([]time.Duration, int) {
	logs, _ := filepath.Glob(filepath.Join(b.tmp, "runtime-*-"+schedDep+".log"))
	var out []time.Duration
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), `"message":"schedules: fire"`) {
				continue
			}
			var l struct {
				FireTime time.Time `json:"fire_time"`
				Late     float64   `json:"late_s"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && !l.FireTime.Before(from) && !l.FireTime.After(to) {
				out = append(out, time.Duration(l.Late*float64(time.Second)))
			}
		}
		f.Close()
	}
	return out, len(out)
}

// writeScheduleDeployment writes the schedules' deployment, on the same
// store as the others.
func (b *bench) writeScheduleDeployment() error {
	dir := filepath.Join(b.tmp, "project", "deployments")
	priv, pub, _, err := keys.Generate("EdDSA")
	if err != nil {
		return err
	}
	var s strings.Builder
	fmt.Fprintf(&s, `# Written by cmd/bench.
production: false
shutdown_grace: 5s
vars:
  - name: POWERSYNC_URL
    value: %s
  - name: MONGO_URI
    masked: true
  - name: MONGO_DATABASE
    value: %s
schedules:
`, audience, b.dbName)
	for i := range schedNames {
		fmt.Fprintf(&s, "  - name: s%d\n    task: generate_keys\n    cron: \"@every 1s\"\n    params: {\"alg\": \"EdDSA\"}\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, schedDep+".yaml"), []byte(s.String()), 0o644); err != nil {
		return err
	}
	local := fmt.Sprintf("POWERSYNC_PRIVATE_KEY=%s\nPOWERSYNC_PUBLIC_KEY=%s\nMONGO_URI=%s\n", priv, pub, b.mongoURI)
	return os.WriteFile(filepath.Join(dir, schedDep+".local.env"), []byte(local), 0o600)
}
