package dashboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Prefix is the path the dashboard is served under. Task names cannot
// start with "_", so no task can take it.
const Prefix = "/_/"

// MaxParams bounds the params a run from the page may send.
const MaxParams = 1 << 20

//go:embed assets
var assets embed.FS

// Runner starts runs: the runtime's executor.
type Runner interface {
	Run(ctx context.Context, req runtime.RunRequest) (*runtime.Record, error)
}

// Runs reads the shared run store.
type Runs interface {
	GetRun(ctx context.Context, id string) (*runtime.Record, error)
	ListRuns(ctx context.Context, f runtime.RunFilter) ([]*runtime.Record, error)
}

// Schedule is one schedule as the page shows it.
type Schedule struct {
	Name, Task, Spec, TZ string
	Next                 time.Time
	Paused               bool
	LastOutcome          string
	LastFire             time.Time
}

// Schedules lists schedules and pauses or resumes one.
type Schedules interface {
	Schedules(ctx context.Context) ([]Schedule, error)
	SetPaused(ctx context.Context, name string, paused bool) error
}

// Job is one queued job as the page shows it.
type Job struct {
	ID, Task, Queue, State string
	Attempts, MaxAttempts  int
	RunAt                  time.Time
	LastError              string
}

// JobFilter narrows the jobs listed.
type JobFilter struct{ State, Queue, Task string }

// Jobs lists jobs and retries or cancels one.
type Jobs interface {
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	Retry(ctx context.Context, id string) error
	Cancel(ctx context.Context, id string) error
}

// RefusedOp is one upload operation the deployment refused (a dead letter).
type RefusedOp struct {
	Time                                   time.Time
	Op, Table, ID, Reason, User, RequestID string
	Attempts                               int
	Raw                                    string
}

// Refused lists the newest refused upload operations.
type Refused interface {
	Refused(ctx context.Context, limit int) ([]RefusedOp, error)
}

// Options are what the dashboard shows and acts on. Runner, Runs,
// Schedules, Jobs, Requests and Refused may be nil: their pages then say
// the feature is not enabled.
type Options struct {
	Deployment *deployment.Deployment
	Registry   *runtime.Registry
	Runner     Runner
	Runs       Runs
	Schedules  Schedules
	Jobs       Jobs
	Requests   *RequestLog
	Refused    Refused
	Log        zerolog.Logger
	// Token is DASHBOARD_TOKEN. In production the dashboard is served only
	// when it is set; in development it is ignored (no login, loopback only).
	Token string
	// Secure marks the session cookie Secure (served over https).
	Secure bool
	// Context bounds the runs started from the page (the server's life).
	Context context.Context
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Dashboard is the web page at /_/.
type Dashboard struct {
	o       Options
	auth    *auth
	live    *liveRuns
	pages   *template.Template
	mux     *http.ServeMux
	secrets []string
}

// New returns the dashboard, or nil when the deployment must not serve one:
// a production deployment without a token.
func New(o Options) (*Dashboard, error) {
	if o.Deployment.Production && o.Token == "" {
		return nil, nil
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	pages, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, err
	}
	d := &Dashboard{o: o, auth: newAuth(o.Token, !o.Deployment.Production, o.Secure, o.Now),
		live: newLiveRuns(o.Now), pages: pages, secrets: o.Deployment.Secrets()}
	d.routes()
	return d, nil
}

var funcs = template.FuncMap{
	"since": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"ms": func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	},
	"join": strings.Join,
}

func (d *Dashboard) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets/static")
	m.Handle("GET /_/static/", http.StripPrefix("/_/static/", cacheForever(http.FileServerFS(static))))
	m.HandleFunc("GET /_/login", d.loginPage)
	m.HandleFunc("POST /_/login", d.login)
	m.HandleFunc("POST /_/logout", d.action(d.logout))
	m.HandleFunc("GET /_/{$}", d.page(d.tasksPage))
	m.HandleFunc("GET /_/tasks/{name}", d.page(d.taskPage))
	m.HandleFunc("GET /_/runs", d.page(d.runsPage))
	m.HandleFunc("GET /_/runs/{id}", d.page(d.runPage))
	m.HandleFunc("GET /_/schedules", d.page(d.schedulesPage))
	m.HandleFunc("GET /_/jobs", d.page(d.jobsPage))
	m.HandleFunc("GET /_/requests", d.page(d.requestsPage))
	m.HandleFunc("GET /_/deployment", d.page(d.deploymentPage))
	m.HandleFunc("GET /_/refused", d.page(d.refusedPage))
	m.HandleFunc("POST /_/api/run", d.action(d.startRun))
	m.HandleFunc("GET /_/api/live/{id}", d.gated(d.stream))
	m.HandleFunc("POST /_/api/schedules/{name}/{verb}", d.action(d.scheduleAction))
	m.HandleFunc("POST /_/api/jobs/{id}/{verb}", d.action(d.jobAction))
	d.mux = m
}

func cacheForever(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// ServeHTTP serves every path under /_/.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !d.auth.open || loopback(r) {
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		d.mux.ServeHTTP(w, r)
		return
	}
	// Development dashboards answer loopback connections only.
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "no task at " + r.URL.Path})
}

