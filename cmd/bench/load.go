package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is the outcome of one measurement.
type Stats struct {
	N        int           // operations completed (successful or not)
	Errors   int           // operations that failed
	FirstErr string        // the first failure, for the report
	Elapsed  time.Duration // wall time of the measured phase
	Lat      []time.Duration
	CPU      time.Duration // of the server process, when Load.CPU is set
	GenCPU   time.Duration // of the load generator, when it is a process (wrk)
	// GenP50 and GenP99 are wrk's own percentiles, with its made-up samples
	// (see parseWrk); Lat has the requests' own.
	GenP50, GenP99 time.Duration
}

// GenCores is how many cores the load generator kept busy (0: unknown).
func (s Stats) GenCores() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return s.GenCPU.Seconds() / s.Elapsed.Seconds()
}

// CPUPerOp is the server's CPU time per operation, 0 when unknown.
func (s Stats) CPUPerOp() time.Duration {
	if s.N == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.N)
}

// Rate is operations per second.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.N) / s.Elapsed.Seconds()
}

// Percentile returns the p-th percentile (0 < p <= 100) of the recorded
// latencies by the nearest-rank method: the smallest sample such that at
// least p% of the samples are less than or equal to it. It sorts s.Lat.
func (s Stats) Percentile(p float64) time.Duration {
	return percentile(s.Lat, p)
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	if !slices.IsSorted(lat) {
		slices.Sort(lat)
	}
	rank := int(math.Ceil(p / 100 * float64(len(lat))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(lat) {
		rank = len(lat)
	}
	return lat[rank-1]
}

// Load describes a closed-loop load: Workers goroutines each call Do in a
// loop, first for Warmup (not recorded), then for Duration or until Max
// operations have started, whichever comes first.
type Load struct {
	Workers  int
	Warmup   time.Duration
	WarmupN  int // if > 0, the warm-up is this many operations instead
	Duration time.Duration
	Max      int // 0: no bound
	Min      int // keep going after Duration until this many completed
	// Do performs operation i of worker w and reports its error.
	Do func(ctx context.Context, w, i int) error
	// Log, if set, gets a line after each phase.
	Log func(format string, args ...any)
	// CPU, if set, returns the CPU time the server has used so far: the
	// statistics then include its CPU time during the measured phase.
	CPU func() time.Duration
	// Ext, if set, generates the load itself (wrk) for d instead of the
	// workers and Do.
	Ext func(ctx context.Context, d time.Duration) Stats
}

// Run runs the load and returns the measured phase's statistics.
func (l Load) Run(ctx context.Context) Stats {
	if l.Workers < 1 {
		l.Workers = 1
	}
	if l.Ext != nil {
		return l.runExt(ctx)
	}
	next := make([]int, l.Workers) // per worker operation counter, across phases
	switch {
	case l.WarmupN > 0:
		l.phase(ctx, 0, l.WarmupN, l.WarmupN, next, false)
	case l.Warmup > 0:
		l.phase(ctx, l.Warmup, 0, 0, next, false)
	}
	var cpu0 time.Duration
	if l.CPU != nil {
		cpu0 = l.CPU()
	}
	st := l.phase(ctx, l.Duration, l.Max, l.Min, next, true)
	if l.CPU != nil {
		st.CPU = l.CPU() - cpu0
	}
	if l.Log != nil {
		l.Log("  %d in %s: %s/s, p50 %s, p99 %s, %d errors", st.N, st.Elapsed.Round(time.Millisecond), human(st.Rate()), dur(st.Percentile(50)), dur(st.Percentile(99)), st.Errors)
	}
	return st
}

func (l Load) runExt(ctx context.Context) Stats {
	if l.Warmup > 0 {
		l.Ext(ctx, l.Warmup)
	}
	var cpu0 time.Duration
	if l.CPU != nil {
		cpu0 = l.CPU()
	}
	st := l.Ext(ctx, l.Duration)
	if l.CPU != nil {
		st.CPU = l.CPU() - cpu0
	}
	if l.Log != nil {
		l.Log("  %d in %s: %s/s, p50 %s, p99 %s, %d errors (wrk: %.2f cores)", st.N, st.Elapsed.Round(time.Millisecond), human(st.Rate()), dur(st.Percentile(50)), dur(st.Percentile(99)), st.Errors, st.GenCores())
	}
	return st
}

func (l Load) phase(ctx context.Context, d time.Duration, max, least int, next []int, record bool) Stats {
	// Operations in flight when the time is up finish (and count): cutting
	// them off would close keep-alive connections and leave servers busy
	// with abandoned work during the next measurement.
	var (
		stop     atomic.Bool
		started  atomic.Int64
		finished atomic.Int64
		errs     atomic.Int64
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
		lats     = make([][]time.Duration, l.Workers)
	)
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	start := time.Now()
	for w := 0; w < l.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var lat []time.Duration
			if record {
				lat = make([]time.Duration, 0, 1024)
			}
			for (!stop.Load() || finished.Load() < int64(least)) && ctx.Err() == nil {
				if max > 0 && started.Add(1) > int64(max) {
					break
				}
				i := next[w]
				next[w]++
				t0 := time.Now()
				err := l.Do(ctx, w, i)
				dt := time.Since(t0)
				finished.Add(1)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
				if record {
					lat = append(lat, dt)
				}
			}
			lats[w] = lat
		}(w)
	}
	wg.Wait()
	st := Stats{Elapsed: time.Since(start), Errors: int(errs.Load())}
	if p := firstErr.Load(); p != nil {
		st.FirstErr = *p
	}
	for _, l := range lats {
		st.Lat = append(st.Lat, l...)
	}
	st.N = len(st.Lat)
	slices.Sort(st.Lat)
	return st
}

