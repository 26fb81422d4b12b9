package runtime

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A full buffer drops its oldest records, counted and logged; the newest
// reach the store when it is back.
func TestPendingBufferFull(t *testing.T) {
	state := t.TempDir()
	blocker := filepath.Join(state, "runs")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st := NewFileRunStore(state, "testing")
	var logs bytes.Buffer
	m := newMetrics("testing")
	ctr := m.counter(DroppedRecordsMetric, "dropped", "reason")
	p := newPending(st, zerolog.New(&logs), ctr)
	p.maxRuns, p.maxBytes = 3, 1<<20
	rec := func(i int, logBytes int) *Record {
		return &Record{ID: fmt.Sprintf("r%d", i), Task: "job", Trigger: TriggerCLI, Start: time.Now().UTC().Truncate(time.Millisecond),
			Outcome: Succeeded, Logs: strings.Repeat("x", logBytes)}
	}
	for i := range 5 {
		p.add(rec(i, 10), false)
	}
	if got := p.len(); got != 3 {
		t.Errorf("%d pending, want 3", got)
	}
	if n := dropped(t, m, "buffer_full"); n != 2 {
		t.Errorf("dropped counter %v, want 2", n)
	}
	if !strings.Contains(logs.String(), `"runs":["job/r0"]`) || !strings.Contains(logs.String(), `"runs":["job/r1"]`) {
		t.Errorf("log lines:\n%s", logs.String())
	}
	// By size too: a large record pushes out the older ones.
	p.add(rec(5, 900<<10), false)
	p.add(rec(6, 200<<10), false)
	if got := p.len(); got != 1 {
		t.Errorf("%d pending after two large records, want 1", got)
	}
	if n := dropped(t, m, "buffer_full"); n != 6 {
		t.Errorf("dropped counter %v, want 6", n)
	}
	// The store is back: the one left is written.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.close(ctx)
	if _, err := st.GetRun(ctx, "r6"); err != nil {
		t.Errorf("r6 not saved: %v", err)
	}
	if n := dropped(t, m, "shutdown"); n != 0 {
		t.Errorf("shutdown drops %v", n)
	}
}

// dropped reads the counter of a reason on /metrics (0 when absent).
func dropped(t *testing.T, m *metrics, reason string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	prefix := DroppedRecordsMetric + `{deployment="testing",reason="` + reason + `"} `
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
