package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// RequestIDHeader carries the request id, in and out.
const RequestIDHeader = "X-Request-Id"

// Host serves the HTTP tasks of a Core: the HTTP side of the runtime,
// around the Core that on-demand runs use alone.
type Host struct {
	*Core
	echo    *echo.Echo
	edge    *edge
	access  *accessLogger
	observe func(RequestInfo)
}

// RequestInfo is one request a task served, with bounded values only: the
// task is a registered name and the method one of a fixed set.
type RequestInfo struct {
	Time      time.Time
	Task      string
	Method    string
	Status    int
	Latency   time.Duration
	RequestID string
}

// Mount serves handler for every path under prefix ("/_/": the dashboard),
// beside the tasks, through the same middleware (request id, access log,
// panics, body limit). Task names cannot start with "_". Call before Serve.
func (h *Host) Mount(prefix string, handler http.Handler) {
	prefix = strings.TrimSuffix(prefix, "/")
	w := echo.WrapHandler(handler)
	h.echo.Any(prefix+"/*", w)
	h.echo.GET(prefix, func(c echo.Context) error { return c.Redirect(http.StatusSeeOther, prefix+"/") })
}

// Observe calls fn after every request a task served (not for paths no
// task serves, nor the runtime's own). fn must be quick: it runs on the
// request's goroutine. Call before Serve.
func (h *Host) Observe(fn func(RequestInfo)) { h.observe = fn }

// NewHost sets up a Core (see NewCore) and its HTTP host.
func NewHost(ctx context.Context, reg *Registry, dep *deployment.Deployment, opts Options) (*Host, error) {
	c, err := NewCore(ctx, reg, dep, opts)
	if err != nil {
		return nil, err
	}
	return NewHTTPHost(c), nil
}

// NewHTTPHost builds the HTTP host of a Core (h.Core). Closing the Host
// closes the Core.
func NewHTTPHost(c *Core) *Host {
	h := &Host{Core: c, edge: newEdge(c.log, c.metrics, c.dep.BodyReadTimeout), access: newAccessLogger(c.access, c.log)}
	h.echo = h.newEcho()
	return h
}

// Handler returns the HTTP handler serving every HTTP task at /<name>, plus
// /healthz, /readyz and /metrics.
func (h *Host) Handler() http.Handler { return h.echo }

// Serve serves on ln until ctx is cancelled, then stops accepting and lets
// in-flight requests finish within the deployment's grace period.
func (h *Host) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer serving(r)()
			h.echo.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: HeaderReadTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		ConnState:         h.edge.connState,
		ConnContext:       connContext,
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(h.edge.listener(ln)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	h.log.Info().Dur("grace", h.dep.Grace).Msg("shutting down: finishing in-flight requests")
	h.edge.shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), h.dep.Grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn().Msg("grace period over: closing the remaining connections")
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

func (h *Host) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = h.handleError
	e.Pre(h.requestID)
	e.Use(h.accessLog, h.recoverPanic)
	if len(h.dep.CORSOrigins) > 0 {
		e.Use(h.cors())
	}
	e.Use(h.bodyLimit)
	for _, t := range h.reg.tasks {
		for _, m := range t.Methods() {
			e.Add(m, "/"+t.Name, h.serveTask(t, t.HTTP[m]))
		}
	}
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", h.ready)
	e.GET("/metrics", h.metrics.serve)
	return e
}

// servedTask is one entry of a development 404's list.
type servedTask struct {
	Task    string   `json:"task"`
	Methods []string `json:"methods"`
	URL     string   `json:"url"`
}

// served lists the HTTP tasks, by name, with their URLs (under the
// deployment's url when it has one).
func (h *Host) served() []servedTask {
	out := []servedTask{}
	for _, t := range h.reg.Tasks() {
		if t.HTTP != nil {
			out = append(out, servedTask{Task: t.Name, Methods: t.Methods(), URL: strings.TrimSuffix(h.dep.URL, "/") + "/" + t.Name})
		}
	}
	return out
}

