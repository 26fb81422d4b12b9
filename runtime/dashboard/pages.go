package dashboard

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// taskRow is one task as the pages show it.
type taskRow struct {
	Name, Description string
	Methods           []string
	URL               string
	OnDemand          bool
	Vars              []varRow
	Schedule          string
}

type varRow struct {
	Name, Value, Source, Help, UsedBy string
	Masked, Set, Required             bool
}

func (d *Dashboard) taskRows(r *http.Request) []taskRow {
	// Each task's schedules, from the scheduler (a failure only leaves the
	// column empty: the schedules page reports it).
	scheds := map[string][]string{}
	if d.o.Schedules != nil {
		if list, err := d.o.Schedules.Schedules(r.Context()); err == nil {
			for _, s := range list {
				scheds[s.Task] = append(scheds[s.Task], s.Spec+" ("+s.TZ+")")
			}
		}
	}
	var rows []taskRow
	for _, t := range d.o.Registry.Tasks() {
		row := taskRow{Name: t.Name, Description: t.Description, Methods: t.Methods(), OnDemand: t.Run != nil,
			Schedule: strings.Join(scheds[t.Name], "; ")}
		if t.HTTP != nil {
			row.URL = "/" + t.Name
		}
		for _, v := range t.Vars {
			row.Vars = append(row.Vars, d.varRow(v.Name, v, nil))
		}
		rows = append(rows, row)
	}
	return rows
}

// varRow shows a variable: masked values as the mask, URLs without their
// password (deployment.Var.Display); the value itself never leaves here.
func (d *Dashboard) varRow(name string, decl runtime.Var, users []string) varRow {
	v := d.o.Deployment.Var(name)
	r := varRow{Name: name, Value: v.Display(), Source: v.Source, Help: decl.Help, Masked: v.Masked || decl.Secret,
		Set: v.Value != "", Required: decl.Name != "" && !decl.Optional, UsedBy: strings.Join(users, ", ")}
	if r.Masked && r.Set {
		r.Value = deployment.Mask
	}
	if !r.Set {
		r.Source = deployment.SourceUnset
	}
	return r
}

func (d *Dashboard) tasksPage(r *http.Request) (string, string, any, error) {
	return "tasks", "Tasks", d.taskRows(r), nil
}

func (d *Dashboard) taskPage(r *http.Request) (string, string, any, error) {
	name := r.PathValue("name")
	for _, row := range d.taskRows(r) {
		if row.Name == name {
			data := map[string]any{"Task": row, "CanRun": row.OnDemand && d.o.Runner != nil}
			if d.o.Requests != nil {
				data["Requests"] = d.o.Requests.Latest(name)
			}
			if d.o.Runs != nil {
				runs, err := d.o.Runs.ListRuns(r.Context(), runtime.RunFilter{Task: name, Limit: 10})
				if err != nil {
					return "", "", nil, err
				}
				data["Runs"] = runs
			}
			return "task", name, data, nil
		}
	}
	return "", "", nil, notFound("no task " + strconv.Quote(truncate(name, 64)))
}

// Filter values come from fixed sets (or the registry); anything else is
// ignored, so a query string cannot make the page query for it.
func triggerNames() []string {
	var out []string
	for _, t := range runtime.Triggers() {
		out = append(out, string(t))
	}
	return out
}

func (d *Dashboard) runsPage(r *http.Request) (string, string, any, error) {
	q := r.URL.Query()
	f := runtime.RunFilter{Limit: 100}
	if t := q.Get("task"); slices.Contains(d.o.Registry.Names(), t) {
		f.Task = t
	}
	triggers, outcomes := triggerNames(), runtime.Outcomes()
	f.Trigger = runtime.Trigger(oneOf(q.Get("trigger"), triggers...))
	f.Outcome = oneOf(q.Get("outcome"), outcomes...)
	data := map[string]any{"Filter": f, "Tasks": d.o.Registry.Names(), "Triggers": triggers, "Outcomes": outcomes}
	if d.o.Runs != nil {
		runs, err := d.o.Runs.ListRuns(r.Context(), f)
		if err != nil {
			return "", "", nil, err
		}
		data["Runs"] = runs
	}
	return "runs", "Runs", data, nil
}

