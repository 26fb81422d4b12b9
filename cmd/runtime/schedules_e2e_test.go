package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/mongotest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// scheduleDeployment writes deployments/<name>.yaml with two schedules of
// @every 1s (one under each overlap policy; tick's runs generate an RSA
// key, which takes a while), and saves its keys first so that instances
// starting together do not each generate a pair.
func scheduleDeployment(t testing.TB, root, name string, env []string) {
	t.Helper()
	yaml := `production: false
shutdown_grace: 5s
vars:
  - name: POWERSYNC_URL
    value: http://localhost:8080
schedules:
  - name: tick
    task: generate_keys
    cron: "@every 1s"
    params: {"alg": "RS256"}
  - name: tock
    task: generate_keys
    cron: "@every 1s"
    params: {"alg": "EdDSA"}
    overlap: allow
`
	writeDeployment(t, root, name, yaml, env)
}

// fireLine is a "schedules: fire" log line of an instance.
type fireLine struct {
	Schedule string    `json:"schedule"`
	FireTime time.Time `json:"fire_time"`
	RunID    string    `json:"run_id"`
	Late     float64   `json:"late_s"`
	Message  string    `json:"message"`
}

func fireLines(t testing.TB, logs string) []fireLine {
	t.Helper()
	var out []fireLine
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l fireLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "schedules: fire" {
			out = append(out, l)
		}
	}
	return out
}

