package main

// Reliability tests: break things on purpose while PowerSync-like clients
// upload, then check that every acknowledged write is in the database
// exactly as the clients' own operation logs say (cmd/soak/load). Each test
// drives real `runtime deploy` processes on loopback against a real
// MongoDB-wire store: an embedded FerretDB in this process, or
// TEST_MONGO_URI (then the tests that stop the store are skipped).
//
//	go test -race -count=5 -run Reliability ./cmd/runtime/

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/cmd/soak/load"
	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/mongotest"
)

// relRetryDelay is the clients' pause before sending a batch again (the
// SDKs wait about 5 s; the tests need not).
const relRetryDelay = 100 * time.Millisecond

// relTestLimit bounds each test.
const relTestLimit = 55 * time.Second

// relStore is the database of one test: its own database on the embedded
// store (or on TEST_MONGO_URI), and a driver client to read it back.
type relStore struct {
	store  *mongotest.Store // nil with TEST_MONGO_URI
	base   *url.URL         // the server's URI, without a database
	dbName string
	client *mongo.Client
}

func newRelStore(t *testing.T) *relStore {
	t.Helper()
	s := &relStore{dbName: "rel_" + relHex(6)}
	if ext := os.Getenv("TEST_MONGO_URI"); ext != "" {
		u, err := url.Parse(ext)
		if err != nil {
			t.Fatalf("TEST_MONGO_URI is not a URL")
		}
		s.base = u
	} else {
		st, err := mongotest.StartStore("127.0.0.1:0", t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Stop)
		s.store = st
		s.base = &url.URL{Scheme: "mongodb", Host: st.Addr, Path: "/"}
	}
	c, err := mongo.Connect(options.Client().ApplyURI(s.uri()).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s.store == nil {
			_ = c.Database(s.dbName).Drop(ctx)
		}
		_ = c.Disconnect(ctx)
	})
	return s
}

// uri names the test's database on the server.
func (s *relStore) uri() string { return s.uriVia(s.base.Host) }

// uriVia is uri with another host:port, such as a proxy's.
func (s *relStore) uriVia(host string) string {
	u := *s.base
	u.Host = host
	u.Path = "/" + s.dbName
	return u.String()
}

func (s *relStore) db() *mongo.Database { return s.client.Database(s.dbName) }

func relHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var relKeys struct {
	once            sync.Once
	private, public string
	kid             string
	err             error
}

