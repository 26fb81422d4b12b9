package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Policies for missed fire times (catchup:) and overlapping runs (overlap:).
const (
	CatchupSkip   = "skip"   // fire times missed while every instance was down are skipped
	CatchupLatest = "latest" // the latest one missed runs once, at start
	OverlapSkip   = "skip"   // a fire time while the previous run runs is skipped
	OverlapAllow  = "allow"  // it runs alongside
)

// NameRE is what a schedule name must match: it is part of run ids and
// metric labels.
var NameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)

// Schedule is one resolved schedule of a deployment.
type Schedule struct {
	Name    string
	Task    string
	Spec    *Spec
	Params  json.RawMessage
	Catchup string
	Overlap string
	Enabled bool
	// Source says where it was declared: the task's folder (tasks/<name>)
	// or the deployment file's entry (file:line).
	Source string
	where  string // Source, naming the entry, for errors
}

// TZ is the schedule's time zone name.
func (s *Schedule) TZ() string { return s.Spec.Location().String() }

// entry is one item of a deployment file's schedules: section, with the
// keys it sets.
type entry struct {
	Name    string          `yaml:"name"`
	Task    string          `yaml:"task"`
	Cron    string          `yaml:"cron"`
	TZ      string          `yaml:"tz"`
	Params  any             `yaml:"params"`
	Enabled *bool           `yaml:"enabled"`
	Catchup string          `yaml:"catchup"`
	Overlap string          `yaml:"overlap"`
	set     map[string]bool // keys present
}

var entryKeys = []string{"catchup", "cron", "enabled", "name", "overlap", "params", "task", "tz"}