// Three instances of one deployment on one store run two @every 1s
// schedules; one instance is SIGKILLed midway. Every fire time of the
// window has exactly one run record (or, under overlap: skip, a recorded
// skip while the killed instance's run held the schedule), and exactly one
// instance claimed it.
func TestSchedulesThreeInstancesOneKilled(t *testing.T) {
	uri := mongotest.URI(t)
	db := fmt.Sprintf("sched_e2e_%d", time.Now().UnixNano())
	env := []string{"MONGO_URI=" + uri, "MONGO_DATABASE=" + db}
	root := project(t)
	scheduleDeployment(t, root, "sched", env)

	var insts []*server
	for range 3 {
		insts = append(insts, deploy(t, root, "sched", env...))
	}
	for i, s := range insts {
		if !strings.Contains(s.logs.String(), `schedule tick: runs generate_keys at \"@every 1s\" (UTC), next at `) {
			t.Errorf("instance %d does not log its schedules and their next fire times:\n%s", i, s.logs.String())
		}
	}
	// The window starts once all three are up.
	from := time.Now().Truncate(time.Second).Add(2 * time.Second)
	time.Sleep(time.Until(from.Add(4 * time.Second)))

	// SIGKILL the instance that claimed the most so far, midway, a few
	// milliseconds after a fire time: while it may be running one.
	victim := 0
	for i, s := range insts {
		if len(fireLines(t, s.logs.String())) > len(fireLines(t, insts[victim].logs.String())) {
			victim = i
		}
	}
	time.Sleep(time.Until(from.Add(5*time.Second + 60*time.Millisecond)))
	if err := insts[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-insts[victim].done
	killed := time.Now()
	time.Sleep(4 * time.Second)
	to := time.Now().Truncate(time.Second).Add(-time.Second)
	for i, s := range insts {
		if i == victim {
			continue
		}
		resp, err := http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`schedule_runs_total{deployment="sched",outcome="succeeded",schedule="t`,
			`schedule_lateness_seconds_count{deployment="sched",schedule="t`, `schedule_runs_in_flight{deployment="sched"}`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("instance %d's /metrics lacks %s", i, want)
			}
		}
	}
	for i, s := range insts {
		if i != victim {
			if code := s.stop(t); code != 0 {
				t.Errorf("instance %d exited %d after SIGTERM:\n%s", i, code, s.logs.String())
			}
			if !strings.Contains(s.logs.String(), `"message":"stopped"`) {
				t.Errorf("instance %d did not stop gracefully:\n%s", i, s.logs.String())
			}
		}
	}
	t.Logf("window %s to %s (%d fire times), instance %d killed at %s",
		from.Format(time.TimeOnly), to.Format(time.TimeOnly), int(to.Sub(from)/time.Second)+1, victim, killed.Format(time.StampMilli))

	// Who claimed what, from the instances' own logs.
	claims := map[string][]int{}
	for i, s := range insts {
		for _, l := range fireLines(t, s.logs.String()) {
			claims[l.RunID] = append(claims[l.RunID], i)
		}
	}

	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	recs, err := mongostore.NewRuns(client.Database(db), "sched").ListRuns(ctx, runtime.RunFilter{Trigger: runtime.TriggerSchedule, Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	records := map[string][]*runtime.Record{}
	for _, r := range recs {
		records[r.ID] = append(records[r.ID], r)
	}
	store := mongostore.NewSchedules(client.Database(db))
	for _, name := range []string{"tick", "tock"} {
		fires, err := store.Fires(ctx, name, from.Add(-time.Minute), 10_000)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]schedule.Fire{}
		for _, f := range fires {
			byID[f.RunID] = f
		}
		victimPID := fmt.Sprintf(":%d", insts[victim].cmd.Process.Pid)
		// heldBy: the one record of a run that was still running at at.
		heldBy := func(rs []*runtime.Record, at time.Time) bool {
			return len(rs) == 1 && rs[0].Start.Add(rs[0].Duration).After(at)
		}
		byVictim := func(id string) bool { return strings.HasSuffix(byID[id].By, victimPID) }
		var ran, skips, unfinished int
		for at := from; !at.After(to); at = at.Add(time.Second) {
			id := schedule.RunID(name, at)
			rs, c, f := records[id], claims[id], byID[id]
			switch {
			case len(rs) == 1:
				ran++
				r := rs[0]
				if r.Schedule != name || !r.FireTime.Equal(at) || r.Task != "generate_keys" {
					t.Errorf("%s: record %+v", id, r)
				}
				if r.Outcome != runtime.Succeeded {
					// Only the killed instance's run may not have finished.
					if r.Outcome != runtime.Running || !strings.HasSuffix(r.Instance, victimPID) {
						t.Errorf("%s: outcome %s on %s (error %q)", id, r.Outcome, r.Instance, r.Error)
					}
					unfinished++
				}
				if len(c) != 1 && !(len(c) == 0 && byVictim(id)) { // the victim's last log lines may be lost
					t.Errorf("%s: claimed by instances %v, want exactly one", id, c)
				}
			case len(rs) > 1:
				t.Errorf("%s: %d run records", id, len(rs))
			case name == "tick" && f.State == schedule.FireSkipped:
				skips++ // overlap: skip, while the killed instance's run held it
				// or while a run that lived took more than its second (a
				// key pair on a loaded machine): its record says so.
				if !byVictim(f.Holder) && !heldBy(records[f.Holder], at) {
					t.Errorf("%s skipped for %s, which is neither the killed instance's run nor one still running then", id, f.Holder)
				}
			case byVictim(id) && (f.State == schedule.FireRunning || f.State == schedule.FireAbandoned):
				unfinished++ // claimed by the killed instance, killed before its run's record
			default:
				t.Errorf("%s: no run record, no skip (claimed by %v; fire %+v)", id, c, f)
			}
		}
		t.Logf("%s: %d fire times ran, %d skipped while the killed run held it, %d unfinished", name, ran, skips, unfinished)
		if unfinished > 1 {
			t.Errorf("%s: %d unfinished runs, want at most the killed instance's one", name, unfinished)
		}
	}
	var survivors []int
	for i := range insts {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	var after []int
	for id, c := range claims {
		if strings.HasPrefix(id, "tick.") && len(c) == 1 {
			if at, err := time.Parse("20060102T150405Z", strings.TrimPrefix(id, "tick.")); err == nil && at.After(killed) {
				after = append(after, c[0])
			}
		}
	}
	for _, i := range after {
		if !slices.Contains(survivors, i) {
			t.Errorf("instance %d claimed a fire time after it was killed", i)
		}
	}

	// runtime schedules reads the same state.
	out := run(t, root, env, "schedules", "--deployment", "sched", "--json").must(t, 0)
	var listed []struct {
		Name     string `json:"name"`
		Cron     string `json:"cron"`
		Overlap  string `json:"overlap"`
		NextFire string `json:"next_fire"`
		LastRun  *struct {
			Outcome string `json:"outcome"`
		} `json:"last_run"`
	}
	if err := json.Unmarshal([]byte(out.stdout), &listed); err != nil {
		t.Fatalf("runtime schedules --json: %v\n%s", err, out.stdout)
	}
	if len(listed) != 2 || listed[0].Name != "tick" || listed[0].Overlap != "skip" || listed[1].Name != "tock" || listed[1].Overlap != "allow" ||
		listed[0].LastRun == nil || listed[0].LastRun.Outcome != runtime.Succeeded || listed[0].NextFire == "" {
		t.Errorf("runtime schedules --json:\n%s", out.stdout)
	}
}

// Bad schedules stop `runtime deploy` before anything starts, every
// problem in one message naming the file and the entries.
func TestSchedulesBadInputRefused(t *testing.T) {
	root := project(t)
	yaml := `production: false
schedules:
  - task: generate_keys
    cron: "0 8 * *"
  - name: other
    task: nosuch
    cron: "@daily"
    tz: Mars/Olympus
  - name: other
    task: jwks
    cron: "@hourly"
`
	if err := os.WriteFile(filepath.Join(root, "deployments", "bad.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"deploy", "bad", "--listen", "127.0.0.1:0"}, {"schedules", "--deployment", "bad"}} {
		r := run(t, root, nil, args...).must(t, 1)
		for _, want := range []string{
			filepath.Join(root, "deployments", "bad.yaml") + `:3 (schedules[0], generate_keys): cron "0 8 * *"`,
			`bad.yaml:5 (schedules[1], other): unknown time zone "Mars/Olympus"`,
			`bad.yaml:5 (schedules[1], other): unknown task "nosuch"`,
			`bad.yaml:9 (schedules[2], other): a second schedule named "other"`,
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("runtime %s: the error lacks %q:\n%s", args[0], want, r.stderr)
			}
		}
		if strings.Contains(r.stdout, "serving") {
			t.Errorf("runtime %s served with bad schedules", args[0])
		}
	}
}
