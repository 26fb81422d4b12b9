// Command soak runs PowerSync-like clients against a runtime for a fixed
// time and checks that nothing went wrong: no 5xx, no lost or corrupted
// write, flat memory.
//
//	go run ./cmd/soak -duration 30s -clients 8
//
// By default it starts everything itself, on loopback: an embedded MongoDB
// wire store (FerretDB on SQLite, in this process) and a `runtime deploy`
// of the testing deployment (this program re-executed as the runtime: the
// same CLI and tasks as cmd/runtime), with a fresh key pair. Each client
// gets a token, then loops over a realistic mix: uploads of batches of 1 to
// -batch operations (PUT, PATCH, DELETE over its own rows, retried after
// any non-2xx as the SDKs do), new tokens now and then (fetchCredentials),
// and JWKS fetches (the PowerSync service). Every -interval it prints
// throughput, answers by status, p50/p99 latency and the server's CPU, RSS
// and open files; at the end, a summary, after reading every row back with
// the driver and comparing it with what the clients were told was written.
// The temporary folder (runtime log, store files) is removed unless a check
// failed or -keep is given.
//
// With -url it targets a running runtime instead; give -mongo (the URI,
// with the database, that the runtime writes to) to check the data, and
// -pid to follow its memory. The exit code is 1 when a check fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/cmd/soak/load"
	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/mongotest"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/tasks"
)

// serveArg makes this program act as `runtime` (see main).
const serveArg = "__runtime"

