package schedule

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskrun/taskrun/runtime"
)

// ExecutorRunner runs fires through the runtime's Executor: each fire is
// a run with trigger "schedule", the schedule's name and fire time, and
// the run id derived from them (the run store refuses a second record of
// it).
type ExecutorRunner struct {
	X          *runtime.Executor
	Deployment string
}

// Run runs the schedule's task for fire f.
func (r ExecutorRunner) Run(ctx context.Context, s *Schedule, f Fire) (string, error) {
	rec, err := r.X.Run(ctx, runtime.RunRequest{Task: s.Task, Params: s.Params, Trigger: runtime.TriggerSchedule,
		ID: f.RunID, Schedule: s.Name, FireTime: f.Time})
	if err != nil {
		return "", err
	}
	return rec.Outcome, nil
}

// Abandoned marks f's record failed, or writes one when the run left none.
func (r ExecutorRunner) Abandoned(ctx context.Context, s *Schedule, f Fire) error {
	st := r.X.Store()
	if st == nil {
		return nil
	}
	msg := fmt.Sprintf("abandoned: instance %s stopped during the run (its lease ended at %s)", f.By, f.Until.UTC().Format(time.RFC3339))
	rec, err := st.GetRun(ctx, f.RunID)
	switch {
	case errors.Is(err, runtime.ErrRunNotFound):
		err = st.SaveRun(ctx, &runtime.Record{ID: f.RunID, Task: s.Task, Deployment: r.Deployment, Trigger: runtime.TriggerSchedule,
			Schedule: s.Name, FireTime: f.Time.UTC(), Instance: f.By, Start: f.Claimed.UTC(), Duration: f.Until.Sub(f.Claimed),
			Outcome: runtime.Failed, Error: msg})
		if errors.Is(err, runtime.ErrDuplicateRun) {
			return nil // its instance was not dead after all, or another reaper
		}
		return err
	case err != nil:
		return err
	case rec.Outcome != runtime.Running:
		return nil
	}
	rec.Outcome, rec.Error = runtime.Failed, msg
	if d := f.Until.Sub(rec.Start); d > rec.Duration {
		rec.Duration = d
	}
	return st.UpdateRun(ctx, rec)
}
