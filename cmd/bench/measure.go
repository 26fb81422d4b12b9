package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Targets of the performance issue.
const (
	targetJWKS        = 0.85
	targetBaseline    = 0.9 // a change may cost at most 10% of a path's rate
	targetToken       = 0.85
	targetTail        = 3 // GET /token: p99 <= 3x p50 at 16 connections
	targetFastVsRSA   = 10
	targetUpload      = 0.8
	targetDecode      = 500_000 // operations per second per core
	targetIdleRSS     = 40 << 20
	targetBigBatchMul = 4
	bigBatchBytes     = 5_000_000
	bigOpBytes        = 50_000
)

// minBatches is the fewest batches an upload measurement counts (two a
// round), however slow the store.
const minBatches = 6

// measureStartup times `runtime deploy` from exec to its first served
// request (GET /jwks answered), with the store external, several times.
func (b *bench) measureStartup(ctx context.Context) error {
	b.logf("startup: %d starts", b.cfg.startups)
	var times []time.Duration
	for i := 0; i < b.cfg.startups; i++ {
		p, err := b.deploy("RS256")
		if err != nil {
			return err
		}
		c := newClient(1)
		req, _ := http.NewRequest(http.MethodGet, p.addr+"/jwks", nil)
		_, err = do(c, req, false)
		served := time.Now()
		c.CloseIdleConnections()
		b.stopRuntime(p)
		if err != nil {
			return fmt.Errorf("first request: %w", err)
		}
		times = append(times, served.Sub(p.started))
	}
	slices.Sort(times)
	med := times[len(times)/2]
	b.metrics = append(b.metrics, Metric{
		Name:  "startup to first served request",
		Value: fmt.Sprintf("%s median, %s max", dur(med), dur(times[len(times)-1])),
		Note:  fmt.Sprintf("%d starts of `runtime deploy` (external store, keys from the deployment), exec to GET /jwks answered", len(times)),
	})
	return nil
}

// measureBigBatch measures the idle resident memory of a fresh runtime,
// then what a 5 MB upload batch adds to its peak.
func (b *bench) measureBigBatch(ctx context.Context) error {
	b.logf("memory: idle, then a 5 MB batch")
	p, err := b.deploy("RS256")
	if err != nil {
		return err
	}
	defer b.stopRuntime(p)
	c := newClient(1)
	defer c.CloseIdleConnections()
	// One request to each path, so that idle means ready to serve.
	tok, err := getToken(c, p.addr, "bench-memory")
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodGet, p.addr+"/jwks", nil)
	if _, err := do(c, req, false); err != nil {
		return err
	}
	if err := b.post(c, p.addr, tok, appendJSON(nil, newMix(10, 0).batch(1<<20, 0, 10))); err != nil {
		return err
	}
	time.Sleep(time.Second)
	idle, err := readMem(p.pid())
	if err != nil {
		return err
	}
	b.metrics = append(b.metrics, Metric{
		Name: "resident memory idle", Value: mb(idle.RSS), Target: "< " + mb(targetIdleRSS),
		Verdict: verdict(idle.RSS < targetIdleRSS),
		Note:    "VmRSS 1s after one request to each path; external store",
	})

	// New documents each round: FerretDB cannot replace 100 or more
	// existing documents in one command (see embeddedMaxPatch). And few
	// large ones: FerretDB scans the whole collection for each write by
	// _id (see README), so a thousand 5 kB PUTs take longer than the
	// runtime's 30 s request timeout.
	body := bigBatch(0, bigBatchBytes, bigOpBytes)
	var ops int
	{
		var probe struct{ Batch []json.RawMessage }
		_ = json.Unmarshal(body, &probe)
		ops = len(probe.Batch)
	}
	const rounds = 3
	var first int64 // the first batch's extra peak, before any garbage of an earlier one
	for i := 0; i < rounds; i++ {
		if i > 0 {
			body = bigBatch(i, bigBatchBytes, bigOpBytes)
		}
		if err := b.post(c, p.addr, tok, body); err != nil {
			b.metrics = append(b.metrics, Metric{Name: "5 MB batch", Value: "failed", Target: fmt.Sprintf("< %dx its size", targetBigBatchMul),
				Verdict: Miss, Note: fmt.Sprintf("POST of %d bytes (%d ops): %v", len(body), ops, err)})
			return nil
		}
		if i == 0 {
			m, err := readMem(p.pid())
			if err != nil {
				return err
			}
			first = m.HWM - idle.RSS
		}
	}
	after, err := readMem(p.pid())
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_ = b.db.Collection("bench_big").Drop(dctx)
	extra := after.HWM - idle.RSS
	mul := float64(extra) / float64(len(body))
	b.metrics = append(b.metrics, Metric{
		Name:    "5 MB batch: extra peak memory",
		Value:   fmt.Sprintf("%s (%.2fx the batch)", mb(extra), mul),
		Target:  fmt.Sprintf("< %dx its size", targetBigBatchMul),
		Verdict: verdict(mul < targetBigBatchMul),
		Note: fmt.Sprintf("VmHWM after %d sequential POSTs of %s (%d PUTs of %d kB each) minus idle VmRSS; after the first: %s (%.2fx)",
			rounds, mb(int64(len(body))), ops, bigOpBytes/1000, mb(first), float64(first)/float64(len(body))),
	})
	return nil
}