// relProject is a project whose testing deployment uses mongoURI and a key
// pair shared by every instance (and every test) of this process.
func relProject(t *testing.T, mongoURI, dbName string) string {
	t.Helper()
	relKeys.once.Do(func() {
		relKeys.private, relKeys.public, relKeys.kid, relKeys.err = keys.Generate("RS256")
	})
	if relKeys.err != nil {
		t.Fatal(relKeys.err)
	}
	root := project(t)
	env := fmt.Sprintf("MONGO_URI=%s\nMONGO_DATABASE=%s\nPOWERSYNC_PRIVATE_KEY=%s\nPOWERSYNC_PUBLIC_KEY=%s\n",
		mongoURI, dbName, relKeys.private, relKeys.public)
	if err := os.WriteFile(filepath.Join(root, "deployments", "testing.local.env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

var relHTTP = &http.Client{Transport: &http.Transport{
	Proxy:               nil,
	DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	MaxIdleConns:        256,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     30 * time.Second,
}}

// relFleet is a set of clients uploading continuously, each over its own rows.
type relFleet struct {
	t      *testing.T
	start  time.Time
	gens   []*load.Gen
	models []*load.Model
	stats  *load.Stats

	mu      sync.Mutex
	results []load.Result
	hist    [][]*relBatch // by client: each batch, its attempts, its ack

	stop chan struct{}
	errs chan error
	wg   sync.WaitGroup
}

// relBatch is one batch of one client, for explaining a difference.
type relBatch struct {
	n     int
	ops   []load.Op
	tries []load.Result
	acked time.Time
}

// startRelFleet starts n clients. target(i) is the function that picks the
// base URL of client i's next request. Batches have 1 to maxBatch ops.
func startRelFleet(t *testing.T, ctx context.Context, n, maxBatch int, target func(i int) func() string) *relFleet {
	t.Helper()
	f := &relFleet{t: t, start: time.Now(), stats: load.NewStats(), stop: make(chan struct{}), errs: make(chan error, n),
		hist: make([][]*relBatch, n)}
	run := relHex(3)
	for i := range n {
		c := &load.Client{
			UserID:         fmt.Sprintf("user-%d", i),
			HTTP:           relHTTP,
			Target:         target(i),
			RetryDelay:     relRetryDelay,
			RequestTimeout: 30 * time.Second,
			Observe:        func(r load.Result) { f.observe(i, r) },
		}
		g := load.NewGen(fmt.Sprintf("r%s-c%d", run, i), 12, uint64(i+1))
		m := load.NewModel()
		f.gens, f.models = append(f.gens, g), append(f.models, m)
		size := relSizes(uint64(i), maxBatch)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for seq := 1; ; seq++ {
				select {
				case <-f.stop:
					return
				default:
				}
				b := &relBatch{n: seq, ops: g.Next(size())}
				f.mu.Lock()
				f.hist[i] = append(f.hist[i], b)
				f.mu.Unlock()
				if _, err := c.Upload(ctx, b.ops); err != nil {
					f.errs <- fmt.Errorf("client %s: %w", c.UserID, err)
					return
				}
				f.mu.Lock()
				b.acked = time.Now()
				f.mu.Unlock()
				m.Apply(b.ops)
			}
		}()
	}
	t.Cleanup(f.halt)
	return f
}

func relSizes(seed uint64, maxBatch int) func() int {
	x := seed*2654435761 + 1
	return func() int {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return 1 + int(x%uint64(maxBatch))
	}
}

func (f *relFleet) observe(client int, r load.Result) {
	f.stats.Add(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = append(f.results, r)
	if h := f.hist[client]; len(h) > 0 && r.Kind == load.KindUpload {
		h[len(h)-1].tries = append(h[len(h)-1].tries, r)
	}
}

// explain logs, for a document that is not as expected, every batch of its
// client that touched it: the operations, each attempt (where it was sent,
// when, how it ended) and when it was acknowledged.
func (f *relFleet) explain(d load.Diff) {
	f.t.Helper()
	at := func(t time.Time) string { return fmt.Sprintf("+%.3fs", t.Sub(f.start).Seconds()) }
	for i, g := range f.gens {
		if !strings.HasPrefix(d.ID, g.Prefix()+"-") {
			continue
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		var b strings.Builder
		fmt.Fprintf(&b, "history of %s/%s (client %d):", d.Table, d.ID, i)
		for _, bt := range f.hist[i] {
			var mine []string
			for _, op := range bt.ops {
				if op.Table == d.Table && op.ID == d.ID {
					mine = append(mine, fmt.Sprintf("%s seq=%v", op.Op, op.Data["seq"]))
				}
			}
			if len(mine) == 0 {
				continue
			}
			fmt.Fprintf(&b, "\n  batch %d: %s", bt.n, strings.Join(mine, ", "))
			for _, r := range bt.tries {
				fmt.Fprintf(&b, "\n    attempt %d to %s at %s: %s after %s", r.Attempt, r.Base, at(r.Start), load.Outcome(r), r.Dur.Round(time.Millisecond))
			}
			if !bt.acked.IsZero() {
				fmt.Fprintf(&b, "\n    acknowledged at %s", at(bt.acked))
			}
		}
		f.t.Log(b.String())
	}
}

// Results returns a copy of every result so far.
func (f *relFleet) Results() []load.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]load.Result(nil), f.results...)
}

// acked is the number of acknowledged batches.
func (f *relFleet) acked() int64 {
	var n int64
	for _, m := range f.models {
		n += m.Batches()
	}
	return n
}

// waitAcked waits until n more batches than now are acknowledged.
func (f *relFleet) waitAcked(n int64, within time.Duration, what string) {
	f.t.Helper()
	start, goal := time.Now(), f.acked()+n
	for f.acked() < goal {
		if time.Since(start) > within {
			f.t.Fatalf("timed out after %s waiting for %s: %d of %d batches; results so far: %s",
				within, what, n-(goal-f.acked()), n, f.stats.Snapshot().CountsString())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Logf("%s: %d batches in %s", what, n, time.Since(start).Round(time.Millisecond))
}

// halt lets each client finish its batch in progress, then stops them.
// It fails the test if a client gave up.
func (f *relFleet) halt() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.wg.Wait()
	close(f.errs)
	for err := range f.errs {
		if f.t.Failed() && errors.Is(err, context.Canceled) {
			continue // the test ended early: the clients were cut off
		}
		f.t.Error(err)
	}
}

// verify checks that the database holds exactly what the acknowledged
// batches say, and logs the numbers.
func (f *relFleet) verify(ctx context.Context, db *mongo.Database) {
	f.t.Helper()
	f.halt()
	prefixes := make([]string, len(f.gens))
	var ops, batches int64
	for i, g := range f.gens {
		prefixes[i] = g.Prefix()
		ops += f.models[i].Ops()
		batches += f.models[i].Batches()
	}
	rep, err := load.Verify(ctx, db, prefixes, f.models...)
	if err != nil {
		f.t.Fatal(err)
	}
	sn := f.stats.Snapshot()
	f.t.Logf("%d clients: %d batches (%d ops) acknowledged, %d retries; results: %s", len(f.gens), batches, ops, sn.Retries, sn.CountsString())
	f.t.Logf("database: %s", rep)
	if !rep.OK() {
		f.t.Errorf("the database does not hold what was acknowledged: %s", rep)
		for _, d := range rep.Diffs[:min(3, len(rep.Diffs))] {
			f.explain(d)
		}
	}
	if rep.Expected == 0 {
		f.t.Errorf("nothing to verify: no documents expected")
	}
}

func relWaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// relDeploy deploys the project's testing deployment; if the test fails,
// the runtime's warnings and errors go to the test log.
func relDeploy(t *testing.T, root string) *server {
	t.Helper()
	s := deploy(t, root, "testing")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var lines []string
		for _, l := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) {
				lines = append(lines, l)
			}
		}
		if len(lines) > 40 {
			lines = append(lines[:20], append([]string{"..."}, lines[len(lines)-20:]...)...)
		}
		t.Logf("runtime at %s, warnings and errors:\n%s", s.url, strings.Join(lines, "\n"))
	})
	return s
}