// Resolve builds a deployment's schedules: each task's own Schedule
// (named after the task), then the deployment file's schedules: entries,
// which change one of them (same name: the keys an entry sets replace the
// task's) or add one. Every problem is reported at once, each naming the
// file and the entry. The result is sorted by name and includes disabled
// schedules.
func Resolve(reg *runtime.Registry, dep *deployment.Deployment) ([]Schedule, error) {
	// Problems are reported in the file's order: the tasks' own first
	// (order 0), then each entry's (its index + 1).
	type problem struct {
		order int
		msg   string
	}
	var problems []problem
	order := 0
	bad := func(where, format string, args ...any) {
		problems = append(problems, problem{order, where + ": " + fmt.Sprintf(format, args...)})
	}
	type decl struct {
		s      Schedule
		cron   string
		tz     string
		params json.RawMessage
	}
	byName := map[string]*decl{}
	fromTask := map[string]bool{}
	for _, t := range reg.Tasks() {
		if t.Schedule == nil {
			continue
		}
		ts := t.Schedule
		where := fmt.Sprintf("task %s (tasks/%s)", t.Name, t.Name)
		d := &decl{s: Schedule{Name: t.Name, Task: t.Name, Catchup: ts.Catchup, Overlap: ts.Overlap, Enabled: true, Source: "tasks/" + t.Name, where: where},
			cron: ts.Cron, tz: ts.TZ, params: ts.Params}
		if t.Run == nil {
			bad(where, "has a Schedule but no Run function to run")
		}
		byName[t.Name] = d
		fromTask[t.Name] = true
	}

	sec, ok := dep.Section("schedules")
	var nodes []*yaml.Node
	if ok && sec.Node != nil && !(sec.Node.Kind == yaml.ScalarNode && sec.Node.Tag == "!!null") {
		if sec.Node.Kind != yaml.SequenceNode {
			bad(sec.Pos(sec.Node), "schedules: want a list of entries (- task: ..., cron: ...)")
		} else {
			nodes = sec.Node.Content
		}
	}
	seen := map[string]string{} // name -> where, among the file's entries
	entryOrder := map[string]int{}
	for i, n := range nodes {
		order = i + 1
		where := fmt.Sprintf("%s (schedules[%d])", sec.Pos(n), i)
		e, err := decodeEntry(n)
		if err != nil {
			bad(where, "%v", err)
			continue
		}
		name := e.Name
		if name == "" {
			name = e.Task
		}
		if name != "" {
			where = fmt.Sprintf("%s (schedules[%d], %s)", sec.Pos(n), i, name)
		}
		switch {
		case name == "":
			bad(where, "want task: (the task to run), and name: when a task has several schedules")
			continue
		case !NameRE.MatchString(name):
			bad(where, "invalid schedule name %q (want %s)", name, NameRE)
			continue
		}
		if prev, dup := seen[name]; dup {
			bad(where, "a second schedule named %q (the first is at %s): give each entry of a task a name:", name, prev)
			continue
		}
		seen[name] = sec.Pos(n)
		d, override := byName[name]
		if override {
			if e.set["task"] && e.Task != d.s.Task {
				bad(where, "schedule %q is task %s's own; an entry with that name changes it and cannot run task %q (choose another name:)", name, d.s.Task, e.Task)
				continue
			}
		} else {
			d = &decl{s: Schedule{Name: name, Task: e.Task, Catchup: e.Catchup, Overlap: e.Overlap, Enabled: true}}
			byName[name] = d
			if !e.set["task"] {
				bad(where, "no task: (which task does it run?)")
			}
			if !e.set["cron"] {
				bad(where, "no cron: (five fields such as \"0 8 * * 1\", or @hourly, @daily, @every 30s)")
			}
		}
		d.s.Source, d.s.where = sec.Pos(n), where
		entryOrder[name] = order
		if e.set["cron"] {
			d.cron = e.Cron
		}
		if e.set["tz"] {
			d.tz = e.TZ
		}
		if e.set["catchup"] {
			d.s.Catchup = e.Catchup
		}
		if e.set["overlap"] {
			d.s.Overlap = e.Overlap
		}
		if e.set["enabled"] && e.Enabled != nil {
			d.s.Enabled = *e.Enabled
		}
		if e.set["params"] {
			if e.Params == nil {
				d.params = nil
			} else if p, err := json.Marshal(e.Params); err != nil {
				bad(where, "params: %v", err)
			} else {
				d.params = p
			}
		}
	}

	var out []Schedule
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		d := byName[name]
		s := d.s
		where := s.where
		order = entryOrder[name]
		if !fromTask[name] && s.Task != "" {
			t, err := reg.Lookup(s.Task)
			switch {
			case err != nil:
				bad(where, "unknown task %q (tasks with a Run function: %s)", s.Task, strings.Join(taskNames(reg), ", "))
			case t.Run == nil:
				bad(where, "task %q has no Run function (it is served over HTTP only), so it cannot be scheduled", s.Task)
			}
		}
		if d.cron != "" || fromTask[name] {
			spec, err := ParseSpec(d.cron, d.tz)
			if err != nil {
				bad(where, "%v", err)
			}
			s.Spec = spec
		}
		if s.Catchup == "" {
			s.Catchup = CatchupSkip
		}
		if s.Catchup != CatchupSkip && s.Catchup != CatchupLatest {
			bad(where, "catchup: want %s (the default) or %s, got %q", CatchupSkip, CatchupLatest, s.Catchup)
		}
		if s.Overlap == "" {
			s.Overlap = OverlapSkip
		}
		if s.Overlap != OverlapSkip && s.Overlap != OverlapAllow {
			bad(where, "overlap: want %s (the default) or %s, got %q", OverlapSkip, OverlapAllow, s.Overlap)
		}
		if len(d.params) > 0 && !json.Valid(d.params) {
			bad(where, "params are not valid JSON")
		}
		s.Params = d.params
		out = append(out, s)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b problem) int { return a.order - b.order })
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.msg
		}
		file := dep.File
		if file == "" {
			file = "deployment " + dep.Name
		}
		return nil, fmt.Errorf("schedules of deployment %s are not valid (%s, and the tasks' Schedule):\n  %s",
			dep.Name, file, strings.Join(msgs, "\n  "))
	}
	return out, nil
}

// decodeEntry reads one entry, refusing keys it does not know.
func decodeEntry(n *yaml.Node) (entry, error) {
	var e entry
	if n.Kind != yaml.MappingNode {
		return e, errors.New("want an entry such as {task: cleanup, cron: \"0 8 * * 1\"}")
	}
	e.set = map[string]bool{}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if !slices.Contains(entryKeys, k) {
			errs = append(errs, fmt.Sprintf("unknown key %q (known: %s)", k, strings.Join(entryKeys, ", ")))
			continue
		}
		e.set[k] = true
	}
	if err := n.Decode(&e); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return e, errors.New(strings.Join(errs, "; "))
	}
	return e, nil
}

func taskNames(reg *runtime.Registry) []string {
	var out []string
	for _, t := range reg.Tasks() {
		if t.Run != nil {
			out = append(out, t.Name)
		}
	}
	return out
}
