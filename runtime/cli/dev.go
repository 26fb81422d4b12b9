package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// watched are the folders `runtime dev` watches, under the project root
// (those that exist).
var watched = []string{"tasks", "deployments", "templates", "internal"}

// Timing of `runtime dev`.
const (
	devSettle  = 150 * time.Millisecond // a burst of saves is one change
	devStartup = 2 * time.Minute        // a started process must serve by then
)

func (a *App) devCmd() *cobra.Command {
	var listen, main string
	c := &cobra.Command{
		Use:   "dev [deployment]",
		Short: "serve a deployment, rebuilt on every change",
		Long: `runtime dev: serve a deployment (testing by default) while you edit it.

It builds the project's binary (go build of --main), serves the deployment
with it, and watches tasks/, deployments/, templates/ and internal/: on a
change it rebuilds, starts the new version beside the old one and switches
to it once it serves, so the address never changes and requests keep being
answered. A build that fails is printed and the last good version keeps
serving. The development store keeps running across restarts (this
process holds it). It serves on loopback only.`,
		Example: "  runtime dev\n  runtime dev staging --listen 127.0.0.1:7070",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"testing"}
			}
			return a.deploymentArg(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			name := "testing"
			if len(args) == 1 {
				name = args[0]
			}
			return a.dev(c.Context(), name, listen, main)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "serve on `HOST:PORT`, a loopback address (default: the deployment's listen)")
	c.Flags().StringVar(&main, "main", "./cmd/runtime", "the `PACKAGE` to build, relative to the project root")
	return c
}

// devServer is a running `runtime dev`: a reverse proxy on the served
// address to the current child, a `runtime deploy` of the last good build.
type devServer struct {
	a       *App
	root    string
	dep     string
	main    string
	tags    []string // build tags: nodevstore while this process holds the store
	base    string   // http://host:port this process serves on
	dir     string   // .runtime/dev: the builds
	out     *syncWriter
	console io.Writer // child log lines, made readable

	target atomic.Pointer[url.URL] // the current child; nil: none serves
	state  atomic.Value            // why none serves (string)
	cur    *child
	builds int
}

// syncWriter serializes writes of whole lines from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) printf(format string, args ...any) {
	fmt.Fprintf(s, "runtime dev: "+format+"\n", args...)
}

func (a *App) dev(ctx context.Context, name, listen, main string) error {
	p, err := a.project()
	if err != nil {
		return err
	}
	dep, err := p.load(name, a.Environ, p.reg)
	if err != nil {
		return err
	}
	addr := dep.Listen
	if listen != "" {
		addr = listen
	}
	if err := loopbackOnly(addr); err != nil {
		return usageErr("%v", err)
	}
	d := &devServer{a: a, root: p.root, dep: name, main: main, dir: filepath.Join(p.stateDir(), "dev"),
		out: &syncWriter{w: a.Stdout}}
	d.console = runtime.Console(d.out)
	d.state.Store("starting: the first build is running")
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	if a.HoldStore != nil {
		log := runtime.NewLogger(d.console, dep.Secrets())
		uri, release, err := a.HoldStore(ctx, dep, p.stateDir(), log)
		if err != nil {
			return redactErr(err, dep.Secrets())
		}
		defer release()
		if uri != "" {
			// The children connect to this process's store: they need no
			// FerretDB of their own, and link faster without it.
			d.tags = []string{"nodevstore"}
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	d.base = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: d.proxy(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the project: %w", err)
	}
	defer w.Close()
	var folders []string
	for _, f := range watched {
		if err := addTree(w, filepath.Join(p.root, f)); err == nil {
			folders = append(folders, f+"/")
		}
	}
	d.out.printf("serving %s at %s; watching %s (Ctrl-C stops)", name, d.base, strings.Join(folders, ", "))

	d.rebuild(ctx, "start")
	defer d.stopCurrent()
	changed := map[string]bool{}
	var settle <-chan time.Time
	for {
		var exited <-chan struct{}
		if d.cur != nil {
			exited = d.cur.exited
		}
		select {
		case <-ctx.Done():
			d.out.printf("stopping")
			return nil
		case err := <-w.Errors:
			d.out.printf("watching: %v", err)
		case ev := <-w.Events:
			if !relevant(ev) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					_ = addTree(w, ev.Name)
				}
			}
			rel, _ := filepath.Rel(p.root, ev.Name)
			changed[rel] = true
			settle = time.After(devSettle)
		case <-settle:
			settle = nil
			var names []string
			for n := range changed {
				// A tool's temporary file, gone already (sed -i, editors
				// that write and rename): no change of its own.
				if _, err := os.Stat(filepath.Join(p.root, n)); err != nil && filepath.Ext(n) == "" {
					continue
				}
				names = append(names, n)
			}
			clear(changed)
			if len(names) > 0 {
				slices.Sort(names)
				d.rebuild(ctx, summarize(names))
			}
		case <-exited:
			code := d.cur.cmd.ProcessState.ExitCode()
			d.target.Store(nil)
			d.state.Store(fmt.Sprintf("the served process exited (code %d); fix the cause and save a file", code))
			d.out.printf("the served process exited (code %d); waiting for a change to start again", code)
			d.cur = nil
		}
	}
}

