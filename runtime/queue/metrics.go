package queue

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskrun/taskrun/runtime"
)

// metrics of the queue. Task labels are the registry's task names (any
// other name, such as a removed task's stored jobs, is "other"): bounded.
type metrics struct {
	reg      *runtime.Registry
	jobs     *prometheus.GaugeVec
	due      prometheus.Gauge
	enqueued *prometheus.CounterVec
	finished *prometheus.CounterVec
	delay    prometheus.Histogram
}

func newMetrics(r prometheus.Registerer, reg *runtime.Registry, running func() int) (*metrics, error) {
	m := &metrics{
		reg: reg,
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queue_jobs",
			Help: "Unfinished jobs in the deployment's store by task and state (pending, running), as this instance last counted them.",
		}, []string{"task", "state"}),
		due: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "queue_depth",
			Help: "Jobs that are due and not started (their turn in their queue, their time passed), as this instance last counted them.",
		}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_enqueued_total",
			Help: "Jobs this process enqueued, by task (an idempotency key that returned an unfinished job does not count).",
		}, []string{"task"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_attempts_total",
			Help: "Job attempts this instance ended, by task and outcome (succeeded, failed: retried later, dead, cancelled, given_back: at shutdown, lost: the lease was taken over).",
		}, []string{"task", "outcome"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "queue_start_delay_seconds",
			Help:    "Time from a job's due time to the start of its attempt on this instance.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	if r == nil {
		return m, nil
	}
	busy := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "queue_workers_busy",
		Help: "Jobs this instance is running.",
	}, func() float64 { return float64(running()) })
	var errs []error
	for _, c := range []prometheus.Collector{m.jobs, m.due, m.enqueued, m.finished, m.delay, busy} {
		errs = append(errs, r.Register(c))
	}
	return m, errors.Join(errs...)
}

func (m *metrics) task(name string) string {
	if _, err := m.reg.Lookup(name); err != nil {
		return "other"
	}
	return name
}

// counts sets the gauges from a count of the store.
func (m *metrics) counts(c Counts) {
	m.jobs.Reset()
	for task, byState := range c.ByTask {
		for _, st := range []State{Pending, Running} {
			m.jobs.WithLabelValues(m.task(task), string(st)).Add(float64(byState[st]))
		}
	}
	m.due.Set(float64(c.Due))
}
