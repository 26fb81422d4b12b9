// Command bench measures each hot path of the runtime beside its physical
// limit, in one run on one machine, and prints a table of rates, latencies
// and ratios against the targets of the performance issue.
//
//	go run ./cmd/bench [-duration 2s] [-concurrency 16] [-upload-concurrency N]
//	                   [-mongo URI] [-out bench.md] [-only jwks,token,...]
//	                   [-upload-sizes 1,100,1000] [-profile DIR] [-baseline REV]
//
// Every server runs in its own process: the runtime (built from
// ./cmd/runtime, one instance per signing algorithm, keys generated for the
// run), a bare net/http server (the jwks limit) and the embedded
// development store (FerretDB on SQLite, as `runtime deploy` starts it; or
// the MongoDB named by -mongo / TEST_MONGO_URI). This process generates the
// load over loopback with keep-alive HTTP clients, and runs the limits that
// need no server: the signature alone (crypto.Signer), the driver's bulk
// writes, and the upload task's decoder benchmark (`go test -bench`).
//
// What it measures, in order: startup to the first served request; resident
// memory idle and with a 5 MB upload batch; GET /jwks against the bare
// server; GET /token for RS256, ES256 and EdDSA against signing on all
// cores; POST /upload at each batch size against the same batches written
// by the driver directly (the same number of them, on emptied collections);
// decoding and validating; the largest batches; how late scheduled runs
// start with three instances claiming every fire time (schedules.go); jobs
// per second of one instance beside the store's own claims and finishes,
// how late jobs start, an idle instance's CPU (queue.go). The runtime and its limit alternate in rounds, so
// that other load on the machine affects both alike; the notes give the
// servers' CPU time per request, which such load disturbs less.
//
// With -baseline REV, GET /token is also measured on a runtime built from
// that git revision (git archive, then go build), alternately with this
// one: the rows "GET /token <alg> vs <rev>" give the change's effect in the
// same run.
//
// With -profile DIR, the runtimes run inside this binary (`bench runtime`,
// the same tasks) with a CPU and an allocation profile each, and the store
// with a CPU profile: go tool pprof DIR/01-bench-rs256.cpu.prof.
//
// The numbers vary between machines and runs; the ratios, measured in the
// same run, are what to track.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the command line.
type config struct {
	duration    time.Duration
	warmup      time.Duration
	conc        int
	uploadConc  int
	mongo       string
	out         string
	runtimeBin  string
	only        map[string]bool
	startups    int
	maxRequests int
	keep        bool
	uploadSizes []int
	profileDir  string
	largeOps    int
	baseline    string // git revision whose runtime GET /token is compared with
	wrkThreads  int
	goClient    bool // -go-client: the Go client even when wrk is installed
}

// sections, in the order they run.
var sections = []string{"startup", "memory", "jwks", "token", "upload", "decode", "large", "schedules", "queue", "dashboard"}

func (c *config) want(section string) bool { return len(c.only) == 0 || c.only[section] }

// Main runs the benchmark (or a helper subcommand) and returns the exit
// code: 0 when it ran, whatever the verdicts; 1 when it could not run.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			if err := sub(args[1:], stdout); err != nil {
				fmt.Fprintf(stderr, "bench %s: %v\n", args[0], err)
				return 1
			}
			return 0
		}
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	b := &bench{cfg: cfg, stdout: stdout, stderr: stderr}
	if err := b.run(context.Background()); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// subcommands are the helper processes the benchmark starts.
var subcommands = map[string]func(args []string, stdout io.Writer) error{
	"bare-server": bareServer,
	"store":       storeServer,
	"runtime":     runtimeCmd,
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.DurationVar(&c.duration, "duration", 2*time.Second, "length of each measurement")
	fs.DurationVar(&c.warmup, "warmup", -1, "unrecorded load before each measurement (default: duration/6, at most 1s)")
	fs.IntVar(&c.conc, "concurrency", 16, "concurrent requests for GET /jwks and GET /token")
	fs.IntVar(&c.uploadConc, "upload-concurrency", 0, "concurrent batches for POST /upload and its direct limit (default: 4 with -mongo; 1 on the embedded store, whose SQLite has one writer)")
	fs.StringVar(&c.mongo, "mongo", os.Getenv("TEST_MONGO_URI"), "MongoDB URI to use instead of the embedded store (default $TEST_MONGO_URI)")
	fs.StringVar(&c.out, "out", "", "also write the tables as Markdown to this file")
	fs.StringVar(&c.runtimeBin, "runtime", "", "a built runtime binary (default: go build ./cmd/runtime)")
	only := fs.String("only", "", "comma-separated sections to run: "+strings.Join(sections, ","))
	fs.IntVar(&c.startups, "startups", 5, "runtime starts timed for the startup measurement")
	fs.IntVar(&c.largeOps, "large-ops", 10_000, "operations of the largest batch (section large; the default is UPLOAD_MAX_OPS's)")
	fs.IntVar(&c.maxRequests, "max-requests", 2_000_000, "upper bound on the requests of one measurement")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary project folder")
	fs.StringVar(&c.baseline, "baseline", "", "a git revision: also measure GET /token on the runtime built from it, alternately with this one (before/after a change)")
	fs.IntVar(&c.wrkThreads, "wrk-threads", 2, "threads of wrk, when it generates the GET loads")
	fs.BoolVar(&c.goClient, "go-client", false, "generate the GET loads with the Go client even when wrk is installed")
	fs.StringVar(&c.profileDir, "profile", "", "folder for CPU profiles: the runtimes then run inside this binary (`bench runtime`, same tasks), each profiled, and so does the store")
	sizes := fs.String("upload-sizes", "1,100,1000", "operations per upload batch, comma-separated (1 or multiples of 10)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.uploadConc == 0 {
		c.uploadConc = 1
		if c.mongo != "" {
			c.uploadConc = 4
		}
	}
	if c.duration <= 0 || c.conc < 1 || c.uploadConc < 1 || c.startups < 1 || c.maxRequests < 1 {
		return c, errors.New("-duration, -concurrency, -upload-concurrency, -startups and -max-requests must be positive")
	}
	if c.largeOps < 10 || c.largeOps > 10_000 {
		return c, errors.New("-large-ops must be from 10 to 10000")
	}
	if c.baseline != "" && c.profileDir != "" {
		return c, errors.New("-baseline and -profile cannot be combined: profiled runtimes run inside this binary")
	}
	if c.warmup < 0 {
		c.warmup = min(c.duration/6, time.Second)
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (n > 1 && n%10 != 0) || n > 10000 {
			return c, fmt.Errorf("-upload-sizes: %q is not 1 or a multiple of 10 up to 10000", f)
		}
		c.uploadSizes = append(c.uploadSizes, n)
	}
	if *only != "" {
		c.only = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			known := false
			for _, k := range sections {
				known = known || k == s
			}
			if !known {
				return c, fmt.Errorf("-only: unknown section %q (known: %s)", s, strings.Join(sections, ","))
			}
			c.only[s] = true
		}
	}
	return c, nil
}
