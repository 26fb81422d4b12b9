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

// RequestLog keeps the latest requests of each task, in memory. Its rings
// are made once, one per task name it is given, so nothing a client sends
// can add to it (a request of another task is ignored), and recording a
// request locks only its task's ring: the hot path pays one uncontended
// mutex.
type RequestLog struct {
	rings map[string]*ring // read-only after NewRequestLog
}

// NewRequestLog keeps perTask requests (50 if zero) of each named task.
func NewRequestLog(tasks []string, perTask int) *RequestLog {
	if perTask <= 0 {
		perTask = 50
	}
	l := &RequestLog{rings: make(map[string]*ring, len(tasks))}
	for _, t := range tasks {
		l.rings[t] = &ring{buf: make([]Request, perTask)}
	}
	return l
}

type ring struct {
	mu   sync.Mutex
	buf  []Request
	next int
	full bool
}

// Observe records a request of one of the log's tasks.
func (l *RequestLog) Observe(r Request) {
	g := l.rings[r.Task]
	if g == nil {
		return
	}
	g.mu.Lock()
	g.buf[g.next] = r
	g.next = (g.next + 1) % len(g.buf)
	if g.next == 0 {
		g.full = true
	}
	g.mu.Unlock()
}

// Latest returns a task's requests, newest first.
func (l *RequestLog) Latest(task string) []Request {
	g := l.rings[task]
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
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
