package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
)

// The HTTP edge: what the runtime does around net/http so that hostile or
// slow clients cannot hold the process, and every answer is JSON.
//
//   - A request's body must arrive within body_read_timeout of the start of
//     the request (and within its task's timeout): past it, the body's
//     reads fail, the answer is 408 and the connection is closed.
//   - A handler that answers without reading the whole body closes the
//     connection (net/http would otherwise wait for the rest of the body
//     before reading the next request, invisibly).
//   - A connection the runtime closes is closed gracefully ("lingering
//     close"): it sends its answer and a FIN, then reads and discards what
//     the client still sends for a moment, so that a client still writing a
//     large body reads its 413 instead of a reset.
//   - The plain-text answers net/http writes itself (431, 400, 501), and
//     its empty 417 for an Expect other than 100-continue, are rewritten
//     as JSON.
//   - On shutdown, requests still waiting for their body get one more
//     second (none if not a byte arrived yet), and connections that have not
//     sent a whole request one second: they are not in-flight work.

// HeaderReadTimeout bounds the sending of a request's headers.
const HeaderReadTimeout = 10 * time.Second

// MaxHeaderBytes bounds a request's headers (431 beyond).
const MaxHeaderBytes = 64 << 10

// maxLinger bounds how long a closing connection reads what the client
// still sends (less when body_read_timeout is shorter).
const maxLinger = 5 * time.Second

type edge struct {
	log      zerolog.Logger
	metrics  *metrics
	timeout  time.Duration // body_read_timeout
	linger   time.Duration
	stopping atomic.Bool

	mu     sync.Mutex
	bodies map[*bodyReader]struct{}
	conns  map[*edgeConn]struct{}
}

func newEdge(log zerolog.Logger, m *metrics, bodyTimeout time.Duration) *edge {
	if bodyTimeout <= 0 {
		bodyTimeout = 30 * time.Second
	}
	return &edge{log: log, metrics: m, timeout: bodyTimeout, linger: min(maxLinger, bodyTimeout),
		bodies: map[*bodyReader]struct{}{}, conns: map[*edgeConn]struct{}{}}
}

// bodyReader is a request body under a read deadline. Its state changes
// under mu, so that the deadline is never moved after the body is done
// (net/http's background read would then cancel the request).
type bodyReader struct {
	e        *edge
	r        io.ReadCloser
	rc       *http.ResponseController
	deadline time.Time
	n        atomic.Int64

	mu    sync.Mutex
	state int // bodyReading, bodyDone, bodyTimedOut, bodyFinished
}

const (
	bodyReading = iota
	bodyDone
	bodyTimedOut
	bodyFinished
)

// watchBody puts r's body under the deadline, from start.
func (e *edge) watchBody(w http.ResponseWriter, r *http.Request, start time.Time) *bodyReader {
	b := &bodyReader{e: e, r: r.Body, rc: http.NewResponseController(w), deadline: start.Add(e.timeout)}
	_ = b.rc.SetReadDeadline(b.deadline) // not supported by test recorders: no deadline there
	e.mu.Lock()
	e.bodies[b] = struct{}{}
	stopping := e.stopping.Load()
	e.mu.Unlock()
	if stopping {
		b.cut()
	}
	return b
}