// loopbackOnly refuses an address that is not on loopback: the proxy
// would make every caller look local to the dashboard.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("runtime dev serves on a loopback address only (127.0.0.1:PORT), not %s: use runtime deploy to serve others", addr)
	}
	return nil
}

// addTree watches dir and every folder below it.
func addTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			return nil
		}
		if path != dir && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
}

// relevant reports whether an event is a change of a source file, not of
// an editor's swap or backup file or of permissions alone.
func relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	b := filepath.Base(ev.Name)
	switch {
	case strings.HasPrefix(b, ".") || strings.HasPrefix(b, "#") || strings.HasSuffix(b, "~"),
		strings.HasSuffix(b, ".swp") || strings.HasSuffix(b, ".swx") || strings.HasSuffix(b, ".tmp"),
		b == "4913": // vim's probe
		return false
	}
	return true
}

func summarize(names []string) string {
	if len(names) > 3 {
		return fmt.Sprintf("%s and %d more changed", strings.Join(names[:3], ", "), len(names)-3)
	}
	return strings.Join(names, ", ") + " changed"
}

// rebuild builds the binary and, when it builds, starts it and switches to
// it; on any failure the current child keeps serving.
func (d *devServer) rebuild(ctx context.Context, why string) {
	d.builds++
	n := d.builds
	d.out.printf("%s: building (#%d)", why, n)
	started := time.Now()
	bin, err := d.build(ctx, n)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if d.cur == nil {
			d.state.Store("the build failed; fix it and save: " + err.Error())
		}
		fmt.Fprintf(d.a.Stderr, "runtime dev: build #%d failed:\n%s\n", n, strings.TrimRight(err.Error(), "\n"))
		if d.cur != nil {
			d.out.printf("build #%d failed; still serving build #%d", n, d.cur.build)
		} else {
			d.out.printf("build #%d failed; nothing to serve until a build succeeds", n)
		}
		return
	}
	built := time.Since(started)
	c, err := d.start(ctx, bin, n)
	if err != nil {
		_ = os.Remove(bin)
		if ctx.Err() != nil {
			return
		}
		if d.cur != nil {
			d.out.printf("build #%d does not start: %v; still serving build #%d", n, err, d.cur.build)
		} else {
			d.state.Store("the deployment does not start: " + err.Error())
			d.out.printf("build #%d does not start: %v; waiting for a change", n, err)
		}
		return
	}
	old := d.cur
	d.cur = c
	d.target.Store(c.url)
	if old != nil {
		old.stop()
	}
	d.announce(c, built, time.Since(started)-built)
}

