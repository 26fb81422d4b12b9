// Package dashboard is the development dashboard served at /_/ by
// `runtime deploy`: the tasks with their variables, a Test form that runs a
// task and streams its log lines as they are written (server-sent events),
// the runs of every instance (from the shared run store), schedules, jobs,
// the latest requests of this instance, the deployment's variables and the
// refused upload operations.
//
// It is plain net/http over small interfaces (Runner, Runs, Schedules,
// Jobs, Refused) that the caller fills in; a nil one turns its page into a
// "not enabled" note. Every page is rendered into a buffer and passed
// through the deployment's redactor before it is written, so a masked value
// never reaches the browser, even one a task logged by mistake. The pages
// are server-rendered html/template with one small script (app.js) and one
// stylesheet, embedded in the binary: nothing loads from another origin
// (the Content-Security-Policy says so), and there is no build step.
//
// Access: a development deployment serves it without login to loopback
// connections only; a production deployment serves it only when
// DASHBOARD_TOKEN is set (New returns nil otherwise), behind a login that
// sets a stateless HMAC session cookie (HttpOnly, SameSite=Strict, Secure
// over https), valid on every instance. Every action is a POST that must
// carry the session's CSRF token and come from the same origin, and is
// logged with the session's id.
package dashboard