func relFixed(u string) func(int) func() string {
	return func(int) func() string { return func() string { return u } }
}

// relMoving returns targets that follow p, for a server that is replaced.
func relMoving(p *atomic.Pointer[string]) func(int) func() string {
	return func(int) func() string { return func() string { return *p.Load() } }
}

func relStatus(t testing.TB, u string) int {
	t.Helper()
	resp, err := relHTTP.Get(u)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// relRunning reports whether the process has not exited.
func relRunning(s *server) bool {
	return s.cmd.Process.Signal(syscall.Signal(0)) == nil
}

// relKill sends SIGKILL and waits for the process to be gone.
func relKill(t testing.TB, s *server) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the runtime did not die after SIGKILL")
	}
}

// relOpenFDs counts the open file descriptors of a process.
func relOpenFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// relMetrics fetches /metrics as series ("name{labels}") -> value.
func relMetrics(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp, err := relHTTP.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// relSeries is a metric's series name with labels in the runtime's order.
func relSeries(name string, labels ...string) string {
	var b strings.Builder
	b.WriteString(name + "{")
	for i := 0; i < len(labels); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
	}
	return b.String() + "}"
}

func relRequests(task, method string, status int) string {
	return relSeries("runtime_requests_total", "deployment", "testing", "method", method, "status", strconv.Itoa(status), "task", task) // labels in exposition order
}

var relInflight = relSeries("runtime_inflight_requests", "deployment", "testing")

// relOutcomes counts results matching keep by outcome (status, or error class).
func relOutcomes(rs []load.Result, keep func(load.Result) bool) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		if keep(r) {
			out[load.Outcome(r)]++
		}
	}
	return out
}

func relIs5xx(r load.Result) bool { return r.Status >= 500 }

