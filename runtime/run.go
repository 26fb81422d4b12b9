package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// MaxRunLog caps the logs kept in a run's record.
const MaxRunLog = 1 << 20

// Record is what is kept of one run of a task's Run.
type Record struct {
	ID         string  `json:"id"`
	Task       string  `json:"task"`
	Deployment string  `json:"deployment"`
	Trigger    Trigger `json:"trigger"`
	// Schedule and FireTime: the schedule fire that started the run.
	Schedule string    `json:"schedule,omitempty"`
	FireTime time.Time `json:"fire_time,omitzero"`
	// JobID and Attempt: the queue job attempt that started the run.
	JobID   string `json:"job_id,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// Instance is the process that ran it: host:pid.
	Instance string          `json:"instance"`
	Start    time.Time       `json:"start"`
	Duration time.Duration   `json:"duration_ns"`
	Outcome  string          `json:"outcome"` // Running, Succeeded or Failed
	Error    string          `json:"error,omitempty"`
	Params   json.RawMessage `json:"params,omitempty"` // masked
	Logs     string          `json:"logs,omitempty"`   // JSON lines, masked
	Dropped  int             `json:"dropped_log_bytes,omitempty"`
}

// Outcomes of a run.
const (
	Running   = "running" // not finished (or its process died)
	Succeeded = "succeeded"
	Failed    = "failed"
)

// Print writes a record readably: a header, then the logs in console format.
func (r *Record) Print(w io.Writer) {
	fmt.Fprintf(w, "run %s of task %s in deployment %s\n", r.ID, r.Task, r.Deployment)
	fmt.Fprintf(w, "%s\n", r.Origin())
	if r.Outcome == Running {
		fmt.Fprintf(w, "started %s, running for %s\n", r.Start.Format(time.RFC3339), r.Duration.Round(time.Microsecond))
	} else {
		fmt.Fprintf(w, "started %s, took %s, %s\n", r.Start.Format(time.RFC3339), r.Duration.Round(time.Microsecond), r.Outcome)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	fmt.Fprintln(w, "--- logs")
	PrintLogs(w, r.Logs)
	if r.Dropped > 0 {
		fmt.Fprintf(w, "... %d more bytes of logs were dropped (cap %d)\n", r.Dropped, MaxRunLog)
	}
}

// Origin says in one line what triggered a run and where it ran.
func (r *Record) Origin() string {
	var b strings.Builder
	fmt.Fprintf(&b, "trigger %s", r.Trigger)
	if r.Schedule != "" {
		fmt.Fprintf(&b, " (schedule %s", r.Schedule)
		if !r.FireTime.IsZero() {
			fmt.Fprintf(&b, ", fire time %s", r.FireTime.Format(time.RFC3339))
		}
		b.WriteString(")")
	}
	if r.JobID != "" {
		fmt.Fprintf(&b, " (job %s, attempt %d)", r.JobID, r.Attempt)
	}
	if r.Instance != "" {
		fmt.Fprintf(&b, " on %s", r.Instance)
	}
	return b.String()
}

// PrintLogs writes JSON log lines in console format, without colour.
func PrintLogs(w io.Writer, logs string) {
	cw := zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: time.TimeOnly, FieldsExclude: []string{"task", "run_id"}}
	for _, line := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
		if line != "" {
			_, _ = cw.Write([]byte(line + "\n"))
		}
	}
}
