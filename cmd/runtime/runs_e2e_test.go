package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/mongotest"
)

// TestRunsSharedByInstances: two instances of one deployment, in two
// project folders (two machines: no files in common), share one
// MongoDB-wire store. A run started with one's CLI is listed by the
// other's `runtime runs --json` and shown by its `runtime logs`; clients
// cannot write the runs through /upload.
func TestRunsSharedByInstances(t *testing.T) {
	env := []string{"MONGO_URI=" + mongotest.URI(t), fmt.Sprintf("MONGO_DATABASE=e2e_runs_%d", time.Now().UnixNano())}
	a, b := project(t), project(t)
	sa := deploy(t, a, "testing", env...)
	sb := deploy(t, b, "testing", env...)

	r := run(t, a, env, "test", "generate_keys").must(t, 0)
	m := regexp.MustCompile(`run ([0-9a-f]{16}) of generate_keys succeeded`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no run summary:\n%s", r.stderr)
	}
	id := m[1]
	if _, err := os.Stat(a + "/.runtime/runs"); !os.IsNotExist(err) {
		t.Errorf("the run went to files (%v), not to the shared store", err)
	}

	list := run(t, b, env, "runs", "--json").must(t, 0)
	var got map[string]any
	for _, l := range strings.Split(strings.TrimSpace(list.stdout), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", l, err)
		}
		if rec["id"] == id {
			got = rec
		}
	}
	if got == nil {
		t.Fatalf("the other instance does not list run %s:\n%s%s", id, list.stdout, list.stderr)
	}
	host, _ := os.Hostname()
	if got["task"] != "generate_keys" || got["trigger"] != "cli" || got["outcome"] != "succeeded" || got["deployment"] != "testing" ||
		!strings.HasPrefix(fmt.Sprint(got["instance"]), host+":") {
		t.Errorf("listed %v", got)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(got["start"])); err != nil {
		t.Errorf("start: %v", err)
	}
	if d, ok := got["duration_ms"].(float64); !ok || d <= 0 {
		t.Errorf("duration_ms %v", got["duration_ms"])
	}
	logs := run(t, b, env, "logs", "generate_keys").must(t, 0)
	if !strings.Contains(logs.stdout, "run "+id) || !strings.Contains(logs.stdout, "succeeded") {
		t.Errorf("the other instance's logs:\n%s", logs.stdout)
	}
	// The table of the first instance has it too.
	table := run(t, a, env, "runs", "--task", "generate_keys").must(t, 0)
	if !regexp.MustCompile(`(?m)^` + id + `\s+generate_keys\s+cli\s+\S+\s+\S+\s+succeeded$`).MatchString(table.stdout) {
		t.Errorf("table:\n%s", table.stdout)
	}

	// A client cannot write the runs.
	code, body := post(t, sa.url+"/upload", token(t, sa.url, "mallory"),
		`{"batch":[{"op":"PUT","table":"_runtime_runs","id":"testing/`+id+`","data":{"outcome":"failed"}}]}`)
	if code != 400 || !strings.Contains(body, "_runtime_ collections") {
		t.Errorf("upload to _runtime_runs: %d %s", code, body)
	}
	again := run(t, b, env, "runs", "--json", "--outcome", "failed").must(t, 0)
	if strings.Contains(again.stdout, id) {
		t.Errorf("the run's record changed:\n%s", again.stdout)
	}
	for _, s := range []*server{sa, sb} {
		if code := s.stop(t); code != 0 {
			t.Errorf("exit code %d:\n%s", code, s.logs.String())
		}
	}
}