// build runs go build into a fixed path (so that an unchanged build links
// nothing) and copies the result for the child to run.
func (d *devServer) build(ctx context.Context, n int) (string, error) {
	out := filepath.Join(d.dir, "build", "runtime")
	// No -trimpath: a panic's stack names the files as they are on disk,
	// and the dependencies come from the cache of the usual builds.
	args := []string{"build", "-o", out}
	if len(d.tags) > 0 {
		args = append(args, "-tags", strings.Join(d.tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, d.main)...)
	cmd.Dir, cmd.Env = d.root, d.a.Environ
	if b, err := cmd.CombinedOutput(); err != nil {
		if len(b) == 0 {
			return "", err
		}
		return "", errors.New(string(b))
	}
	bin := filepath.Join(d.dir, fmt.Sprintf("runtime-%d", n))
	if err := copyFile(out, bin); err != nil {
		return "", err
	}
	return bin, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// child is one `runtime deploy` started by `runtime dev`.
type child struct {
	cmd       *exec.Cmd
	bin       string
	build     int
	url       *url.URL
	mounted   []mount
	dashboard string
	exited    chan struct{}
}

type mount struct{ task, methods string }

// start runs bin as `runtime deploy <dep> --listen 127.0.0.1:0` and waits
// until it serves (its "serving" log line), its log lines passed on.
func (d *devServer) start(ctx context.Context, bin string, n int) (*child, error) {
	cmd := exec.Command(bin, "deploy", d.dep, "--listen", "127.0.0.1:0", "--root", d.root)
	cmd.Dir, cmd.Env, cmd.Stderr = d.root, d.a.Environ, d.a.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, bin: bin, build: n, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		d.readLogs(stdout, c, ready)
		_ = cmd.Wait()
		close(c.exited)
	}()
	select {
	case <-ready:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("it exited with code %d before serving (its output is above)", cmd.ProcessState.ExitCode())
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	case <-time.After(devStartup):
		c.stop()
		return nil, fmt.Errorf("it did not serve within %s", devStartup)
	}
}

// readLogs passes the child's JSON log lines on, readable, and notes what
// it mounts until it serves.
func (d *devServer) readLogs(r io.Reader, c *child, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	serving := false
	for sc.Scan() {
		line := sc.Bytes()
		var ev struct {
			Message string   `json:"message"`
			Task    string   `json:"task"`
			URL     string   `json:"url"`
			Methods []string `json:"methods"`
		}
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(d.out, "%s\n", line)
			continue
		}
		_, _ = d.console.Write(append(bytes.Clone(line), '\n'))
		if serving {
			continue
		}
		switch {
		case ev.Message == "mounted" && ev.Task != "":
			c.mounted = append(c.mounted, mount{ev.Task, strings.Join(ev.Methods, ",")})
		case strings.HasPrefix(ev.Message, "dashboard at ") && ev.URL != "":
			if u, err := url.Parse(ev.URL); err == nil {
				c.dashboard = u.Path
			}
		case strings.HasPrefix(ev.Message, "serving ") && ev.URL != "":
			if u, err := url.Parse(ev.URL); err == nil {
				c.url = u
				serving = true
				close(ready)
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// stop asks the child to shut down (SIGTERM: it lets in-flight requests
// finish) and waits for it, then removes its binary.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	_ = os.Remove(c.bin)
}

func (d *devServer) stopCurrent() {
	if d.cur != nil {
		d.cur.stop()
		d.cur = nil
	}
}

// announce prints what the new child serves, at this process's address.
func (d *devServer) announce(c *child, built, startup time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "runtime dev: build #%d serves %s at %s (built in %s, started in %s)\n",
		c.build, d.dep, d.base, built.Round(10*time.Millisecond), startup.Round(10*time.Millisecond))
	width := 0
	if c.dashboard != "" {
		width = len("dashboard")
	}
	for _, m := range c.mounted {
		width = max(width, len(m.methods))
	}
	for _, m := range c.mounted {
		fmt.Fprintf(&b, "  %-*s  %s/%s\n", width, m.methods, d.base, m.task)
	}
	if c.dashboard != "" {
		fmt.Fprintf(&b, "  %-*s  %s%s\n", width, "dashboard", d.base, c.dashboard)
	}
	_, _ = io.WriteString(d.out, b.String())
}

// proxy forwards every request to the current child, keeping the Host the
// client used; with no child serving it answers 503 saying why.
func (d *devServer) proxy() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			t := d.target.Load()
			r.SetURL(t)
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			devUnavailable(w, "the served process does not answer: "+err.Error())
		},
		ErrorLog: log.New(io.Discard, "", 0), // a client gone away is no news
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.target.Load() == nil {
			why, _ := d.state.Load().(string)
			devUnavailable(w, why)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

func devUnavailable(w http.ResponseWriter, why string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "runtime dev: " + why})
}

// HoldStoreFunc is App.HoldStore: it runs a deployment's development store
// in this process until release (uri "" when the deployment has none).
type HoldStoreFunc func(ctx context.Context, dep *deployment.Deployment, stateDir string, log zerolog.Logger) (uri string, release func(), err error)
