package cli

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/dashboard"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// VarDashboardToken is the secret that opens a production deployment's
// dashboard. Unset there, no dashboard is served.
const VarDashboardToken = "DASHBOARD_TOKEN"

// dashboardVar is how every deployment declares it (with App.Vars).
var dashboardVar = runtime.Var{Name: VarDashboardToken, Optional: true, Secret: true,
	Help: "opens the dashboard at /_/ of a production deployment (a long random string); unset: no dashboard in production"}

// DashboardParts are what the dashboard shows beyond the runtime's own
// (main fills them in from the tasks).
type DashboardParts struct {
	// Refused lists the refused upload operations (upload's dead letters).
	Refused func(s *runtime.Setup) dashboard.Refused
}

// dashboardSources are the deployment's schedules and queue, when it runs
// them (nil: the page says they are not enabled).
type dashboardSources struct {
	sched *schedule.Scheduler
	jobs  queue.Store
}

// mountDashboard serves the dashboard at /_/ of h, when the deployment
// should have one, and returns its URL ("" when it has none).
func (a *App) mountDashboard(ctx context.Context, h *runtime.Host, dep *deployment.Deployment, log zerolog.Logger, base string, src dashboardSources) (string, error) {
	if dep.NoDashboard {
		return "", nil
	}
	exec := h.Executor()
	o := dashboard.Options{Deployment: dep, Registry: h.Registry(), Runner: exec, Log: log.With().Str("component", "dashboard").Logger(),
		Token: dep.Get(VarDashboardToken), Secure: strings.HasPrefix(dep.URL, "https://"), Context: ctx}
	if st := exec.Store(); st != nil {
		o.Runs = st
	}
	if a.Dashboard.Refused != nil {
		o.Refused = a.Dashboard.Refused(h.Setup("dashboard"))
	}
	if src.sched != nil {
		o.Schedules = dashboardSchedules{src.sched}
	}
	if src.jobs != nil {
		o.Jobs = dashboardJobs{src.jobs}
	}
	reqs := dashboard.NewRequestLog(h.Registry().Names(), 0)
	o.Requests = reqs
	d, err := dashboard.New(o)
	if err != nil || d == nil {
		return "", err
	}
	h.Mount(dashboard.Prefix, d)
	h.Observe(func(r runtime.RequestInfo) {
		reqs.Observe(dashboard.Request{Time: r.Time, Task: r.Task, Method: r.Method, Status: r.Status, Latency: r.Latency, RequestID: r.RequestID})
	})
	u, _ := url.JoinPath(base, dashboard.Prefix)
	return u, nil
}

// dashboardJobs shows a deployment's queue on the dashboard.
type dashboardJobs struct{ st queue.Store }

func (d dashboardJobs) Jobs(ctx context.Context, f dashboard.JobFilter) ([]dashboard.Job, error) {
	jobs, err := d.st.List(ctx, queue.Filter{State: queue.State(f.State), Queue: f.Queue, Task: f.Task, Limit: 100})
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.Job, len(jobs))
	for i, j := range jobs {
		out[i] = dashboard.Job{ID: j.ID, Task: j.Task, Queue: j.Queue, State: string(j.State), Attempts: j.Attempt,
			MaxAttempts: j.MaxAttempts, RunAt: j.RunAt, LastError: j.LastError}
	}
	return out, nil
}

func (d dashboardJobs) Retry(ctx context.Context, id string) error {
	_, err := d.st.Retry(ctx, id, time.Now())
	return dashboardJobErr(err)
}

func (d dashboardJobs) Cancel(ctx context.Context, id string) error {
	_, _, err := d.st.Cancel(ctx, id, time.Now())
	return dashboardJobErr(err)
}

// dashboardJobErr turns the store's refusals into answers for the page.
func dashboardJobErr(err error) error {
	var ie *queue.InvalidError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, queue.ErrNotFound):
		return dashboard.ClientError(http.StatusNotFound, "no such job")
	case errors.As(err, &ie):
		return dashboard.ClientError(http.StatusConflict, ie.Error())
	}
	return err
}

// dashboardSchedules shows the schedules this instance runs, with their
// shared state (last run, paused) from the store.
type dashboardSchedules struct{ sc *schedule.Scheduler }

func (d dashboardSchedules) Schedules(ctx context.Context) ([]dashboard.Schedule, error) {
	states, err := d.sc.Store().States(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]schedule.State{}
	for _, st := range states {
		byName[st.Name] = st
	}
	now := time.Now()
	var out []dashboard.Schedule
	for _, s := range d.sc.Schedules() {
		st := byName[s.Name]
		out = append(out, dashboard.Schedule{Name: s.Name, Task: s.Task, Spec: s.Spec.String(), TZ: s.TZ(),
			Next: s.Spec.Next(now), Paused: st.Paused, LastOutcome: st.LastRun.Outcome, LastFire: st.LastRun.Time})
	}
	return out, nil
}

func (d dashboardSchedules) SetPaused(ctx context.Context, name string, paused bool) error {
	for _, s := range d.sc.Schedules() {
		if s.Name == name {
			err := d.sc.Store().SetPaused(ctx, name, paused)
			if errors.Is(err, schedule.ErrNotRegistered) {
				return dashboard.ClientError(http.StatusConflict, "schedule "+name+" has not been registered in the store yet: try again in a moment")
			}
			return err
		}
	}
	return dashboard.ClientError(http.StatusNotFound, "no schedule "+strconv.Quote(name))
}
