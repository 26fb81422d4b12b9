package main

// End-to-end tests: build the binary once, then drive it the way a user
// does, with its CLI and real HTTP requests on loopback.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runtime-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "runtime")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the binary: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the folder holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, _ := os.Getwd()
	return filepath.Dir(filepath.Dir(wd))
}

// project makes a temporary project folder with a copy of the repository's
// deployments, so that runs and local secrets stay out of the repository.
func project(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	copyDir(t, filepath.Join(repoRoot(t), "deployments"), filepath.Join(root, "deployments"), func(name string) bool {
		return strings.HasSuffix(name, ".yaml")
	})
	return root
}

func copyDir(t testing.TB, from, to string, keep func(string) bool) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if !keep(d.Name()) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary in root with a clean environment plus env.
func run(t testing.TB, root string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append(args, "--root", root)...)
	cmd.Dir = root
	cmd.Env = append(baseEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func baseEnv() []string {
	// DEVSTORE_LISTEN: a development store on any free port, never the
	// deployment's usual one (tests use no fixed port).
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(), "DEVSTORE_LISTEN=127.0.0.1:0"}
}

func (r result) must(t testing.TB, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// server is a running `runtime deploy`.
type server struct {
	cmd  *exec.Cmd
	url  string
	logs *runtimetest.Buffer
	done chan error
}

var urlRE = regexp.MustCompile(`"url":"(http://127\.0\.0\.1:\d+)"[^\n]*"message":"serving`)

// deploy starts `runtime deploy <dep> --listen 127.0.0.1:0` and waits for
// it to print its URL.
func deploy(t testing.TB, root, dep string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, "deploy", dep, "--listen", "127.0.0.1:0", "--root", root)
	cmd.Dir = root
	cmd.Env = append(baseEnv(), env...)
	logs := &runtimetest.Buffer{}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(logs, pw)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); pw.Close() }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case s.url = <-found:
	case err := <-s.done:
		t.Fatalf("runtime deploy exited early (%v):\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("runtime deploy did not start in time:\n%s", logs.String())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// stop sends SIGTERM and waits for the exit code.
func (s *server) stop(t testing.TB) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		t.Fatalf("runtime deploy did not stop after SIGTERM:\n%s", s.logs.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func getJSON(t testing.TB, url string, v any) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d, body not JSON: %q", url, resp.StatusCode, b)
		}
	}
	return resp
}

func TestUsageAndUnknowns(t *testing.T) {
	root := project(t)
	r := run(t, root, nil)
	r.must(t, 2)
	if !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("no usage text: %s", r.stderr)
	}
	run(t, root, nil, "frobnicate").must(t, 2)
	run(t, root, nil, "test", "no_such_task").must(t, 2)
	r = run(t, root, nil, "env", "nope").must(t, 2)
	if !strings.Contains(r.stderr, `unknown deployment "nope"`) || !strings.Contains(r.stderr, "testing") {
		t.Errorf("unknown deployment error should list the known ones: %s", r.stderr)
	}
	r = run(t, root, nil, "deploy", "tesitng").must(t, 2)
	if !strings.Contains(r.stderr, "did you mean testing?") || !strings.Contains(r.stderr, "deployments: ") {
		t.Errorf("deploy of an unknown deployment: %s", r.stderr)
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// writeDeployment writes deployments/<name>.yaml and saves an EdDSA key
// pair in its local file (runtime test generate_keys), so that instances
// starting together do not each generate one.
func writeDeployment(t testing.TB, root, name, yaml string, env []string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "deployments", name+".yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, root, env, "test", "generate_keys", "--deployment", name, "--params", `{"alg":"EdDSA","save":"`+name+`"}`).must(t, 0)
}