type config struct {
	duration, interval, retryDelay, think time.Duration
	clients, batch, rows                  int
	url, mongoURI, root, dep              string
	pid                                   int
	rssGrowth                             float64
	keep, verbose                         bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveArg {
		os.Exit(cli.Main(cli.App{Args: os.Args[2:], Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Tasks: tasks.All()}))
	}
	var c config
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long the clients run")
	fs.IntVar(&c.clients, "clients", 8, "concurrent clients")
	fs.DurationVar(&c.interval, "interval", 5*time.Second, "time between progress lines")
	fs.IntVar(&c.batch, "batch", 10, "largest upload batch, in operations")
	fs.IntVar(&c.rows, "rows", 50, "rows per client and table")
	fs.DurationVar(&c.retryDelay, "retry-delay", time.Second, "pause before a batch is sent again (the SDKs wait 5s)")
	fs.DurationVar(&c.think, "think", 0, "pause between a client's actions (0: as fast as answers come)")
	fs.StringVar(&c.url, "url", "", "base URL of a running runtime (default: start one)")
	fs.StringVar(&c.mongoURI, "mongo", "", "MongoDB URI with the database: with -url, where that runtime writes (to check the data); without, the server the started runtime uses instead of an embedded store")
	fs.IntVar(&c.pid, "pid", 0, "with -url: the runtime's process id, to follow its memory")
	fs.StringVar(&c.root, "root", "", "project folder whose deployments/ to use (default: the nearest above the working directory)")
	fs.StringVar(&c.dep, "deployment", "testing", "deployment to start (a development one: tokens are open)")
	fs.Float64Var(&c.rssGrowth, "rss-growth", 25, "largest growth of the server's RSS from the first to the last third of the run, in percent, still called flat")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary folder (runtime log, store files)")
	fs.BoolVar(&c.verbose, "v", false, "print the started runtime's error lines at the end (always done on failure)")
	_ = fs.Parse(os.Args[1:])
	if c.clients < 1 || c.batch < 1 || c.rows < 1 || c.duration <= 0 || c.interval <= 0 {
		fmt.Fprintln(os.Stderr, "soak: -clients, -batch, -rows, -duration and -interval must be positive")
		os.Exit(2)
	}
	ok, err := soak(c, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// target is the runtime under load and where to read its data back.
type target struct {
	url     string
	pid     int // 0: unknown
	db      *mongo.Database
	stop    func() error // stops what soak started
	logPath string
}

func soak(c config, out io.Writer) (bool, error) {
	tmp, err := os.MkdirTemp("", "soak-")
	if err != nil {
		return false, err
	}
	tg, err := setUp(c, tmp, out)
	keep := c.keep
	defer func() {
		if keep {
			fmt.Fprintf(out, "kept %s\n", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	if err != nil {
		keep = true
		return false, err
	}
	ok, err := drive(c, tg, out)
	if serr := tg.stop(); serr != nil {
		fmt.Fprintf(out, "FAIL stopping: %v\n", serr)
		ok = false
	}
	if (!ok || err != nil || c.verbose) && tg.logPath != "" {
		keep = keep || !ok || err != nil
		printErrors(out, tg.logPath)
	}
	return ok, err
}

// printErrors prints the last error lines of the runtime's log.
func printErrors(out io.Writer, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) || strings.Contains(l, `"level":"panic"`) {
			lines = append(lines, l)
		}
	}
	fmt.Fprintf(out, "runtime log %s: %d error lines\n", path, len(lines))
	for _, l := range lines[max(0, len(lines)-20):] {
		fmt.Fprintln(out, "  "+l)
	}
}

var serveRE = regexp.MustCompile(`"url":"(http://[^"]+)"[^\n]*"message":"serving`)

// setUp starts the store and the runtime, or connects to the given ones.
func setUp(c config, tmp string, out io.Writer) (*target, error) {
	var stops []func() error
	tg := &target{url: strings.TrimRight(c.url, "/"), pid: c.pid}
	tg.stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (*target, error) {
		_ = tg.stop()
		return nil, err
	}
	dbName := "soak_" + strconv.FormatUint(rand.Uint64()%1e9, 10)
	mongoURI := c.mongoURI
	if mongoURI == "" && c.url == "" {
		st, err := mongotest.StartStore("127.0.0.1:0", filepath.Join(tmp, "store"), nil)
		if err != nil {
			return fail(err)
		}
		stops = append(stops, func() error { st.Stop(); return nil })
		mongoURI = st.URI(dbName)
		fmt.Fprintf(out, "store: embedded FerretDB (SQLite) at %s\n", st.Addr)
	} else if mongoURI != "" && c.url == "" {
		u, err := url.Parse(mongoURI)
		if err != nil {
			return fail(errors.New("-mongo is not a URI"))
		}
		if strings.Trim(u.Path, "/") == "" {
			u.Path = "/" + dbName
		}
		mongoURI = u.String()
		fmt.Fprintf(out, "store: %s\n", u.Redacted())
	}
	if mongoURI != "" {
		client, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
		if err != nil {
			return fail(fmt.Errorf("connecting to the store: %w", err))
		}
		stops = append(stops, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return client.Disconnect(ctx)
		})
		tg.db = client.Database(databaseOf(mongoURI))
	}
	if c.url != "" {
		fmt.Fprintf(out, "runtime: %s (pid %s)\n", tg.url, orNA(tg.pid))
		return tg, nil
	}

	// A project with the chosen deployment, the store and fresh keys.
	root, err := cli.FindRoot(c.root)
	if err != nil {
		return fail(err)
	}
	yaml, err := os.ReadFile(filepath.Join(root, "deployments", c.dep+".yaml"))
	if err != nil {
		return fail(fmt.Errorf("the deployment to start: %w", err))
	}
	proj := filepath.Join(tmp, "project")
	if err := os.MkdirAll(filepath.Join(proj, "deployments"), 0o755); err != nil {
		return fail(err)
	}
	priv, pub, kid, err := keys.Generate("RS256")
	if err != nil {
		return fail(err)
	}
	env := fmt.Sprintf("MONGO_URI=%s\nMONGO_DATABASE=%s\nPOWERSYNC_PRIVATE_KEY=%s\nPOWERSYNC_PUBLIC_KEY=%s\n", mongoURI, dbName, priv, pub)
	if err := os.WriteFile(filepath.Join(proj, "deployments", c.dep+".yaml"), yaml, 0o644); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(proj, "deployments", c.dep+".local.env"), []byte(env), 0o600); err != nil {
		return fail(err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	tg.logPath = filepath.Join(tmp, "runtime.log")
	logf, err := os.Create(tg.logPath)
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(self, serveArg, "deploy", c.dep, "--listen", "127.0.0.1:0", "--root", proj)
	cmd.Dir = proj
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches soak only,
	// which lets the clients finish their batches, then stops the runtime.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fail(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stops = append(stops, func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("the runtime exited with %v after SIGTERM (log: %s)", err, tg.logPath)
			}
			return nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("the runtime did not stop within 30s of SIGTERM (log: %s)", tg.logPath)
		}
	})
	tg.pid = cmd.Process.Pid
	deadline := time.Now().Add(60 * time.Second)
	for tg.url == "" {
		b, _ := os.ReadFile(tg.logPath)
		if m := serveRE.FindSubmatch(b); m != nil {
			tg.url = string(m[1])
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return fail(fmt.Errorf("the runtime exited (%v):\n%s", err, tail(b, 4000)))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("the runtime did not start within 60s:\n%s", tail(b, 4000)))
		}
	}
	fmt.Fprintf(out, "runtime: deployment %s at %s (pid %d, key %s, log %s)\n", c.dep, tg.url, tg.pid, kid, tg.logPath)
	return tg, nil
}