// shorten brings the deadline forward to t (a task's timeout).
func (b *bodyReader) shorten(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == bodyReading && t.Before(b.deadline) {
		b.deadline = t
		_ = b.rc.SetReadDeadline(t)
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if err != nil {
		b.mu.Lock()
		if b.state == bodyReading {
			switch {
			case err == io.EOF:
				b.state = bodyDone
				_ = b.rc.SetReadDeadline(time.Time{})
			case errors.Is(err, os.ErrDeadlineExceeded):
				b.state = bodyTimedOut
			}
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.r.Close() }

func (b *bodyReader) is(state int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == state
}

// cut is shutdown's: a body not begun gets no more time, one under way a
// second at most.
func (b *bodyReader) cut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != bodyReading {
		return
	}
	t := time.Now()
	if b.n.Load() > 0 {
		t = t.Add(time.Second)
	}
	if t.Before(b.deadline) {
		b.deadline = t
		_ = b.rc.SetReadDeadline(t)
	}
}

// finish ends the watch when the handler returns. A body not read to its
// end must not be waited for: its reads fail from now on, and the
// connection closes after the answer (see closeUnread).
func (b *bodyReader) finish() {
	b.mu.Lock()
	if b.state == bodyReading || b.state == bodyTimedOut {
		_ = b.rc.SetReadDeadline(time.Now())
	}
	b.state = bodyFinished
	b.mu.Unlock()
	b.e.mu.Lock()
	delete(b.e.bodies, b)
	b.e.mu.Unlock()
}

// timedOutError is the answer to a body that did not arrive in time.
func (b *bodyReader) timedOutError() *Error {
	return Errorf(http.StatusRequestTimeout, "the request body did not arrive within %s", b.e.timeout)
}

// closeUnread makes the response close the connection when it is written
// before the body was read to its end.
func closeUnread(res *echo.Response, b *bodyReader) {
	res.Before(func() {
		if !b.is(bodyDone) {
			res.Header().Set(echo.HeaderConnection, "close")
		}
	})
}

// listener wraps ln so that its connections close gracefully and have
// net/http's own answers rewritten.
func (e *edge) listener(ln net.Listener) net.Listener { return &edgeListener{Listener: ln, e: e} }

type edgeListener struct {
	net.Listener
	e *edge
}

func (l *edgeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ec := &edgeConn{Conn: c, e: l.e}
	l.e.mu.Lock()
	l.e.conns[ec] = struct{}{}
	l.e.mu.Unlock()
	return ec, nil
}

type edgeConn struct {
	net.Conn
	e       *edge
	state   atomic.Int32 // http.ConnState
	serving atomic.Int32 // handlers running
	closed  atomic.Bool
}

// connState is the server's ConnState hook.
func (e *edge) connState(c net.Conn, s http.ConnState) {
	if ec, ok := c.(*edgeConn); ok {
		ec.state.Store(int32(s))
	}
}

// netHTTPError matches the answers that net/http writes itself when it
// cannot read a request: "HTTP/1.1 <code> <text>" then exactly these
// headers (a response of a handler has its headers sorted: Connection
// before Content-Type).
const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// netHTTP417 starts the empty answer net/http gives an Expect header other
// than 100-continue, before any handler runs.
const netHTTP417 = "HTTP/1.1 417 Expectation Failed\r\n"

func (c *edgeConn) Write(p []byte) (int, error) {
	if c.serving.Load() == 0 && bytes.HasPrefix(p, []byte(netHTTP417)) && bytes.HasSuffix(p, []byte("\r\nContent-Length: 0\r\n\r\n")) {
		if _, err := c.Conn.Write(c.e.jsonAnswer(http.StatusExpectationFailed, "")); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.serving.Load() == 0 && bytes.HasPrefix(p, []byte("HTTP/1.1 ")) && len(p) > 12 {
		if i := bytes.Index(p, []byte(netHTTPErrorHeaders)); i > 0 && bytes.IndexByte(p[:i], '\n') < 0 {
			if code, err := strconv.Atoi(string(p[9:12])); err == nil && code >= 400 {
				if _, err := c.Conn.Write(c.e.jsonAnswer(code, string(p[i+len(netHTTPErrorHeaders):]))); err != nil {
					return 0, err
				}
				return len(p), nil
			}
		}
	}
	return c.Conn.Write(p)
}

// jsonAnswer is net/http's answer as JSON, logged and counted like any.
func (e *edge) jsonAnswer(code int, text string) []byte {
	id := newID()
	msg := strings.ToLower(http.StatusText(code))
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		msg = fmt.Sprintf("request header fields too large: the limit is %d KiB", MaxHeaderBytes>>10)
	case http.StatusExpectationFailed:
		msg = "expectation failed: the only Expect this server meets is 100-continue"
	default:
		if _, detail, ok := strings.Cut(text, ": "); ok && len(detail) < 200 {
			msg += ": " + detail
		}
	}
	body, _ := json.Marshal(map[string]string{"error": msg, "request_id": id})
	e.metrics.observe("", "OTHER", code, 0)
	e.log.Info().Str("request_id", id).Str("method", "OTHER").Str("path", "(unknown)").Int("status", code).
		Int("bytes", len(body)).Dur("duration", 0).Msg("request")
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: %d\r\nContent-Type: application/json\r\n%s: %s\r\n\r\n%s",
		code, http.StatusText(code), len(body), RequestIDHeader, id, body)
}

// Close sends what was written and a FIN at once, then reads what the
// client still sends until it closes, for up to e.linger, in the
// background: closing with unread data would send a reset, which can make
// the client lose the answer.
func (c *edgeConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.e.mu.Lock()
	delete(c.e.conns, c)
	c.e.mu.Unlock()
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return c.Conn.Close()
	}
	c.e.metrics.closing.Inc()
	go func() {
		defer c.e.metrics.closing.Dec()
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.e.linger))
		buf := lingerBufs.Get().(*[]byte)
		_, _ = io.CopyBuffer(io.Discard, struct{ io.Reader }{c.Conn}, *buf)
		lingerBufs.Put(buf)
		_ = c.Conn.Close()
	}()
	return nil
}

var lingerBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// shutdown stops waiting for what is not in-flight work: bodies (see
// bodyReader.cut) and requests not yet sent.
func (e *edge) shutdown() {
	e.stopping.Store(true)
	e.mu.Lock()
	bodies := make([]*bodyReader, 0, len(e.bodies))
	for b := range e.bodies {
		bodies = append(bodies, b)
	}
	var waiting []*edgeConn
	for c := range e.conns {
		if c.serving.Load() == 0 && http.ConnState(c.state.Load()) != http.StateIdle {
			waiting = append(waiting, c)
		}
	}
	e.mu.Unlock()
	for _, b := range bodies {
		b.cut()
	}
	soon := time.Now().Add(time.Second)
	for _, c := range waiting {
		_ = c.SetReadDeadline(soon)
	}
}

type connKey struct{}

// connContext is the server's ConnContext hook: handlers find their
// connection, to say that one is running.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// serving marks the connection of r as running a handler until done.
func serving(r *http.Request) (done func()) {
	c, _ := r.Context().Value(connKey{}).(*edgeConn)
	if c == nil {
		return func() {}
	}
	c.serving.Add(1)
	return func() { c.serving.Add(-1) }
}
