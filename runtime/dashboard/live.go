package dashboard

import (
	"bytes"
	"slices"
	"sync"
	"time"
)

// Live runs: a run started from the page writes its log lines here as they
// happen (they are already redacted by the executor), and any number of
// event streams read them from the first line on. Bounded: at most
// maxLive runs at once, maxLiveBytes of lines each (the rest is counted),
// and finished runs are forgotten after keepFinished (the run store has
// them from then on).
const (
	maxLive      = 16
	maxLiveBytes = 1 << 20
	keepFinished = 2 * time.Minute
	maxFinished  = 64
)

type liveRun struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	lines   [][]byte
	size    int
	dropped int
	done    bool
	result  map[string]any // outcome, duration_ms, error: the "done" event
	ended   time.Time
}

func newLiveRun() *liveRun { return &liveRun{changed: make(chan struct{})} }

func (l *liveRun) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Write takes whole log lines (zerolog writes one line per call).
func (l *liveRun) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return len(p), nil
	}
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		if l.size+len(line) > maxLiveBytes {
			l.dropped += len(line)
			continue
		}
		l.lines = append(l.lines, bytes.Clone(line))
		l.size += len(line)
	}
	l.notify()
	return len(p), nil
}

func (l *liveRun) finish(result map[string]any, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done, l.result, l.ended = true, result, now
	l.notify()
}

// next returns the lines from index i on, whether the run is done, and a
// channel closed at the next change.
func (l *liveRun) next(i int) (lines [][]byte, done bool, result map[string]any, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < len(l.lines) {
		lines = l.lines[i:len(l.lines):len(l.lines)]
	}
	return lines, l.done, l.result, l.changed
}

type liveRuns struct {
	mu   sync.Mutex
	runs map[string]*liveRun
	now  func() time.Time
}

func newLiveRuns(now func() time.Time) *liveRuns {
	return &liveRuns{runs: map[string]*liveRun{}, now: now}
}

// start registers a live run, or refuses when maxLive are running.
func (r *liveRuns) start(id string) (*liveRun, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gc()
	running := 0
	for _, l := range r.runs {
		l.mu.Lock()
		if !l.done {
			running++
		}
		l.mu.Unlock()
	}
	if running >= maxLive {
		return nil, false
	}
	l := newLiveRun()
	r.runs[id] = l
	return l, true
}

func (r *liveRuns) get(id string) *liveRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

// gc forgets finished runs older than keepFinished, and the oldest beyond
// maxFinished. Called with r.mu held.
func (r *liveRuns) gc() {
	now := r.now()
	type fin struct {
		id    string
		ended time.Time
	}
	var finished []fin
	for id, l := range r.runs {
		l.mu.Lock()
		done, ended := l.done, l.ended
		l.mu.Unlock()
		switch {
		case !done:
		case now.Sub(ended) > keepFinished:
			delete(r.runs, id)
		default:
			finished = append(finished, fin{id, ended})
		}
	}
	if len(finished) <= maxFinished {
		return
	}
	slices.SortFunc(finished, func(a, b fin) int { return a.ended.Compare(b.ended) })
	for _, f := range finished[:len(finished)-maxFinished] {
		delete(r.runs, f.id)
	}
}
