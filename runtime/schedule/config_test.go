package schedule_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/schedule"
)

func noop(context.Context, *runtime.Env) error { return nil }

func registry(t *testing.T) *runtime.Registry {
	t.Helper()
	reg, err := runtime.NewRegistry(
		runtime.Task{Name: "cleanup", Run: noop, Schedule: &runtime.Schedule{Cron: "0 8 * * 1", TZ: "Europe/Berlin", Params: []byte(`{"days":30}`)}},
		runtime.Task{Name: "report", Run: noop},
		runtime.Task{Name: "ping", Run: noop, Schedule: &runtime.Schedule{Cron: "@every 1m", Overlap: schedule.OverlapAllow}},
		runtime.Task{Name: "web", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(echo.Context, *runtime.Env) error { return nil }}, Access: runtime.Public},
	)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func dep(t *testing.T, yaml string) *deployment.Deployment {
	t.Helper()
	d := deployment.New("production", true, nil)
	if err := d.SetSections("deployments/production.yaml", []byte(yaml)); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestResolve(t *testing.T) {
	got, err := schedule.Resolve(registry(t), dep(t, `
listen: 127.0.0.1:6060
schedules:
  - task: cleanup            # changes the task's own schedule
    tz: America/New_York
    catchup: latest
  - task: ping
    enabled: false
  - name: weekly-report
    task: report
    cron: "0 8 * * 1"
    params: {"userId": "U1", "Days": 7}
  - name: daily-report
    task: report
    cron: "@daily"
    overlap: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, strings.Join([]string{s.Name, s.Task, s.Spec.String(), s.TZ(), string(s.Params), s.Catchup, s.Overlap, map[bool]string{true: "on", false: "off"}[s.Enabled], s.Source}, " | "))
	}
	want := []string{
		`cleanup | cleanup | 0 8 * * 1 | America/New_York | {"days":30} | latest | skip | on | deployments/production.yaml:4`,
		`daily-report | report | @daily | UTC |  | skip | allow | on | deployments/production.yaml:13`,
		`ping | ping | @every 1m | UTC |  | skip | allow | off | deployments/production.yaml:7`,
		`weekly-report | report | 0 8 * * 1 | UTC | {"Days":7,"userId":"U1"} | skip | skip | on | deployments/production.yaml:9`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("schedules:\n got %s\nwant %s", strings.Join(lines, "\n     "), strings.Join(want, "\n     "))
	}

	// Without a schedules: section, the tasks' own.
	got, err = schedule.Resolve(registry(t), dep(t, "listen: 127.0.0.1:6060\n"))
	if err != nil || len(got) != 2 || got[0].Name != "cleanup" || got[0].Source != "tasks/cleanup" || got[1].Name != "ping" {
		t.Errorf("tasks' schedules = %+v, %v", got, err)
	}
}

func TestResolveReportsEveryProblem(t *testing.T) {
	_, err := schedule.Resolve(registry(t), dep(t, `schedules:
  - task: nosuch
    cron: "@hourly"
  - task: web
    cron: "@hourly"
  - task: report
    cron: "0 25 * * *"
  - name: berlin
    task: report
    cron: "@daily"
    tz: Europe/Berlinn
  - name: twice
    task: report
    cron: "@daily"
  - name: twice
    task: report
    cron: "@hourly"
  - task: report
    cron: "@daily"
    colour: blue
  - task: report
  - name: Bad.Name
    task: report
    cron: "@daily"
  - name: cleanup
    task: report
  - name: odd
    task: report
    cron: "@daily"
    catchup: all
    overlap: queue
  - "just a string"
`))
	if err == nil {
		t.Fatal("Resolve accepted bad schedules")
	}
	msg := err.Error()
	for _, want := range []string{
		"deployments/production.yaml",
		`deployments/production.yaml:2 (schedules[0], nosuch): unknown task "nosuch" (tasks with a Run function: cleanup, ping, report)`,
		`deployments/production.yaml:4 (schedules[1], web): task "web" has no Run function`,
		`deployments/production.yaml:6 (schedules[2], report): cron "0 25 * * *"`,
		`deployments/production.yaml:8 (schedules[3], berlin): unknown time zone "Europe/Berlinn"`,
		`deployments/production.yaml:15 (schedules[5], twice): a second schedule named "twice" (the first is at deployments/production.yaml:12)`,
		`deployments/production.yaml:18 (schedules[6]): unknown key "colour"`,
		`deployments/production.yaml:21 (schedules[7], report): a second schedule named "report"`,
		`(schedules[8], Bad.Name): invalid schedule name "Bad.Name"`,
		`(schedules[9], cleanup): schedule "cleanup" is task cleanup's own`,
		`(schedules[10], odd): catchup: want skip (the default) or latest, got "all"`,
		`(schedules[10], odd): overlap: want skip (the default) or allow, got "queue"`,
		`deployments/production.yaml:32 (schedules[11]): want an entry`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n  "); n != 12 {
		t.Errorf("%d problems reported, want 12:\n%s", n, msg)
	}
	// In the file's order.
	if i, j := strings.Index(msg, "schedules[0]"), strings.Index(msg, "schedules[11]"); i < 0 || j < i {
		t.Errorf("problems not in the file's order:\n%s", msg)
	}

	reg, err := runtime.NewRegistry(runtime.Task{Name: "web", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(echo.Context, *runtime.Env) error { return nil }},
		Access: runtime.Public, Schedule: &runtime.Schedule{Cron: "@daily"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schedule.Resolve(reg, dep(t, "")); err == nil || !strings.Contains(err.Error(), "task web (tasks/web): has a Schedule but no Run function") {
		t.Errorf("a scheduled task without Run: %v", err)
	}
}
