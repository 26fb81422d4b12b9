package cli_test

import (
	"context"
	"encoding/json"
	"regexp"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// commands lists the commands `runtime help` shows.
func commands(t *testing.T) []string {
	t.Helper()
	r := run(t, fakeTasks(), nil, "help")
	r.check(t, cli.OK, nil, nil)
	_, list, ok := strings.Cut(r.stdout, "\nCommands:\n")
	if !ok {
		t.Fatalf("no command list:\n%s", r.stdout)
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var names []string
	for _, l := range strings.Split(list, "\n") {
		if !strings.HasPrefix(l, "   ") { // not a summary on its own line
			names = append(names, strings.Fields(l)[0])
		}
	}
	if len(names) < 7 {
		t.Fatalf("commands %v", names)
	}
	return names
}

// Every command has help, as `help <command>` and as `<command> --help`
// (or -h), on stdout, exit 0, naming its own flags and the global ones.
func TestHelpOfEveryCommand(t *testing.T) {
	flags := map[string][]string{
		"deploy": {"--listen HOST:PORT"}, "test": {"--deployment NAME", "--params JSON"}, "logs": {"--run ID"},
		"env": {"--json", "--wide"}, "tasks": {"--json", "--wide"}, "new": {"--http"}, "version": {"--json"},
	}
	for _, name := range commands(t) {
		t.Run(name, func(t *testing.T) {
			h := run(t, fakeTasks(), nil, "help", name)
			h.check(t, cli.OK, append([]string{"Usage:\n  runtime " + name, "--root DIR", "-h, --help"}, flags[name]...), nil)
			if h.stderr != "" {
				t.Errorf("stderr: %s", h.stderr)
			}
			for _, form := range [][]string{{name, "--help"}, {name, "-h"}, {"--root", t.TempDir(), name, "--help"}} {
				r := run(t, fakeTasks(), nil, form...)
				r.check(t, cli.OK, nil, nil)
				if r.stdout != h.stdout {
					t.Errorf("%q prints other help than `help %s`:\n%s", form, name, r.stdout)
				}
			}
		})
	}
}

// --root is global: before the command, after it, between arguments,
// as --root=DIR.
func TestGlobalFlagAnywhere(t *testing.T) {
	root := project(t)
	for _, args := range [][]string{
		{"--root", root, "env", "testing"},
		{"env", "--root", root, "testing"},
		{"env", "testing", "--root", root},
		{"--root=" + root, "env", "testing"},
		{"env", "testing", "--root=" + root, "--wide"},
	} {
		run(t, fakeTasks(), nil, args...).check(t, cli.OK, []string{"deployment testing (production: false"}, nil)
	}
	run(t, fakeTasks(), nil, "--root", root, "test", "--params", `"x"`, "job", "--deployment", "testing").
		check(t, cli.OK, nil, []string{"job ran", "params=x"})
	run(t, fakeTasks(), nil, "--root").check(t, cli.Usage, nil, []string{"flag needs an argument: --root"})
}

func TestSuggestions(t *testing.T) {
	root := project(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"deplyo", "testing"}, `runtime: unknown command "deplyo" (did you mean deploy?)`},
		{[]string{"tset", "job"}, `unknown command "tset" (did you mean test?)`},
		{[]string{"deplyo", "--help"}, `runtime: unknown command "deplyo" (did you mean deploy?)`},
		{[]string{"test", "jbo", "--root", root}, `runtime test: unknown task "jbo" (did you mean job?)`},
		{[]string{"logs", "apj", "--root", root}, `unknown task "apj" (did you mean api?)`},
		{[]string{"env", "tseting", "--root", root}, `unknown deployment "tseting" (did you mean testing?); deployments: staging, testing`},
		{[]string{"deploy", "stagin", "--root", root}, `unknown deployment "stagin" (did you mean staging?)`},
		{[]string{"test", "job", "--deployment", "testnig", "--root", root}, `--deployment: unknown deployment "testnig" (did you mean testing?)`},
	} {
		run(t, fakeTasks(), nil, tt.args...).check(t, cli.Usage, nil, []string{tt.want})
	}
}

func TestVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "example.test/mod", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	var out runtimetest.Buffer
	code := cli.Main(cli.App{Args: []string{"version"}, Stdout: &out, Stderr: &out,
		BuildInfo: func() (*debug.BuildInfo, bool) { return bi, true }})
	want := "runtime example.test/mod v1.2.3\ncommit 0123456789abcdef (2026-01-02T03:04:05Z), with uncommitted changes\ngo1.99.1 " + goruntime.GOOS + "/" + goruntime.GOARCH + "\n"
	if code != cli.OK || out.String() != want {
		t.Errorf("exit %d:\n%s\nwant:\n%s", code, out.String(), want)
	}
	// The test binary's own build information: no VCS stamp in a test.
	r := run(t, nil, nil, "version")
	r.check(t, cli.OK, []string{goruntime.Version(), "commit unknown"}, nil)
	r = run(t, nil, nil, "version", "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["go"] != goruntime.Version() {
		t.Errorf("version --json: %v %s", err, r.stdout)
	}
}