// ready reports 200 when every readiness check passes, else 503.
func (h *Host) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
	defer cancel()
	checks := h.res.ready(ctx)
	status := http.StatusOK
	for name, v := range checks {
		if v != "ok" {
			// The error may name hosts, addresses, server versions: it
			// goes to the log; the answer says which check failed.
			h.log.Warn().Str("request_id", requestIDOf(c)).Str("check", name).Str("error", v).Msg("readiness check failed")
			checks[name] = "failed"
			status = http.StatusServiceUnavailable
		}
	}
	word := map[int]string{http.StatusOK: "ready", http.StatusServiceUnavailable: "unavailable"}[status]
	return c.JSON(status, map[string]any{"status": word, "deployment": h.dep.Name, "checks": checks})
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

type ctxKey int

const (
	keyID ctxKey = iota
	keyTask
)

// requestID keeps a well-formed incoming X-Request-Id (a load balancer's),
// or makes one, and returns it in the response. An incoming id holding a
// secret is replaced too: the id is the one value of the access log's
// lines a client chooses, and those lines skip the redactor.
func (h *Host) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(RequestIDHeader)
		if !validID(id) || holdsSecret(id, h.secrets) {
			id = newID()
		}
		c.Response().Header().Set(RequestIDHeader, id)
		return next(c)
	}
}

// requestIDOf is the request's id, which requestID put in the response.
func requestIDOf(c echo.Context) string {
	return c.Response().Header().Get(RequestIDHeader)
}

// taskContext carries the name of the task serving a request (none for
// /healthz and the like) from serveTask back to the access log; echo's
// c.Set would allocate a map in every request for it.
type taskContext struct {
	echo.Context
	task string
	body *bodyReader // nil: the request has no body
}

// accessLog logs one line per request: never the query string or headers,
// which may carry tokens. Every value of the line is the runtime's own or
// bounded: the request id (made here, or a client's of at most 64 bytes of
// [A-Za-z0-9._-] holding no secret: requestID), the method label, a
// registered route or "(unknown)", status, size and duration. None can
// hold a secret, so with Options.AccessLog the line skips the redactor.
func (h *Host) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		h.metrics.inflight.Add(1)
		tc := &taskContext{Context: c}
		if r := c.Request(); r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			tc.body = h.edge.watchBody(c.Response(), r, start)
			r.Body = tc.body
			closeUnread(c.Response(), tc.body)
		}
		err := next(tc)
		if tc.body != nil {
			if tc.body.is(bodyTimedOut) && !c.Response().Committed {
				err = tc.body.timedOutError().Wrap(err)
			}
			tc.body.finish()
		}
		if err != nil {
			c.Error(err)
		}
		h.metrics.inflight.Add(-1)
		d := time.Since(start)
		task := tc.task
		status := c.Response().Status
		method := methodLabel(c.Request().Method)
		h.metrics.observe(task, method, status, d)
		if h.observe != nil && task != "" {
			h.observe(RequestInfo{Time: start, Task: task, Method: method, Status: status, Latency: d, RequestID: requestIDOf(c)})
		}
		h.access.msg(h.access.event(status).Str("request_id", requestIDOf(c)).Str("method", method).
			Str("path", pathLabel(c)).Int("status", status).
			Int64("bytes", c.Response().Size).Dur("duration", d), start.Add(d))
		return nil
	}
}

// pathLabel is the request's path when a route serves it, else one value:
// what a client invents does not reach the logs.
func pathLabel(c echo.Context) string {
	if p := c.Path(); p != "" && p != "/*" && p == c.Request().URL.Path {
		return p
	}
	return "(unknown)"
}

// clip shortens what a client sent before it is quoted back in an answer.
func clip(s string) string {
	const n = 100
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// recoverPanic is the one place where a panic in a handler becomes an error.
func (h *Host) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = &panicError{value: p, stack: debug.Stack()}
			}
		}()
		return next(c)
	}
}

type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

func (h *Host) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	limit := h.dep.BodyLimit
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > limit {
			return tooLarge(limit)
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(c.Response(), r.Body, limit)
		}
		return next(c)
	}
}

func tooLarge(limit int64) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "request body is larger than the limit of %d bytes", limit)
}

