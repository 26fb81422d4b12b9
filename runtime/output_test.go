package runtime_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
)

// A run's output goes to RunRequest.Output, masked and apart from its logs;
// without an Output each line is logged instead.
func TestRunOutput(t *testing.T) {
	task := runtime.Task{Name: "keys", Vars: []runtime.Var{{Name: "TOKEN", Secret: true}},
		Run: func(ctx context.Context, env *runtime.Env) error {
			env.Log.Info().Msg("making lines")
			fmt.Fprintf(env.Output, "A=1\nB=%s\n", env.Var("TOKEN"))
			fmt.Fprint(env.Output, "C=partial")
			return nil
		}}
	reg, err := runtime.NewRegistry(task)
	if err != nil {
		t.Fatal(err)
	}
	core, err := runtime.NewCore(context.Background(), reg, testDep(map[string]string{"TOKEN": "tok-secret-123"}, "TOKEN"),
		runtime.Options{Log: zerolog.Nop(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close(context.Background())

	var out bytes.Buffer
	rec, err := core.Executor().Run(context.Background(), runtime.RunRequest{Task: "keys", Trigger: runtime.TriggerCLI, Output: &out})
	if err != nil || rec.Outcome != runtime.Succeeded {
		t.Fatalf("%v %+v", err, rec)
	}
	if out.String() != "A=1\nB=********\nC=partial" {
		t.Errorf("output %q", out.String())
	}
	if !strings.Contains(rec.Logs, "making lines") || strings.Contains(rec.Logs, "A=1") {
		t.Errorf("logs:\n%s", rec.Logs)
	}

	rec, err = core.Executor().Run(context.Background(), runtime.RunRequest{Task: "keys", Trigger: runtime.TriggerCLI})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"output":true`, `"message":"A=1"`, `"message":"B=********"`, `"message":"C=partial"`} {
		if !strings.Contains(rec.Logs, w) {
			t.Errorf("logs lack %s:\n%s", w, rec.Logs)
		}
	}
	if strings.Contains(rec.Logs, "tok-secret-123") {
		t.Error("the secret is in the logs")
	}
}