// TestReliabilityDatabaseOutage stops the store while clients upload, and
// starts it again on the same address with the same files: uploads get 503
// with Retry-After meanwhile, the same runtime process recovers by itself,
// and every acknowledged write is there.
func TestReliabilityDatabaseOutage(t *testing.T) {
	if os.Getenv("TEST_MONGO_URI") != "" {
		t.Skip("stops the database: runs only against the embedded store")
	}
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	srv := relDeploy(t, relProject(t, st.uri(), st.dbName))
	f := startRelFleet(t, ctx, 6, 8, relFixed(srv.url))
	f.waitAcked(16, 20*time.Second, "uploads before the outage")

	st.store.Stop()
	down, ackedBefore := time.Now(), f.acked()
	relWaitFor(t, 15*time.Second, "/readyz to say 503 during the outage", func() bool {
		return relStatus(t, srv.url+"/readyz") == http.StatusServiceUnavailable
	})
	// Each upload waits up to 5 s for server selection before its 503;
	// with the whole suite under -race on 2 cores, six of them can take
	// longer than 15 s.
	relWaitFor(t, 40*time.Second, "uploads to get 503 during the outage", func() bool {
		return f.stats.Snapshot().Count(load.KindUpload, func(o string) bool { return o == "503" }) >= 6
	})
	if d := 3*time.Second - time.Since(down); d > 0 {
		time.Sleep(d)
	}
	ackedDown := f.acked()
	if err := st.store.Start(); err != nil {
		t.Fatalf("restarting the store on %s: %v", st.store.Addr, err)
	}
	up := time.Now()
	f.waitAcked(16, 25*time.Second, "uploads to succeed again after the store is back")
	t.Logf("outage: %s; %d batches acknowledged while down (sent before it); recovered %s after the store came back",
		up.Sub(down).Round(time.Millisecond), ackedDown-ackedBefore, time.Since(up).Round(time.Millisecond))
	relWaitFor(t, 10*time.Second, "/readyz to say 200 after the outage", func() bool {
		return relStatus(t, srv.url+"/readyz") == http.StatusOK
	})
	if !relRunning(srv) {
		t.Fatalf("the runtime exited:\n%s", srv.logs.String())
	}
	f.verify(ctx, st.db())

	// Operators see the outage in /metrics.
	m := relMetrics(t, srv.url)
	if m[relSeries("upload_database_errors_total", "deployment", "testing", "kind", "unavailable")] < 1 ||
		m[relSeries("upload_operations_total", "deployment", "testing", "outcome", "unavailable")] < 1 {
		t.Errorf("/metrics does not count the outage's database errors and the operations answered 503")
	}

	rs := f.Results()
	var noRetryAfter int
	for _, r := range rs {
		if r.Status == http.StatusServiceUnavailable && r.RetryAfter == "" {
			noRetryAfter++
		}
	}
	if noRetryAfter > 0 {
		t.Errorf("%d 503 answers had no Retry-After header", noRetryAfter)
	}
	bad := relOutcomes(rs, func(r load.Result) bool {
		return r.Status == 0 || r.Status >= 300 && r.Status != http.StatusServiceUnavailable
	})
	if len(bad) > 0 {
		t.Errorf("answers other than 2xx and 503 (transport errors by class): %v", bad)
		for _, r := range rs {
			if r.Status >= 300 && r.Status != http.StatusServiceUnavailable {
				t.Logf("  %s %d after %s: %s", r.Kind, r.Status, r.Dur, r.Body)
				break
			}
		}
	}
}

// TestReliabilityShutdownUnderLoad sends SIGTERM while uploads are in
// flight: every answer the stopping instance gives is a 2xx (its requests
// finish within the grace period), the others fail at the connection, and
// the clients' retries against a new instance converge.
func TestReliabilityShutdownUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	root := relProject(t, st.uri(), st.dbName)
	a := relDeploy(t, root)
	var target atomic.Pointer[string]
	target.Store(&a.url)
	f := startRelFleet(t, ctx, 6, 12, relMoving(&target))
	f.waitAcked(16, 20*time.Second, "uploads before the signal")

	sig := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the runtime did not stop within its grace period (10s) after SIGTERM:\n%s", a.logs.String())
	}
	stopped := time.Since(sig)
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM: %d, want 0\n%s", code, a.logs.String())
	}
	if strings.Contains(a.logs.String(), "grace period over") {
		t.Errorf("in-flight requests did not finish within the grace period")
	}
	time.Sleep(300 * time.Millisecond) // clients meet a closed port
	b := relDeploy(t, root)
	target.Store(&b.url)
	f.waitAcked(16, 20*time.Second, "uploads to the new instance")
	f.verify(ctx, st.db())

	var inflight, answered int
	fromA := func(r load.Result) bool { return r.Base == a.url }
	bad := map[string]int{}
	for _, r := range f.Results() {
		if !fromA(r) {
			continue
		}
		if r.Status != 0 {
			answered++
			if r.Status/100 != 2 {
				bad[load.Outcome(r)]++
			}
			if r.Start.Before(sig) && r.Start.Add(r.Dur).After(sig) {
				inflight++
			}
			continue
		}
		switch c := load.ErrClass(r.Err); c {
		case "connrefused", "connreset", "eof":
		default:
			bad[c]++
			t.Logf("unclean failure: %v", r.Err)
		}
	}
	t.Logf("stopped %s after SIGTERM; %d requests in flight at the signal completed with 2xx; the stopping instance's results: %v",
		stopped.Round(time.Millisecond), inflight, relOutcomes(f.Results(), fromA))
	if len(bad) > 0 {
		t.Errorf("the stopping instance answered other than 2xx, or failed uncleanly: %v", bad)
	}
	if inflight == 0 {
		t.Errorf("no request was in flight at the signal: the test did not test shutdown under load")
	}
}

