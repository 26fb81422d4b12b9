package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewTaskBuildsAndPasses scaffolds a task in a copy of this module with
// `runtime new`, then builds the copy, runs the generated tests, and runs
// and serves the new task with the rebuilt binary.
func TestNewTaskBuildsAndPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a copy of the module")
	}
	root := copyModule(t)

	r := run(t, root, nil, "new", "hello_world", "--http").must(t, 0)
	if !strings.Contains(r.stdout, "tasks/hello_world") {
		t.Errorf("new should say what it created: %s", r.stdout)
	}
	run(t, root, nil, "new", "hello_world").must(t, 1) // exists already
	run(t, root, nil, "new", "Bad-Name").must(t, 2)
	run(t, root, nil, "new", "metrics").must(t, 2) // reserved
	run(t, root, nil, "new", "runtime").must(t, 2) // tasks/all.go imports runtime

	all, _ := os.ReadFile(filepath.Join(root, "tasks", "all.go"))
	if !strings.Contains(string(all), "hello_world.Task()") {
		t.Fatalf("tasks/all.go does not register the new task:\n%s", all)
	}
	gocmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	gocmd("vet", "./tasks/hello_world/")
	gocmd("test", "-count=1", "./tasks/hello_world/", "./tasks/")
	newBin := filepath.Join(root, "runtime-new")
	gocmd("build", "-o", newBin, "./cmd/runtime")

	old := binary
	binary = newBin
	defer func() { binary = old }()
	r = run(t, root, nil, "tasks").must(t, 0)
	if !strings.Contains(r.stdout, "hello_world") || !strings.Contains(r.stdout, "GET /hello_world") {
		t.Errorf("tasks does not list the new task:\n%s", r.stdout)
	}
	r = run(t, root, nil, "test", "hello_world", "--params", `{"name":"e2e"}`).must(t, 0)
	if !strings.Contains(r.stderr, "hello_world ran") {
		t.Errorf("test output lacks the task's log line:\n%s", r.stderr)
	}
}

// copyModule copies the module's sources and deployment files into a new
// folder, a project a user could have.
func copyModule(t *testing.T) string {
	t.Helper()
	src := repoRoot(t)
	root := t.TempDir()
	// The sources, and what they embed (the dashboard's pages and assets).
	keep := func(name string) bool {
		for _, ext := range []string{".go", ".tmpl", ".html", ".css", ".js"} {
			if strings.HasSuffix(name, ext) {
				return true
			}
		}
		return false
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, f), b, 0o644)
	}
	for _, d := range []string{"runtime", "tasks", "templates", "cmd", "internal"} {
		copyDir(t, filepath.Join(src, d), filepath.Join(root, d), keep)
	}
	copyDir(t, filepath.Join(src, "deployments"), filepath.Join(root, "deployments"), func(n string) bool { return strings.HasSuffix(n, ".yaml") })
	return root
}