// Tables fit 100 columns, shortening the widest values with an ellipsis;
// --wide and --json give everything.
func TestTableWidths(t *testing.T) {
	long := strings.Repeat("a long description ", 12) + "END"
	var vars []runtime.Var
	for _, n := range []string{"FIRST_VARIABLE_NAME", "SECOND_VARIABLE_NAME", "THIRD_VARIABLE_NAME", "LAST_ONE"} {
		vars = append(vars, runtime.Var{Name: n, Optional: true})
	}
	tasks := append(fakeTasks(), runtime.Task{Name: "wordy", Description: long, Vars: vars,
		Run: func(context.Context, *runtime.Env) error { return nil }})
	r := run(t, tasks, nil, "tasks")
	r.check(t, cli.OK, []string{"…"}, nil)
	for _, l := range strings.Split(r.stdout, "\n") {
		if n := utf8.RuneCountInString(l); n > 100 {
			t.Errorf("a %d-column line:\n%s", n, l)
		}
	}
	if !regexp.MustCompile(`(?m)^wordy\s+on demand\s+FIRST_VARIABLE_NAME\?,S\S*…\s+a long description a long\S* .*…$`).MatchString(r.stdout) {
		t.Errorf("the long row is not shortened as expected:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^job\s+on demand\s+GREETING,API_KEY,OPTIONAL_ONE\?\s+does a job$`).MatchString(r.stdout) {
		t.Errorf("a short row was shortened:\n%s", r.stdout)
	}
	w := run(t, tasks, nil, "tasks", "--wide")
	w.check(t, cli.OK, []string{long, "FIRST_VARIABLE_NAME?,SECOND_VARIABLE_NAME?,THIRD_VARIABLE_NAME?,LAST_ONE?"}, nil)
	if strings.Contains(w.stdout, "…") {
		t.Errorf("--wide shortened:\n%s", w.stdout)
	}

	j := run(t, tasks, nil, "tasks", "--json")
	var got []struct {
		Name, Description string
		Methods           []string
		OnDemand          bool `json:"on_demand"`
		Vars              []struct {
			Name     string
			Optional bool
		}
	}
	if err := json.Unmarshal([]byte(j.stdout), &got); err != nil {
		t.Fatalf("tasks --json: %v\n%s", err, j.stdout)
	}
	if len(got) != 3 || got[0].Name != "api" || strings.Join(got[0].Methods, ",") != "GET,POST" || got[2].Description != long || len(got[2].Vars) != 4 || !got[1].OnDemand {
		t.Errorf("tasks --json: %+v", got)
	}
}

func TestEnvJSON(t *testing.T) {
	root := project(t)
	r := run(t, fakeTasks(), nil, "env", "testing", "--json", "--root", root)
	r.check(t, cli.OK, nil, nil)
	var got struct {
		Deployment string
		Production bool
		Vars       []struct {
			Name, Value, Source string
			Masked, Required    bool
			UsedBy              []string `json:"used_by"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("env --json: %v\n%s", err, r.stdout)
	}
	byName := map[string]int{}
	for i, v := range got.Vars {
		byName[v.Name] = i
	}
	key, greet, opt := got.Vars[byName["API_KEY"]], got.Vars[byName["GREETING"]], got.Vars[byName["OPTIONAL_ONE"]]
	if got.Deployment != "testing" || key.Value != "********" || !key.Masked || !key.Required ||
		greet.Value != "hello from local" || greet.Source != "local" || strings.Join(greet.UsedBy, ",") != "api,job" ||
		opt.Source != "unset" || opt.Required {
		t.Errorf("env --json: %+v", got)
	}
}

// An unset variable shows the default its task applies.
func TestEnvDefaults(t *testing.T) {
	root := project(t)
	tasks := append(fakeTasks(), runtime.Task{Name: "limits", Run: func(context.Context, *runtime.Env) error { return nil },
		Vars: []runtime.Var{{Name: "LIMIT", Optional: true, Default: "10"}, {Name: "MODE", Optional: true, Default: "(whatever the server says)"}}})
	r := run(t, tasks, nil, "env", "testing", "--root", root)
	r.check(t, cli.OK, nil, nil)
	for _, re := range []string{`(?m)^LIMIT\s+10\s+default\s+limits$`, `(?m)^MODE\s+\(whatever the server says\)\s+default\s+limits$`, `(?m)^OPTIONAL_ONE\s+unset\s+job$`} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("listing does not match %s:\n%s", re, r.stdout)
		}
	}
	r = run(t, tasks, []string{"LIMIT=3"}, "env", "testing", "--root", root)
	if !regexp.MustCompile(`(?m)^LIMIT\s+3\s+process\s+limits$`).MatchString(r.stdout) {
		t.Errorf("a set variable shows its default:\n%s", r.stdout)
	}
	r = run(t, tasks, nil, "env", "testing", "--json", "--root", root)
	if !strings.Contains(r.stdout, `"name": "LIMIT",
      "value": "",
      "source": "unset",
      "default": "10",`) {
		t.Errorf("env --json:\n%s", r.stdout)
	}
}

// runtime dev checks what it can before building anything.
func TestDevRefusals(t *testing.T) {
	root := project(t)
	run(t, fakeTasks(), nil, "dev", "--root", root, "--listen", "0.0.0.0:0").
		check(t, cli.Usage, nil, []string{"runtime dev serves on a loopback address only"})
	run(t, fakeTasks(), nil, "dev", "tseting", "--root", root).
		check(t, cli.Usage, nil, []string{`unknown deployment "tseting" (did you mean testing?)`})
	run(t, fakeTasks(), nil, "dev", "testing", "staging", "--root", root).
		check(t, cli.Usage, nil, []string{"want one deployment, got 2 arguments"})
}