// merge adds the statistics of another run of the same load.
func (s Stats) merge(o Stats) Stats {
	s.N += o.N
	s.Errors += o.Errors
	if s.FirstErr == "" {
		s.FirstErr = o.FirstErr
	}
	s.Elapsed += o.Elapsed
	s.CPU += o.CPU
	s.GenCPU += o.GenCPU
	s.GenP50, s.GenP99 = max(s.GenP50, o.GenP50), max(s.GenP99, o.GenP99)
	s.Lat = append(s.Lat, o.Lat...)
	slices.Sort(s.Lat)
	return s
}

// paired runs two loads alternately, rounds times each for a fraction of
// their Duration, so that a change in the machine's load during the run
// (other processes) affects both alike. Each is warmed up once.
func paired(ctx context.Context, rounds int, a, b Load) (Stats, Stats) {
	var sa, sb Stats
	da, db := a.Duration/time.Duration(rounds), b.Duration/time.Duration(rounds)
	logA, logB := a.Log, b.Log
	a.Log, b.Log = nil, nil
	for r := 0; r < rounds; r++ {
		a.Duration, b.Duration = da, db
		sa = sa.merge(a.Run(ctx))
		sb = sb.merge(b.Run(ctx))
		a.Warmup, b.Warmup = 0, 0
	}
	for _, x := range []struct {
		log func(string, ...any)
		st  Stats
	}{{logA, sa}, {logB, sb}} {
		if x.log != nil {
			x.log("  %d in %s: %s/s, p50 %s, p99 %s, %d errors", x.st.N, x.st.Elapsed.Round(time.Millisecond), human(x.st.Rate()), dur(x.st.Percentile(50)), dur(x.st.Percentile(99)), x.st.Errors)
		}
	}
	return sa, sb
}

// newClient returns an HTTP/1.1 keep-alive client for conc concurrent
// requests to loopback servers only.
func newClient(conc int) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("refusing to connect to %s: the benchmark only uses loopback", addr)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        2 * conc,
		MaxIdleConnsPerHost: conc,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// statusError is a response with an unexpected status.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// do sends req and reads the whole body, which it returns when keep is set.
// A status other than 2xx is an error.
func do(c *http.Client, req *http.Request, keep bool) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body []byte
	if keep || resp.StatusCode/100 != 2 {
		body, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		b := string(body)
		if len(b) > 300 {
			b = b[:300] + "..."
		}
		return nil, &statusError{resp.StatusCode, b}
	}
	return body, nil
}
