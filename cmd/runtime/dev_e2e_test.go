package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// TestDev runs `runtime dev` on a copy of the module: a change to a
// handler is served without restarting the command, at the same address,
// on the same development store; a syntax error leaves the old version
// serving.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a copy of the module")
	}
	root := copyModule(t)
	run(t, root, nil, "new", "hello", "--http").must(t, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "dev", "--listen", "127.0.0.1:0", "--root", root)
	cmd.Dir = root
	// -trimpath: the copy's packages are then the same build actions in
	// every temporary folder, so that from the second run on the build
	// cache has them all (the first build takes seconds, not a minute).
	cmd.Env = append(baseEnv(), "GOFLAGS="+strings.TrimSpace(goEnv(t, "GOFLAGS")+" -trimpath"),
		"GOCACHE="+goEnv(t, "GOCACHE"), "GOMODCACHE="+goEnv(t, "GOMODCACHE"))
	out, errs := &runtimetest.Buffer{}, &runtimetest.Buffer{}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.MultiWriter(out, pw), errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	serves := make(chan string, 16) // "build #N serves testing at URL" lines
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "runtime dev: build #") && strings.Contains(sc.Text(), " serves ") {
				serves <- sc.Text()
			}
		}
		io.Copy(io.Discard, pr)
	}()
	wait := func(what string, within time.Duration) string {
		t.Helper()
		select {
		case l := <-serves:
			return l
		case err := <-done:
			t.Fatalf("runtime dev exited (%v) waiting for %s:\n%s\n%s", err, what, out, errs)
		case <-time.After(within):
			t.Fatalf("no %s within %s:\n%s\n%s", what, within, out, errs)
		}
		return ""
	}
	// The first build compiles the copy (minutes with an empty cache).
	first := wait("first build", 7*time.Minute)
	m := regexp.MustCompile(`serves testing at (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("no URL in %q", first)
	}
	base := m[1]
	time.Sleep(200 * time.Millisecond) // the task lines follow
	for _, w := range []string{`GET\s+` + base + `/hello`, `GET,HEAD\s+` + base + `/jwks`, `POST\s+` + base + `/upload`, `dashboard\s+` + base + `/_/`} {
		if !regexp.MustCompile(`(?m)^  ` + w + `$`).MatchString(out.String()) {
			t.Errorf("the announcement lacks %s:\n%s", w, out)
		}
	}
	get := func() (int, string) {
		resp, err := http.Get(base + "/hello?name=dev")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := get(); code != 200 || body != `{"hello":"dev"}` {
		t.Fatalf("GET /hello: %d %s", code, body)
	}
	storeOwner := func() int {
		b, _ := os.ReadFile(filepath.Join(root, ".runtime", "devstore", "testing", "store.json"))
		var h struct{ PID int }
		json.Unmarshal(b, &h)
		return h.PID
	}
	if storeOwner() != cmd.Process.Pid {
		t.Errorf("the development store is not held by runtime dev (pid %d): %d", cmd.Process.Pid, storeOwner())
	}
	src := filepath.Join(root, "tasks", "hello", "hello.go")
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// A changed handler is served at the same address.
	for len(serves) > 0 { // restarts of the first start (its generated keys)
		<-serves
	}
	edited := strings.Replace(string(orig), `map[string]string{"hello": name}`, `map[string]string{"hi": name}`, 1)
	if edited == string(orig) {
		t.Fatal("the scaffold changed: no handler body to edit")
	}
	changed := time.Now()
	os.WriteFile(src, []byte(edited), 0o644)
	for {
		if _, body := get(); body == `{"hi":"dev"}` {
			break
		}
		if time.Since(changed) > 3*time.Minute {
			t.Fatalf("the change is not served:\n%s\n%s", out, errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a handler change served %s after the save", time.Since(changed).Round(10*time.Millisecond))
	if storeOwner() != cmd.Process.Pid {
		t.Error("the development store did not stay with runtime dev")
	}

	// A syntax error: reported, and the last good version keeps serving.
	os.WriteFile(src, []byte(edited+"\nfunc broken( {\n"), 0o644)
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(errs.String(), "failed:") {
		if time.Now().After(deadline) {
			t.Fatalf("no build error reported:\n%s\n%s", out, errs)
		}
		if code, body := get(); code != 200 || body != `{"hi":"dev"}` {
			t.Fatalf("while the broken build ran: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !regexp.MustCompile(`tasks/hello/hello\.go:\d+:\d+: syntax error`).MatchString(errs.String()) {
		t.Errorf("the compiler's message is not shown:\n%s", errs)
	}
	if !strings.Contains(out.String(), "failed; still serving build #") {
		t.Errorf("no word of the old build serving on:\n%s", out)
	}
	if code, body := get(); code != 200 || body != `{"hi":"dev"}` {
		t.Errorf("after the failed build: %d %s", code, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("runtime dev did not stop on SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d:\n%s", code, errs)
	}
	if _, err := http.Get(base + "/hello?name=dev"); err == nil {
		t.Error("still served after runtime dev stopped")
	}
	if left, _ := filepath.Glob(filepath.Join(root, ".runtime", "dev", "runtime-*")); len(left) != 0 {
		t.Errorf("builds left behind: %v", left)
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	b, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
