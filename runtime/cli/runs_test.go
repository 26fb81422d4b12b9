package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

func TestRuns(t *testing.T) {
	root := project(t)
	tasks := fakeTasks()
	r := run(t, tasks, nil, "runs", "--root", root)
	r.check(t, cli.OK, []string{"ID  TASK  TRIGGER  START  DURATION  OUTCOME", "(no runs of deployment testing match)"}, nil)

	var ids []string
	for _, params := range []string{`{"n":1}`, `"fail"`, `{"n":2}`} {
		r := run(t, tasks, nil, "test", "job", "--root", root, "--params", params)
		m := regexp.MustCompile(`run ([0-9a-f]{16}) of job`).FindStringSubmatch(r.stderr)
		if m == nil {
			t.Fatalf("no run id:\n%s", r.stderr)
		}
		ids = append(ids, m[1])
	}
	// The table: newest first, one line each, within 100 columns.
	r = run(t, tasks, nil, "runs", "--root", root)
	r.check(t, cli.OK, []string{"(3 runs;"}, nil)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("table:\n%s", r.stdout)
	}
	for i, l := range lines[1:4] {
		f := strings.Fields(l)
		want := []string{"succeeded", "failed", "succeeded"}[i]
		if len(f) != 6 || f[0] != ids[2-i] || f[1] != "job" || f[2] != "cli" || f[5] != want {
			t.Errorf("row %d: %q", i, l)
		}
		if _, err := time.Parse(time.RFC3339, f[3]); err != nil {
			t.Errorf("row %d start: %v", i, err)
		}
		if len(l) > 100 {
			t.Errorf("row over 100 columns: %q", l)
		}
	}

	// --json: one object per line with the documented fields.
	r = run(t, tasks, nil, "runs", "--root", root, "--json", "--outcome", "succeeded")
	r.check(t, cli.OK, nil, nil)
	jl := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(jl) != 2 {
		t.Fatalf("--json lines:\n%s", r.stdout)
	}
	for i, l := range jl {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, l)
		}
		for _, k := range []string{"id", "task", "trigger", "start", "duration_ms", "outcome", "instance"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d has no %q: %s", i, k, l)
			}
		}
		if _, err := time.Parse(time.RFC3339, m["start"].(string)); err != nil || m["id"] != []string{ids[2], ids[0]}[i] {
			t.Errorf("line %d: %s (%v)", i, l, err)
		}
		if d, ok := m["duration_ms"].(float64); !ok || d <= 0 {
			t.Errorf("duration_ms %v", m["duration_ms"])
		}
	}

	// Filters.
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"--outcome", "failed"}, 1},
		{[]string{"--task", "job", "--limit", "2"}, 2},
		{[]string{"--trigger", "schedule"}, 0},
		{[]string{"--since", "1h"}, 3},
		{[]string{"--deployment", "staging"}, 0},
	} {
		r := run(t, tasks, nil, append([]string{"runs", "--json", "--root", root}, tt.args...)...)
		r.check(t, cli.OK, nil, nil)
		if n := strings.Count(r.stdout, "\n"); n != tt.want {
			t.Errorf("runs %v: %d lines, want %d:\n%s", tt.args, n, tt.want, r.stdout)
		}
	}
	r = run(t, tasks, nil, "runs", "--root", root, "--limit", "2")
	r.check(t, cli.OK, []string{"(the newest 2; --limit for more"}, nil)

	// Invalid filters: usage errors that list the valid values.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--trigger", "cron"}, `--trigger: unknown trigger "cron" (valid: cli, dashboard, queue, schedule)`},
		{[]string{"--outcome", "broken"}, `--outcome: unknown outcome "broken" (valid: running, succeeded, failed)`},
		{[]string{"--task", "jbo"}, `--task: unknown task "jbo" (did you mean job?); tasks with runs: job`},
		{[]string{"--task", "api"}, "--task: task api is served over HTTP only, so it has no runs; tasks with runs: job"},
		{[]string{"--since", "yesterday"}, `--since: want a duration such as 14d or 36h, got "yesterday"`},
		{[]string{"--limit", "0"}, "--limit: want 1 to 10000, got 0"},
		{[]string{"--limit", "many"}, `invalid argument "many" for "--limit"`},
		{[]string{"--deployment", "prod"}, `--deployment: unknown deployment "prod"`},
		{[]string{"extra"}, ""},
	} {
		r := run(t, tasks, nil, append([]string{"runs", "--root", root}, tt.args...)...)
		r.check(t, cli.Usage, nil, []string{tt.want})
	}
}

// `logs --follow` prints the next run's lines while it runs, then its end.
func TestLogsFollow(t *testing.T) {
	root := project(t)
	release := make(chan struct{})
	slow := runtime.Task{Name: "slow", Run: func(ctx context.Context, env *runtime.Env) error {
		env.Log.Info().Msg("first step")
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		env.Log.Info().Msg("second step")
		return errors.New("it broke")
	}, Timeout: 20 * time.Second}
	tasks := []runtime.Task{slow}
	var out, errb runtimetest.Buffer
	done := make(chan int)
	go func() {
		done <- cli.Main(cli.App{Args: []string{"logs", "slow", "--follow", "--root", root}, Stdout: &out, Stderr: &errb, Tasks: tasks})
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("the follower did not print %q:\n%s\nstderr:\n%s", what, out.String(), errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("waiting for the next run of slow")
	ran := make(chan result)
	go func() { ran <- run(t, tasks, nil, "test", "slow", "--root", root) }()
	// The first line arrives while the run is still going.
	waitFor("first step")
	if strings.Contains(out.String(), "second step") {
		t.Fatal("the second step printed before it ran")
	}
	close(release)
	r := <-ran
	r.check(t, cli.Failure, nil, []string{"second step", "slow failed: it broke"})
	select {
	case code := <-done:
		if code != cli.OK {
			t.Errorf("logs --follow exited %d:\n%s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs --follow did not end with the run")
	}
	for _, w := range []string{"run ", "of task slow in deployment testing", "trigger cli", "--- logs", "INF first step", "INF second step", "--- failed after", "error: it broke"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("follower output has no %q:\n%s", w, out.String())
		}
	}
	if strings.Count(out.String(), "first step") != 1 {
		t.Errorf("a line printed twice:\n%s", out.String())
	}
}
