package schedule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the scheduler. Labels are schedule names, from the
// deployment's configuration: bounded.
type metrics struct {
	runs     *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	lateness *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, active func() int64) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "schedule_runs_total",
			Help: "Scheduled runs this instance ran, by schedule and outcome (succeeded, failed, abandoned: reaped after its instance stopped).",
		}, []string{"schedule", "outcome"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "schedule_skipped_total",
			Help: "Fire times skipped, by schedule and reason (missed: no instance was running; overlap: the previous run was still running; paused: the schedule was paused), counted by the instance that claimed the next fire time.",
		}, []string{"schedule", "reason"}),
		lateness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "schedule_lateness_seconds",
			Help:    "How late after its fire time this instance claimed and started a scheduled run.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"schedule"}),
	}
	if reg == nil {
		return m, nil
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "schedule_runs_in_flight",
		Help: "Scheduled runs this instance is running.",
	}, func() float64 { return float64(active()) })
	var errs []error
	for _, c := range []prometheus.Collector{m.runs, m.skipped, m.lateness, inflight} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