// TestReliabilityCrash kills the runtime with SIGKILL in the middle of
// batches, starts it again, and lets the clients retry: the data converges.
//
// A write that the killed instance had sent is still carried out by the
// database, whenever the database gets to it. A client's retry, and its next
// batch, must come after that, or the late write undoes them: the PowerSync
// SDKs wait 5 s before a retry, which a database needs far less than; but
// the embedded store under a loaded test machine has been seen to take 6 s
// (and its updates are a read then a write, not atomic). So the test waits
// until the store has answered everything the killed instance had sent (the
// proxy between them sees the store close each connection) before it
// starts the new instance.
func TestReliabilityCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	px, uri := relProxied(t, st)
	root := relProject(t, uri, st.dbName)
	a := relDeploy(t, root)
	var target atomic.Pointer[string]
	target.Store(&a.url)
	f := startRelFleet(t, ctx, 6, 20, relMoving(&target))
	f.waitAcked(16, 20*time.Second, "uploads before the crash")
	kill := time.Now()
	relKill(t, a)
	relWaitFor(t, 20*time.Second, "the store to finish what the killed instance had sent", func() bool { return px.active.Load() == 0 })
	settled := time.Now()
	b := relDeploy(t, root)
	target.Store(&b.url)
	t.Logf("SIGKILL to %s at +%.3fs; the store finished its commands %s later; %s serving at +%.3fs",
		a.url, kill.Sub(f.start).Seconds(), settled.Sub(kill).Round(time.Millisecond), b.url, time.Since(f.start).Seconds())
	f.waitAcked(16, 25*time.Second, "uploads after the restart")
	f.verify(ctx, st.db())

	var cut int
	for _, r := range f.Results() {
		if r.Base == a.url && r.Status == 0 && r.Start.Before(kill) {
			cut++
		}
		if relIs5xx(r) {
			t.Errorf("a %d answer: %s", r.Status, r.Body)
		}
	}
	t.Logf("%d uploads were cut by the kill; results: %s", cut, f.stats.Snapshot().CountsString())
	if cut == 0 {
		t.Errorf("no upload was in flight when the runtime was killed: the test did not test a crash mid-batch")
	}
}

// relProxy forwards TCP connections from the runtime to the store,
// delaying every chunk of bytes by its current delay, in both directions.
// When the runtime closes a connection (or dies), the bytes still held
// toward the store are dropped, and the store's side is half-closed and
// drained: the connection counts as active until the store has finished
// what it had received and closed its side.
type relProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // ns
	active atomic.Int64 // connections not yet closed on both sides
	total  atomic.Int64
	wg     sync.WaitGroup
}

func startRelProxy(t *testing.T, target string) *relProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &relProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.delay.Store(0)
		p.wg.Wait()
	})
	return p
}

func (p *relProxy) addr() string { return p.ln.Addr().String() }

// relProxied starts a proxy in front of the test's store and returns it
// with the URI of the test's database through it.
func relProxied(t *testing.T, st *relStore) (*relProxy, string) {
	t.Helper()
	if st.base.Scheme != "mongodb" || strings.Contains(st.base.Host, ",") {
		t.Skip("TEST_MONGO_URI names several servers (or an SRV record): cannot put one proxy in front of it")
	}
	px := startRelProxy(t, st.base.Host)
	// directConnection: a replica set member would otherwise announce its
	// own address, and the driver would go around the proxy.
	u, err := url.Parse(st.uriVia(px.addr()))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("directConnection", "true")
	u.RawQuery = q.Encode()
	return px, u.String()
}

