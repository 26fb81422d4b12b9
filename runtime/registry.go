package runtime

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// NameRE is what a task name must match: it is a folder, a URL path and a
// CLI argument.
var NameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Reserved names are paths the runtime serves itself, or folders under
// tasks/ that are not tasks.
var Reserved = []string{"all", "health", "healthz", "internal", "livez", "metrics", "readyz", "static", "testdata"}

var methods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// Registry is the checked, sorted set of tasks a process runs. It is a value
// built in main and passed in; there is no global registry.
type Registry struct {
	tasks  []Task
	byName map[string]int
}

// NewRegistry checks every task and returns every problem at once.
func NewRegistry(tasks ...Task) (*Registry, error) {
	r := &Registry{byName: map[string]int{}}
	var errs []error
	for i, t := range tasks {
		if err := check(t); err != nil {
			errs = append(errs, fmt.Errorf("task #%d %q: %w", i, t.Name, err))
			continue
		}
		if _, dup := r.byName[t.Name]; dup {
			errs = append(errs, fmt.Errorf("task %q is registered twice", t.Name))
			continue
		}
		r.byName[t.Name] = -1
		r.tasks = append(r.tasks, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(r.tasks, func(i, j int) bool { return r.tasks[i].Name < r.tasks[j].Name })
	for i, t := range r.tasks {
		r.byName[t.Name] = i
	}
	return r, nil
}

func check(t Task) error {
	var errs []error
	switch {
	case !NameRE.MatchString(t.Name):
		errs = append(errs, fmt.Errorf("invalid name: want %s", NameRE))
	case IsReserved(t.Name):
		errs = append(errs, fmt.Errorf("name is reserved (reserved: %s)", strings.Join(Reserved, ", ")))
	}
	if t.HTTP == nil && t.Run == nil {
		errs = append(errs, errors.New("has neither HTTP handlers nor a Run function"))
	}
	if t.HTTP != nil {
		if len(t.HTTP) == 0 {
			errs = append(errs, errors.New("HTTP is set but empty"))
		}
		if !t.Access.set() {
			errs = append(errs, errors.New("has HTTP handlers but no Access: use runtime.Public or runtime.Authenticated(fn)"))
		}
		for _, m := range slices.Sorted(maps.Keys(t.HTTP)) {
			if !methods[m] {
				errs = append(errs, fmt.Errorf("unknown HTTP method %q (want upper case, such as GET)", m))
			}
			if t.HTTP[m] == nil {
				errs = append(errs, fmt.Errorf("HTTP handler for %s is nil", m))
			}
		}
	}
	if t.Timeout < 0 {
		errs = append(errs, errors.New("negative Timeout"))
	}
	seen := map[string]bool{}
	for _, v := range t.Vars {
		if !varRE.MatchString(v.Name) {
			errs = append(errs, fmt.Errorf("invalid variable name %q", v.Name))
		}
		if seen[v.Name] {
			errs = append(errs, fmt.Errorf("variable %s is declared twice", v.Name))
		}
		seen[v.Name] = true
	}
	return errors.Join(errs...)
}

var varRE = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// IsReserved reports whether name may not be used for a task.
func IsReserved(name string) bool {
	for _, r := range Reserved {
		if r == name {
			return true
		}
	}
	return false
}

// Tasks returns the tasks sorted by name.
func (r *Registry) Tasks() []Task { return append([]Task(nil), r.tasks...) }

// Names returns the task names, sorted.
func (r *Registry) Names() []string {
	out := make([]string, len(r.tasks))
	for i, t := range r.tasks {
		out[i] = t.Name
	}
	return out
}

// Lookup finds a task by name; the error lists the known ones.
func (r *Registry) Lookup(name string) (Task, error) {
	if i, ok := r.byName[name]; ok {
		return r.tasks[i], nil
	}
	return Task{}, fmt.Errorf("unknown task %q (known: %s; a new task folder must also be listed in tasks/all.go: run `runtime new` or `go generate ./tasks`)",
		name, strings.Join(r.Names(), ", "))
}

// Only returns a registry holding just the named task.
func (r *Registry) Only(name string) (*Registry, error) {
	t, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	return &Registry{tasks: []Task{t}, byName: map[string]int{name: 0}}, nil
}

// Vars returns every variable any task declares, sorted by name; a variable
// is required if any task requires it, and secret if any task says so.
func (r *Registry) Vars() []Var {
	m := map[string]Var{}
	for _, t := range r.tasks {
		for _, v := range t.Vars {
			old, ok := m[v.Name]
			if ok {
				v.Optional = v.Optional && old.Optional
				v.Secret = v.Secret || old.Secret
				if v.Help == "" {
					v.Help = old.Help
				}
				if v.Default == "" {
					v.Default = old.Default
				}
			}
			m[v.Name] = v
		}
	}
	out := make([]Var, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// Methods returns a task's HTTP methods, sorted.
func (t Task) Methods() []string { return slices.Sorted(maps.Keys(t.HTTP)) }

// varNames lists the variables the tasks declare, sorted.
func (r *Registry) varNames() []string {
	var out []string
	for _, v := range r.Vars() {
		out = append(out, v.Name)
	}
	return out
}

// serves reports whether a task is served over HTTP.
func (r *Registry) serves() bool {
	for _, t := range r.tasks {
		if t.HTTP != nil {
			return true
		}
	}
	return false
}
