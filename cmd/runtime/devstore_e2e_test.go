package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestOneDeployPerDevelopmentStore starts `runtime deploy testing` (the
// development store) and a second one of the same project: the second
// fails at once, naming the first's pid; once the first has stopped, a new
// one starts on the same files.
func TestOneDeployPerDevelopmentStore(t *testing.T) {
	root := project(t)
	first := deploy(t, root, "testing")
	logs := first.logs.String()
	m := regexp.MustCompile(`mongosh mongodb://127\.0\.0\.1:\d+/powersync`).FindString(logs)
	if m == "" {
		t.Errorf("no line to paste into mongosh in the log:\n%s", logs)
	}
	start := time.Now()
	r := run(t, root, nil, "deploy", "testing", "--listen", "127.0.0.1:0").must(t, 1)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the second deploy took %s to fail", took)
	}
	pid := fmt.Sprintf("pid %d", first.cmd.Process.Pid)
	if !strings.Contains(r.stderr, "already served by "+pid) || !strings.Contains(r.stderr, "MONGO_URI") {
		t.Errorf("the second deploy does not name the first (%s):\nstdout:\n%s\nstderr:\n%s", pid, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "DEVELOPMENT STORE") {
		t.Errorf("the second deploy started a development store:\n%s", r.stdout)
	}
	if code := first.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	again := deploy(t, root, "testing")
	if code := again.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestWithoutDevelopmentStore builds the binary with -tags nodevstore, as
// for production: a development deployment without MONGO_URI says how to
// get a store.
func TestWithoutDevelopmentStore(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "runtime-nodevstore")
	if out, err := exec.Command("go", "build", "-tags", "nodevstore", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building with -tags nodevstore: %v\n%s", err, out)
	}
	if out, _ := exec.Command("go", "list", "-tags", "nodevstore", "-deps", ".").Output(); strings.Contains(string(out), "FerretDB") {
		t.Errorf("FerretDB is linked in with -tags nodevstore")
	}
	root := project(t)
	cmd := exec.Command(bin, "deploy", "testing", "--listen", "127.0.0.1:0", "--root", root)
	cmd.Env = baseEnv()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	for _, want := range []string{"built without the development store", "set MONGO_URI", "go build ./cmd/runtime"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the error does not say %q:\n%s", want, out)
		}
	}
}