func (p *relProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

func (p *relProxy) serve(c *net.TCPConn) {
	defer p.wg.Done()
	p.active.Add(1)
	p.total.Add(1)
	defer p.active.Add(-1)
	defer c.Close()
	uc, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	u := uc.(*net.TCPConn)
	defer u.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pipe(c, u) // the store's answers
		c.Close()    // the store closed: so does the runtime's side
	}()
	p.pipe(u, c) // the runtime's requests
	u.CloseWrite()
	<-done
}

// pipe copies src to dst, holding each chunk back until it has waited for
// the delay in force (lowering the delay releases the held chunks, as a
// database that is fast again works through its backlog). When src ends,
// the chunks still held are dropped, as the bytes in flight on a
// connection torn down are: a request the runtime gave up on never reaches
// the store late. If dst fails, src is still read to its end.
func (p *relProxy) pipe(dst, src net.Conn) {
	type chunk struct {
		b    []byte
		read time.Time
	}
	ch := make(chan chunk, 256)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case ch <- chunk{buf[:n], time.Now()}:
				default: // more than 256 chunks held: give up on the connection
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	broken := false
	for {
		var c chunk
		select {
		case c = <-ch:
		case <-gone:
			select {
			case c = <-ch:
			default:
				return
			}
		}
		for !broken {
			wait := time.Until(c.read.Add(time.Duration(p.delay.Load())))
			if wait <= 0 {
				break
			}
			select {
			case <-time.After(min(wait, 50*time.Millisecond)):
			case <-gone:
				return
			}
		}
		if !broken {
			if _, err := dst.Write(c.b); err != nil {
				broken = true
			}
		}
	}
}

