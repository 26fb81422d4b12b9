package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"

	"github.com/taskrun/taskrun/internal/keys"
)

// algs are the signing algorithms measured, one runtime instance each.
var algs = []string{"RS256", "ES256", "EdDSA"}

// audience is the deployments' POWERSYNC_URL.
const audience = "http://127.0.0.1:8080"

// runtimeAnnounce matches the runtime's "serving" log line.
var runtimeAnnounce = regexp.MustCompile(`"url":"(http://127\.0\.0\.1:\d+)".*"message":"serving`)

type bench struct {
	cfg            config
	stdout, stderr io.Writer

	repo string // the module root
	tmp  string // temporary folder: project, store files, binaries
	bin  string // the runtime binary
	base string // the -baseline revision's runtime binary ("": none)
	rev  string // that revision, abbreviated
	self string // this binary, for the helper subcommands

	storeProc *proc
	mongoURI  string
	dbName    string // the database the runtime and the limits use
	ownDB     bool   // the benchmark chose dbName and drops it at the end
	mongo     *mongo.Client
	db        *mongo.Database

	rows    []Row
	metrics []Metric

	// Rates that other rows compare with.
	jwksBare  float64
	bares     int    // bare servers started, for their files
	wrk       string // wrk's path; "" when the Go client generates the GET loads
	tokenRate map[string]float64
	signRate  map[string]float64
	loadRSS   int64 // highest VmRSS of a runtime under load
	deploys   int   // runtimes started, to name their profiles
	logs      int   // runtimes started, to name their logs
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) (err error) {
	start := time.Now()
	b.tokenRate, b.signRate = map[string]float64{}, map[string]float64{}
	if b.wrk = wrkPath(); b.wrk == "" || b.cfg.goClient {
		b.wrk = ""
		b.logf("WARNING: the GET rows use the Go HTTP client, which on a small machine is the limit of the jwks row itself; install wrk (apt-get install wrk) for a load generator that is not")
	}
	if b.repo, err = moduleRoot(); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "taskrun-bench-"); err != nil {
		return err
	}
	defer func() {
		if b.storeProc != nil {
			if serr := b.storeProc.stop(15 * time.Second); serr != nil {
				b.logf("stopping the store: %v", serr)
			}
		}
		if b.cfg.keep {
			b.logf("kept %s", b.tmp)
		} else {
			os.RemoveAll(b.tmp)
		}
	}()
	if b.cfg.profileDir != "" {
		if b.cfg.profileDir, err = filepath.Abs(b.cfg.profileDir); err != nil {
			return err
		}
		if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
			return err
		}
		b.logf("profiling: runtimes run inside this binary; profiles go to %s", b.cfg.profileDir)
	} else if err := b.build(ctx); err != nil {
		return err
	}
	if b.cfg.baseline != "" && b.cfg.want("token") {
		if err := b.buildBaseline(ctx); err != nil {
			return err
		}
	}
	if err := b.openStore(ctx); err != nil {
		return err
	}
	defer b.closeStore(ctx)
	if err := b.writeProject(); err != nil {
		return err
	}

	steps := []struct {
		section string
		fn      func(context.Context) error
	}{
		{"startup", b.measureStartup},
		{"startup", b.measureTestStartup},
		{"memory", b.measureBigBatch},
		{"memory", b.measureHostileBatches},
		{"jwks", b.measureMain}, // jwks, RS256 token, uploads and decoding share one instance
		{"token", b.measureFastTokens},
		{"decode", b.measureDecodeBench},
		{"large", b.measureLargeBatches},
		{"schedules", b.measureSchedules},
		{"queue", b.measureQueue},
		{"dashboard", b.measureDashboard},
	}
	for _, s := range steps {
		if s.section == "jwks" {
			if !b.cfg.want("jwks") && !b.cfg.want("token") && !b.cfg.want("upload") && !b.cfg.want("decode") {
				continue
			}
		} else if !b.cfg.want(s.section) {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.section, err)
		}
	}
	b.addRatios()
	slices.SortStableFunc(b.rows, func(x, y Row) int { return rowOrder(x.Path) - rowOrder(y.Path) })
	if b.loadRSS > 0 {
		b.metrics = append(b.metrics, Metric{Name: "resident memory under load", Value: mb(b.loadRSS),
			Note: "highest VmRSS sampled every 50ms during the jwks, token and upload loads"})
	}
	slices.SortStableFunc(b.metrics, func(x, y Metric) int { return metricOrder(x.Name) - metricOrder(y.Name) })

	fmt.Fprintln(b.stdout)
	fmt.Fprintln(b.stdout, machine())
	fmt.Fprintf(b.stdout, "%s, run took %s\n\n", b.settings(), time.Since(start).Round(time.Second))
	writeText(b.stdout, b.rows, b.metrics)
	if b.cfg.out != "" {
		var md bytes.Buffer
		fmt.Fprintf(&md, "Measured %s on %s.\n", time.Now().UTC().Format("2006-01-02"), machine())
		fmt.Fprintf(&md, "%s.\n\n", b.settings())
		writeMarkdown(&md, b.rows, b.metrics)
		if err := os.WriteFile(b.cfg.out, md.Bytes(), 0o644); err != nil {
			return err
		}
		b.logf("wrote %s", b.cfg.out)
	}
	return nil
}

