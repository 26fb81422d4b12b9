package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

const secretKey = "sk_live_Very5ecretValue"

// project makes a project folder with two deployments.
func project(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write(t, filepath.Join(root, "go.mod"), "module example.test/proj\n\ngo 1.26\n")
	write(t, filepath.Join(root, "deployments", "testing.yaml"), `production: false
listen: 127.0.0.1:0
vars:
  - name: GREETING
    value: hello
  - name: API_KEY
    value: `+secretKey+`
  - name: DB_URL
    value: postgres://app:dbpassword@db.test/app
  - name: FILE_ONLY
    value: from-yaml
`)
	write(t, filepath.Join(root, "deployments", "testing.local.env"), "GREETING=hello from local\n")
	write(t, filepath.Join(root, "deployments", "staging.yaml"), "production: true\nvars: []\n")
	if err := os.MkdirAll(filepath.Join(root, "tasks"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeTasks() []runtime.Task {
	return []runtime.Task{
		{
			Name: "job", Description: "does a job",
			Vars: []runtime.Var{{Name: "GREETING"}, {Name: "API_KEY", Secret: true}, {Name: "OPTIONAL_ONE", Optional: true}},
			Run: func(ctx context.Context, env *runtime.Env) error {
				env.Log.Info().Str("greeting", env.Var("GREETING")).RawJSON("params", orEmpty(env.Params)).Msg("job ran")
				env.Log.Info().Str("key", env.Var("API_KEY")).Msg("using the key")
				switch string(env.Params) {
				case `"fail"`:
					return fmt.Errorf("the key %s was refused", env.Var("API_KEY"))
				case `"panic"`:
					panic("job exploded")
				}
				return nil
			},
		},
		{
			Name: "api", Description: "serves an API", Access: runtime.Public,
			HTTP: map[string]runtime.HTTPFunc{
				http.MethodGet:  func(c echo.Context, env *runtime.Env) error { return c.String(200, "api:"+env.Var("GREETING")) },
				http.MethodPost: func(c echo.Context, env *runtime.Env) error { return c.NoContent(204) },
			},
			Vars: []runtime.Var{{Name: "GREETING"}},
		},
	}
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, tasks []runtime.Task, environ []string, args ...string) result {
	t.Helper()
	var out, errb runtimetest.Buffer
	code := cli.Main(cli.App{Args: args, Environ: environ, Stdout: &out, Stderr: &errb, Tasks: tasks})
	return result{code, out.String(), errb.String()}
}

func (r result) check(t *testing.T, code int, stdout, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, w := range stdout {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout does not contain %q:\n%s", w, r.stdout)
		}
	}
	for _, w := range stderr {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
		}
	}
	for name, s := range map[string]string{"stdout": r.stdout, "stderr": r.stderr} {
		for _, secret := range []string{secretKey, "dbpassword"} {
			if strings.Contains(s, secret) {
				t.Errorf("%s shows a secret:\n%s", name, s)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	root := project(t)
	tests := []struct {
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{nil, cli.Usage, nil, []string{"Usage:", "deploy <deployment>"}},
		{[]string{"frobnicate"}, cli.Usage, nil, []string{`runtime: unknown command "frobnicate"`, "Run 'runtime --help' for usage."}},
		{[]string{"help"}, cli.OK, []string{"Usage:", "test <task>", "--root DIR"}, nil},
		{[]string{"--help"}, cli.OK, []string{"Usage:"}, nil},
		{[]string{"-h"}, cli.OK, []string{"Usage:"}, nil},
		{[]string{"tasks", "extra"}, cli.Usage, nil, []string{`runtime tasks: takes no arguments, got "extra"`, "usage: runtime tasks [flags]"}},
		{[]string{"test", "--root", root}, cli.Usage, nil, []string{"missing the task name; tasks: api, job"}},
		{[]string{"test", "job", "job", "--root", root}, cli.Usage, nil, []string{"want one task, got 2 arguments"}},
		{[]string{"test", "--bogus", "job"}, cli.Usage, nil, []string{"unknown flag: --bogus", "Run 'runtime test --help' for usage."}},
		{[]string{"env", "--root", root}, cli.Usage, nil, []string{"missing the deployment name; deployments: staging, testing"}},
		{[]string{"logs", "--root", root}, cli.Usage, nil, []string{"missing the task name"}},
		{[]string{"deploy", "--root", root}, cli.Usage, nil, []string{"runtime deploy: missing the deployment name; deployments: staging, testing"}},
		{[]string{"new"}, cli.Usage, nil, []string{"accepts 1 arg(s), received 0"}},
		{[]string{"help", "nope"}, cli.Usage, nil, []string{`unknown command "nope"`}},
		{[]string{"help", "tset"}, cli.Usage, nil, []string{`unknown command "tset" (did you mean test?)`}},
		{[]string{"test", "nope", "--root", root}, cli.Usage, nil, []string{`unknown task "nope"`, "known: api, job"}},
		{[]string{"test", "api", "--root", root}, cli.Usage, nil, []string{`task "api" has no on-demand entry point`, "GET, POST /api"}},
		{[]string{"test", "job", "--root", root, "--params", "{bad"}, cli.Usage, nil, []string{"--params is not valid JSON"}},
		{[]string{"test", "job", "--root", root, "--params", "@" + filepath.Join(root, "missing.json")}, cli.Usage, nil, []string{"--params:", "missing.json"}},
		{[]string{"logs", "nope", "--root", root}, cli.Usage, nil, []string{`unknown task "nope"`}},
		{[]string{"new", "Bad-Name", "--root", root}, cli.Usage, nil, []string{`invalid task name "Bad-Name"`}},
		{[]string{"new", "metrics", "--root", root}, cli.Usage, nil, []string{`task name "metrics" is reserved`}},
		{[]string{"new", "func", "--root", root}, cli.Usage, nil, []string{`task name "func" cannot name a Go package`}},
		{[]string{"new", "main", "--root", root}, cli.Usage, nil, []string{`task name "main" cannot name a Go package`}},
		{[]string{"new", "runtime", "--root", root}, cli.Usage, nil, []string{`task name "runtime" clashes with a package the generated code imports (context, deployment, echo, http, runtime, runtimetest, strings, testing)`}},
		{[]string{"new", "echo", "--root", root}, cli.Usage, nil, []string{`task name "echo" clashes`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			run(t, fakeTasks(), nil, tt.args...).check(t, tt.code, tt.stdout, tt.stderr)
		})
	}
}

func TestTasks(t *testing.T) {
	r := run(t, fakeTasks(), nil, "tasks")
	r.check(t, cli.OK, []string{"NAME", "SERVES", "VARIABLES", "DESCRIPTION", "(VAR? = optional)"}, nil)
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "api ") || !strings.HasPrefix(lines[2], "job ") {
		t.Fatalf("not sorted:\n%s", r.stdout)
	}
	for _, re := range []string{
		`(?m)^api\s+GET,POST /api\s+GREETING\s+serves an API$`,
		`(?m)^job\s+on demand\s+GREETING,API_KEY,OPTIONAL_ONE\?\s+does a job$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("listing does not match %s:\n%s", re, r.stdout)
		}
	}
	// A task that is both.
	both := append(fakeTasks(), runtime.Task{Name: "both", Run: func(context.Context, *runtime.Env) error { return nil },
		Access: runtime.Public, HTTP: map[string]runtime.HTTPFunc{"GET": func(echo.Context, *runtime.Env) error { return nil }}})
	r = run(t, both, nil, "tasks")
	if !regexp.MustCompile(`(?m)^both\s+GET /both; on demand\s+-\s*$`).MatchString(r.stdout) {
		t.Errorf("listing:\n%s", r.stdout)
	}
	// Invalid tasks: one message naming every problem, exit 1.
	bad := append(fakeTasks(), runtime.Task{Name: "Bad"}, runtime.Task{Name: "job", Run: func(context.Context, *runtime.Env) error { return nil }})
	r = run(t, bad, nil, "tasks")
	r.check(t, cli.Failure, nil, []string{"the tasks are not valid", `"Bad": invalid name`, `task "job" is registered twice`})
}

func TestEnv(t *testing.T) {
	root := project(t)
	environ := []string{"FILE_ONLY=from-process", "UNDECLARED_PROCESS=nope", "OPTIONAL_ONE=opt"}
	r := run(t, fakeTasks(), environ, "env", "testing", "--root", root)
	r.check(t, cli.OK, []string{
		"deployment testing (production: false, listen: 127.0.0.1:0)",
		"NAME", "VALUE", "SOURCE", "USED BY",
		"precedence: process environment > deployments/testing.local.env > deployments/testing.yaml",
	}, nil)
	for _, re := range []string{
		`(?m)^API_KEY\s+\*\*\*\*\*\*\*\*\s+file\s+job$`,
		`(?m)^DB_URL\s+postgres://app:xxxxx@db.test/app\s+file\s+-$`,
		`(?m)^FILE_ONLY\s+from-process\s+process\s+-$`,
		`(?m)^GREETING\s+hello from local\s+local\s+api,job$`,
		`(?m)^OPTIONAL_ONE\s+opt\s+process\s+job$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("listing does not match %s:\n%s", re, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "UNDECLARED_PROCESS") {
		t.Errorf("an undeclared process variable is listed:\n%s", r.stdout)
	}
	// Sorted by name.
	var names []string
	for _, l := range strings.Split(r.stdout, "\n")[2:] {
		if f := strings.Fields(l); len(f) > 0 && f[0] != "precedence:" {
			names = append(names, f[0])
		}
	}
	if want := "API_KEY DB_URL FILE_ONLY GREETING OPTIONAL_ONE"; strings.Join(names, " ") != want {
		t.Errorf("names %v, want %s", names, want)
	}

	// staging sets nothing: required variables are MISSING, optional ones unset.
	r = run(t, fakeTasks(), nil, "env", "staging", "--root", root)
	r.check(t, cli.OK, []string{"production: true"}, nil)
	for _, re := range []string{
		`(?m)^API_KEY\s+MISSING \(required\)\s+job$`,
		`(?m)^GREETING\s+MISSING \(required\)\s+api,job$`,
		`(?m)^OPTIONAL_ONE\s+unset\s+job$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("listing does not match %s:\n%s", re, r.stdout)
		}
	}
	// A secret set in the process environment is masked too.
	r = run(t, fakeTasks(), []string{"API_KEY=" + secretKey}, "env", "staging", "--root", root)
	r.check(t, cli.OK, nil, nil)
	if !regexp.MustCompile(`(?m)^API_KEY\s+\*{8}\s+process\s+job$`).MatchString(r.stdout) {
		t.Errorf("listing:\n%s", r.stdout)
	}

	r = run(t, fakeTasks(), nil, "env", "prod", "--root", root)
	r.check(t, cli.Usage, nil, []string{`unknown deployment "prod"; deployments: staging, testing`})
}

func TestTestAndLogs(t *testing.T) {
	root := project(t)
	tasks := fakeTasks()

	// Success; flags may come before or after the task name. The logs and
	// the summary go to stderr: stdout is the task's output only.
	r := run(t, tasks, nil, "test", "--root", root, "job", "--params", `{"n":1}`)
	r.check(t, cli.OK, nil, []string{"job ran", "greeting=\"hello from local\"", `params={"n":1}`, "key=********", "succeeded"})
	if r.stdout != "" {
		t.Errorf("stdout of a task without output: %q", r.stdout)
	}
	m := regexp.MustCompile(`run ([0-9a-f]{16}) of job succeeded in \S+ \(runtime logs job --run ([0-9a-f]{16})\)`).FindStringSubmatch(r.stderr)
	if m == nil || m[1] != m[2] {
		t.Fatalf("no run summary:\n%s", r.stderr)
	}
	okID := m[1]

	// Failure: exit 1, the error on stderr, masked.
	r = run(t, tasks, nil, "test", "job", "--root", root, "--params", `"fail"`)
	r.check(t, cli.Failure, nil, []string{"failed", "runtime test: job failed: the key ******** was refused"})
	failID := regexp.MustCompile(`run ([0-9a-f]{16}) of job failed`).FindStringSubmatch(r.stderr)
	if failID == nil {
		t.Fatalf("no run summary:\n%s", r.stderr)
	}

	// Panic: a failed run (exit 1) with the stack in its logs, not a crash.
	paramsFile := filepath.Join(root, "params.json")
	write(t, paramsFile, `"panic"`)
	r = run(t, tasks, nil, "test", "job", "--root", root, "--params", "@"+paramsFile)
	r.check(t, cli.Failure, nil, []string{"run failed", "goroutine", "job failed: panic: job exploded"})

	// logs: the latest run, then a given one.
	r = run(t, tasks, nil, "logs", "job", "--root", root)
	r.check(t, cli.OK, []string{"of task job in deployment testing", "failed", "error: panic: job exploded", "--- logs", "stack="}, nil)
	r = run(t, tasks, nil, "logs", "--run", okID, "job", "--root", root)
	r.check(t, cli.OK, []string{"run " + okID + " of task job", "succeeded", "job ran", "key=********"}, nil)
	r = run(t, tasks, nil, "logs", "job", "--run", failID[1], "--root", root)
	r.check(t, cli.OK, []string{"error: the key ******** was refused"}, nil)
	r = run(t, tasks, nil, "logs", "job", "--run", "0000000000000000", "--root", root)
	r.check(t, cli.Failure, nil, []string{`no run "0000000000000000" of task "job"`})

	// The records are under the git-ignored .runtime/ folder.
	files, _ := filepath.Glob(filepath.Join(root, ".runtime", "runs", "testing", "job", "*.json"))
	if len(files) != 3 {
		t.Errorf("records %v", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(secretKey)) {
			t.Errorf("%s holds the secret", f)
		}
	}
}

func TestTestDeploymentProblems(t *testing.T) {
	root := project(t)
	// staging sets none of job's required variables.
	r := run(t, fakeTasks(), nil, "test", "job", "--root", root, "--deployment", "staging")
	r.check(t, cli.Failure, nil, []string{`deployment "staging" is missing 2 variable(s)`, "GREETING (needed by job)", "API_KEY (needed by job)", "deployments/staging.local.env"})
	// The process environment fills them in.
	r = run(t, fakeTasks(), []string{"GREETING=from env", "API_KEY=" + secretKey}, "test", "job", "--root", root, "--deployment", "staging")
	r.check(t, cli.OK, nil, []string{`greeting="from env"`, "key=********"})
	r = run(t, fakeTasks(), nil, "test", "job", "--root", root, "--deployment", "stagign")
	r.check(t, cli.Usage, nil, []string{`--deployment: unknown deployment "stagign" (did you mean staging?); deployments: staging, testing`})
	r = run(t, fakeTasks(), nil, "logs", "job", "--root", root)
	r.check(t, cli.Failure, nil, []string{`no runs of task "job" in deployment testing yet (run it with ` + "`runtime test job`)"})
	// An HTTP-only task has no runs: say where its logs go instead.
	r = run(t, fakeTasks(), nil, "logs", "api", "--root", root)
	r.check(t, cli.Failure, nil, []string{"task api is served over HTTP only", "runtime deploy <deployment>", "request_id"})
}

// An Init error that quotes a secret does not print it.
func TestInitErrorIsMasked(t *testing.T) {
	root := project(t)
	task := runtime.Task{Name: "keys", Vars: []runtime.Var{{Name: "API_KEY", Secret: true}},
		Run: func(context.Context, *runtime.Env) error { return nil },
		Init: func(ctx context.Context, s *runtime.Setup) error {
			return fmt.Errorf("parsing API_KEY %q: %w", s.Deployment.Get("API_KEY"), errors.New("not a key"))
		}}
	r := run(t, []runtime.Task{task}, nil, "test", "keys", "--root", root)
	r.check(t, cli.Failure, nil, []string{"task keys: parsing API_KEY", "not a key"})
}

func TestFindRoot(t *testing.T) {
	root := project(t)
	sub := filepath.Join(root, "tasks", "deep")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	r := run(t, fakeTasks(), nil, "env", "testing")
	r.check(t, cli.OK, []string{"deployment testing"}, nil)
	t.Chdir(t.TempDir())
	r = run(t, fakeTasks(), nil, "env", "testing")
	r.check(t, cli.Failure, nil, []string{"no deployments/ folder", "use --root"})
}

func TestNew(t *testing.T) {
	root := project(t)
	write(t, filepath.Join(root, "tasks", "internal", "shared", "x.go"), "package shared\n")
	write(t, filepath.Join(root, "tasks", "existing", "existing.go"), "package existing\n")

	r := run(t, nil, nil, "new", "hello_world", "--root", root)
	r.check(t, cli.OK, []string{"created tasks/hello_world", "tasks/all.go"}, nil)
	r = run(t, nil, nil, "new", "--http", "web", "--root", root)
	r.check(t, cli.OK, []string{"created tasks/web"}, nil)

	for _, f := range []string{"hello_world/hello_world.go", "hello_world/hello_world_test.go", "web/web.go", "web/web_test.go", "all.go"} {
		path := filepath.Join(root, "tasks", f)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.ParseFile(token.NewFileSet(), path, b, 0); err != nil {
			t.Errorf("%s is not valid Go: %v", f, err)
		}
	}
	read := func(f string) string {
		b, _ := os.ReadFile(filepath.Join(root, "tasks", f))
		return string(b)
	}
	all := read("all.go")
	for _, w := range []string{
		`"example.test/proj/runtime"`,
		`"example.test/proj/tasks/existing"`,
		`"example.test/proj/tasks/hello_world"`,
		`"example.test/proj/tasks/web"`,
		"existing.Task(),\n\t\thello_world.Task(),\n\t\tweb.Task(),",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("all.go does not contain %q:\n%s", w, all)
		}
	}
	if strings.Contains(all, "internal") {
		t.Errorf("all.go lists internal/:\n%s", all)
	}
	if hw := read("hello_world/hello_world.go"); !strings.Contains(hw, "package hello_world") || !strings.Contains(hw, `Name:        "hello_world"`) || strings.Contains(hw, "HTTP:") {
		t.Errorf("hello_world.go:\n%s", hw)
	}
	if w := read("web/web.go"); !strings.Contains(w, "http.MethodGet: get") || !strings.Contains(w, "runtime.Public") {
		t.Errorf("web.go:\n%s", w)
	}
	if wt := read("web/web_test.go"); !strings.Contains(wt, "func TestGet") {
		t.Errorf("web_test.go:\n%s", wt)
	}

	// Again: the folder exists.
	r = run(t, nil, nil, "new", "web", "--root", root)
	r.check(t, cli.Failure, nil, []string{"already exists"})
	// No go.mod.
	noMod := t.TempDir()
	r = run(t, nil, nil, "new", "x", "--root", noMod)
	r.check(t, cli.Failure, nil, []string{"go.mod"})
	if _, err := os.Stat(filepath.Join(noMod, "tasks", "x")); !os.IsNotExist(err) {
		t.Errorf("a folder was created without a go.mod: %v", err)
	}
}

func TestModulePathAndTaskFolders(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "go.mod"), "// comment\nmodule \"example.test/quoted\" // trailing\n")
	if m, err := cli.ModulePath(root); err != nil || m != "example.test/quoted" {
		t.Errorf("ModulePath = %q, %v", m, err)
	}
	write(t, filepath.Join(root, "go.mod"), "go 1.26\n")
	if _, err := cli.ModulePath(root); err == nil {
		t.Error("a go.mod without module line was accepted")
	}
	for _, d := range []string{"b", "a", "internal", "testdata", ".hidden"} {
		_ = os.MkdirAll(filepath.Join(root, "tasks", d), 0o755)
	}
	write(t, filepath.Join(root, "tasks", "all.go"), "package tasks\n")
	got, err := cli.TaskFolders(root)
	if err != nil || strings.Join(got, ",") != "a,b" {
		t.Errorf("TaskFolders = %v, %v", got, err)
	}
}