func databaseOf(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	return strings.Trim(u.Path, "/")
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func orNA(pid int) string {
	if pid == 0 {
		return "n/a"
	}
	return strconv.Itoa(pid)
}

// sample is the server's resources at one time.
type sample struct {
	at       time.Duration
	rss, fds int64         // -1: unknown
	cpu      time.Duration // CPU time used so far; -1: unknown
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

func probe(pid int) sample {
	sm := sample{rss: -1, fds: -1, cpu: -1}
	if pid == 0 {
		return sm
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// After the command in parentheses: state is field 3, utime 14, stime 15.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, err1 := strconv.ParseInt(f[11], 10, 64)
				st, err2 := strconv.ParseInt(f[12], 10, 64)
				if err1 == nil && err2 == nil {
					sm.cpu = time.Duration(ut+st) * clockTick
				}
			}
		}
	}
	rss, fds := &sm.rss, &sm.fds
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					*rss = kb << 10
				}
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		*fds = int64(len(ents))
	}
	return sm
}

// cpuShare is the share of one core the server used between two samples.
func cpuShare(a, b sample) string {
	if a.cpu < 0 || b.cpu < 0 || b.at <= a.at {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(b.cpu-a.cpu)/float64(b.at-a.at))
}

func mib(b int64) string {
	if b < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
}

// drive runs the clients, prints progress and the summary, and reports
// whether every check passed.
func drive(c config, tg *target, out io.Writer) (bool, error) {
	stats := load.NewStats()
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        4 * c.clients,
		MaxIdleConnsPerHost: 4 * c.clients,
		IdleConnTimeout:     60 * time.Second,
	}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	// The clients stop starting new batches at the end of -duration; a
	// batch in progress may take until hard to be acknowledged.
	hard, cancel := context.WithTimeout(context.Background(), c.duration+2*time.Minute)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	run := strconv.FormatUint(rand.Uint64()%(1<<32), 36)
	gens := make([]*load.Gen, c.clients)
	models := make([]*load.Model, c.clients)
	errs := make([]error, c.clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	s0 := probe(tg.pid)
	samples := []sample{s0}
	fmt.Fprintf(out, "%d clients for %s (batches of 1-%d ops, retry after %s); server at start: rss %s, open files %d\n",
		c.clients, c.duration, c.batch, c.retryDelay, mib(s0.rss), s0.fds)
	for i := range c.clients {
		gens[i] = load.NewGen(fmt.Sprintf("s%s-c%d", run, i), c.rows, uint64(i)+rand.Uint64())
		models[i] = load.NewModel()
		cl := &load.Client{UserID: fmt.Sprintf("soak-%s-%d", run, i), HTTP: hc, Target: func() string { return tg.url },
			RetryDelay: c.retryDelay, RequestTimeout: time.Minute, Observe: stats.Add}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = client(hard, stop, c, cl, gens[i], models[i], rand.New(rand.NewPCG(uint64(i), 42)))
		}()
	}
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	end := time.After(c.duration)
	prev := stats.Snapshot()
	fmt.Fprintln(out, "     t    req/s    ops/s  upload p50/p99      all p99  answers                                           server cpu / rss / files")
