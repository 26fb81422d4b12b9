package runtime_test

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

func scrape(t *testing.T, h *runtimetest.Host) string {
	t.Helper()
	resp := h.Do("GET", "/metrics", nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	return string(b)
}

func randomWord(r *rand.Rand, n int) string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

// TestMetricLabelsBounded sends requests with invented methods and paths:
// neither reaches /metrics or the access log as sent.
func TestMetricLabelsBounded(t *testing.T) {
	h := runtimetest.New(t, testDep(nil), webTask())
	r := rand.New(rand.NewPCG(1, 2))
	h.Do("GET", "/web", nil)
	h.Do("GET", "/nope", nil)
	h.Do("FROB", "/web", nil)
	h.Do("FROB", "/nope", nil)
	scrape(t, h)
	before := scrape(t, h)
	for i := 0; i < 300; i++ {
		m := randomWord(r, 20+r.IntN(200))
		h.Do(m, "/web", nil)
		h.Do(m, "/"+randomWord(r, 50), nil)
		h.Do("GET", "/"+randomWord(r, 50), nil)
	}
	after := scrape(t, h)
	if strings.Count(after, "\n") != strings.Count(before, "\n") {
		t.Errorf("/metrics grew from %d to %d lines", strings.Count(before, "\n"), strings.Count(after, "\n"))
	}
	for _, w := range []string{
		`runtime_requests_total{deployment="testing",method="OTHER",status="405",task="-"} 301`,
		`runtime_requests_total{deployment="testing",method="OTHER",status="404",task="-"} 301`,
		`runtime_requests_total{deployment="testing",method="GET",status="404",task="-"} 301`,
	} {
		if !strings.Contains(after, w) {
			t.Errorf("metrics do not contain %s", w)
		}
	}
	for _, line := range logLines(t, h.Logs.String()) {
		if line["message"] != "request" {
			continue
		}
		switch line["method"] {
		case "GET", "OTHER":
		default:
			t.Fatalf("access log method %v", line["method"])
		}
		switch line["path"] {
		case "/web", "/metrics", "(unknown)":
		default:
			t.Fatalf("access log path %v", line["path"])
		}
	}
}

// TestRegisterer: what the runtime's packages and tasks register is served
// with the deployment label.
func TestRegisterer(t *testing.T) {
	var runs prometheus.Counter
	task := runtime.Task{Name: "job", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		runs = prometheus.NewCounter(prometheus.CounterOpts{Name: "job_runs_total", Help: "Runs."})
		return s.Registerer().Register(runs)
	}}
	h := runtimetest.New(t, deployment.New("staging", false, nil), task)
	queued := prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_jobs", Help: "Jobs waiting."})
	h.Registerer().MustRegister(queued)
	runs.Add(2)
	queued.Set(7)
	text := scrape(t, h)
	for _, w := range []string{`job_runs_total{deployment="staging"} 2`, `queue_jobs{deployment="staging"} 7`} {
		if !strings.Contains(text, w) {
			t.Errorf("metrics do not contain %s:\n%s", w, text)
		}
	}
	if err := h.Registerer().Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "runtime_inflight_requests", Help: "x"})); err == nil {
		t.Error("registering a second runtime_inflight_requests succeeded")
	}
}

// TestCounterBadName: a task asking for an invalid counter fails its Init
// with the name in the error.
func TestCounterBadName(t *testing.T) {
	task := runtime.Task{Name: "job", Run: okRun, Init: func(ctx context.Context, s *runtime.Setup) error {
		s.Counter("bad-name", "x", "kind")
		return nil
	}}
	_, err := runtimetest.Start(t, testDep(nil), task)
	if err == nil || !strings.Contains(err.Error(), "bad-name") {
		t.Errorf("Init error %v, want one naming bad-name", err)
	}
}

// TestNotFoundListsTasks: in a development deployment a 404 lists the
// served tasks and their URLs; in production it does not.
func TestNotFoundListsTasks(t *testing.T) {
	for _, production := range []bool{false, true} {
		dep := deployment.New("d", production, nil)
		dep.URL = "https://api.taskrun.dev/"
		h := runtimetest.New(t, dep, webTask(), runTask("ondemand"))
		var body struct {
			Error string
			Tasks []struct {
				Task, URL string
				Methods   []string
			}
		}
		resp := h.Do("GET", "/", nil)
		runtimetest.JSON(t, resp, &body)
		if resp.StatusCode != 404 || body.Error != "no task at /" {
			t.Fatalf("GET /: %d %+v", resp.StatusCode, body)
		}
		if production {
			if body.Tasks != nil {
				t.Errorf("production 404 lists tasks: %+v", body.Tasks)
			}
			continue
		}
		if len(body.Tasks) != 1 || body.Tasks[0].Task != "web" || body.Tasks[0].URL != "https://api.taskrun.dev/web" ||
			strings.Join(body.Tasks[0].Methods, ",") != "GET,POST,PUT" {
			t.Errorf("development 404 tasks: %+v", body.Tasks)
		}
	}
}

func TestCORS(t *testing.T) {
	dep := deployment.New("d", true, nil)
	dep.CORSOrigins = []string{"https://app.example.com", "http://localhost:*"}
	h := runtimetest.New(t, dep, webTask())
	pre := h.Do("OPTIONS", "/web", nil, "Origin", "http://localhost:5173", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization,content-type")
	if pre.StatusCode != 204 || pre.Header.Get("Access-Control-Allow-Origin") != "http://localhost:5173" ||
		pre.Header.Get("Access-Control-Allow-Methods") != "OPTIONS, GET, POST, PUT" ||
		pre.Header.Get("Access-Control-Allow-Headers") != "Authorization,Content-Type,X-Request-Id" {
		t.Errorf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	for origin, allowed := range map[string]bool{"https://app.example.com": true, "https://evil.example.com": false, "http://localhost:3000": true} {
		resp := h.Do("GET", "/web?do=client", nil, "Origin", origin) // an error answer
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if allowed != (got == origin) || (!allowed && got != "") {
			t.Errorf("%s: Access-Control-Allow-Origin %q", origin, got)
		}
		if allowed && !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
			t.Errorf("%s: exposed headers %q", origin, resp.Header.Get("Access-Control-Expose-Headers"))
		}
	}
	if resp := h.Do("OPTIONS", "/web", nil, "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight of a refused origin allowed: %v", resp.Header)
	}
	// No origins configured (production's default): no CORS headers at all.
	plain := runtimetest.New(t, deployment.New("p", true, nil), webTask())
	if resp := plain.Do("GET", "/web", nil, "Origin", "http://localhost:5173"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("production without cors_origins answered CORS: %v", resp.Header)
	}
}