func verdict(ok bool) int {
	if ok {
		return Pass
	}
	return Miss
}

// post uploads one batch and checks that the runtime applied it.
func (b *bench) post(c *http.Client, base, token string, body []byte) error {
	req, _ := http.NewRequest(http.MethodPost, base+"/upload", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := do(c, req, true)
	if err != nil {
		return err
	}
	return checkUploadResponse(resp)
}

// checkUploadResponse fails on a 2xx that reports refused operations: the
// workload only holds operations that must be applied.
func checkUploadResponse(body []byte) error {
	if bytes.Contains(body, []byte(`"refused":[]`)) {
		return nil
	}
	var r struct{ Refused json.RawMessage }
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("upload response is not JSON: %q", clipLine(string(body)))
	}
	if v := string(r.Refused); v != "" && v != "null" && v != "[]" {
		return fmt.Errorf("operations refused: %s", clipLine(v))
	}
	return nil
}

// measureMain runs the loads that share the RS256 runtime: GET /jwks beside
// the bare server, GET /token beside signing, POST /upload beside the
// driver.
func (b *bench) measureMain(ctx context.Context) error {
	p, err := b.deploy("RS256")
	if err != nil {
		return err
	}
	defer b.stopRuntime(p)
	sampler := sampleRSS(p.pid(), 50*time.Millisecond)
	defer func() {
		if m := sampler.Stop(); m > b.loadRSS {
			b.loadRSS = m
		}
	}()
	if b.cfg.want("jwks") || b.cfg.want("token") { // token compares with the jwks limit
		if err := b.measureJWKS(ctx, p); err != nil {
			return err
		}
	}
	if b.cfg.want("token") {
		if err := b.measureToken(ctx, p, "RS256"); err != nil {
			return err
		}
	}
	if b.cfg.want("upload") {
		for _, size := range b.cfg.uploadSizes {
			if err := b.measureUpload(ctx, p, size); err != nil {
				return err
			}
		}
		if err := b.measureUploadRules(ctx, p); err != nil {
			return err
		}
	}
	if b.cfg.want("decode") {
		if err := b.measureDecode(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// rounds is how many times paired measurements alternate.
const rounds = 3

// getLoad is a closed-loop GET load on base+path, served by p: by wrk
// when it is installed, else by the Go client c. With unique, each
// request's path ends in "<worker>-<n>" (a distinct token subject).
func (b *bench) getLoad(c *http.Client, p *proc, base, path string, unique bool) Load {
	l := Load{Workers: b.cfg.conc, Warmup: b.cfg.warmup, Duration: b.cfg.duration, Max: b.cfg.maxRequests, Log: b.logf, CPU: p.cpu}
	if b.wrk != "" {
		l.Ext = wrkLoad{bin: b.wrk, dir: b.tmp, base: base, path: path, unique: unique, conns: b.cfg.conc, thread: b.cfg.wrkThreads}.run
		return l
	}
	l.Do = func(ctx context.Context, w, i int) error {
		u := base + path
		if unique {
			u += strconv.Itoa(w) + "-" + strconv.Itoa(i)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		_, err = do(c, req, false)
		return err
	}
	return l
}

// generator names the load generator of the GET rows, for their notes,
// with its ceiling (its rate against the bare server, once measured) and,
// for wrk, its own percentiles.
func (b *bench) generator(st Stats) string {
	g := "Go client (wrk not installed)"
	if b.wrk != "" {
		g = fmt.Sprintf("wrk, %.2f cores", st.GenCores())
	}
	if b.jwksBare > 0 {
		g += fmt.Sprintf(", ceiling %s req/s (bare server)", human(b.jwksBare))
	}
	if st.GenP99 > 0 {
		g += fmt.Sprintf("; wrk's own p50 %s p99 %s (with its made-up samples)", dur(st.GenP50), dur(st.GenP99))
	}
	return g
}

func errText(st Stats) string {
	if st.Errors == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d failed, first: %s", st.Errors, st.N, clipLine(st.FirstErr))
}

func (b *bench) measureJWKS(ctx context.Context, p *proc) error {
	c := newClient(b.cfg.conc)
	defer c.CloseIdleConnections()
	bare, spec, err := b.startBare(c, p.addr+"/jwks", 0)
	if err != nil {
		return err
	}
	cb := newClient(b.cfg.conc)
	b.logf("jwks: through the runtime, then a bare net/http server, %d times", rounds)
	rt, limit := paired(ctx, rounds,
		b.getLoad(c, p, p.addr, "/jwks", false),
		b.getLoad(cb, bare, bare.addr, "/jwks", false))
	cb.CloseIdleConnections()
	if err := bare.stop(5 * time.Second); err != nil {
		b.logf("%v", err)
	}
	b.jwksBare = limit.Rate()
	b.rows = append(b.rows, Row{
		Path: "GET /jwks", Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		Limit: limit.Rate(), LimitName: "bare net/http, same bytes", MinRatio: targetJWKS,
		Note: fmt.Sprintf("server CPU/req %s, bare %s (%.2f); limit p50 %s p99 %s; %d B body; load: %s",
			dur(rt.CPUPerOp()), dur(limit.CPUPerOp()), cpuRatio(limit, rt), dur(limit.Percentile(50)), dur(limit.Percentile(99)), len(spec.Body), b.generator(rt)),
		Err: joinErr(errText(rt), errText(limit)),
	})
	return nil
}

// startBare starts a bare server answering what url answers (see
// bareServer for spin).
func (b *bench) startBare(c *http.Client, url string, spin time.Duration) (*proc, bareSpec, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, bareSpec{}, err
	}
	spec := bareSpec{Status: resp.StatusCode, Header: map[string][]string{}}
	spec.Body, err = readAll(resp)
	if err != nil {
		return nil, spec, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, spec, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, spec.Body)
	}
	for k, v := range resp.Header {
		switch k {
		case "Date", "Content-Length":
		case "X-Request-Id": // per request in the runtime; same length here
			spec.Header[k] = []string{"0123456789abcdef"}
		default:
			spec.Header[k] = v
		}
	}
	b.bares++
	specPath := filepath.Join(b.tmp, fmt.Sprintf("bare-%d.json", b.bares))
	js, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, js, 0o644); err != nil {
		return nil, spec, err
	}
	argv := []string{b.self, "bare-server", "-spec", specPath, "-spin", spin.String()}
	if b.cfg.profileDir != "" {
		argv = append(argv, "-cpuprofile", filepath.Join(b.cfg.profileDir, fmt.Sprintf("bare-%d.cpu.prof", b.bares)))
	}
	bare, err := startProc("bare-server", argv,
		childEnviron(), b.tmp, filepath.Join(b.tmp, fmt.Sprintf("bare-server-%d.log", b.bares)), bareAnnounce, 30*time.Second)
	return bare, spec, err
}

// cpuRatio is the limit's CPU per request over the runtime's: the ratio of
// the rates if each had the same CPU to itself.
func cpuRatio(limit, rt Stats) float64 {
	if rt.CPUPerOp() == 0 {
		return math.NaN()
	}
	return float64(limit.CPUPerOp()) / float64(rt.CPUPerOp())
}

func joinErr(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; limit: " + b
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err := buf.ReadFrom(resp.Body)
	return buf.Bytes(), err
}

// measureToken loads GET /token on a runtime signing with alg, then
// computes the signature alone on every core; with -baseline, it then loads
// the baseline revision's runtime and this one alternately.
func (b *bench) measureToken(ctx context.Context, p *proc, alg string) error {
	c := newClient(b.cfg.conc)
	defer c.CloseIdleConnections()
	if err := checkToken(c, p.addr); err != nil {
		return fmt.Errorf("%s: %w", alg, err)
	}
	sl, err := signLoad(alg, b.cfg.warmup, b.cfg.duration, b.logf)
	if err != nil {
		return err
	}
	b.logf("token %s: through the runtime, then the signature alone on %d goroutines, %d times", alg, maxProcs(), rounds)
	rt, limit := paired(ctx, rounds, b.tokenLoad(c, p), sl)
	b.tokenRate[alg], b.signRate[alg] = rt.Rate(), limit.Rate()
	b.rows = append(b.rows, Row{
		Path: "GET /token " + alg, Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		Limit: limit.Rate(), LimitName: "the signature alone, all cores", MinRatio: targetToken,
		Note: fmt.Sprintf("server CPU/req %s; one signature: p50 %s%s; load: %s", dur(rt.CPUPerOp()), dur(limit.Percentile(50)), both(rt, limit.Rate(), b.jwksBare), b.generator(rt)),
		Err:  errText(rt),
	})
	if err := b.measureTokenTail(ctx, c, p, alg, rt, time.Duration(float64(maxProcs())/limit.Rate()*float64(time.Second))); err != nil {
		return err
	}
	if alg != "RS256" && b.jwksBare > 0 {
		b.rows = append(b.rows, Row{
			Path: "GET /token " + alg, Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
			Limit: b.jwksBare, LimitName: "jwks limit (HTTP ceiling)", MinRatio: targetToken,
			Note: strings.TrimPrefix(both(rt, limit.Rate(), b.jwksBare), "; "),
			Err:  errText(rt),
		})
	}
	if b.base != "" {
		if err := b.measureBaseline(ctx, p, alg); err != nil {
			return err
		}
	}
	return nil
}

// measureTokenTail adds the row of GET /token's tail (rt) beside that of a
// bare server spending a signature's CPU (sig) on each request, in the
// runtime's FIFO gate, under the same load: what net/http and the
// signature alone give on these cores.
func (b *bench) measureTokenTail(ctx context.Context, c *http.Client, p *proc, alg string, rt Stats, sig time.Duration) error {
	bare, _, err := b.startBare(c, p.addr+"/token?user_id=bench-check", sig)
	if err != nil {
		return err
	}
	defer func() {
		if err := bare.stop(5 * time.Second); err != nil {
			b.logf("%v", err)
		}
	}()
	cb := newClient(b.cfg.conc)
	defer cb.CloseIdleConnections()
	b.logf("token %s: a bare server spending %s of CPU per request", alg, dur(sig))
	ref := b.getLoad(cb, bare, bare.addr, "/token?user_id=user-", true).Run(ctx)
	b.rows = append(b.rows, Row{
		Path: "GET /token " + alg + " p99/p50", Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		MaxTail: targetTail,
		Note: fmt.Sprintf("%.1fx; a bare net/http server spending a signature's CPU (%s) per request in the same FIFO gate: %s req/s, p50 %s p99 %s (%.1fx), server CPU/req %s against %s; load: %s",
			tail(rt), dur(sig), human(ref.Rate()), dur(ref.Percentile(50)), dur(ref.Percentile(99)), tail(ref), dur(ref.CPUPerOp()), dur(rt.CPUPerOp()), b.generator(ref)),
		Err: joinErr(errText(rt), errText(ref)),
	})
	return nil
}

// tail is p99/p50.
func tail(st Stats) float64 {
	if st.Percentile(50) <= 0 {
		return math.NaN()
	}
	return float64(st.Percentile(99)) / float64(st.Percentile(50))
}

// tokenLoad is GET /token for a new user each time, served by p.
func (b *bench) tokenLoad(c *http.Client, p *proc) Load {
	return b.getLoad(c, p, p.addr, "/token?user_id=user-", true)
}

// measureBaseline loads GET /token on this runtime (p) and on the -baseline
// revision's, alternately, and adds the row of the two rates.
func (b *bench) measureBaseline(ctx context.Context, p *proc, alg string) error {
	bp, err := b.deployBin(b.base, alg)
	if err != nil {
		return fmt.Errorf("the runtime at %s: %w", b.rev, err)
	}
	defer b.stopRuntime(bp)
	c, cb := newClient(b.cfg.conc), newClient(b.cfg.conc)
	defer c.CloseIdleConnections()
	defer cb.CloseIdleConnections()
	if err := checkToken(cb, bp.addr); err != nil {
		return fmt.Errorf("the runtime at %s: %w", b.rev, err)
	}
	b.logf("token %s: this runtime, then the one at %s, %d times", alg, b.rev, rounds)
	rt, base := paired(ctx, rounds, b.tokenLoad(c, p), b.tokenLoad(cb, bp))
	b.rows = append(b.rows, Row{
		Path: "GET /token " + alg + " vs " + b.rev, Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		Limit: base.Rate(), LimitName: "the runtime at " + b.rev, MinRatio: targetBaseline,
		Note: fmt.Sprintf("server CPU/req %s, at %s %s (%.2f); %s p50 %s p99 %s; load: %s",
			dur(rt.CPUPerOp()), b.rev, dur(base.CPUPerOp()), cpuRatio(base, rt), b.rev, dur(base.Percentile(50)), dur(base.Percentile(99)), b.generator(rt)),
		Err: joinErr(errText(rt), errText(base)),
	})
	return nil
}

// both notes the bound of serving and signing together: they share the
// cores, so the best they can do is the harmonic combination of the two
// limits, 1/(1/sign + 1/http).
func both(rt Stats, sign, http float64) string {
	if sign <= 0 || http <= 0 {
		return ""
	}
	bound := 1 / (1/sign + 1/http)
	return fmt.Sprintf("; signing and HTTP on the same cores allow at most %s req/s (ratio %.2f)", human(bound), rt.Rate()/bound)
}

// measureFastTokens loads GET /token on the ES256 and EdDSA runtimes.
func (b *bench) measureFastTokens(ctx context.Context) error {
	for _, alg := range algs[1:] {
		p, err := b.deploy(alg)
		if err != nil {
			return err
		}
		sampler := sampleRSS(p.pid(), 50*time.Millisecond)
		err = b.measureToken(ctx, p, alg)
		if m := sampler.Stop(); m > b.loadRSS {
			b.loadRSS = m
		}
		b.stopRuntime(p)
		if err != nil {
			return err
		}
	}
	return nil
}

// addRatios adds the rows comparing the fast algorithms with RS256.
func (b *bench) addRatios() {
	rsa := b.tokenRate["RS256"]
	if rsa == 0 {
		return
	}
	for _, alg := range algs[1:] {
		if r, ok := b.tokenRate[alg]; ok {
			b.rows = append(b.rows, Row{
				Path: "GET /token " + alg + " vs RS256", Rate: r, Limit: rsa, LimitName: "GET /token RS256",
				MinRatio: targetFastVsRSA,
				Note:     fmt.Sprintf("signing alone: %.1fx", b.signRate[alg]/b.signRate["RS256"]),
			})
		}
	}
}

// measureUpload loads POST /upload with batches of size operations, then
// the driver writing the same batches directly, alternately in rounds (as
// paired does), each on empty collections: a slow moment of the machine
// weighs on both alike, and so does the cost of a write growing with its
// collection (it does on the embedded store, see README).
func (b *bench) measureUpload(ctx context.Context, p *proc, size int) error {
	conc := b.cfg.uploadConc
	c := newClient(conc)
	defer c.CloseIdleConnections()
	tok, err := getToken(c, p.addr, "bench-uploader")
	if err != nil {
		return err
	}
	ops := make([]atomic.Int64, conc) // operations applied, per worker
	m := newMix(size, b.maxPatch())
	post := uploadDo(c, p.addr, tok, m, size, ops)
	direct := func(ctx context.Context, w, i int) error {
		err := directWrite(ctx, b.db, m.batch(w, i, size))
		if err == nil {
			ops[w].Add(int64(size))
		}
		return err
	}
	run := func(l Load) (Stats, string, error) { return b.runWorkload(ctx, l, ops, m) }

	b.logf("upload x%d: through the runtime, then the driver directly, %d times", size, rounds)
	var (
		rt, limit       Stats
		rtErr, limitErr string
		warmup          = conc
		perRound        = (minBatches + rounds - 1) / rounds
		roundDuration   = b.cfg.duration / rounds
	)
	for r := 0; r < rounds; r++ {
		st, msg, err := run(Load{
			Workers: conc, WarmupN: warmup, Duration: roundDuration, Max: b.cfg.maxRequests, Min: perRound, Do: post, CPU: p.cpu,
		})
		if err != nil {
			return err
		}
		rt = rt.merge(st)
		if rtErr == "" {
			rtErr = msg
		}
		if st.N == 0 {
			break
		}
		// The same batches as the runtime applied, no more, no less.
		lst, msg, err := run(Load{Workers: conc, WarmupN: warmup, Duration: time.Hour, Max: st.N, Min: st.N, Do: direct})
		if err != nil {
			return err
		}
		limit = limit.merge(lst)
		if limitErr == "" {
			limitErr = msg
		}
		warmup = 0
	}
	b.logf("  %d batches: %s/s through the runtime, %s/s directly", rt.N, human(rt.Rate()), human(limit.Rate()))
	if err := b.dropWorkload(ctx); err != nil {
		return err
	}

	row := Row{
		Path: fmt.Sprintf("POST /upload x%d", size), Unit: "batch/s",
		Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		Limit: limit.Rate(), LimitName: "driver, ordered bulk write per collection",
		Err: joinErr(rtErr, limitErr),
	}
	if size >= 100 {
		row.MinRatio = targetUpload
	}
	row.Note = fmt.Sprintf("%s ops/s (%s); limit p50 %s p99 %s, %d+%d batches", human(rt.Rate()*float64(size)), m, dur(limit.Percentile(50)), dur(limit.Percentile(99)), rt.N, limit.N)
	if cpu := rt.CPU; cpu > 0 && rt.N > 0 {
		perOp := cpu / time.Duration(rt.N*size)
		row.Note += fmt.Sprintf("; runtime CPU %s/op", dur(perOp))
		b.metrics = append(b.metrics, Metric{
			Name:  fmt.Sprintf("runtime CPU per operation, batches of %d", size),
			Value: dur(perOp),
			Note:  fmt.Sprintf("utime+stime of the runtime process over %d operations (%s of CPU)", rt.N*size, dur(cpu)),
		})
	}
	b.rows = append(b.rows, row)
	return nil
}

// uploadDo posts worker w's batch i of size operations to the runtime at
// addr, counting the operations applied in ops.
func uploadDo(c *http.Client, addr, tok string, m mix, size int, ops []atomic.Int64) func(ctx context.Context, w, i int) error {
	bufs := make([][]byte, len(ops))
	return func(ctx context.Context, w, i int) error {
		bufs[w] = appendJSON(bufs[w][:0], m.batch(w, i, size))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+"/upload", bytes.NewReader(bufs[w]))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := do(c, req, true)
		if err == nil {
			err = checkUploadResponse(resp)
		}
		if err == nil {
			ops[w].Add(int64(size))
		}
		return err
	}
}