loop:
	for {
		select {
		case <-tick.C:
		case <-end:
			break loop
		case <-sigs:
			fmt.Fprintln(out, "interrupted: finishing the batches in progress")
			break loop
		}
		sn := stats.Snapshot()
		d := sn.Sub(prev)
		secs := sn.At.Sub(prev.At).Seconds()
		prev = sn
		sm := probe(tg.pid)
		sm.at = time.Since(start)
		at := sm.at
		samples = append(samples, sm)
		var all load.Histogram
		for _, h := range d.Hist {
			all.Merge(h)
		}
		up := d.Hist[load.KindUpload]
		fmt.Fprintf(out, "%5.0fs %8.0f %8.0f %7s/%-7s %10s  %-50s %s / %s / %d\n", at.Seconds(),
			float64(d.Requests)/secs, float64(d.Ops)/secs, ms(up.Quantile(.5)), ms(up.Quantile(.99)), ms(all.Quantile(.99)),
			d.CountsString(), cpuShare(samples[len(samples)-2], sm), mib(sm.rss), sm.fds)
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	s1 := probe(tg.pid)
	s1.at = elapsed
	samples = append(samples, s1)
	return summary(c, tg, out, stats.Snapshot(), elapsed, samples, gens, models, errs)
}

// client is one PowerSync client's life: a token, then uploads of its
// queue, new tokens now and then, JWKS fetches by the service.
func client(ctx context.Context, stop <-chan struct{}, c config, cl *load.Client, g *load.Gen, m *load.Model, rng *rand.Rand) error {
	if _, err := cl.Token(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		switch r := rng.IntN(100); {
		case r < 5:
			if err := cl.FetchToken(ctx); err != nil && ctx.Err() != nil {
				return err
			}
		case r < 10:
			cl.FetchJWKS(ctx)
		default:
			ops := g.Next(1 + rng.IntN(c.batch))
			if _, err := cl.Upload(ctx, ops); err != nil {
				return err
			}
			m.Apply(ops)
		}
		if c.think > 0 {
			select {
			case <-stop:
				return nil
			case <-time.After(c.think):
			}
		}
	}
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	}
	return d.Round(100 * time.Millisecond).String()
}

