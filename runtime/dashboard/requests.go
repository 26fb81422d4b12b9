package dashboard

import (
	"sync"
	"time"
)

// Request is one served HTTP request, as the requests page lists it.
type Request struct {
	Time      time.Time     `json:"time"`
	Task      string        `json:"task"`
	Method    string        `json:"method"`
	Status    int           `json:"status"`
	Latency   time.Duration `json:"latency_ns"`
	RequestID string        `json:"request_id"`
}

// RequestLog keeps the latest PerTask requests of each task, in memory.
// Its keys come from the registry only (the HTTP layer passes a task name
// it mounted, or "" for paths no task serves, kept under "-"), and method
// must already be one of a fixed set: nothing a client sends can grow it.
type RequestLog struct {
	mu      sync.Mutex
	perTask int
	rings   map[string]*ring
}

// NewRequestLog keeps perTask requests per task (50 if zero).
func NewRequestLog(perTask int) *RequestLog {
	if perTask <= 0 {
		perTask = 50
	}
	return &RequestLog{perTask: perTask, rings: map[string]*ring{}}
}

type ring struct {
	buf  []Request
	next int
	full bool
}

// Observe records a request.
func (l *RequestLog) Observe(r Request) {
	if r.Task == "" {
		r.Task = "-"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.rings[r.Task]
	if g == nil {
		g = &ring{buf: make([]Request, l.perTask)}
		l.rings[r.Task] = g
	}
	g.buf[g.next] = r
	g.next = (g.next + 1) % len(g.buf)
	if g.next == 0 {
		g.full = true
	}
}

// Latest returns a task's requests, newest first.
func (l *RequestLog) Latest(task string) []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.rings[task]
	if g == nil {
		return nil
	}
	n := g.next
	if g.full {
		n = len(g.buf)
	}
	out := make([]Request, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, g.buf[(g.next-i+len(g.buf))%len(g.buf)])
	}
	return out
}