// relSlowLimit gives the project's testing deployment a short request time
// limit (request_timeout) and returns it.
func relSlowLimit(t *testing.T, root string, want time.Duration) time.Duration {
	t.Helper()
	path := filepath.Join(root, "deployments", "testing.yaml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(orig, fmt.Sprintf("request_timeout: %s\n", want)...), 0o644); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestReliabilitySlowDatabase puts a proxy between the runtime and the
// store that holds every byte back for longer than the deployment's request
// time limit: uploads fail with 503 or 504 within the limit, and neither
// requests nor connections to the database pile up in the runtime (the
// in-flight gauge, the process' open files and the proxy's connections, before
// and after); when the database is fast again, uploads succeed and the data
// is right.
func TestReliabilitySlowDatabase(t *testing.T) {
	// An answer may come this much later than the limit: token
	// verification, decoding, scheduling on a loaded machine.
	const slack = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	px, uri := relProxied(t, st)
	root := relProject(t, uri, st.dbName)
	limit := relSlowLimit(t, root, 3*time.Second)
	delay := limit + 3*time.Second
	srv := relDeploy(t, root)

	// Warm up: connections to the database and from the clients exist.
	warm := startRelFleet(t, ctx, 6, 8, relFixed(srv.url))
	warm.waitAcked(12, 20*time.Second, "uploads before the slowdown")
	warm.halt()
	relHTTP.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	fdsBefore, connsBefore := relOpenFDs(t, srv.cmd.Process.Pid), px.active.Load()

	// Slow: clients send batches, each batch once.
	px.delay.Store(int64(delay))
	const clients = 6
	var (
		mu      sync.Mutex
		results []load.Result
		wg      sync.WaitGroup
		peak    atomic.Int64
	)
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			peak.Store(max(peak.Load(), px.active.Load()))
			time.Sleep(50 * time.Millisecond)
		}
	}()
	slowClients := make([]*load.Client, clients)
	for i := range slowClients {
		slowClients[i] = &load.Client{UserID: fmt.Sprintf("slow-%d", i), HTTP: relHTTP, Target: func() string { return srv.url },
			RequestTimeout: limit + 10*time.Second}
		if _, err := slowClients[i].Token(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Each client sends batches one at a time: at least one, and while
	// there is time, another after a first timed out (a short limit).
	slowUntil := time.Now().Add(min(limit+time.Second, 10*time.Second))
	for i, c := range slowClients {
		// Rows apart from the verified ones: these uploads are not
		// acknowledged.
		g := load.NewGen(fmt.Sprintf("slow%s-%d", relHex(3), i), 12, uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := true; first || time.Now().Before(slowUntil); first = false {
				r, err := c.Send(ctx, g.Next(5))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stopSampling()
	<-sampled
	// The uploads have all been answered: nothing is left in flight but
	// the scrape itself.
	relWaitFor(t, 3*time.Second, "the in-flight gauge to go back to 1 (the scrape)", func() bool {
		return relMetrics(t, srv.url)[relInflight] == 1
	})
	var bad int
	codes := map[string]int{}
	for _, r := range results {
		codes[load.Outcome(r)]++
		ok := (r.Status == http.StatusServiceUnavailable || r.Status == http.StatusGatewayTimeout) && r.Dur <= limit+slack
		if !ok {
			bad++
			if bad <= 5 {
				t.Errorf("slow database: %s after %s, want 503 or 504 within %s: %s %v", load.Outcome(r), r.Dur.Round(time.Millisecond), limit, r.Body, r.Err)
			}
		}
		if r.Status == http.StatusServiceUnavailable && r.RetryAfter == "" {
			t.Errorf("a 503 without Retry-After")
		}
	}
	var longest time.Duration
	for _, r := range results {
		longest = max(longest, r.Dur)
	}
	t.Logf("slow database (every byte held %s, limit %s): %d uploads: %v, the longest took %s; connections to the database: %d before, peak %d",
		delay, limit, len(results), codes, longest.Round(time.Millisecond), connsBefore, peak.Load())
	if len(results) < clients {
		t.Errorf("only %d slow uploads", len(results))
	}

	// Fast again: uploads work and the data is right.
	px.delay.Store(0)
	f := startRelFleet(t, ctx, 6, 8, relFixed(srv.url))
	f.waitAcked(12, 20*time.Second, "uploads after the slowdown")
	f.verify(ctx, st.db())
	relHTTP.CloseIdleConnections()
	time.Sleep(300 * time.Millisecond)
	fdsAfter, connsAfter := relOpenFDs(t, srv.cmd.Process.Pid), px.active.Load()
	t.Logf("runtime open files: %d before, %d after; connections to the database: %d before, %d after (%d opened in all)",
		fdsBefore, fdsAfter, connsBefore, connsAfter, px.total.Load())
	// Bounded by the number of concurrent requests, not by the time spent
	// slow or the number of requests that timed out.
	if slack := int64(clients + 4); connsAfter > connsBefore+slack {
		t.Errorf("connections to the database piled up: %d before, %d after", connsBefore, connsAfter)
	}
	if slack := clients + 6; fdsAfter > fdsBefore+slack {
		t.Errorf("open files piled up: %d before, %d after", fdsBefore, fdsAfter)
	}
}

// TestReliabilityScaleOut runs three instances of one deployment against
// one database, spreads each client's batches over the three, and checks
// the data; a token from any instance verifies against the JWKS of any
// other; and each instance's /metrics counts what it served.
func TestReliabilityScaleOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	root := relProject(t, st.uri(), st.dbName)
	var urls []string
	for range 3 {
		urls = append(urls, relDeploy(t, root).url)
	}
	f := startRelFleet(t, ctx, 6, 10, func(i int) func() string {
		var n atomic.Int64
		n.Store(int64(i))
		return func() string { return urls[n.Add(1)%3] }
	})
	f.waitAcked(36, 30*time.Second, "uploads spread over three instances")
	f.verify(ctx, st.db())

	// Each instance served uploads, and counted exactly those it answered.
	for _, u := range urls {
		var answered200 int
		for _, r := range f.Results() {
			if r.Base == u && r.Kind == load.KindUpload && r.Status == http.StatusOK {
				answered200++
			}
		}
		m := relMetrics(t, u)
		if got := m[relRequests("upload", "POST", 200)]; int(got) != answered200 || answered200 == 0 {
			t.Errorf("%s: metrics count %v uploads with 200, the clients got %d", u, got, answered200)
		}
	}

	// Tokens from one instance verify with the keys another one serves,
	// as the PowerSync service checks them.
	for i := range urls {
		issuer, verifier := urls[i], urls[(i+1)%3]
		user := fmt.Sprintf("scale-user-%d", i)
		var tok struct {
			Token        string `json:"token"`
			PowerSyncURL string `json:"powersync_url"`
		}
		if resp := getJSON(t, issuer+"/token?user_id="+user, &tok); resp.StatusCode != http.StatusOK {
			t.Fatalf("token from %s: %d", issuer, resp.StatusCode)
		}
		var set jose.JSONWebKeySet
		if resp := getJSON(t, verifier+"/jwks", &set); resp.StatusCode != http.StatusOK {
			t.Fatalf("jwks from %s: %d", verifier, resp.StatusCode)
		}
		relVerifyToken(t, tok.Token, set, user, tok.PowerSyncURL)
	}
}

// relVerifyToken checks a token as the PowerSync service does: its kid is in
// the JWKS, its algorithm is the key's, the signature verifies, sub is the
// user, aud holds the PowerSync URL, iat and exp are set and exp - iat is
// at most a day.
func relVerifyToken(t *testing.T, raw string, set jose.JSONWebKeySet, user, aud string) {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA})
	if err != nil {
		t.Fatalf("token does not parse: %v", err)
	}
	kid := tok.Headers[0].KeyID
	if kid != relKeys.kid {
		t.Errorf("token signed with kid %q, want the deployment's %q", kid, relKeys.kid)
	}
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q is in the other instance's JWKS %d times", kid, len(keys))
	}
	if keys[0].Algorithm != tok.Headers[0].Algorithm {
		t.Errorf("token alg %s, key alg %s", tok.Headers[0].Algorithm, keys[0].Algorithm)
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("token does not verify with the other instance's JWKS: %v", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Subject: user, AnyAudience: jwt.Audience{aud}, Time: time.Now()}, 60*time.Second); err != nil {
		t.Errorf("claims: %v", err)
	}
	if c.IssuedAt == nil || c.Expiry == nil || c.Expiry.Time().Sub(c.IssuedAt.Time()) > 24*time.Hour {
		t.Errorf("iat %v, exp %v: want both, at most a day apart", c.IssuedAt, c.Expiry)
	}
}

// TestReliabilityMetrics checks /metrics: requests by task, method and
// status with the deployment label, latency histograms and the in-flight
// gauge.
func TestReliabilityMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relTestLimit)
	defer cancel()
	st := newRelStore(t)
	srv := relDeploy(t, relProject(t, st.uri(), st.dbName))
	c := &load.Client{UserID: "metrics-user", HTTP: relHTTP, Target: func() string { return srv.url }, RetryDelay: relRetryDelay}
	g := load.NewGen("metrics"+relHex(3), 5, 1)
	for range 3 {
		if err := c.FetchToken(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if r, _ := c.FetchJWKS(ctx); r.Status != http.StatusOK {
			t.Fatalf("jwks: %d", r.Status)
		}
		if n, err := c.Upload(ctx, g.Next(3)); err != nil || n != 1 {
			t.Fatalf("upload: %v after %d attempts", err, n)
		}
	}
	if s := relStatus(t, srv.url+"/token"); s != http.StatusBadRequest {
		t.Errorf("token without user_id: %d, want 400", s)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.url+"/upload", strings.NewReader(`{"batch":[]}`))
	resp, err := relHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload without a token: %d, want 401", resp.StatusCode)
	}
	if s := relStatus(t, srv.url+"/nope"); s != http.StatusNotFound {
		t.Errorf("GET /nope: %d", s)
	}

	m := relMetrics(t, srv.url)
	want := map[string]float64{
		relRequests("token", "GET", 200):   3,
		relRequests("token", "GET", 400):   1,
		relRequests("jwks", "GET", 200):    2,
		relRequests("upload", "POST", 200): 2,
		relRequests("upload", "POST", 401): 1,
		relRequests("-", "GET", 404):       1,
		relInflight:                        1, // this scrape
		relSeries("upload_operations_total", "deployment", "testing", "outcome", "applied"): 6,
	}
	for s, v := range want {
		got, ok := m[s]
		if !ok || got != v {
			t.Errorf("%s = %v (present: %t), want %v", s, got, ok, v)
		}
	}
	hist := relSeries("runtime_request_duration_seconds_count", "deployment", "testing", "method", "POST", "status", "200", "task", "upload")
	inf := strings.TrimSuffix(relSeries("runtime_request_duration_seconds_bucket", "deployment", "testing", "method", "POST", "status", "200", "task", "upload"), "}") + `,le="+Inf"}`
	if m[hist] != 2 || m[inf] != 2 {
		t.Errorf("upload latency histogram: count %v, +Inf bucket %v, want 2", m[hist], m[inf])
	}
	var names []string
	for s := range m {
		if !strings.Contains(s, `deployment="testing"`) {
			t.Errorf("series without the deployment label: %s", s)
		}
		if strings.HasPrefix(s, "upload_") || strings.Contains(s, "_upload_") {
			names = append(names, s)
		}
	}
	t.Logf("upload series: %v", names)
}