func summary(c config, tg *target, out io.Writer, sn load.Snapshot, elapsed time.Duration, samples []sample,
	gens []*load.Gen, models []*load.Model, errs []error) (bool, error) {
	ok := true
	fmt.Fprintf(out, "\nsoak summary: %d clients for %s against %s\n", c.clients, elapsed.Round(100*time.Millisecond), tg.url)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\ttotal\t2xx\t4xx\t5xx\tnet errors\treq/s\tp50\tp99\tmax\t")
	kinds := []string{load.KindUpload, load.KindToken, load.KindJWKS}
	var total, fivexx, neterr int64
	var all load.Histogram
	for _, k := range kinds {
		class := func(pred func(string) bool) int64 { return sn.Count(k, pred) }
		n := class(func(string) bool { return true })
		s2 := class(func(o string) bool { return strings.HasPrefix(o, "2") })
		s4 := class(func(o string) bool { return strings.HasPrefix(o, "4") })
		s5 := class(func(o string) bool { return strings.HasPrefix(o, "5") })
		ne := class(func(o string) bool { _, err := strconv.Atoi(o); return err != nil })
		total, fivexx, neterr = total+n, fivexx+s5, neterr+ne
		h := sn.Hist[k]
		all.Merge(h)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t\n", k, n, s2, s4, s5, ne, float64(n)/elapsed.Seconds(),
			ms(h.Quantile(.5)), ms(h.Quantile(.99)), ms(h.Max))
	}
	fmt.Fprintf(tw, "all\t%d\t\t\t%d\t%d\t%.0f\t%s\t%s\t%s\t\n", total, fivexx, neterr, float64(total)/elapsed.Seconds(),
		ms(all.Quantile(.5)), ms(all.Quantile(.99)), ms(all.Max))
	tw.Flush()
	var ops, batches int64
	for _, m := range models {
		ops += m.Ops()
		batches += m.Batches()
	}
	fmt.Fprintf(out, "uploads: %d batches, %d operations acknowledged (%.0f ops/s), %d batches sent again\n",
		batches, ops, float64(ops)/elapsed.Seconds(), sn.Retries)
	if tg.pid != 0 {
		fmt.Fprintf(out, "server CPU: %s of one core on average\n", cpuShare(samples[0], samples[len(samples)-1]))
	}
	if other := sn.CountsString(); other != "" {
		fmt.Fprintf(out, "answers: %s\n", other)
	}

	check := func(pass bool, format string, args ...any) {
		word := "ok  "
		if !pass {
			word, ok = "FAIL", false
		}
		fmt.Fprintf(out, "%s %s\n", word, fmt.Sprintf(format, args...))
	}
	for _, err := range errs {
		if err != nil {
			check(false, "a client gave up: %v", err)
		}
	}
	check(fivexx == 0, "5xx answers: %d", fivexx)
	if neterr > 0 {
		fmt.Fprintf(out, "note %d requests failed at the connection (retried)\n", neterr)
	}
	check(batches > 0, "acknowledged batches: %d", batches)

	// Data: every acknowledged operation, exactly.
	if tg.db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		prefixes := make([]string, len(gens))
		for i, g := range gens {
			prefixes[i] = g.Prefix()
		}
		rep, err := load.Verify(ctx, tg.db, prefixes, models...)
		if err != nil {
			check(false, "reading the data back: %v", err)
		} else {
			check(rep.OK(), "data read back with the driver: %s", rep)
		}
	} else {
		fmt.Fprintln(out, "skip data check: give -mongo with -url")
	}

	// Memory: the server's RSS in the last third against the first third.
	var first, last int64 = -1, -1
	for _, s := range samples[1:] {
		switch {
		case s.rss < 0:
		case s.at <= elapsed/3:
			first = max(first, s.rss)
		case s.at >= elapsed*2/3:
			last = max(last, s.rss)
		}
	}
	var peak int64 = -1
	for _, s := range samples {
		peak = max(peak, s.rss)
	}
	switch {
	case tg.pid == 0:
		fmt.Fprintln(out, "skip memory check: give -pid with -url")
	case first < 0 || last < 0:
		fmt.Fprintln(out, "skip memory check: too few samples (run for at least 3 intervals)")
	default:
		growth := 100 * float64(last-first) / float64(first)
		check(growth <= c.rssGrowth, "server memory flat: RSS %s at start, %s max in the first third, %s max in the last third (%+.1f%%, limit %+.0f%%), peak %s; open files %d at start, %d at the end",
			mib(samples[0].rss), mib(first), mib(last), growth, c.rssGrowth, mib(peak), samples[0].fds, samples[len(samples)-1].fds)
	}
	if ok {
		fmt.Fprintln(out, "PASS")
	} else {
		fmt.Fprintln(out, "FAIL")
	}
	return ok, nil
}