type logLine struct {
	Time, Level, Message, Fields string
}

func (d *Dashboard) runPage(r *http.Request) (string, string, any, error) {
	if d.o.Runs == nil {
		return "", "", nil, notFound("runs are not kept in this deployment")
	}
	id := r.PathValue("id")
	rec, err := d.o.Runs.GetRun(r.Context(), id)
	if err != nil || rec == nil {
		return "", "", nil, notFound("no run " + strconv.Quote(truncate(id, 32)))
	}
	return "run", "Run " + rec.ID, map[string]any{"Run": rec, "Lines": parseLines(rec.Logs), "Params": string(rec.Params)}, nil
}

func (d *Dashboard) schedulesPage(r *http.Request) (string, string, any, error) {
	data := map[string]any{"Enabled": d.o.Schedules != nil}
	if d.o.Schedules != nil {
		s, err := d.o.Schedules.Schedules(r.Context())
		if err != nil {
			return "", "", nil, err
		}
		data["Schedules"] = s
	}
	return "schedules", "Schedules", data, nil
}

var jobStates = []string{"pending", "running", "succeeded", "dead", "cancelled"}

func (d *Dashboard) jobsPage(r *http.Request) (string, string, any, error) {
	q := r.URL.Query()
	f := JobFilter{State: oneOf(q.Get("state"), jobStates...)}
	if t := q.Get("task"); slices.Contains(d.o.Registry.Names(), t) {
		f.Task = t
	}
	if qn := q.Get("queue"); validQueue(qn) {
		f.Queue = qn
	}
	data := map[string]any{"Enabled": d.o.Jobs != nil, "Filter": f, "States": jobStates, "Tasks": d.o.Registry.Names()}
	if d.o.Jobs != nil {
		jobs, err := d.o.Jobs.Jobs(r.Context(), f)
		if err != nil {
			return "", "", nil, err
		}
		data["Jobs"] = jobs
	}
	return "jobs", "Jobs", data, nil
}

func validQueue(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

type requestGroup struct {
	Task     string
	Requests []Request
}

func (d *Dashboard) requestsPage(r *http.Request) (string, string, any, error) {
	var groups []requestGroup
	if d.o.Requests != nil {
		for _, t := range d.o.Registry.Names() {
			if reqs := d.o.Requests.Latest(t); len(reqs) > 0 {
				groups = append(groups, requestGroup{t, reqs})
			}
		}
	}
	return "requests", "Requests", map[string]any{"Enabled": d.o.Requests != nil, "Groups": groups}, nil
}

func (d *Dashboard) deploymentPage(r *http.Request) (string, string, any, error) {
	decl, users := map[string]runtime.Var{}, map[string][]string{}
	for _, t := range d.o.Registry.Tasks() {
		for _, v := range t.Vars {
			if _, ok := decl[v.Name]; !ok || v.Secret {
				decl[v.Name] = v
			}
			users[v.Name] = append(users[v.Name], t.Name)
		}
	}
	names := map[string]bool{}
	for n := range decl {
		names[n] = true
	}
	for _, v := range d.o.Deployment.Vars() {
		names[v.Name] = true
	}
	var rows []varRow
	for _, n := range slices.Sorted(maps.Keys(names)) {
		rows = append(rows, d.varRow(n, decl[n], users[n]))
	}
	dep := d.o.Deployment
	return "deployment", "Deployment", map[string]any{"Vars": rows, "Listen": dep.Listen, "Grace": dep.Grace.String(),
		"BodyLimit": dep.BodyLimit, "Local": dep.LocalFile()}, nil
}

func (d *Dashboard) refusedPage(r *http.Request) (string, string, any, error) {
	data := map[string]any{"Enabled": d.o.Refused != nil}
	if d.o.Refused != nil {
		ops, err := d.o.Refused.Refused(r.Context(), 100)
		if err != nil {
			return "", "", nil, err
		}
		data["Ops"] = ops
	}
	return "refused", "Refused uploads", data, nil
}
