package runtime_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// A production deployment reports every problem in one error: missing
// variables, placeholder values (of the variables its tasks declare) and what each startable task's Init
// finds, a problem that several tasks share (inside an errors.Join too)
// said once.
func TestNewHostEveryProblemAtOnce(t *testing.T) {
	var needsInited atomic.Bool
	needs := runtime.Task{Name: "needs", Run: okRun, Vars: []runtime.Var{{Name: "REQUIRED_ONE"}},
		Init: func(context.Context, *runtime.Setup) error { needsInited.Store(true); return nil }}
	shared := errors.New("the signing key is unset")
	a := runtime.Task{Name: "a", Run: okRun, Init: func(context.Context, *runtime.Setup) error { return shared },
		Vars: []runtime.Var{{Name: "ISSUER", Optional: true}, {Name: "SECRET_ONE", Optional: true, Secret: true}, {Name: "FINE", Optional: true}}}
	b := runtime.Task{Name: "b", Run: okRun, Init: func(context.Context, *runtime.Setup) error {
		return errors.Join(errors.New("the signing key is unset"), errors.New("MONGO_URI is unset"))
	}}
	dep := deployment.New("prod", true, map[string]string{
		"ISSUER": "https://YOUR-TENANT.example/", "SECRET_ONE": "YOUR-SECRET", "FINE": "https://auth.mycompany.test/",
		"UNDECLARED": "YOUR-NOT-MINE"}, "SECRET_ONE")
	_, err := runtimetest.Start(t, dep, needs, a, b)
	if err == nil {
		t.Fatal("started")
	}
	msg := err.Error()
	for _, w := range []string{
		`deployment "prod" cannot start:`,
		"REQUIRED_ONE (needed by needs)",
		`production deployment "prod" still has placeholder values (YOUR-..., example domains): ISSUER=https://YOUR-TENANT.example/, SECRET_ONE; set the real ones`,
		"task a, b: the signing key is unset",
		"task b: MONGO_URI is unset",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}
	if strings.Count(msg, "signing key") != 1 || strings.Contains(msg, "YOUR-SECRET") || strings.Contains(msg, "FINE") || strings.Contains(msg, "UNDECLARED") {
		t.Errorf("repeated, secret or fine values in:\n%s", msg)
	}
	if needsInited.Load() {
		t.Error("a task with a missing variable was started")
	}
	// A development deployment may keep placeholders.
	dev := deployment.New("dev", false, map[string]string{"ISSUER": "https://YOUR-TENANT.example/"})
	if _, err := runtimetest.Start(t, dev, runtime.Task{Name: "x", Run: okRun}); err != nil {
		t.Errorf("development deployment: %v", err)
	}
}
