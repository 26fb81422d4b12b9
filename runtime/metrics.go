package runtime

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// Prometheus text exposition, written by hand: a few atomic counters do not
// need a metrics library on the hot path.

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

type metrics struct {
	deployment string
	inflight   atomic.Int64
	mu         sync.RWMutex
	requests   map[reqKey]*reqStats
	counters   map[string]*Counter
}

type reqKey struct {
	task, method string
	status       int
}

type reqStats struct {
	count   atomic.Int64
	sumNS   atomic.Int64
	buckets []atomic.Int64
}

func newMetrics(dep string) *metrics {
	return &metrics{deployment: dep, requests: map[reqKey]*reqStats{}, counters: map[string]*Counter{}}
}

func (m *metrics) observe(task, method string, status int, d time.Duration) {
	if task == "" {
		task = "-"
	}
	k := reqKey{task, method, status}
	m.mu.RLock()
	s := m.requests[k]
	m.mu.RUnlock()
	if s == nil {
		m.mu.Lock()
		if s = m.requests[k]; s == nil {
			s = &reqStats{buckets: make([]atomic.Int64, len(latencyBuckets))}
			m.requests[k] = s
		}
		m.mu.Unlock()
	}
	s.count.Add(1)
	s.sumNS.Add(int64(d))
	sec := d.Seconds()
	for i, b := range latencyBuckets {
		if sec <= b {
			s.buckets[i].Add(1)
			break
		}
	}
}

// Counter is a monotonically increasing count with one label, exported on
// /metrics as <name>{deployment,label}.
type Counter struct {
	name, help, label string
	mu                sync.RWMutex
	values            map[string]*atomic.Int64
}

// Add adds n to the count for a label value.
func (c *Counter) Add(value string, n int64) {
	c.mu.RLock()
	v := c.values[value]
	c.mu.RUnlock()
	if v == nil {
		c.mu.Lock()
		if v = c.values[value]; v == nil {
			v = new(atomic.Int64)
			c.values[value] = v
		}
		c.mu.Unlock()
	}
	v.Add(n)
}

// Counter returns the process-wide counter of that name, creating it.
func (s *Setup) Counter(name, help, label string) *Counter {
	m := s.res.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.counters[name]; ok {
		return c
	}
	c := &Counter{name: name, help: help, label: label, values: map[string]*atomic.Int64{}}
	m.counters[name] = c
	return c
}

func (m *metrics) serve(c echo.Context) error {
	var b strings.Builder
	dep := strconv.Quote(m.deployment)
	fmt.Fprintf(&b, "# HELP runtime_inflight_requests Requests being served.\n# TYPE runtime_inflight_requests gauge\nruntime_inflight_requests{deployment=%s} %d\n", dep, m.inflight.Load())
	m.mu.RLock()
	keys := make([]reqKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.task != b.task {
			return a.task < b.task
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.status < b.status
	})
	b.WriteString("# HELP runtime_requests_total Requests served, by task, method and status.\n# TYPE runtime_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "runtime_requests_total{deployment=%s,task=%q,method=%q,status=\"%d\"} %d\n", dep, k.task, k.method, k.status, m.requests[k].count.Load())
	}
	b.WriteString("# HELP runtime_request_duration_seconds Request latency, by task, method and status.\n# TYPE runtime_request_duration_seconds histogram\n")
	for _, k := range keys {
		s := m.requests[k]
		lbl := fmt.Sprintf("deployment=%s,task=%q,method=%q,status=\"%d\"", dep, k.task, k.method, k.status)
		var cum int64
		for i, bound := range latencyBuckets {
			cum += s.buckets[i].Load()
			fmt.Fprintf(&b, "runtime_request_duration_seconds_bucket{%s,le=\"%g\"} %d\n", lbl, bound, cum)
		}
		n := s.count.Load()
		fmt.Fprintf(&b, "runtime_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", lbl, n)
		fmt.Fprintf(&b, "runtime_request_duration_seconds_sum{%s} %g\n", lbl, time.Duration(s.sumNS.Load()).Seconds())
		fmt.Fprintf(&b, "runtime_request_duration_seconds_count{%s} %d\n", lbl, n)
	}
	names := slices.Sorted(maps.Keys(m.counters))
	for _, name := range names {
		ctr := m.counters[name]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, ctr.help, name)
		ctr.mu.RLock()
		for _, v := range slices.Sorted(maps.Keys(ctr.values)) {
			fmt.Fprintf(&b, "%s{deployment=%s,%s=%q} %d\n", name, dep, ctr.label, v, ctr.values[v].Load())
		}
		ctr.mu.RUnlock()
	}
	m.mu.RUnlock()
	return c.Blob(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", []byte(b.String()))
}