func rowOrder(path string) int {
	switch {
	case strings.HasSuffix(path, "vs RS256"):
		return 2
	case strings.HasPrefix(path, "GET /jwks"):
		return 0
	case strings.HasPrefix(path, "GET /token"):
		return 1
	case strings.HasPrefix(path, "POST /upload"):
		return 3
	}
	return 4
}

func metricOrder(name string) int {
	for i, p := range []string{"startup", "resident memory idle", "resident memory under", "5 MB", "nested-values", "12 nested-values", "runtime CPU", "upload of", "schedule", "queue"} {
		if strings.HasPrefix(name, p) {
			return i
		}
	}
	return 99
}

func (b *bench) settings() string {
	store := "embedded FerretDB/SQLite store in its own process"
	if b.cfg.mongo != "" {
		store = "MongoDB at " + redactURI(b.cfg.mongo)
	}
	return fmt.Sprintf("`go run ./cmd/bench`: %s per measurement after %s warm-up, %d concurrent GETs, %d concurrent upload batches, %s",
		b.cfg.duration, b.cfg.warmup.Round(time.Millisecond), b.cfg.conc, b.cfg.uploadConc, store)
}

func redactURI(s string) string {
	cs, err := connstring.Parse(s)
	if err != nil {
		return "(unparseable URI)"
	}
	return strings.Join(cs.Hosts, ",")
}

// machine describes the host: CPU model, cores, memory, kernel, Go.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				mem = ", " + f[1] + " kB RAM"
				var kb int64
				fmt.Sscan(f[1], &kb)
				mem = fmt.Sprintf(", %.0f GB RAM", float64(kb)/1e6)
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d cores%s%s, %s %s/%s", model, goruntime.NumCPU(), mem, kernel, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
}

// moduleRoot is the nearest folder above the working directory holding
// go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or above: run from the repository", wd)
		}
	}
}

func (b *bench) build(ctx context.Context) error {
	if b.cfg.runtimeBin != "" {
		b.bin = b.cfg.runtimeBin
		return nil
	}
	b.bin = filepath.Join(b.tmp, "runtime")
	b.logf("building ./cmd/runtime")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/runtime")
	cmd.Dir = b.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/runtime: %v\n%s", err, out)
	}
	return nil
}

// buildBaseline builds ./cmd/runtime as it is at the -baseline revision,
// from `git archive` of it in a folder of its own.
func (b *bench) buildBaseline(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "git", "-C", b.repo, "rev-parse", "--short", "--verify", b.cfg.baseline+"^{commit}").Output()
	if err != nil {
		return fmt.Errorf("-baseline %q is not a commit of %s", b.cfg.baseline, b.repo)
	}
	b.rev = strings.TrimSpace(string(out))
	src := filepath.Join(b.tmp, "baseline-"+b.rev)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	b.logf("building ./cmd/runtime at %s (-baseline)", b.rev)
	archive := exec.CommandContext(ctx, "git", "-C", b.repo, "archive", "--format=tar", b.rev)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	if untar.Stdin, err = archive.StdoutPipe(); err != nil {
		return err
	}
	if err := archive.Start(); err != nil {
		return err
	}
	if out, err := untar.CombinedOutput(); err != nil {
		_ = archive.Wait()
		return fmt.Errorf("extracting %s: %v\n%s", b.rev, err, out)
	}
	if err := archive.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %v", b.rev, err)
	}
	b.base = filepath.Join(b.tmp, "runtime-"+b.rev)
	build := exec.CommandContext(ctx, "go", "build", "-o", b.base, "./cmd/runtime")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/runtime at %s: %v\n%s", b.rev, err, out)
	}
	return nil
}

// childEnviron is the environment of every child: a clean one.
func childEnviron(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	return append(env, extra...)
}

func (b *bench) openStore(ctx context.Context) error {
	b.mongoURI = b.cfg.mongo
	if b.mongoURI == "" {
		b.logf("starting the embedded store")
		argv := []string{b.self, "store", "-dir", filepath.Join(b.tmp, "store")}
		if b.cfg.profileDir != "" {
			argv = append(argv, "-cpuprofile", filepath.Join(b.cfg.profileDir, "store.cpu.prof"))
		}
		p, err := startProc("store", argv,
			childEnviron(), b.tmp, filepath.Join(b.tmp, "store.log"), storeAnnounce, 60*time.Second)
		if err != nil {
			return err
		}
		b.storeProc = p
		b.mongoURI = p.addr
	}
	cs, err := connstring.ParseAndValidate(b.mongoURI)
	if err != nil {
		return errors.New("-mongo is not a valid MongoDB connection string")
	}
	if cs.Database != "" {
		b.dbName = cs.Database
	} else {
		b.dbName = fmt.Sprintf("taskrun_bench_%d", os.Getpid())
		b.ownDB = true
	}
	b.mongo, err = mongo.Connect(options.Client().ApplyURI(b.mongoURI).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return err
	}
	b.db = b.mongo.Database(b.dbName)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return b.mongo.Ping(pctx, nil)
}

