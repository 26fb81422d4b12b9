package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[99-i] = time.Duration(i+1) * time.Millisecond // 100..1, unsorted
	}
	tests := []struct {
		name string
		lat  []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 50, 7 * time.Millisecond},
		{"one sample p99", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 of 1..100", hundred, 100, 100 * time.Millisecond},
		{"p1 of 1..100", hundred, 1, 1 * time.Millisecond},
		{"p50 of four", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of four", ms(4, 1, 3, 2), 99, 4 * time.Millisecond},
		{"p50 of three", ms(30, 10, 20), 50, 20 * time.Millisecond},
		{"tiny p", ms(30, 10, 20), 0.001, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lat := append([]time.Duration(nil), tt.lat...)
			if got := percentile(lat, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.lat, tt.p, got, tt.want)
			}
		})
	}
}

func TestRowVerdict(t *testing.T) {
	tests := []struct {
		name   string
		row    Row
		ratio  float64 // NaN: none
		target string
		want   int
	}{
		{"ratio met", Row{Rate: 90, Limit: 100, MinRatio: 0.85}, 0.9, ">= 0.85", Pass},
		{"ratio exactly met", Row{Rate: 85, Limit: 100, MinRatio: 0.85}, 0.85, ">= 0.85", Pass},
		{"ratio missed", Row{Rate: 84, Limit: 100, MinRatio: 0.85}, 0.84, ">= 0.85", Miss},
		{"ratio above 1", Row{Rate: 120, Limit: 100, MinRatio: 0.8}, 1.2, ">= 0.8", Pass},
		{"error never passes", Row{Rate: 100, Limit: 100, MinRatio: 0.8, Err: "boom"}, 1, ">= 0.8", Miss},
		{"no limit, ratio target", Row{Rate: 100, MinRatio: 0.8}, math.NaN(), ">= 0.8", Miss},
		{"no target", Row{Rate: 5, Limit: 10}, 0.5, "", NoTarget},
		{"rate met", Row{Rate: 600_000, Unit: "ops/s/core", MinRate: 500_000}, math.NaN(), ">= 500k ops/s/core", Pass},
		{"rate missed", Row{Rate: 499_999, Unit: "ops/s/core", MinRate: 500_000}, math.NaN(), ">= 500k ops/s/core", Miss},
		{"tail met", Row{P50: 10 * time.Millisecond, P99: 30 * time.Millisecond, MaxTail: 3}, math.NaN(), "p99 <= 3x p50", Pass},
		{"tail missed", Row{P50: 10 * time.Millisecond, P99: 30*time.Millisecond + 1, MaxTail: 3}, math.NaN(), "p99 <= 3x p50", Miss},
		{"tail without samples", Row{MaxTail: 3}, math.NaN(), "p99 <= 3x p50", Miss},
		{"tail with an error", Row{P50: 10, P99: 10, MaxTail: 3, Err: "x"}, math.NaN(), "p99 <= 3x p50", Miss},
		{"ten times", Row{Rate: 10_000, Limit: 1_000, MinRatio: 10}, 10, ">= 10", Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.row.Ratio()
			if math.IsNaN(tt.ratio) != math.IsNaN(r) || (!math.IsNaN(r) && math.Abs(r-tt.ratio) > 1e-9) {
				t.Errorf("Ratio() = %v, want %v", r, tt.ratio)
			}
			if got := tt.row.Target(); got != tt.target {
				t.Errorf("Target() = %q, want %q", got, tt.target)
			}
			if got := tt.row.Verdict(); got != tt.want {
				t.Errorf("Verdict() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want any }{
		{human(0), "-"},
		{human(math.NaN()), "-"},
		{human(1.234), "1.23"},
		{human(12.34), "12.3"},
		{human(999), "999"},
		{human(1500), "1.50k"},
		{human(18_900), "18.9k"},
		{human(250_000), "250k"},
		{human(2_500_000), "2.50M"},
		{dur(0), "-"},
		{dur(500 * time.Nanosecond), "500ns"},
		{dur(1500 * time.Nanosecond), "1.50µs"},
		{dur(72400 * time.Nanosecond), "72.4µs"},
		{dur(1550 * time.Microsecond), "1.55ms"},
		{dur(30 * time.Second), "30.0s"},
		{ratioText(0.8123), "0.81"},
		{ratioText(math.NaN()), "-"},
		{mb(40 << 20), "40.0 MiB"},
		{oneLine("a\nb  c\n"), "a b c"},
		{len(oneLine(strings.Repeat("x", 400))) == 303, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestTables(t *testing.T) {
	rows := []Row{
		{Path: "GET /jwks", Rate: 15000, P50: time.Millisecond, P99: 5 * time.Millisecond, Limit: 20000, LimitName: "bare", MinRatio: 0.85, Note: "a|b"},
		{Path: "decode", Rate: 700_000, Unit: "ops/s/core", MinRate: 500_000},
		{Path: "POST /upload x1", Unit: "batch/s", Rate: 100, Limit: 100, Err: "2 of 10 failed"},
	}
	metrics := []Metric{{Name: "resident memory idle", Value: "28.0 MiB", Target: "< 40.0 MiB", Verdict: Pass}}

	var md bytes.Buffer
	writeMarkdown(&md, rows, metrics)
	lines := strings.Split(strings.TrimSpace(md.String()), "\n")
	// header, separator, 3 rows, blank, header, separator, 1 metric
	if len(lines) != 9 {
		t.Fatalf("markdown has %d lines, want 9:\n%s", len(lines), md.String())
	}
	wantCells := len(rowHeader)
	for i, l := range append(lines[:5:5], lines[6:]...) {
		if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") {
			t.Errorf("line %d is not a table row: %q", i, l)
		}
		if i < 5 {
			if n := strings.Count(strings.ReplaceAll(l, `\|`, ""), "|") - 1; n != wantCells {
				t.Errorf("line %d has %d cells, want %d: %q", i, n, wantCells, l)
			}
		}
	}
	for _, want := range []string{
		"| GET /jwks | 15.0k req/s | 1.00ms | 5.00ms | 20.0k | bare | 0.75 | >= 0.85 | MISS | a\\|b |",
		"| decode | 700k ops/s/core | - | - | - | | - | >= 500k ops/s/core | pass | |",
		"| POST /upload x1 | 100 batch/s | - | - | 100 | | 1.00 | | ERROR | error: 2 of 10 failed |",
		"| resident memory idle | 28.0 MiB | < 40.0 MiB | pass | |",
	} {
		if !strings.Contains(strings.ReplaceAll(md.String(), "|  |", "| |"), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}

	var txt bytes.Buffer
	writeText(&txt, rows, metrics)
	for _, want := range []string{"GET /jwks", "15.0k req/s", "MISS", "ERROR", "resident memory idle", "28.0 MiB"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text table lacks %q:\n%s", want, txt.String())
		}
	}
}

func TestParseProc(t *testing.T) {
	status := "Name:\truntime\nVmPeak:\t 1887560 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\nThreads:\t7\n"
	m, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 30720<<10 || m.HWM != 40960<<10 {
		t.Errorf("parseStatus = %+v, want RSS 30 MiB, HWM 40 MiB", m)
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("parseStatus without VmRSS: no error")
	}

	// A command name with spaces and parentheses; utime 250, stime 50 ticks.
	stat := "4242 (odd) name)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 100 2000000 7000 18446744073709551615"
	d, err := parseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if d != 300*clockTick {
		t.Errorf("parseStat = %v, want 3s", d)
	}
	if _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("parseStat of a short line: no error")
	}
	// The real thing, for this process.
	if m, err := readMem(os.Getpid()); err != nil || m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("readMem(self) = %+v, %v", m, err)
	}
	if _, err := readCPU(os.Getpid()); err != nil {
		t.Errorf("readCPU(self): %v", err)
	}
}

func TestParseDecodeBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/taskrun/taskrun/tasks/upload
BenchmarkDecode/ops=100         	    7940	    148533 ns/op	 237.61 MB/s	    673251 ops/s	  216568 B/op	    1416 allocs/op
BenchmarkDecode/ops=1000-2      	     762	   1492878 ns/op	 237.66 MB/s	    669847 ops/s	 2036663 B/op	   14016 allocs/op
BenchmarkDecodeStdlib           	     100	   1000000 ns/op	    1000000 ops/s
PASS
`
	got := parseDecodeBench(out)
	want := []decodeResult{{100, 148533, 673251}, {1000, 1492878, 669847}}
	if len(got) != len(want) {
		t.Fatalf("parseDecodeBench = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestDecodeBody(t *testing.T) {
	body := decodeBody()
	var req struct {
		Batch []struct{ Op, Table, ID string }
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("invalid JSON: %v", err)
	}
	if len(req.Batch) != decodeOps {
		t.Fatalf("%d operations, want %d", len(req.Batch), decodeOps)
	}
	for i, op := range req.Batch {
		if (op.Table == badTable) != (i == decodeOps-1) {
			t.Errorf("op %d has table %q", i, op.Table)
		}
	}
}

// applied simulates a store: it applies a worker's batches in order and
// checks the workload's promises.
func TestWorkload(t *testing.T) {
	for _, tt := range []struct{ size, maxPatch, batches int }{
		{1, 0, 57}, {10, 0, 9}, {100, 0, 5}, {100, 16, 5}, {1000, 16, 3}, {1000, 0, 3},
	} {
		m := newMix(tt.size, tt.maxPatch)
		if m.put+m.patch+m.del != m.round || m.patch+m.del > m.put {
			t.Fatalf("size %d: bad mix %+v", tt.size, m)
		}
		if tt.maxPatch > 0 && m.patch > tt.maxPatch {
			t.Errorf("size %d: %d PATCHes, cap %d", tt.size, m.patch, tt.maxPatch)
		}
		docs := map[string]bool{}
		var applied int64
		for b := 0; b < tt.batches; b++ {
			ops := m.batch(3, b, tt.size)
			if len(ops) != tt.size {
				t.Fatalf("size %d batch %d: %d ops", tt.size, b, len(ops))
			}
			seen := map[string]bool{}
			for _, op := range ops {
				if seen[op.id] {
					t.Fatalf("size %d batch %d: document %s twice", tt.size, b, op.id)
				}
				seen[op.id] = true
				if op.coll != op.n&1 || op.coll < 0 || op.coll > 1 {
					t.Fatalf("document %d in collection %d", op.n, op.coll)
				}
				exists := docs[op.id]
				switch op.kind {
				case opPut:
					if exists {
						t.Fatalf("size %d batch %d: PUT of existing %s", tt.size, b, op.id)
					}
					docs[op.id] = true
				case opPatch, opDelete:
					// Only the first round may reach documents never PUT.
					if !exists && int(applied)/m.round >= 1 {
						t.Fatalf("size %d batch %d: %s of missing %s (n=%d)", tt.size, b, opNames[op.kind], op.id, op.n)
					}
					if op.kind == opDelete {
						delete(docs, op.id)
					}
				}
				applied++
			}
			if got := m.live(applied); got != int64(len(docs)) {
				t.Fatalf("size %d after %d ops: live() = %d, the store holds %d", tt.size, applied, got, len(docs))
			}
		}
	}
	if a, b := newMix(100, 0).batch(1, 2, 100), newMix(100, 0).batch(1, 2, 100); a[50] != b[50] {
		t.Error("batches are not deterministic")
	}
}

func TestUploadJSON(t *testing.T) {
	ops := newMix(10, 0).batch(0, 1, 10)
	body := appendJSON(nil, ops)
	var req struct {
		Batch []struct {
			Op, Table, ID string
			Data          map[string]any
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("invalid JSON %s: %v", body, err)
	}
	if len(req.Batch) != len(ops) {
		t.Fatalf("%d operations, want %d", len(req.Batch), len(ops))
	}
	for i, got := range req.Batch {
		op := ops[i]
		if got.Op != opNames[op.kind] || got.Table != collections[op.coll] || got.ID != op.id {
			t.Errorf("op %d = %s %s %s, want %s %s %s", i, got.Op, got.Table, got.ID, opNames[op.kind], collections[op.coll], op.id)
		}
		switch op.kind {
		case opPut:
			// The JSON data and the limit's document hold the same fields.
			doc := putDoc(op)
			if len(got.Data) != len(doc)-1 {
				t.Errorf("op %d: %d fields in JSON, %d in the document", i, len(got.Data), len(doc)-1)
			}
			for _, e := range doc[1:] {
				if _, ok := got.Data[e.Key]; !ok {
					t.Errorf("op %d: JSON lacks %s", i, e.Key)
				}
			}
		case opPatch:
			if len(got.Data) != 2 {
				t.Errorf("op %d: PATCH data %v", i, got.Data)
			}
		case opDelete:
			if got.Data != nil {
				t.Errorf("op %d: DELETE with data", i)
			}
		}
	}
	ms := models(ops)
	if n := len(ms[0]) + len(ms[1]); n != len(ops) {
		t.Errorf("%d write models, want %d", n, len(ops))
	}

	big := bigBatch(0, bigBatchBytes, bigOpBytes)
	if len(big) > bigBatchBytes || len(big) < bigBatchBytes*9/10 {
		t.Errorf("big batch is %d bytes, want about %d", len(big), bigBatchBytes)
	}
	if !json.Valid(big) {
		t.Error("big batch is not valid JSON")
	}
	if bytes.Equal(big[:200], bigBatch(1, bigBatchBytes, bigOpBytes)[:200]) {
		t.Error("big batches of different rounds have the same ids")
	}
}

// TestTokens: what checkToken accepts of a runtime's token, and refuses;
// and the signature limit of each algorithm signs.
func TestTokens(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg, func(t *testing.T) {
			priv, pub, _, err := keys.Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			set, err := keys.New(priv, pub)
			if err != nil {
				t.Fatal(err)
			}
			otherPriv, _, _, _ := keys.Generate(alg)
			other, err := keys.New(otherPriv, "")
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			sign := func(s *keys.Set, aud string) string {
				tok, err := s.Sign(keys.Claims{Subject: "u1", Audience: []string{aud}, IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 300})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			if err := verifyIssued(sign(set, audience), set.JWKS(), "u1", now); err != nil {
				t.Errorf("a good token: %v", err)
			}
			for name, tok := range map[string]string{
				"wrong audience":  sign(set, "http://elsewhere"),
				"tampered":        tamper(sign(set, audience)),
				"another key":     sign(other, audience),
				"another subject": sign(set, audience),
			} {
				user := "u1"
				if name == "another subject" {
					user = "u2"
				}
				if err := verifyIssued(tok, set.JWKS(), user, now); err == nil {
					t.Errorf("%s: verified", name)
				}
			}
			l, err := signLoad(alg, 0, time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Do(context.Background(), 0, 0); err != nil {
				t.Error(err)
			}
		})
	}
}

// tamper changes the token's subject, keeping the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	claims = bytes.Replace(claims, []byte(`"u1"`), []byte(`"u2"`), 1)
	parts[1] = base64.RawURLEncoding.EncodeToString(claims)
	return strings.Join(parts, ".")
}

func TestLoad(t *testing.T) {
	ctx := context.Background()
	var calls atomic.Int64
	do := func(context.Context, int, int) error { calls.Add(1); time.Sleep(time.Millisecond); return nil }

	st := Load{Workers: 4, WarmupN: 4, Duration: time.Hour, Max: 40, Min: 40, Do: do}.Run(ctx)
	if st.N != 40 || calls.Load() != 44 {
		t.Errorf("Max/Min 40 with 4 warm-up: N = %d, calls = %d, want 40 and 44", st.N, calls.Load())
	}
	calls.Store(0)
	st = Load{Workers: 2, Duration: 20 * time.Millisecond, Min: 30, Do: do}.Run(ctx)
	if st.N < 30 {
		t.Errorf("Min 30: N = %d", st.N)
	}
	st = Load{Workers: 3, Duration: 30 * time.Millisecond, Do: func(_ context.Context, w, i int) error {
		if i%2 == 1 {
			return os.ErrNotExist
		}
		return nil
	}, CPU: func() time.Duration { return time.Duration(calls.Add(1)) * time.Second }}.Run(ctx)
	if st.Errors == 0 || st.Errors > st.N || !strings.Contains(st.FirstErr, "not exist") {
		t.Errorf("errors: %d of %d, first %q", st.Errors, st.N, st.FirstErr)
	}
	if st.CPU != time.Second {
		t.Errorf("CPU = %v, want the difference of two readings, 1s", st.CPU)
	}
	if len(st.Lat) != st.N || st.Rate() <= 0 {
		t.Errorf("%d latencies for %d operations, rate %v", len(st.Lat), st.N, st.Rate())
	}

	a := Load{Workers: 1, Duration: 30 * time.Millisecond, Do: do}
	b := Load{Workers: 2, Duration: 30 * time.Millisecond, Do: do}
	sa, sb := paired(ctx, 3, a, b)
	if sa.N == 0 || sb.N <= sa.N || sa.Elapsed < 25*time.Millisecond || sa.Elapsed > time.Second {
		t.Errorf("paired: a %d ops in %v, b %d ops in %v", sa.N, sa.Elapsed, sb.N, sb.Elapsed)
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	c, err := parseFlags([]string{"-duration", "2s", "-only", "jwks,token", "-upload-sizes", "1,20"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.duration != 2*time.Second || c.warmup != 333333333 || !c.want("jwks") || c.want("upload") || len(c.uploadSizes) != 2 {
		t.Errorf("parsed %+v", c)
	}
	for _, bad := range [][]string{
		{"-only", "nope"}, {"-upload-sizes", "15"}, {"-duration", "0s"}, {"extra"}, {"-concurrency", "0"},
		{"-baseline", "main", "-profile", "p"},
	} {
		if _, err := parseFlags(bad, &stderr); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestBaselineRevision: -baseline names a commit of the repository, or the
// run stops before building anything.
func TestBaselineRevision(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if exec.Command("git", "-C", repo, "rev-parse", "HEAD").Run() != nil {
		t.Skip("not a git checkout")
	}
	b := &bench{cfg: config{baseline: "no-such-revision-xyz"}, repo: repo, tmp: t.TempDir(), stderr: io.Discard}
	if err := b.buildBaseline(context.Background()); err == nil || !strings.Contains(err.Error(), "not a commit") {
		t.Errorf("unknown revision: %v", err)
	}
	if b.base != "" {
		t.Errorf("a binary was named: %s", b.base)
	}
}

// TestSmoke builds the benchmark and runs it briefly, end to end, against
// the real runtime binary. It runs the binary rather than Main in process,
// so that its helper processes (the store, the bare server) are the real
// thing and not race-instrumented copies of this test.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and serves the runtime: skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "bench.md")
	cmd := exec.Command(bin, "-duration", "200ms", "-startups", "1", "-upload-sizes", "1,10", "-large-ops", "100",
		"-concurrency", "4", "-upload-concurrency", "2", "-out", out)
	cmd.Env = append(os.Environ(), "TEST_MONGO_URI=") // the embedded store, whatever the environment
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"GET /jwks", "GET /token RS256", "GET /token ES256", "GET /token EdDSA", "EdDSA vs RS256", "GET /token EdDSA p99/p50",
		"POST /upload x1 ", "POST /upload x10 ", "decode+validate, 1000-op batch, in process",
		"decode+validate, 1000-op batch, in the runtime", "startup to first served request",
		"resident memory idle", "5 MB batch", "runtime CPU per operation", "POST /upload x10 with rules",
		"upload of 100 PUTs in one batch", "upload of 20 operations the database refuses",
		"schedule fire lateness, 3 instances",
	} {
		if !strings.Contains(stdout.String(), want) || !strings.Contains(string(md), want) {
			t.Errorf("output or %s lacks %q\nstdout:\n%s", out, want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "ERROR") {
		t.Errorf("a measurement failed:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}

func TestParseWrk(t *testing.T) {
	var out strings.Builder
	out.WriteString("Running 1s test @ http://127.0.0.1:1/jwks\nWRK_SUMMARY 1000 1000000 3 1\nWRK_P 600 1090\n")
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&out, "WRK_H %d 1\n", 100+i)
	}
	// 1,000 requests on 1,000 connections in 1 s: an interval of 1 s, so
	// wrk made up no samples.
	st, err := parseWrk([]byte(out.String()), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if st.N != 1000 || st.Elapsed != time.Second || st.Errors != 4 || !strings.Contains(st.FirstErr, "3 non-2xx") {
		t.Errorf("summary: %+v", st)
	}
	if st.Rate() != 1000 || st.Percentile(50) != 600*time.Microsecond || st.Percentile(99) != 1090*time.Microsecond || len(st.Lat) != 1000 {
		t.Errorf("rate %v, p50 %v, p99 %v, %d samples", st.Rate(), st.Percentile(50), st.Percentile(99), len(st.Lat))
	}
	if st.GenP50 != 600*time.Microsecond || st.GenP99 != 1090*time.Microsecond {
		t.Errorf("wrk's own percentiles: %v %v", st.GenP50, st.GenP99)
	}
	for _, bad := range []string{"unable to connect to 127.0.0.1:1 Connection refused\n", "WRK_SUMMARY 1 2 0 0\n", "WRK_SUMMARY 1 2 0 0\nWRK_H x 1\n", "WRK_SUMMARY 1 2 0 0\nWRK_H 10 -1\n"} {
		if _, err := parseWrk([]byte(bad), 1); err == nil {
			t.Errorf("%q should be an error", bad)
		}
	}
}

// wrkCorrect is wrk 4.1's stats_correct (src/stats.c), for the test.
func wrkCorrect(data []int64, expected int64) {
	for n := expected * 2; n < int64(len(data)); n++ {
		count := data[n]
		for m := n - expected; count > 0 && m > expected; m -= expected {
			data[m] += count
		}
	}
}

// uncorrect gives back the histogram wrk had before its correction, for
// histograms with long tails and intervals short and long.
func TestUncorrect(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, interval := range []int64{1, 7, 50, 400, 5000} {
		orig := make([]int64, 20000)
		for range 5000 {
			v := 100 + rng.Int64N(900)
			if rng.IntN(10) == 0 {
				v += rng.Int64N(19000 - 1000)
			}
			orig[v]++
		}
		data := slices.Clone(orig)
		wrkCorrect(data, interval)
		hist := map[int64]int64{}
		var made int64
		for u, n := range data {
			if n > 0 {
				hist[int64(u)] = n
			}
			made += n - orig[u]
		}
		if interval < 1000 && made == 0 {
			t.Fatalf("interval %d: the correction made up no samples; the test tests nothing", interval)
		}
		uncorrect(hist, interval)
		for u, n := range orig {
			if hist[int64(u)] != n {
				t.Fatalf("interval %d: bucket %d µs: %d after uncorrect, %d before the correction (it made up %d samples)", interval, u, hist[int64(u)], n, made)
			}
		}
	}
}

// wrk, when installed, drives a real server: the script's unique paths and
// its quantiles come back.
func TestWrkLoad(t *testing.T) {
	bin := wrkPath()
	if bin == "" {
		t.Skip("wrk is not installed (apt-get install wrk); the benchmark falls back to the Go client")
	}
	var mu sync.Mutex
	paths := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.RawQuery] = true
		mu.Unlock()
	}))
	defer srv.Close()
	st := wrkLoad{bin: bin, dir: t.TempDir(), base: srv.URL, path: "/token?user_id=u-", unique: true, conns: 4, thread: 2}.run(context.Background(), time.Second)
	if st.Errors != 0 || st.N < 100 {
		t.Fatalf("wrk load: %+v", st.FirstErr)
	}
	// One latency per request: the made-up samples are taken out.
	if len(st.Lat) != st.N {
		t.Errorf("%d latencies for %d requests", len(st.Lat), st.N)
	}
	mu.Lock()
	defer mu.Unlock()
	threads := map[string]bool{}
	for p := range paths {
		if rest, ok := strings.CutPrefix(p, "user_id=u-"); ok {
			threads[strings.SplitN(rest, "-", 2)[0]] = true
		}
	}
	if len(paths) < st.N*9/10 || len(threads) != 2 {
		t.Errorf("%d distinct paths for %d requests from %d threads; want each request's own, from both threads", len(paths), st.N, len(threads))
	}
}
