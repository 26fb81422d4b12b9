package runtime

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
)

// Metrics are kept in one Prometheus registry per Host and served on
// /metrics. Every series carries the deployment's name as a constant label.
// Label values never come from a client as sent: methods are mapped to the
// known ones (else OTHER), tasks come from the registry ("-" when no task
// served the request), statuses are the numbers the runtime answered.

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

type metrics struct {
	reg      *prometheus.Registry
	wrapped  prometheus.Registerer // adds the deployment label
	inflight prometheus.Gauge
	closing  prometheus.Gauge
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	handler  http.Handler

	// observers caches the children of requests and duration by label
	// values, so that a request costs a map lookup, not label hashing.
	observers sync.Map // reqKey -> *reqObservers

	mu       sync.Mutex
	counters map[string]*Counter
}

type reqKey struct {
	task, method string
	status       int
}

type reqObservers struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(dep string) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg:      reg,
		wrapped:  prometheus.WrapRegistererWith(prometheus.Labels{"deployment": dep}, reg),
		counters: map[string]*Counter{},
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "runtime_inflight_requests", Help: "Requests being served."}),
		closing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "runtime_closing_connections",
			Help: "Connections the runtime has answered and is closing, reading what the client still sends for a moment so that it gets the answer and not a reset."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "runtime_requests_total", Help: "Requests served, by task, method and status."},
			[]string{"task", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "runtime_request_duration_seconds", Help: "Request latency, by task, method and status.",
			Buckets: latencyBuckets}, []string{"task", "method", "status"}),
	}
	m.wrapped.MustRegister(m.inflight, m.closing, m.requests, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

func (m *metrics) observe(task, method string, status int, d time.Duration) {
	if task == "" {
		task = "-"
	}
	k := reqKey{task, method, status}
	o, ok := m.observers.Load(k)
	if !ok {
		lv := []string{task, method, strconv.Itoa(status)}
		o, _ = m.observers.LoadOrStore(k, &reqObservers{
			count: m.requests.WithLabelValues(lv...), duration: m.duration.WithLabelValues(lv...)})
	}
	ro := o.(*reqObservers)
	ro.count.Inc()
	ro.duration.Observe(d.Seconds())
}

func (m *metrics) serve(c echo.Context) error {
	m.handler.ServeHTTP(c.Response(), c.Request())
	return nil
}

// knownMethods are the methods that appear in metrics and logs as sent;
// any other is OTHER.
var knownMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace}

// methodLabel maps a request method to a bounded set of values.
func methodLabel(m string) string {
	for _, k := range knownMethods {
		if m == k {
			return k
		}
	}
	return "OTHER"
}

// Counter is a monotonically increasing count with one label, exported on
// /metrics as <name>{deployment,label}. Its label values must come from
// the task's code, never from a client as sent.
type Counter struct {
	vec *prometheus.CounterVec
}

// Add adds n to the count for a label value.
func (c *Counter) Add(value string, n int64) { c.vec.WithLabelValues(value).Add(float64(n)) }

// Counter returns the process-wide counter of that name, creating it. A
// name that is not a valid metric name, or that another metric holds,
// panics (Init reports the panic as the task's error).
func (s *Setup) Counter(name, help, label string) *Counter {
	return s.res.metrics.counter(name, help, label)
}

func (m *metrics) counter(name, help, label string) *Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.counters[name]; ok {
		return c
	}
	if !model.IsValidLegacyMetricName(name) || !model.LabelName(label).IsValidLegacy() {
		panic(fmt.Sprintf("metric %q with label %q: want names of letters, digits and _", name, label))
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	if err := m.wrapped.Register(vec); err != nil {
		panic(fmt.Sprintf("metric %s: %v", name, err))
	}
	c := &Counter{vec: vec}
	m.counters[name] = c
	return c
}

// Registerer is where tasks and the runtime's own packages register
// further metrics: they are served on the same /metrics, each series with
// the deployment label added. Label values must come from a bounded set.
func (s *Setup) Registerer() prometheus.Registerer { return s.res.metrics.wrapped }

// Registerer is the metrics registry of the Core (and of its Host), for
// the runtime's packages (executor, schedules, queue, dashboard): see
// Setup.Registerer.
func (c *Core) Registerer() prometheus.Registerer { return c.metrics.wrapped }