// runWorkload loads one side of a round on empty collections and checks
// what it left in them.
func (b *bench) runWorkload(ctx context.Context, l Load, ops []atomic.Int64, m mix) (Stats, string, error) {
	if err := b.dropWorkload(ctx); err != nil {
		return Stats{}, "", err
	}
	for i := range ops {
		ops[i].Store(0)
	}
	st := l.Run(ctx)
	msg := errText(st)
	if msg == "" {
		msg = b.checkWorkload(ctx, ops, m)
	}
	return st, msg, nil
}

// embeddedMaxPatch caps the PATCHes of a round on the embedded store.
// FerretDB 1.24 (SQLite) keeps a pooled SQLite connection open for each
// statement of an update command that matches a document, until the
// command ends, and has 100 per database: an update command with about 100
// matching statements (fewer when commands run concurrently) waits forever
// for a connection. 16 per round is 8 per collection: with 4 concurrent
// batches and 2 collections, 64 connections at most.
const embeddedMaxPatch = 16

func (b *bench) maxPatch() int {
	if b.cfg.mongo == "" {
		return embeddedMaxPatch
	}
	return 0
}

// dropWorkload empties the workload's collections.
func (b *bench) dropWorkload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range collections {
		if err := b.db.Collection(c).Drop(ctx); err != nil {
			return fmt.Errorf("dropping %s: %w", c, err)
		}
	}
	return nil
}

// checkWorkload counts the documents: each worker that applied n
// operations of the pattern leaves a known number alive.
func (b *bench) checkWorkload(ctx context.Context, ops []atomic.Int64, m mix) string {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var want int64
	for i := range ops {
		want += m.live(ops[i].Load())
	}
	var got int64
	for _, c := range collections {
		n, err := b.db.Collection(c).CountDocuments(ctx, bson.D{})
		if err != nil {
			return "counting documents: " + err.Error()
		}
		got += n
	}
	if got != want {
		return fmt.Sprintf("%d documents in the store after the load, want %d", got, want)
	}
	return ""
}