func TestDeploy(t *testing.T) {
	root := project(t)
	stdout, stderr := &runtimetest.Buffer{}, &runtimetest.Buffer{}
	sig := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() {
		// Batched log lines are written once an hour: what start-up logged
		// must still come out as soon as it serves, the rest on exit.
		done <- cli.Main(cli.App{Args: []string{"deploy", "testing", "--root", root, "--listen", "127.0.0.1:0"},
			Stdout: stdout, Stderr: stderr, Tasks: fakeTasks(), Signals: sig, LogInterval: time.Hour})
	}()
	urlRE := regexp.MustCompile(`serving testing at (http://127\.0\.0\.1:\d+)`)
	var url string
	deadline := time.Now().Add(5 * time.Second)
	for url == "" && time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("deploy exited %d:\n%s\n%s", code, stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if m := urlRE.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		t.Fatalf("deploy did not start:\n%s\n%s", stdout.String(), stderr.String())
	}
	resp, err := http.Get(url + "/api")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "api:hello from local" {
		t.Errorf("GET /api: %d %s", resp.StatusCode, b)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, err := http.Get(url + path); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", path, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	sig <- syscall.SIGTERM
	select {
	case code := <-done:
		if code != cli.OK {
			t.Errorf("exit code %d\n%s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deploy did not stop")
	}
	out := stdout.String()
	for _, w := range []string{`"message":"mounted"`, `"task":"api"`, `"methods":["GET","POST"]`, url + "/api",
		`"deployment":"testing"`, `"message":"request"`, `"path":"/api"`, "shutting down", `"message":"stopped"`} {
		if !strings.Contains(out, w) {
			t.Errorf("stdout does not contain %s:\n%s", w, out)
		}
	}
	result{0, out, stderr.String()}.check(t, 0, nil, nil)
}

func TestDeployRefusals(t *testing.T) {
	root := project(t)
	r := run(t, fakeTasks(), nil, "deploy", "staging", "--root", root, "--listen", "127.0.0.1:0")
	r.check(t, cli.Failure, nil, []string{`deployment "staging" is missing 2 variable(s)`, "GREETING (needed by api, job)", "API_KEY (needed by job)"})
	bad := append(fakeTasks(), runtime.Task{Name: "healthz", Run: func(context.Context, *runtime.Env) error { return nil }})
	r = run(t, bad, nil, "deploy", "testing", "--root", root, "--listen", "127.0.0.1:0")
	r.check(t, cli.Failure, nil, []string{"the tasks are not valid", "reserved"})
	r = run(t, fakeTasks(), nil, "deploy", "testing", "--root", root, "--listen", "256.0.0.1:1")
	r.check(t, cli.Failure, nil, []string{`cannot listen on "256.0.0.1:1" (--listen)`})
}
