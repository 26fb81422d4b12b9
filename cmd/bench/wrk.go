package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wrk, when installed (Debian's package: apt-get install wrk), generates
// the GET loads: a C load generator on epoll needs a fraction of the CPU of
// Go's HTTP client per request, so on a 2-core machine it is not what
// limits a row (the "load generator ceiling" rows show it: wrk against the
// bare server, beside the Go client against the same server). Without it,
// the Go client does the work, with a warning in the output.
//
// wrk's latencies are not what its requests took. At the end of a run
// wrk 4.1 "corrects" its histogram for coordinated omission (stats_correct
// in its stats.c): every latency of at least twice the mean interval
// between a connection's requests also adds a made-up sample one interval
// shorter, and another, down to one interval. That models clients sending
// at a fixed rate; a closed loop of connections, like a PowerSync client
// waiting for its token, does not, and the made-up samples are a large
// share of a loaded run's tail: a 2-core run at saturation reported a mean
// latency twice connections/rate, which Little's law says it cannot be,
// and half again as many samples as requests. The script prints the
// corrected histogram's buckets (microseconds and counts) and wrk's own
// p50 and p99; parseWrk takes the correction back out (it is exact: the
// made-up samples of a bucket all land in lower buckets), so a row's
// percentiles are those of the requests sent, and its note gives wrk's.

// wrkPath finds wrk on PATH ("" when it is not installed).
func wrkPath() string {
	p, err := exec.LookPath("wrk")
	if err != nil {
		return ""
	}
	return p
}

// wrkScript is the Lua that prints the summary and the quantiles, and with
// unique set makes each request's path unique (prefix..thread.."-"..n).
const wrkScript = `
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  n = 0
end
if os.getenv("WRK_UNIQUE") == "1" then
  local prefix = os.getenv("WRK_PATH")
  function request()
    n = n + 1
    return wrk.format(nil, prefix .. tid .. "-" .. n)
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_SUMMARY %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout))
  io.write(string.format("WRK_P %d %d\n", latency:percentile(50), latency:percentile(99)))
  for i = 1, #latency do
    local us, n = latency(i)
    io.write(string.format("WRK_H %d %d\n", us, n))
  end
end
`

// wrkLoad runs wrk against base+path (path+unique suffix per request when
// unique) for d with conns connections on threads threads.
type wrkLoad struct {
	bin, dir      string
	base, path    string
	unique        bool
	conns, thread int
}

func (w wrkLoad) run(ctx context.Context, d time.Duration) Stats {
	script := filepath.Join(w.dir, "wrk.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return Stats{Errors: 1, FirstErr: err.Error()}
	}
	secs := int(d.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	cmd := exec.CommandContext(ctx, w.bin, "-t", strconv.Itoa(w.thread), "-c", strconv.Itoa(w.conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "10s", "-s", script, w.base+w.path)
	cmd.Env = append(os.Environ(), "WRK_PATH="+w.path)
	if w.unique {
		cmd.Env = append(cmd.Env, "WRK_UNIQUE=1")
	}
	out, err := cmd.Output()
	st, perr := parseWrk(out, w.conns)
	if ps := cmd.ProcessState; ps != nil {
		st.GenCPU = ps.UserTime() + ps.SystemTime()
	}
	if err != nil && perr == nil {
		perr = fmt.Errorf("wrk: %v", err)
	}
	if perr != nil {
		st.Errors++
		if st.FirstErr == "" {
			st.FirstErr = perr.Error()
		}
	}
	return st
}

// parseWrk reads what wrkScript printed for a run of conns connections.
func parseWrk(out []byte, conns int) (Stats, error) {
	var (
		st      Stats
		hist    = map[int64]int64{}
		summary bool
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "WRK_") {
			continue
		}
		v := make([]int64, len(f)-1)
		for i := range v {
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil || n < 0 {
				return st, fmt.Errorf("wrk printed %q", sc.Text())
			}
			v[i] = n
		}
		switch {
		case f[0] == "WRK_SUMMARY" && len(v) == 4:
			st.N, st.Elapsed, st.Errors = int(v[0]), time.Duration(v[1])*time.Microsecond, int(v[2]+v[3])
			if st.Errors > 0 {
				st.FirstErr = fmt.Sprintf("wrk: %d non-2xx or 3xx answers, %d socket errors", v[2], v[3])
			}
			summary = true
		case f[0] == "WRK_P" && len(v) == 2:
			st.GenP50, st.GenP99 = time.Duration(v[0])*time.Microsecond, time.Duration(v[1])*time.Microsecond
		case f[0] == "WRK_H" && len(v) == 2:
			hist[v[0]] += v[1]
		}
	}
	if !summary || len(hist) == 0 {
		return st, fmt.Errorf("wrk printed no summary: %s", clipLine(string(out)))
	}
	if conns > 0 && st.N/conns > 0 {
		uncorrect(hist, int64(st.Elapsed/time.Microsecond)/int64(st.N/conns))
	}
	us := make([]int64, 0, len(hist))
	for u, n := range hist {
		if n > 0 {
			us = append(us, u)
		}
	}
	slices.Sort(us)
	for _, u := range us {
		for range hist[u] {
			st.Lat = append(st.Lat, time.Duration(u)*time.Microsecond)
		}
	}
	return st, nil
}

// uncorrect takes wrk's coordinated-omission correction out of its
// histogram (microseconds to counts), in place. wrk, for each bucket n of
// at least 2*interval in ascending order, adds its count to the buckets
// n-interval, n-2*interval, ... while above interval; the counts it reads
// were never raised before (only lower buckets are), so from the top down
// each bucket's own count is what is left after the corrections of the
// buckets above it.
func uncorrect(hist map[int64]int64, interval int64) {
	if interval <= 0 {
		return
	}
	us := make([]int64, 0, len(hist))
	for u := range hist {
		us = append(us, u)
	}
	slices.Sort(us)
	added := map[int64]int64{}
	for i := len(us) - 1; i >= 0; i-- {
		n := us[i]
		own := hist[n] - added[n]
		if own < 0 { // not wrk 4.1's correction: keep what it printed
			own = hist[n]
		}
		hist[n] = own
		if n < 2*interval || own == 0 {
			continue
		}
		for m := n - interval; m > interval; m -= interval {
			added[m] += own
		}
	}
}
