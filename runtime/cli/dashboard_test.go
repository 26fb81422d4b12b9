package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/dashboard"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// nopRunner runs nothing: the test never starts the scheduler's loops.
type nopRunner struct{}

func (nopRunner) Run(context.Context, *schedule.Schedule, schedule.Fire) (string, error) {
	return "", nil
}
func (nopRunner) Abandoned(context.Context, *schedule.Schedule, schedule.Fire) error { return nil }

// The dashboard's schedules page over a real scheduler and its store on
// the wire protocol: the schedule listed with its next fire time, paused
// and resumed from the page (the store says so), unknown ones refused.
func TestDashboardSchedules(t *testing.T) {
	ctx := context.Background()
	reg, err := runtime.NewRegistry(runtime.Task{Name: "cleanup", Run: func(context.Context, *runtime.Env) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	dep := deployment.New("dev", false, nil)
	spec, err := schedule.ParseSpec("0 8 * * 1", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	st := mongostore.NewSchedules(storetest.Database(t))
	sc, err := schedule.New([]schedule.Schedule{{Name: "weekly", Task: "cleanup", Spec: spec, Enabled: true}},
		schedule.Options{Store: st, Runner: nopRunner{}, Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Register(ctx, "weekly", time.Now()); err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(dashboard.Options{Deployment: dep, Registry: reg, Schedules: dashboardSchedules{sc}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	get, post := serveDashboard(t, d)
	page := get("/_/schedules")
	next := spec.Next(time.Now()).UTC().Format("2006-01-02 15:04:05")
	if !strings.Contains(page, "weekly") || !strings.Contains(page, "0 8 * * 1") || !strings.Contains(page, next) || !strings.Contains(page, "Pause") {
		t.Fatalf("schedules page should list weekly with its next fire time %s:\n%s", next, page)
	}
	if tasks := get("/_/"); !strings.Contains(tasks, "0 8 * * 1 (Europe/Berlin)") {
		t.Errorf("the tasks page should show cleanup's schedule:\n%s", tasks)
	}
	csrf := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindStringSubmatch(page)[1]
	paused := func() bool {
		states, err := st.States(ctx)
		if err != nil || len(states) != 1 {
			t.Fatalf("states: %v %v", states, err)
		}
		return states[0].Paused
	}
	if code, _ := post("/_/api/schedules/weekly/pause", csrf); code != http.StatusSeeOther || !paused() {
		t.Fatalf("pause: %d, paused %t", code, paused())
	}
	if page := get("/_/schedules"); !strings.Contains(page, "Resume") || !strings.Contains(page, "paused") {
		t.Errorf("a paused schedule should say so and offer Resume:\n%s", page)
	}
	if code, _ := post("/_/api/schedules/weekly/resume", csrf); code != http.StatusSeeOther || paused() {
		t.Fatalf("resume: %d, paused %t", code, paused())
	}
	if code, _ := post("/_/api/schedules/nope/pause", csrf); code != http.StatusNotFound {
		t.Errorf("pausing an unknown schedule: %d, want 404", code)
	}
	if code, _ := post("/_/api/schedules/weekly/explode", csrf); code != http.StatusNotFound {
		t.Errorf("an unknown action: %d, want 404", code)
	}
}

// The dashboard's jobs page over the job store on the wire protocol: jobs
// listed by state, a pending one cancelled and retried from the page, a
// refusal (cancelling a finished job) shown as such.
func TestDashboardJobs(t *testing.T) {
	ctx := context.Background()
	reg, err := runtime.NewRegistry(runtime.Task{Name: "notify", Run: func(context.Context, *runtime.Env) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	st := mongostore.NewJobs(storetest.Database(t))
	now := time.Now()
	j, _, err := st.Enqueue(ctx, &queue.Job{ID: "job-1", Task: "notify", Queue: "mail", State: queue.Pending, RunAt: now, MaxAttempts: 1, Created: now})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(dashboard.Options{Deployment: deployment.New("dev", false, nil), Registry: reg, Jobs: dashboardJobs{st}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	get, post := serveDashboard(t, d)
	page := get("/_/jobs?state=pending&queue=mail")
	if !strings.Contains(page, j.ID) || !strings.Contains(page, "mail") {
		t.Fatalf("the jobs page should list %s:\n%s", j.ID, page)
	}
	if page := get("/_/jobs?state=dead"); strings.Contains(page, j.ID) {
		t.Error("the dead filter lists a pending job")
	}
	csrf := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindStringSubmatch(page)[1]
	if code, body := post("/_/api/jobs/"+j.ID+"/cancel", csrf); code != http.StatusSeeOther {
		t.Fatalf("cancel: %d %s", code, body)
	}
	if got, err := st.Get(ctx, j.ID); err != nil || got.State != queue.Cancelled {
		t.Fatalf("after cancel: %+v %v", got, err)
	}
	if code, body := post("/_/api/jobs/"+j.ID+"/cancel", csrf); code != http.StatusConflict {
		t.Errorf("cancelling a cancelled job: %d %s, want 409", code, body)
	}
	if code, body := post("/_/api/jobs/"+j.ID+"/retry", csrf); code != http.StatusSeeOther {
		t.Fatalf("retry: %d %s", code, body)
	}
	if got, err := st.Get(ctx, j.ID); err != nil || got.State != queue.Pending {
		t.Fatalf("after retry: %+v %v", got, err)
	}
	if code, _ := post("/_/api/jobs/nope/retry", csrf); code != http.StatusNotFound {
		t.Errorf("retrying an unknown job: %d, want 404", code)
	}
}

// serveDashboard serves d on loopback for the test: get returns a page's
// body; post sends the page's CSRF token and returns the status and body,
// not following redirects.
func serveDashboard(t *testing.T, d http.Handler) (get func(path string) string, post func(path, csrf string) (int, string)) {
	t.Helper()
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get = func(path string) string {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post = func(path, csrf string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, nil)
		req.Header.Set("X-CSRF-Token", csrf)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	return get, post
}