// serveTask wraps a handler with the task's timeout, its access policy and
// its Env.
func (h *Host) serveTask(t Task, fn HTTPFunc) echo.HandlerFunc {
	timeout := t.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if rt := h.dep.RequestTimeout; rt > 0 && rt < timeout {
		timeout = rt
	}
	tlog := h.log.With().Str("task", t.Name).Logger()
	return func(c echo.Context) error {
		id := requestIDOf(c)
		tc, _ := c.(*taskContext)
		if tc != nil {
			tc.task = t.Name
		}
		ctx := c.Request().Context()
		if !t.NoDeadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			if tc != nil && tc.body != nil {
				tc.body.shorten(time.Now().Add(timeout)) // a slow body is bounded by the timeout too
			}
		}
		env := &Env{ID: id, Task: t.Name, Deployment: h.dep, enqueuer: h.exec.enqueuer,
			Log: tlog.Hook(requestIDHook(id))}
		if t.Access.auth != nil {
			subject, err := t.Access.auth(c, env)
			if err != nil {
				return err
			}
			env.Subject = subject
		}
		err := fn(c, env)
		if err != nil && ctx.Err() == context.DeadlineExceeded && !c.Response().Committed {
			if _, ok := AsError(err); !ok {
				return Errorf(http.StatusGatewayTimeout, "the task did not finish within %s", timeout).Wrap(err)
			}
		}
		return err
	}
}

// requestIDHook adds the request id to each line of a request's task log.
// A hook, not a field of the logger's context: zerolog's With allocates a
// 500-byte context per logger, 17% of what GET /jwks allocated.
type requestIDHook string

func (h requestIDHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str("request_id", string(h))
}

// handleError is the one error-to-HTTP mapping. Client errors keep their
// status and message; anything else becomes an opaque 500 with the request
// id, and the whole chain goes to the log.
func (h *Host) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	id := requestIDOf(c)
	var (
		status = http.StatusInternalServerError
		msg    = "internal error"
		body   = map[string]any{}
	)
	var (
		e   *Error
		he  *echo.HTTPError
		mbe *http.MaxBytesError
		pe  *panicError
	)
	switch {
	case errors.As(err, &e):
		status, msg = e.Status, e.Message
		for k, v := range e.Fields {
			body[k] = v
		}
		for k, vs := range e.Header {
			for _, v := range vs {
				c.Response().Header().Add(k, string(redactBytes([]byte(v), h.secrets)))
			}
		}
	case errors.As(err, &mbe):
		e := tooLarge(mbe.Limit)
		status, msg = e.Status, e.Message
	case errors.As(err, &he):
		status = he.Code
		msg = strings.ToLower(http.StatusText(status))
		switch status {
		case http.StatusNotFound:
			msg = fmt.Sprintf("no task at %s", clip(c.Request().URL.Path))
			if !h.dep.Production {
				body["tasks"] = h.served() // development: what is served here
			}
		case http.StatusMethodNotAllowed:
			msg = fmt.Sprintf("method %s not allowed on %s (allowed: %s)", clip(c.Request().Method), clip(c.Request().URL.Path), c.Response().Header().Get(echo.HeaderAllow))
		case http.StatusRequestEntityTooLarge:
			msg = tooLarge(h.dep.BodyLimit).Message
		}
	}
	if status >= 500 {
		ev := h.log.Error().Err(err).Str("request_id", id).Str("path", c.Request().URL.Path)
		if errors.As(err, &pe) {
			ev = ev.Str("stack", string(pe.stack))
		}
		ev.Msg("request failed")
		if status == http.StatusInternalServerError {
			msg = "internal error"
		}
	}
	body["error"] = msg
	body["request_id"] = id
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	// A task may put a secret in its message or fields by mistake: mask it.
	b, werr := json.Marshal(body)
	if werr != nil {
		h.log.Error().Err(werr).Str("request_id", id).Msg("encoding the error response")
		b, _ = json.Marshal(map[string]string{"error": "internal error", "request_id": id})
		status = http.StatusInternalServerError
	}
	if werr := c.JSONBlob(status, redactBytes(b, h.secrets)); werr != nil {
		h.log.Debug().Err(werr).Str("request_id", id).Msg("writing the error response")
	}
}