// gated requires a session: in production, a login.
func (d *Dashboard) gated(fn func(w http.ResponseWriter, r *http.Request, s session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := d.auth.sessionOf(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/_/api/") {
				http.Redirect(w, r, "/_/login", http.StatusSeeOther)
				return
			}
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "log in to the dashboard first"})
			return
		}
		fn(w, r, s)
	}
}

// view is what every page template gets.
type view struct {
	Title      string
	Nav        string
	Deployment string
	Production bool
	Open       bool
	CSRF       string
	Data       any
}

func (d *Dashboard) page(fn func(r *http.Request) (string, string, any, error)) http.HandlerFunc {
	return d.gated(func(w http.ResponseWriter, r *http.Request, s session) {
		name, title, data, err := fn(r)
		if err != nil {
			var nf notFound
			if errors.As(err, &nf) {
				d.render(w, http.StatusNotFound, "error", view{Title: "Not found", Data: err.Error()}, s)
				return
			}
			d.o.Log.Error().Err(err).Str("path", r.URL.Path).Msg("dashboard page failed")
			d.render(w, http.StatusInternalServerError, "error", view{Title: "Error", Data: "the page could not be built; see the deployment's log"}, s)
			return
		}
		d.render(w, http.StatusOK, name, view{Title: title, Nav: name, Data: data}, s)
	})
}

type notFound string

func (n notFound) Error() string { return string(n) }

// render writes a page with every secret masked: the page is built in a
// buffer and redacted whole, so no masked value reaches the browser even if
// a task logged or returned one.
func (d *Dashboard) render(w http.ResponseWriter, status int, name string, v view, s session) {
	v.Deployment, v.Production, v.Open = d.o.Deployment.Name, d.o.Deployment.Production, d.auth.open
	v.CSRF = d.auth.csrf(s)
	var buf bytes.Buffer
	if err := d.pages.ExecuteTemplate(&buf, name+".html", v); err != nil {
		d.o.Log.Error().Err(err).Str("page", name).Msg("dashboard template failed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, runtime.RedactString(buf.String(), d.secrets))
}

// action wraps a state-changing POST: a session, the same origin and the
// session's CSRF token (header or form field), and a log line naming the
// session.
func (d *Dashboard) action(fn func(w http.ResponseWriter, r *http.Request, s session) error) http.HandlerFunc {
	return d.gated(func(w http.ResponseWriter, r *http.Request, s session) {
		if err := sameOrigin(r); err != nil {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxParams+4096)
		tok := r.Header.Get(csrfHeader)
		if tok == "" {
			tok = r.PostFormValue("csrf")
		}
		if want := d.auth.csrf(s); len(tok) != len(want) || !equal(tok, want) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "missing or wrong CSRF token: reload the page"})
			return
		}
		if err := fn(w, r, s); err != nil {
			var ce clientError
			if errors.As(err, &ce) {
				writeJSON(w, ce.status, map[string]string{"error": ce.msg})
				return
			}
			d.o.Log.Error().Err(err).Str("session", s.id).Str("path", r.URL.Path).Msg("dashboard action failed")
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the action failed; see the deployment's log"})
		}
	})
}

