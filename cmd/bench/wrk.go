package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// wrk reports percentiles, not samples: its script prints 1,000 quantiles
// of each run's latency, which stand for its samples (each for a thousandth
// of the requests), so that runs of several rounds merge as Go's do.

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
  for i = 1, 1000 do
    io.write(string.format("WRK_Q %d\n", latency:percentile(i / 10.0)))
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
	st, perr := parseWrk(out)
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

// parseWrk reads what wrkScript printed.
func parseWrk(out []byte) (Stats, error) {
	var (
		st        Stats
		quantiles []time.Duration
		summary   bool
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 5 && f[0] == "WRK_SUMMARY":
			var v [4]int64
			for i := range v {
				n, err := strconv.ParseInt(f[i+1], 10, 64)
				if err != nil {
					return st, fmt.Errorf("wrk summary %q: %v", sc.Text(), err)
				}
				v[i] = n
			}
			st.N, st.Elapsed, st.Errors = int(v[0]), time.Duration(v[1])*time.Microsecond, int(v[2]+v[3])
			if st.Errors > 0 {
				st.FirstErr = fmt.Sprintf("wrk: %d non-2xx or 3xx answers, %d socket errors", v[2], v[3])
			}
			summary = true
		case len(f) == 2 && f[0] == "WRK_Q":
			us, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return st, fmt.Errorf("wrk quantile %q: %v", sc.Text(), err)
			}
			quantiles = append(quantiles, time.Duration(us)*time.Microsecond)
		}
	}
	if !summary || len(quantiles) == 0 {
		return st, fmt.Errorf("wrk printed no summary: %s", clipLine(string(out)))
	}
	// Each quantile stands for len/1000 of the requests.
	per := st.N / len(quantiles)
	if per < 1 {
		per = 1
	}
	st.Lat = make([]time.Duration, 0, per*len(quantiles))
	for _, q := range quantiles {
		for i := 0; i < per; i++ {
			st.Lat = append(st.Lat, q)
		}
	}
	return st, nil
}
