package runtime_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
)

func okHTTP(c echo.Context, env *runtime.Env) error { return c.NoContent(http.StatusNoContent) }

func okRun(ctx context.Context, env *runtime.Env) error { return nil }

func runTask(name string) runtime.Task { return runtime.Task{Name: name, Run: okRun} }

func TestNewRegistryRefusesBadTasks(t *testing.T) {
	tests := []struct {
		name string
		task runtime.Task
		want []string // substrings of the error
	}{
		{"empty name", runtime.Task{Run: okRun}, []string{`task #0 ""`, "invalid name"}},
		{"upper case", runtime.Task{Name: "Hello", Run: okRun}, []string{"invalid name"}},
		{"leading digit", runtime.Task{Name: "1hello", Run: okRun}, []string{"invalid name"}},
		{"dash", runtime.Task{Name: "hello-world", Run: okRun}, []string{"invalid name"}},
		{"slash", runtime.Task{Name: "a/b", Run: okRun}, []string{"invalid name"}},
		{"reserved healthz", runtime.Task{Name: "healthz", Run: okRun}, []string{"reserved", "metrics"}},
		{"reserved internal", runtime.Task{Name: "internal", Run: okRun}, []string{"reserved"}},
		{"reserved all", runtime.Task{Name: "all", Run: okRun}, []string{"reserved"}},
		{"neither HTTP nor Run", runtime.Task{Name: "idle"}, []string{"neither HTTP handlers nor a Run function"}},
		{"HTTP without Access", runtime.Task{Name: "open", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: okHTTP}},
			[]string{"no Access", "runtime.Public"}},
		{"empty HTTP map", runtime.Task{Name: "empty", HTTP: map[string]runtime.HTTPFunc{}, Access: runtime.Public},
			[]string{"HTTP is set but empty"}},
		{"lower-case method", runtime.Task{Name: "m", HTTP: map[string]runtime.HTTPFunc{"get": okHTTP}, Access: runtime.Public},
			[]string{`unknown HTTP method "get"`}},
		{"made-up method", runtime.Task{Name: "m", HTTP: map[string]runtime.HTTPFunc{"FETCH": okHTTP}, Access: runtime.Public},
			[]string{`unknown HTTP method "FETCH"`}},
		{"nil handler", runtime.Task{Name: "m", HTTP: map[string]runtime.HTTPFunc{http.MethodPost: nil}, Access: runtime.Public},
			[]string{"HTTP handler for POST is nil"}},
		{"negative timeout", runtime.Task{Name: "t", Run: okRun, Timeout: -1}, []string{"negative Timeout"}},
		{"lower-case var", runtime.Task{Name: "v", Run: okRun, Vars: []runtime.Var{{Name: "mongo_uri"}}},
			[]string{`invalid variable name "mongo_uri"`}},
		{"var with dash", runtime.Task{Name: "v", Run: okRun, Vars: []runtime.Var{{Name: "MONGO-URI"}}},
			[]string{`invalid variable name "MONGO-URI"`}},
		{"empty var", runtime.Task{Name: "v", Run: okRun, Vars: []runtime.Var{{Name: ""}}},
			[]string{`invalid variable name ""`}},
		{"var twice", runtime.Task{Name: "v", Run: okRun, Vars: []runtime.Var{{Name: "A"}, {Name: "A", Optional: true}}},
			[]string{"variable A is declared twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := runtime.NewRegistry(tt.task)
			if err == nil {
				t.Fatalf("NewRegistry accepted the task: %v", reg.Names())
			}
			if reg != nil {
				t.Errorf("NewRegistry returned a registry with its error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewRegistryAcceptsGoodTasks(t *testing.T) {
	for _, task := range []runtime.Task{
		runTask("a"),
		runTask("generate_keys"),
		runTask("x1_2"),
		{Name: "both", Run: okRun, HTTP: map[string]runtime.HTTPFunc{
			http.MethodGet: okHTTP, http.MethodHead: okHTTP, http.MethodPost: okHTTP, http.MethodPut: okHTTP,
			http.MethodPatch: okHTTP, http.MethodDelete: okHTTP, http.MethodOptions: okHTTP,
		}, Access: runtime.Public},
		{Name: "authed", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: okHTTP},
			Access: runtime.Authenticated(func(c echo.Context, env *runtime.Env) (any, error) { return nil, nil })},
		{Name: "vars", Run: okRun, Vars: []runtime.Var{{Name: "A"}, {Name: "_B2"}, {Name: "MONGO_URI", Secret: true}}},
	} {
		if _, err := runtime.NewRegistry(task); err != nil {
			t.Errorf("task %q refused: %v", task.Name, err)
		}
	}
}

func TestNewRegistryReportsEveryProblemAtOnce(t *testing.T) {
	_, err := runtime.NewRegistry(
		runTask("good"),
		runtime.Task{Name: "Bad"},
		runTask("healthz"),
		runTask("good"),
		runtime.Task{Name: "web", HTTP: map[string]runtime.HTTPFunc{"get": nil}},
	)
	if err == nil {
		t.Fatal("no error")
	}
	// errors.Join: one error per problem task.
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error is not an errors.Join: %T", err)
	}
	if n := len(joined.Unwrap()); n != 4 {
		t.Errorf("%d problems reported, want 4:\n%v", n, err)
	}
	msg := err.Error()
	for _, w := range []string{
		`task #1 "Bad": invalid name`,
		"neither HTTP handlers nor a Run function",
		`task #2 "healthz": name is reserved`,
		`task "good" is registered twice`,
		`task #4 "web"`,
		"no Access",
		`unknown HTTP method "get"`,
		"HTTP handler for get is nil",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
	// The problems of one task are joined too, one per line.
	if !strings.Contains(msg, "invalid name: want ^[a-z][a-z0-9_]*$\nhas neither") {
		t.Errorf("problems of one task are not on separate lines:\n%s", msg)
	}
}

func TestRegistryNamesSortedAndLookup(t *testing.T) {
	reg, err := runtime.NewRegistry(runTask("zeta"), runTask("alpha"), runTask("mid"), runTask("beta_2"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"alpha", "beta_2", "mid", "zeta"}
	if got := reg.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	var got []string
	for _, task := range reg.Tasks() {
		got = append(got, task.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tasks() order = %v, want %v", got, want)
	}
	// Tasks returns a copy.
	ts := reg.Tasks()
	ts[0].Name = "changed"
	if reg.Names()[0] != "alpha" {
		t.Error("changing the slice Tasks returned changed the registry")
	}
	for _, name := range want {
		task, err := reg.Lookup(name)
		if err != nil || task.Name != name {
			t.Errorf("Lookup(%q) = %q, %v", name, task.Name, err)
		}
	}
	_, err = reg.Lookup("nope")
	if err == nil {
		t.Fatal("Lookup of an unknown task succeeded")
	}
	for _, w := range []string{`unknown task "nope"`, "known: alpha, beta_2, mid, zeta", "tasks/all.go"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestEmptyRegistry(t *testing.T) {
	reg, err := runtime.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Names()) != 0 || len(reg.Vars()) != 0 {
		t.Errorf("empty registry has names %v vars %v", reg.Names(), reg.Vars())
	}
	if _, err := reg.Lookup("x"); err == nil {
		t.Error("Lookup in an empty registry succeeded")
	}
}

func TestRegistryOnly(t *testing.T) {
	reg, err := runtime.NewRegistry(runTask("a"), runTask("b"), runTask("c"))
	if err != nil {
		t.Fatal(err)
	}
	only, err := reg.Only("b")
	if err != nil {
		t.Fatal(err)
	}
	if got := only.Names(); !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("Only(b).Names() = %v", got)
	}
	if _, err := only.Lookup("b"); err != nil {
		t.Errorf("Only(b).Lookup(b): %v", err)
	}
	if _, err := only.Lookup("a"); err == nil {
		t.Error("Only(b) still finds a")
	}
	if got := reg.Names(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Only changed the original registry: %v", got)
	}
	if _, err := reg.Only("zz"); err == nil || !strings.Contains(err.Error(), "known: a, b, c") {
		t.Errorf("Only(zz) error = %v", err)
	}
}

func TestRegistryVarsMerge(t *testing.T) {
	reg, err := runtime.NewRegistry(
		runtime.Task{Name: "one", Run: okRun, Vars: []runtime.Var{
			{Name: "SHARED", Optional: true, Help: "first help"},
			{Name: "KEY", Optional: true},
			{Name: "Z_ONLY_ONE", Optional: true, Secret: true},
		}},
		runtime.Task{Name: "two", Run: okRun, Vars: []runtime.Var{
			{Name: "SHARED", Optional: false},
			{Name: "KEY", Optional: true, Secret: true, Help: "the key"},
			{Name: "A_FIRST"},
		}},
		runtime.Task{Name: "three", Run: okRun, Vars: []runtime.Var{
			{Name: "KEY", Optional: true, Secret: false},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []runtime.Var{
		{Name: "A_FIRST"},
		{Name: "KEY", Optional: true, Secret: true, Help: "the key"},
		{Name: "SHARED", Optional: false, Help: "first help"},
		{Name: "Z_ONLY_ONE", Optional: true, Secret: true},
	}
	if got := reg.Vars(); !reflect.DeepEqual(got, want) {
		t.Errorf("Vars() =\n%+v\nwant\n%+v", got, want)
	}
}

func TestTaskMethodsSorted(t *testing.T) {
	task := runtime.Task{HTTP: map[string]runtime.HTTPFunc{"POST": okHTTP, "DELETE": okHTTP, "GET": okHTTP}}
	if got := task.Methods(); !reflect.DeepEqual(got, []string{"DELETE", "GET", "POST"}) {
		t.Errorf("Methods() = %v", got)
	}
	if got := (runtime.Task{}).Methods(); len(got) != 0 {
		t.Errorf("Methods() of a task without HTTP = %v", got)
	}
}

func TestIsReserved(t *testing.T) {
	for _, n := range runtime.Reserved {
		if !runtime.IsReserved(n) {
			t.Errorf("IsReserved(%q) = false", n)
		}
		if !runtime.NameRE.MatchString(n) {
			t.Errorf("reserved name %q would be refused as invalid anyway: the list is wrong", n)
		}
	}
	for _, n := range []string{"hello", "", "health_check", "metric"} {
		if runtime.IsReserved(n) {
			t.Errorf("IsReserved(%q) = true", n)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	cause := errors.New("db down")
	tests := []struct {
		name      string
		err       *runtime.Error
		status    int
		msg       string
		errString string
		header    map[string]string
		fields    map[string]any
		unwrapsTo error
	}{
		{"Errorf", runtime.Errorf(http.StatusConflict, "version %d", 3), 409, "version 3", "409 version 3", nil, nil, nil},
		{"BadRequest", runtime.BadRequest("bad %s", "x").With("op_index", 2), 400, "bad x", "400 bad x", nil, map[string]any{"op_index": 2}, nil},
		{"Unauthorized", runtime.Unauthorized("no token"), 401, "no token", "401 no token", nil, nil, nil},
		{"Unavailable", runtime.Unavailable(7, cause, "try later"), 503, "try later", "503 try later: db down",
			map[string]string{"Retry-After": "7"}, nil, cause},
		{"Wrap and header", runtime.Errorf(405, "no").WithHeader("Allow", "GET").Wrap(cause), 405, "no", "405 no: db down",
			map[string]string{"Allow": "GET"}, nil, cause},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.err
			if e.Status != tt.status || e.Message != tt.msg {
				t.Errorf("got %d %q, want %d %q", e.Status, e.Message, tt.status, tt.msg)
			}
			if e.Error() != tt.errString {
				t.Errorf("Error() = %q, want %q", e.Error(), tt.errString)
			}
			for k, v := range tt.header {
				if e.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, e.Header.Get(k), v)
				}
			}
			if !reflect.DeepEqual(e.Fields, tt.fields) {
				t.Errorf("fields %v, want %v", e.Fields, tt.fields)
			}
			if tt.unwrapsTo != nil && !errors.Is(e, tt.unwrapsTo) {
				t.Errorf("errors.Is(e, cause) = false")
			}
			wrapped := errors.Join(errors.New("other"), e)
			got, ok := runtime.AsError(wrapped)
			if !ok || got != e {
				t.Errorf("AsError of a wrapped error = %v, %v", got, ok)
			}
		})
	}
	if _, ok := runtime.AsError(errors.New("plain")); ok {
		t.Error("AsError found an *Error in a plain error")
	}
	if _, ok := runtime.AsError(nil); ok {
		t.Error("AsError(nil) = true")
	}
}
