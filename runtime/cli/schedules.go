package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// scheduleInfo is one row of `runtime schedules`.
type scheduleInfo struct {
	Name     string          `json:"name"`
	Task     string          `json:"task"`
	Cron     string          `json:"cron"`
	TZ       string          `json:"tz"`
	Enabled  bool            `json:"enabled"`
	Catchup  string          `json:"catchup"`
	Overlap  string          `json:"overlap"`
	Params   json.RawMessage `json:"params,omitempty"`
	Source   string          `json:"source"`
	NextFire *time.Time      `json:"next_fire,omitempty"`
	LastFire *time.Time      `json:"last_fire,omitempty"` // the latest fire time claimed, run or skipped
	LastRun  *fireInfo       `json:"last_run,omitempty"`
	Running  []fireInfo      `json:"running"`
}

type fireInfo struct {
	RunID    string     `json:"run_id"`
	FireTime time.Time  `json:"fire_time"`
	Instance string     `json:"instance"`
	Outcome  string     `json:"outcome,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
}

func (a *App) schedulesCmd() *cobra.Command {
	var out listing
	var depName string
	c := &cobra.Command{
		Use:   "schedules",
		Short: "list a deployment's schedules: next fire time, last run",
		Long: `runtime schedules: list the schedules of a deployment (testing unless
--deployment says otherwise): the tasks' own, as the deployment file's
schedules: section changes or adds them, with the next fire time in the
schedule's time zone and the last run's outcome, read from the
deployment's database (shared by every instance).`,
		Example: "  runtime schedules\n  runtime schedules --deployment production --json",
		Args:    noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return a.schedules(c, depName, out)
		},
	}
	c.Flags().StringVar(&depName, "deployment", "testing", "list the schedules of deployment `NAME`")
	out.flags(c)
	return c
}

func (a *App) schedules(c *cobra.Command, depName string, out listing) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	if err := p.checkDeployment(depName, "deployment"); err != nil {
		return err
	}
	dep, err := p.load(depName, a.Environ, p.reg)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	scheds, err := schedule.Resolve(p.reg, dep)
	if err != nil {
		return err
	}
	var states map[string]schedule.State
	var storeErr error
	if len(scheds) > 0 {
		states, storeErr = a.scheduleStates(c.Context(), p, dep)
	}
	now := time.Now()
	// Times in the schedule's zone; where each is declared: --json.
	t := table{header: []string{"NAME", "TASK", "CRON", "TZ", "NEXT FIRE", "LAST RUN"}}
	js := []scheduleInfo{}
	for i := range scheds {
		s := &scheds[i]
		s.Source = strings.TrimPrefix(s.Source, p.root+string(filepath.Separator))
		info := scheduleInfo{Name: s.Name, Task: s.Task, Cron: s.Spec.String(), TZ: s.TZ(), Enabled: s.Enabled,
			Catchup: s.Catchup, Overlap: s.Overlap, Params: s.Params, Source: s.Source, Running: []fireInfo{}}
		next := "disabled"
		if s.Enabled {
			n := s.Spec.Next(now)
			info.NextFire = &n
			next = n.In(s.Spec.Location()).Format(time.DateTime)
		}
		last := "-"
		if storeErr != nil {
			last = "?"
		}
		if st, ok := states[s.Name]; ok {
			if !st.LastFire.IsZero() {
				lf := st.LastFire
				info.LastFire = &lf
			}
			if r := st.LastRun; r.RunID != "" {
				fin := r.Finished
				info.LastRun = &fireInfo{RunID: r.RunID, FireTime: r.Time, Instance: r.By, Outcome: r.Outcome, Finished: &fin}
				last = r.Outcome + " " + r.Time.In(s.Spec.Location()).Format(time.DateTime)
			}
			for _, r := range st.Running {
				info.Running = append(info.Running, fireInfo{RunID: r.RunID, FireTime: r.Time, Instance: r.By})
			}
			if len(st.Running) > 0 {
				last = "running " + st.Running[len(st.Running)-1].Time.In(s.Spec.Location()).Format(time.DateTime)
			}
		}
		js = append(js, info)
		t.add(s.Name, s.Task, s.Spec.String(), s.TZ(), next, last)
	}
	if len(scheds) == 0 {
		t.after = []string{"", "no schedules: set Schedule on a task, or add a schedules: section to deployments/" + dep.Name + ".yaml"}
	}
	if err := out.print(c.OutOrStdout(), js, t); err != nil {
		return err
	}
	if storeErr != nil {
		return fmt.Errorf("reading the schedules' state (last runs) from the deployment's database: %w", storeErr)
	}
	return nil
}

// scheduleStates reads every schedule's shared state, by name.
func (a *App) scheduleStates(ctx context.Context, p *project, dep *deployment.Deployment) (map[string]schedule.State, error) {
	if a.OpenSchedules == nil {
		return nil, errors.New("this build of the runtime has no schedule store")
	}
	s, closeSetup := runtime.NewSetup(dep, a.options(runtime.NewLogger(a.Stderr, dep.Secrets()), p), "schedules")
	defer func() { _ = closeSetup(context.Background()) }()
	st, err := a.OpenSchedules(ctx, s)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	states, err := st.States(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]schedule.State{}
	for _, s := range states {
		out[s.Name] = s
	}
	return out, nil
}

// startSchedules starts the deployment's enabled schedules on this
// instance (nil when there are none) and logs each schedule with its next
// fire time.
func (a *App) startSchedules(ctx context.Context, h *runtime.Host, scheds []schedule.Schedule, log zerolog.Logger) (*schedule.Scheduler, error) {
	enabled := 0
	now := time.Now()
	for i := range scheds {
		s := &scheds[i]
		if !s.Enabled {
			log.Info().Str("schedule", s.Name).Str("task", s.Task).Msg("schedule " + s.Name + ": disabled")
			continue
		}
		enabled++
		next := s.Spec.Next(now)
		log.Info().Str("schedule", s.Name).Str("task", s.Task).Str("cron", s.Spec.String()).Str("tz", s.TZ()).
			Str("catchup", s.Catchup).Str("overlap", s.Overlap).Time("next_fire", next).
			Msgf("schedule %s: runs %s at %q (%s), next at %s", s.Name, s.Task, s.Spec.String(), s.TZ(),
				next.In(s.Spec.Location()).Format("2006-01-02 15:04:05 MST"))
	}
	if enabled == 0 {
		return nil, nil
	}
	if a.OpenSchedules == nil {
		return nil, errors.New("the deployment has schedules, and this build of the runtime has no schedule store")
	}
	st, err := a.OpenSchedules(ctx, h.Setup("schedules"))
	if err != nil {
		return nil, fmt.Errorf("opening the schedule store: %w", err)
	}
	x := h.Executor()
	sc, err := schedule.New(scheds, schedule.Options{Store: st, Runner: schedule.ExecutorRunner{X: x, Deployment: h.Deployment().Name},
		Instance: x.Instance(), Log: log.With().Str("component", "schedules").Logger(), Metrics: h.Registerer()})
	if err != nil {
		return nil, err
	}
	sc.Start()
	return sc, nil
}

// stopSchedulesOn stops sc (if any) when ctx ends or wait is called,
// letting its runs finish within grace; wait returns Stop's error.
func stopSchedulesOn(ctx context.Context, sc *schedule.Scheduler, grace time.Duration) (wait func() error) {
	if sc == nil {
		return func() error { return nil }
	}
	return stopOn(ctx, sc.Stop, grace)
}