func (b *bench) closeStore(ctx context.Context) {
	if b.mongo == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if b.ownDB {
		_ = b.db.Drop(cctx)
	} else {
		for _, c := range append(collections[:], "bench_big") {
			_ = b.db.Collection(c).Drop(cctx)
		}
	}
	_ = b.mongo.Disconnect(cctx)
}

// deploymentName is the deployment of one algorithm.
func deploymentName(alg string) string { return "bench-" + strings.ToLower(alg) }

// writeProject writes one deployment per algorithm, each with a fresh key
// pair in its git-ignored local file, all on the same store.
func (b *bench) writeProject() error {
	dir := filepath.Join(b.tmp, "project", "deployments")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, alg := range algs {
		priv, pub, _, err := keys.Generate(alg)
		if err != nil {
			return err
		}
		yaml := fmt.Sprintf(`# Written by cmd/bench.
production: false
listen: 127.0.0.1:0
shutdown_grace: 5s
vars:
  - name: POWERSYNC_URL
    value: %s
  - name: TOKEN_LIFETIME
    value: 1h
  - name: TOKEN_AUTH
    value: open
  - name: MONGO_URI
    masked: true
  - name: MONGO_DATABASE
    value: %s
`, audience, b.dbName)
		name := deploymentName(alg)
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(yaml), 0o644); err != nil {
			return err
		}
		local := fmt.Sprintf("POWERSYNC_PRIVATE_KEY=%s\nPOWERSYNC_PUBLIC_KEY=%s\nMONGO_URI=%s\n", priv, pub, b.mongoURI)
		if err := os.WriteFile(filepath.Join(dir, name+".local.env"), []byte(local), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// deploy starts a runtime serving the deployment of alg.
func (b *bench) deploy(alg string) (*proc, error) { return b.deployBin(b.bin, alg) }

// deployBin starts the runtime binary bin serving the deployment of alg.
func (b *bench) deployBin(bin, alg string) (*proc, error) {
	return b.deployNamed(bin, deploymentName(alg))
}

// deployNamed starts the runtime binary bin serving deployment dep of the
// project.
func (b *bench) deployNamed(bin, dep string) (*proc, error) {
	root := filepath.Join(b.tmp, "project")
	argv := []string{bin}
	if b.cfg.profileDir != "" {
		b.deploys++
		name := fmt.Sprintf("%02d-%s", b.deploys, dep)
		argv = []string{b.self, "runtime",
			"-cpuprofile", filepath.Join(b.cfg.profileDir, name+".cpu.prof"),
			"-memprofile", filepath.Join(b.cfg.profileDir, name+".allocs.prof")}
	}
	argv = append(argv, "deploy", dep, "--listen", "127.0.0.1:0", "--root", root)
	b.logs++
	log := filepath.Join(b.tmp, fmt.Sprintf("runtime-%02d-%s.log", b.logs, dep))
	return startProc("runtime "+dep, argv, childEnviron(), root, log, runtimeAnnounce, 60*time.Second)
}

func (b *bench) stopRuntime(p *proc) {
	if err := p.stop(15 * time.Second); err != nil {
		b.logf("%v", err)
	}
	// A runtime that logged errors while measured is worth knowing about.
	for _, l := range p.lines(`"level":"error"`) {
		b.logf("%s logged: %s", p.name, clipLine(l))
	}
}

func clipLine(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

// getToken asks a runtime for a token.
func getToken(c *http.Client, base, user string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/token?user_id="+user, nil)
	body, err := do(c, req, true)
	if err != nil {
		return "", fmt.Errorf("GET /token: %w", err)
	}
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Token == "" {
		return "", fmt.Errorf("GET /token: no token in %q", body)
	}
	return r.Token, nil
}

// checkToken verifies a token of the runtime at base against its own JWKS,
// so that the benchmark measures tokens that work.
func checkToken(c *http.Client, base string) error {
	tok, err := getToken(c, base, "bench-check")
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/jwks", nil)
	jwks, err := do(c, req, true)
	if err != nil {
		return fmt.Errorf("GET /jwks: %w", err)
	}
	if err := verifyIssued(tok, jwks, "bench-check", time.Now()); err != nil {
		return fmt.Errorf("the token does not verify against the JWKS: %w", err)
	}
	return nil
}