func equal(a, b string) bool {
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

type clientError struct {
	status int
	msg    string
}

func (c clientError) Error() string { return c.msg }

// ClientError is an error a Schedules or Jobs implementation returns for a
// refusal the page should show as is (status and message), such as a job
// that cannot be retried in its state.
func ClientError(status int, msg string) error { return clientError{status, msg} }

func badRequest(format string, args ...any) error {
	return clientError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	if d.auth.open {
		http.Redirect(w, r, "/_/", http.StatusSeeOther)
		return
	}
	d.render(w, http.StatusOK, "login", view{Title: "Log in"}, session{})
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	if d.auth.open {
		http.Redirect(w, r, "/_/", http.StatusSeeOther)
		return
	}
	if err := sameOrigin(r); err != nil {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8192)
	if !d.auth.checkToken(r.PostFormValue("token")) {
		d.o.Log.Warn().Str("remote", r.RemoteAddr).Msg("dashboard login refused: wrong token")
		d.render(w, http.StatusUnauthorized, "login", view{Title: "Log in", Data: "wrong token"}, session{})
		return
	}
	v, s := d.auth.newSession()
	http.SetCookie(w, d.auth.cookie(v, s.expires))
	d.o.Log.Info().Str("session", s.id).Str("remote", r.RemoteAddr).Msg("dashboard login")
	http.Redirect(w, r, "/_/", http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request, s session) error {
	http.SetCookie(w, d.auth.cookie("", time.Unix(1, 0)))
	d.o.Log.Info().Str("session", s.id).Msg("dashboard logout")
	http.Redirect(w, r, "/_/login", http.StatusSeeOther)
	return nil
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startRun runs a task from the page: {"task": name, "params": {...}}.
// It answers the run's id at once; the run goes on in the background and
// its lines stream from /_/api/live/<id>.
func (d *Dashboard) startRun(w http.ResponseWriter, r *http.Request, s session) error {
	if d.o.Runner == nil {
		return clientError{http.StatusNotImplemented, "this deployment cannot run tasks from the dashboard"}
	}
	var req struct {
		Task   string          `json:"task"`
		Params json.RawMessage `json:"params"`
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return clientError{http.StatusRequestEntityTooLarge, fmt.Sprintf("params are larger than %d bytes", MaxParams)}
		}
		return badRequest("the body must be JSON: {\"task\": NAME, \"params\": {...}}")
	}
	t, err := d.o.Registry.Lookup(req.Task)
	if err != nil {
		return clientError{http.StatusNotFound, "no task " + strconv.Quote(truncate(req.Task, 64))}
	}
	if t.Run == nil {
		return badRequest("task %s has no on-demand entry point (it is served over HTTP)", t.Name)
	}
	if len(req.Params) > MaxParams {
		return clientError{http.StatusRequestEntityTooLarge, fmt.Sprintf("params are larger than %d bytes", MaxParams)}
	}
	if p := bytes.TrimSpace(req.Params); len(p) == 0 || bytes.Equal(p, []byte("null")) {
		req.Params = nil
	} else if p[0] != '{' {
		return badRequest("params must be a JSON object")
	}
	id := newRunID()
	live, ok := d.live.start(id)
	if !ok {
		return clientError{http.StatusTooManyRequests, fmt.Sprintf("%d runs started from the dashboard are still running; wait for one to finish", maxLive)}
	}
	d.o.Log.Info().Str("session", s.id).Str("action", "run").Str("task", t.Name).Str("run_id", id).Msg("dashboard action")
	go func() {
		rec, err := d.o.Runner.Run(d.o.Context, runtime.RunRequest{Task: t.Name, Params: req.Params,
			Trigger: runtime.TriggerDashboard, ID: id, Live: live})
		res := map[string]any{"id": id}
		switch {
		case rec != nil:
			res["outcome"], res["duration_ms"], res["error"] = rec.Outcome, float64(rec.Duration)/float64(time.Millisecond), rec.Error
			if err != nil {
				res["warning"] = runtime.RedactString(err.Error(), d.secrets)
			}
		case err != nil:
			res["outcome"], res["error"] = runtime.Failed, runtime.RedactString(err.Error(), d.secrets)
		}
		live.finish(res, d.o.Now())
	}()
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "live": "/_/api/live/" + id, "run": "/_/runs/" + id})
	return nil
}

// stream sends a live run's log lines as server-sent events: "log" events
// (one JSON line each), then one "done" event with the outcome.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request, _ session) {
	live := d.live.get(r.PathValue("id"))
	if live == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no live run " + strconv.Quote(truncate(r.PathValue("id"), 32)) + " (finished runs are in /_/runs)"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	i := 0
	for {
		lines, done, result, changed := live.next(i)
		for _, l := range lines {
			fmt.Fprintf(w, "event: log\ndata: %s\n\n", runtime.RedactString(string(l), d.secrets))
		}
		i += len(lines)
		if done {
			b, _ := json.Marshal(result)
			fmt.Fprintf(w, "event: done\ndata: %s\n\n", b)
			_ = rc.Flush()
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

func (d *Dashboard) scheduleAction(w http.ResponseWriter, r *http.Request, s session) error {
	if d.o.Schedules == nil {
		return clientError{http.StatusNotImplemented, "schedules are not enabled in this deployment"}
	}
	name, verb := r.PathValue("name"), r.PathValue("verb")
	if verb != "pause" && verb != "resume" {
		return clientError{http.StatusNotFound, "unknown action " + strconv.Quote(truncate(verb, 16)) + " (pause, resume)"}
	}
	if err := d.o.Schedules.SetPaused(r.Context(), name, verb == "pause"); err != nil {
		return err
	}
	d.o.Log.Info().Str("session", s.id).Str("action", verb).Str("schedule", truncate(name, 64)).Msg("dashboard action")
	http.Redirect(w, r, "/_/schedules", http.StatusSeeOther)
	return nil
}

func (d *Dashboard) jobAction(w http.ResponseWriter, r *http.Request, s session) error {
	if d.o.Jobs == nil {
		return clientError{http.StatusNotImplemented, "queues are not enabled in this deployment"}
	}
	id, verb := r.PathValue("id"), r.PathValue("verb")
	var err error
	switch verb {
	case "retry":
		err = d.o.Jobs.Retry(r.Context(), id)
	case "cancel":
		err = d.o.Jobs.Cancel(r.Context(), id)
	default:
		return clientError{http.StatusNotFound, "unknown action " + strconv.Quote(truncate(verb, 16)) + " (retry, cancel)"}
	}
	if err != nil {
		return err
	}
	d.o.Log.Info().Str("session", s.id).Str("action", verb).Str("job_id", truncate(id, 64)).Msg("dashboard action")
	http.Redirect(w, r, "/_/jobs", http.StatusSeeOther)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// oneOf returns v when it is one of the allowed values, else "".
func oneOf(v string, allowed ...string) string {
	if slices.Contains(allowed, v) {
		return v
	}
	return ""
}
