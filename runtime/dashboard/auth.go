package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Access to the dashboard.
//
// A development deployment serves it without login, but only on loopback
// connections (both ends). A production deployment serves it only when a
// token is configured (DASHBOARD_TOKEN); then a login form takes the token
// and sets a session cookie. Sessions are stateless, an HMAC of their expiry
// and a random id under a key derived from the token, so that every instance
// behind a load balancer accepts them and none keeps state. Every action is
// a POST that must carry the session's CSRF token and come from the
// dashboard's own origin.

const (
	cookieName = "runtime_dashboard"
	csrfHeader = "X-CSRF-Token"
	// SessionLifetime is how long a login lasts.
	SessionLifetime = 12 * time.Hour
)

type session struct {
	id      string // random, logged with each action
	expires time.Time
}

type auth struct {
	open   bool   // development: no login, loopback only
	key    []byte // HMAC key derived from the token; nil when open
	token  []byte
	secure bool // Secure cookies (the deployment is served over https)
	now    func() time.Time
}

func newAuth(token string, open, secure bool, now func() time.Time) *auth {
	a := &auth{open: open, secure: secure, now: now}
	if open {
		// No token to derive from: a random key per process, so that no
		// other site can compute a CSRF token.
		a.key = make([]byte, 32)
		_, _ = rand.Read(a.key)
	} else {
		h := sha256.Sum256([]byte("runtime dashboard session\x00" + token))
		a.key, a.token = h[:], []byte(token)
	}
	return a
}

// sessionOf returns the request's session: in development a fixed local one.
func (a *auth) sessionOf(r *http.Request) (session, bool) {
	if a.open {
		return session{id: "local"}, true
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false
	}
	return a.verify(c.Value)
}

func (a *auth) sign(payload string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newSession makes a cookie value: "<id>.<expiry unix>.<mac>".
func (a *auth) newSession() (string, session) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	s := session{id: hex.EncodeToString(b[:]), expires: a.now().Add(SessionLifetime)}
	payload := s.id + "." + strconv.FormatInt(s.expires.Unix(), 10)
	return payload + "." + a.sign(payload), s
}

func (a *auth) verify(v string) (session, bool) {
	if len(v) > 200 {
		return session{}, false
	}
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return session{}, false
	}
	payload, mac := v[:i], v[i+1:]
	if !hmac.Equal([]byte(mac), []byte(a.sign(payload))) {
		return session{}, false
	}
	id, exp, ok := strings.Cut(payload, ".")
	if !ok {
		return session{}, false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return session{}, false
	}
	s := session{id: id, expires: time.Unix(unix, 0)}
	if !a.now().Before(s.expires) {
		return session{}, false
	}
	return s, true
}

// csrf is the token a page embeds and every POST sends back.
func (a *auth) csrf(s session) string {
	return a.sign("csrf." + s.id + "." + strconv.FormatInt(s.expires.Unix(), 10))
}

// checkToken compares a submitted token in constant time.
func (a *auth) checkToken(t string) bool {
	if a.open || len(t) > 4096 {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(t), a.token) == 1
}

func (a *auth) cookie(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: "/_/", Expires: expires,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteStrictMode}
}

var errCrossSite = errors.New("cross-site request refused")

// sameOrigin refuses a state-changing request that a browser sent from
// another site: Sec-Fetch-Site (sent by every current browser) when
// present, else the Origin header, must name this host.
func sameOrigin(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return nil
	case "":
	default:
		return errCrossSite
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return nil // not a browser's cross-site request (curl, tests); the CSRF token still applies
	}
	u, err := url.Parse(o)
	if err != nil || u.Host != r.Host {
		return errCrossSite
	}
	return nil
}

// loopback reports whether both ends of the request's connection are
// loopback addresses.
func loopback(r *http.Request) bool {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil || !isLoopback(local.String()) {
		return false
	}
	return isLoopback(r.RemoteAddr)
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
