package token

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/keys/pstest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

const psURL = "https://demo.powersync.example"

type pair struct{ priv, pub, kid string }

var (
	pairsMu sync.Mutex
	pairs   = map[string][]pair{}
)

// gen returns the n-th generated pair of alg, generated once per test binary.
func gen(t testing.TB, alg string, n int) pair {
	t.Helper()
	pairsMu.Lock()
	defer pairsMu.Unlock()
	for len(pairs[alg]) <= n {
		priv, pub, kid, err := keys.Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		pairs[alg] = append(pairs[alg], pair{priv, pub, kid})
	}
	return pairs[alg][n]
}

func vars(p pair, extra ...string) map[string]string {
	m := map[string]string{keys.PrivateVar: p.priv, keys.PublicVar: p.pub, URLVar: psURL}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

func start(t *testing.T, production bool, v map[string]string) *runtimetest.Host {
	t.Helper()
	return runtimetest.New(t, deployment.New("testing", production, v, keys.PrivateVar), Task())
}

type tokenResponse struct {
	Token        string `json:"token"`
	PowerSyncURL string `json:"powersync_url"`
	ExpiresAt    string `json:"expires_at"`
}

func getToken(t *testing.T, h *runtimetest.Host, target string, header ...string) (*http.Response, tokenResponse, map[string]any) {
	t.Helper()
	resp := h.Do(http.MethodGet, target, nil, header...)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var tr tokenResponse
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: body is not JSON: %q", target, b)
	}
	_ = json.Unmarshal(b, &tr)
	return resp, tr, raw
}

// checkToken verifies a /token response as the PowerSync service would,
// with the independent verifier and with keys.Verify.
func checkToken(t *testing.T, jwks []byte, tr tokenResponse, wantSub string, lifetime int64) map[string]any {
	t.Helper()
	now := time.Now()
	hdr, claims, err := pstest.Verify(jwks, tr.Token, psURL, now)
	if err != nil {
		t.Fatalf("the PowerSync check refuses the token: %v", err)
	}
	set, err := keys.ParseJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Verify(tr.Token, psURL, now); err != nil {
		t.Errorf("keys.Verify: %v", err)
	}
	if hdr["typ"] != "JWT" || hdr["kid"] == nil || hdr["alg"] == nil {
		t.Errorf("header %v", hdr)
	}
	if claims["sub"] != wantSub {
		t.Errorf("sub %q, want %q", claims["sub"], wantSub)
	}
	if claims["aud"] != psURL || tr.PowerSyncURL != psURL {
		t.Errorf("aud %v powersync_url %q", claims["aud"], tr.PowerSyncURL)
	}
	iat, exp := int64(claims["iat"].(float64)), int64(claims["exp"].(float64))
	if exp-iat != lifetime || iat > now.Unix()+1 || iat < now.Unix()-5 {
		t.Errorf("iat %d exp %d, want a lifetime of %d from now", iat, exp, lifetime)
	}
	if want := time.Unix(exp, 0).UTC().Format(time.RFC3339); tr.ExpiresAt != want {
		t.Errorf("expires_at %q, want %q", tr.ExpiresAt, want)
	}
	if claims["iss"] == nil || claims["iss"] == "" {
		t.Error("no iss")
	}
	return claims
}

func jwksOf(t testing.TB, p pair) []byte {
	s, err := keys.New(p.priv, p.pub)
	if err != nil {
		t.Fatal(err)
	}
	return s.JWKS()
}

// TestOpenMode issues tokens for every algorithm and checks them as the
// PowerSync service does.
func TestOpenMode(t *testing.T) {
	for _, alg := range keys.GenerateAlgs {
		t.Run(alg, func(t *testing.T) {
			p := gen(t, alg, 0)
			h := start(t, false, vars(p, LifetimeVar, "10m", IssuerVar, "https://backend.example"))
			resp, tr, raw := getToken(t, h, "/token?user_id=user-1")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d %v", resp.StatusCode, raw)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			if len(raw) != 3 {
				t.Errorf("body members %v", raw)
			}
			claims := checkToken(t, jwksOf(t, p), tr, "user-1", 600)
			if claims["iss"] != "https://backend.example" {
				t.Errorf("iss %v", claims["iss"])
			}
			if hdr := strings.Split(tr.Token, ".")[0]; !strings.Contains(h.Logs.String(), p.kid) || strings.Contains(h.Logs.String(), hdr+".") {
				t.Error("the log lacks the kid or holds a token")
			}
			logs := h.Logs.String()
			if !strings.Contains(logs, "TOKEN_AUTH=open") || !strings.Contains(logs, "ANYONE") {
				t.Errorf("open mode is not announced:\n%s", logs)
			}
			if strings.Contains(logs, p.priv[:30]) || strings.Contains(logs, tr.Token) {
				t.Error("a secret is in the log")
			}
		})
	}
}

// TestRotatedKeySet: tokens are signed with the new key; both verify
// against the JWKS the deployment serves.
func TestRotatedKeySet(t *testing.T) {
	old, cur := gen(t, "RS256", 0), gen(t, "ES256", 0)
	oldHost := start(t, false, vars(old))
	_, oldTok, _ := getToken(t, oldHost, "/token?user_id=u")
	v := vars(cur)
	v[keys.PublicVar] = cur.pub + "," + old.pub
	h := start(t, false, v)
	_, newTok, _ := getToken(t, h, "/token?user_id=u")
	rotated, _ := keys.New(v[keys.PrivateVar], v[keys.PublicVar])
	checkToken(t, rotated.JWKS(), oldTok, "u", 300)
	c := checkToken(t, rotated.JWKS(), newTok, "u", 300)
	_ = c
	hdr, _, _ := pstest.Verify(rotated.JWKS(), newTok.Token, psURL, time.Now())
	if hdr["kid"] != cur.kid || hdr["alg"] != "ES256" {
		t.Errorf("new token header %v", hdr)
	}
}

func TestUserIDs(t *testing.T) {
	p := gen(t, "EdDSA", 0)
	h := start(t, false, vars(p))
	jwks := jwksOf(t, p)
	long := strings.Repeat("é", 127) + "x" // 255 bytes
	good := map[string]string{
		"plain":              "user-1",
		"unicode":            "ユーザー😀",
		"spaces":             "  a b  ",
		"ampersand":          "a&b=c",
		"slash":              "a/b/../c",
		"percent":            "100%",
		"quote and brackets": `"}<script>{`,
		"255 bytes":          long,
		"control char":       "a\x01b",
		"semicolon":          "a;b",
	}
	for name, id := range good {
		resp, tr, raw := getToken(t, h, "/token?user_id="+url.QueryEscape(id))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d %v", name, resp.StatusCode, raw)
			continue
		}
		checkToken(t, jwks, tr, id, 300)
	}
	// Forms clients really send.
	for target, want := range map[string]string{
		"/token?user_id=a+b":             "a b",
		"/token?user_id=a%20b":           "a b",
		"/token?other=1&user_id=x&y=2":   "x",
		"/token?user%5Fid=encoded-name":  "encoded-name",
		"/token?user_id=%E2%9C%93":       "✓",
		"/token?user_id=a%26b%3Dc%2F%25": "a&b=c/%",
	} {
		resp, tr, raw := getToken(t, h, target)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d %v", target, resp.StatusCode, raw)
			continue
		}
		checkToken(t, jwks, tr, want, 300)
	}
	bad := map[string]string{
		"missing":                "/token",
		"missing, others":        "/token?userid=x&user=y",
		"empty":                  "/token?user_id=",
		"no value":               "/token?user_id",
		"blank":                  "/token?user_id=%20%20+",
		"blank unicode":          "/token?user_id=%E3%80%80%09",
		"twice":                  "/token?user_id=a&user_id=b",
		"twice, same":            "/token?user_id=a&user_id=a",
		"twice, encoded name":    "/token?user_id=a&user%5Fid=a",
		"256 bytes":              "/token?user_id=" + url.QueryEscape(long+"y"),
		"huge":                   "/token?user_id=" + strings.Repeat("x", 20000),
		"invalid UTF-8":          "/token?user_id=%ff%fe",
		"truncated UTF-8":        "/token?user_id=%E2%9C",
		"bad percent-encoding":   "/token?user_id=%zz",
		"lone percent":           "/token?user_id=%",
		"bad encoding elsewhere": "/token?user_id=a&x=%zz",
		"raw semicolon":          "/token?user_id=a;b",
	}
	for name, target := range bad {
		resp, _, raw := getToken(t, h, target)
		if resp.StatusCode != http.StatusBadRequest || raw["error"] == nil || raw["request_id"] == nil || raw["token"] != nil {
			t.Errorf("%s: status %d body %v", name, resp.StatusCode, raw)
		}
		if msg, _ := raw["error"].(string); !strings.Contains(msg, "user_id") {
			t.Errorf("%s: error %q does not name user_id", name, msg)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp := h.Do(m, "/token?user_id=a", strings.NewReader("user_id=a"))
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d", m, resp.StatusCode)
		}
	}
}

func TestLifetimesAndDefaults(t *testing.T) {
	p := gen(t, "EdDSA", 0)
	for _, c := range []struct {
		value string
		want  int64
	}{{"", 300}, {"1h", 3600}, {"90", 90}, {"24h", 86400}, {" 15m ", 900}} {
		v := vars(p)
		if c.value != "" {
			v[LifetimeVar] = c.value
		}
		h := start(t, false, v)
		resp, tr, raw := getToken(t, h, "/token?user_id=u")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: %v", c.value, raw)
		}
		claims := checkToken(t, jwksOf(t, p), tr, "u", c.want)
		if claims["iss"] != DefaultIssuer {
			t.Errorf("default iss %v", claims["iss"])
		}
	}
	dep := deployment.New("testing", false, vars(p), keys.PrivateVar)
	dep.URL = "https://api.example"
	h := runtimetest.New(t, dep, Task())
	_, tr, _ := getToken(t, h, "/token?user_id=u")
	if c := checkToken(t, jwksOf(t, p), tr, "u", 300); c["iss"] != "https://api.example" {
		t.Errorf("iss %v, want the deployment URL", c["iss"])
	}
}

// TestRefusedAtStart: every configuration the task refuses, with a message
// naming the variable and never a secret.
func TestRefusedAtStart(t *testing.T) {
	p := gen(t, "EdDSA", 0)
	without := func(name string) map[string]string { v := vars(p); delete(v, name); return v }
	with := func(kv ...string) map[string]string { return vars(p, kv...) }
	idp := []string{AuthVar, "verified", IdPJWKSVar, "https://idp.example/jwks.json", IdPIssuerVar, "https://idp.example/", IdPAudienceVar, "app"}
	cases := []struct {
		name       string
		production bool
		vars       map[string]string
		want       []string
	}{
		{"no POWERSYNC_URL", false, without(URLVar), []string{URLVar}},
		{"POWERSYNC_URL not a URL", false, with(URLVar, "demo.powersync.example"), []string{URLVar}},
		{"POWERSYNC_URL with a password", false, with(URLVar, "https://u:pw@x.example"), []string{URLVar}},
		{"lifetime over 24h", false, with(LifetimeVar, "24h1s"), []string{LifetimeVar, "24h"}},
		{"lifetime 25h", false, with(LifetimeVar, "25h"), []string{LifetimeVar}},
		{"lifetime in seconds over 24h", false, with(LifetimeVar, "86401"), []string{LifetimeVar}},
		{"lifetime 0", false, with(LifetimeVar, "0s"), []string{LifetimeVar, "positive"}},
		{"lifetime 0 seconds", false, with(LifetimeVar, "0"), []string{LifetimeVar, "positive"}},
		{"lifetime negative", false, with(LifetimeVar, "-5m"), []string{LifetimeVar, "positive"}},
		{"lifetime fractional", false, with(LifetimeVar, "1.5s"), []string{LifetimeVar, "whole seconds"}},
		{"lifetime garbage", false, with(LifetimeVar, "soon"), []string{LifetimeVar}},
		{"open in production", true, with(AuthVar, "open"), []string{AuthVar, "production"}},
		{"no mode in production", true, vars(p), []string{AuthVar, "production"}},
		{"unknown mode", false, with(AuthVar, "closed"), []string{AuthVar}},
		{"verified without IdP settings", false, with(AuthVar, "verified"), []string{IdPJWKSVar, IdPIssuerVar, IdPAudienceVar}},
		{"verified with a bad JWKS URL", false, with(append(idp, IdPJWKSVar, "ftp://idp.example/jwks")...), []string{IdPJWKSVar}},
		{"verified over http in production", true, with(append(idp, IdPJWKSVar, "http://idp.example/jwks")...), []string{IdPJWKSVar, "https"}},
		{"public key only", false, without(keys.PrivateVar), []string{keys.PrivateVar, "cannot sign"}},
		{"production without keys", true, map[string]string{URLVar: psURL, AuthVar: "verified", IdPJWKSVar: "https://idp.example/jwks.json", IdPIssuerVar: "i", IdPAudienceVar: "a"}, []string{keys.PrivateVar}},
		{"garbage private key", false, with(keys.PrivateVar, "c2VjcmV0LWdhcmJhZ2U="), []string{keys.PrivateVar}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := runtimetest.Start(t, deployment.New("d", c.production, c.vars, keys.PrivateVar), Task())
			if err == nil {
				t.Fatal("started")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, secret := range []string{p.priv[:24], "c2VjcmV0LWdhcmJhZ2U"} {
				if strings.Contains(err.Error(), secret) || strings.Contains(h.Logs.String(), secret) {
					t.Error("a secret leaked")
				}
			}
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	p := gen(t, "ES256", 0)
	h := start(t, false, vars(p))
	jwks := jwksOf(t, p)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("user-%d", i)
			resp := h.Do(http.MethodGet, "/token?user_id="+id, nil)
			var tr tokenResponse
			_ = json.NewDecoder(resp.Body).Decode(&tr)
			if _, c, err := pstest.Verify(jwks, tr.Token, psURL, time.Now()); err != nil || c["sub"] != id {
				errs <- fmt.Errorf("%s: %v %v", id, err, c)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// ---- verified mode -------------------------------------------------------

// fakeIdP serves a JWKS on 127.0.0.1 and signs identity tokens.
type fakeIdP struct {
	srv     *httptest.Server
	mu      sync.Mutex
	signer  *keys.Set
	jwks    []byte
	status  int
	fetches atomic.Int32
}

const (
	idpIssuer   = "https://idp.example/"
	idpAudience = "my-app"
)

func newFakeIdP(t *testing.T, p pair) *fakeIdP {
	f := &fakeIdP{status: http.StatusOK}
	f.use(t, p, p.pub)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.fetches.Add(1)
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.Header.Get("Accept") != "application/json" {
			http.Error(w, "want Accept: application/json", http.StatusNotAcceptable)
			return
		}
		if f.status != http.StatusOK {
			w.WriteHeader(f.status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.jwks)
	}))
	if !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test IdP at %s, want loopback", f.srv.URL)
	}
	t.Cleanup(f.srv.Close)
	return f
}

// use makes p the signing key and pubs the published keys.
func (f *fakeIdP) use(t *testing.T, p pair, pubs string) {
	s, err := keys.New(p.priv, pubs)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.signer, f.jwks = s, s.JWKS()
	f.mu.Unlock()
}

func (f *fakeIdP) token(t *testing.T, sub, iss, aud string, iat, exp int64) string {
	f.mu.Lock()
	s := f.signer
	f.mu.Unlock()
	tok, err := s.Sign(keys.Claims{Subject: sub, Issuer: iss, Audience: []string{aud}, IssuedAt: iat, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fakeIdP) valid(t *testing.T, sub string) string {
	now := time.Now().Unix()
	return f.token(t, sub, idpIssuer, idpAudience, now, now+3600)
}

func verifiedVars(p pair, f *fakeIdP) map[string]string {
	return vars(p, AuthVar, "verified", IdPJWKSVar, f.srv.URL+"/.well-known/jwks.json", IdPIssuerVar, idpIssuer, IdPAudienceVar, idpAudience)
}

func TestVerifiedMode(t *testing.T) {
	p := gen(t, "ES256", 0)
	f := newFakeIdP(t, gen(t, "RS256", 0))
	// Production allows http only for... nothing: use a non-production
	// deployment for the loopback http IdP.
	h := start(t, false, verifiedVars(p, f))
	if strings.Contains(h.Logs.String(), "ANYONE") {
		t.Error("verified mode announced as open")
	}
	if f.fetches.Load() != 1 {
		t.Errorf("JWKS fetched %d times at start, want 1", f.fetches.Load())
	}
	jwks := jwksOf(t, p)
	idTok := f.valid(t, "auth0|abc def")
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	resp, tr, raw := getToken(t, h, "/token", bearer(idTok)...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %v", resp.StatusCode, raw)
	}
	checkToken(t, jwks, tr, "auth0|abc def", 300)
	resp, tr, _ = getToken(t, h, "/token?user_id="+url.QueryEscape("auth0|abc def"), "Authorization", "bearer "+idTok)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("matching user_id: status %d", resp.StatusCode)
	}
	checkToken(t, jwks, tr, "auth0|abc def", 300)
	if resp, _, raw := getToken(t, h, "/token?user_id=someone-else", bearer(idTok)...); resp.StatusCode != http.StatusForbidden {
		t.Errorf("other user_id: status %d %v", resp.StatusCode, raw)
	}
	if resp, _, _ := getToken(t, h, "/token?user_id=a&user_id=b", bearer(idTok)...); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("user_id twice: status %d", resp.StatusCode)
	}
	if resp, _, _ := getToken(t, h, "/token?user_id=%zz", bearer(idTok)...); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("user_id badly encoded: status %d", resp.StatusCode)
	}

	now := time.Now().Unix()
	other := newFakeIdP(t, gen(t, "RS256", 1))
	parts := strings.Split(idTok, ".")
	refused := map[string][]string{
		"no Authorization":     nil,
		"empty bearer":         {"Authorization", "Bearer "},
		"basic auth":           {"Authorization", "Basic dXNlcjpwdw=="},
		"no scheme":            {"Authorization", idTok},
		"wrong issuer":         bearer(f.token(t, "u", "https://evil.example/", idpAudience, now, now+60)),
		"wrong audience":       bearer(f.token(t, "u", idpIssuer, "other-app", now, now+60)),
		"expired":              bearer(f.token(t, "u", idpIssuer, idpAudience, now-3600, now-120)),
		"other IdP's key":      bearer(other.valid(t, "u")),
		"tampered":             bearer(parts[0] + "." + strings.TrimRight(parts[1], "Q") + "x." + parts[2]),
		"garbage":              bearer("not.a.jwt"),
		"huge":                 bearer(strings.Repeat("a", 40000)),
		"a PowerSync token":    bearer(tr.Token),
		"blank sub":            bearer(f.token(t, " ", idpIssuer, idpAudience, now, now+60)),
		"sub over 255 bytes":   bearer(f.token(t, strings.Repeat("s", 256), idpIssuer, idpAudience, now, now+60)),
		"query token, no auth": nil,
	}
	for name, hdr := range refused {
		target := "/token?user_id=u"
		if name == "query token, no auth" {
			target = "/token?user_id=u&access_token=" + idTok
		}
		resp, _, raw := getToken(t, h, target, hdr...)
		if resp.StatusCode != http.StatusUnauthorized || raw["error"] == nil || raw["token"] != nil {
			t.Errorf("%s: status %d %v", name, resp.StatusCode, raw)
		}
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", name, resp.Header.Get("WWW-Authenticate"))
		}
		if msg, _ := raw["error"].(string); strings.Contains(msg, parts[1]) {
			t.Errorf("%s: the error echoes the token", name)
		}
	}
	logs := h.Logs.String()
	for _, secret := range []string{idTok, parts[2], tr.Token, p.priv[:30]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a secret")
		}
	}
	// Unknown kids refetch the JWKS, at most once per 30 s.
	before := f.fetches.Load()
	for i := 0; i < 20; i++ {
		getToken(t, h, "/token", bearer(other.valid(t, "u"))...)
	}
	if n := f.fetches.Load() - before; n > 1 {
		t.Errorf("20 tokens with an unknown kid fetched the JWKS %d times", n)
	}
	ready := h.Do(http.MethodGet, "/readyz", nil)
	var rd map[string]any
	runtimetest.JSON(t, ready, &rd)
	if ready.StatusCode != http.StatusOK || rd["checks"].(map[string]any)["token_idp_jwks"] != "ok" {
		t.Errorf("readyz %d %v", ready.StatusCode, rd)
	}
}

// TestVerifiedModeIdPRotation: the provider starts signing with a new key;
// the first token naming it makes the task fetch the JWKS again.
func TestVerifiedModeIdPRotation(t *testing.T) {
	p := gen(t, "EdDSA", 0)
	oldKey, newKey := gen(t, "RS256", 0), gen(t, "ES256", 0)
	f := newFakeIdP(t, oldKey)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	h := runtimetest.New(t, deployment.New("testing", false, verifiedVars(p, f), keys.PrivateVar), newTask(now))
	f.use(t, newKey, newKey.pub+","+oldKey.pub)
	newTok := f.valid(t, "u2")
	// Within the rate limit of the start's fetch, the new kid is unknown.
	if resp, _, _ := getToken(t, h, "/token", "Authorization", "Bearer "+newTok); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want 401 within the rate limit", resp.StatusCode)
	}
	mu.Lock()
	clock = clock.Add(minFetchEvery)
	mu.Unlock()
	resp, tr, raw := getToken(t, h, "/token", "Authorization", "Bearer "+newTok)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the provider's rotation: status %d %v", resp.StatusCode, raw)
	}
	if f.fetches.Load() != 2 {
		t.Errorf("fetches %d, want 2", f.fetches.Load())
	}
	// Tokens of the old key still verify: the provider still publishes it.
	oldTok := func() string { f.use(t, oldKey, newKey.pub+","+oldKey.pub); return f.valid(t, "u1") }()
	if resp, _, raw := getToken(t, h, "/token", "Authorization", "Bearer "+oldTok); resp.StatusCode != http.StatusOK {
		t.Errorf("old key: %d %v", resp.StatusCode, raw)
	}
	_ = tr
}

// TestVerifiedModeIdPDown: the deployment starts while the provider is
// down, answers 503 with Retry-After, and says so in /readyz.
func TestVerifiedModeIdPDown(t *testing.T) {
	p := gen(t, "EdDSA", 0)
	f := newFakeIdP(t, gen(t, "RS256", 0))
	f.status = http.StatusInternalServerError
	h := start(t, false, verifiedVars(p, f))
	if !strings.Contains(h.Logs.String(), "could not fetch") {
		t.Error("the failed fetch is not logged")
	}
	resp, _, raw := getToken(t, h, "/token", "Authorization", "Bearer "+f.valid(t, "u"))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d %v", resp.StatusCode, raw)
	}
	if r := h.Do(http.MethodGet, "/readyz", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz %d", r.StatusCode)
	}
	if resp, _, _ := getToken(t, h, "/token"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no Authorization while the IdP is down: %d, want 401", resp.StatusCode)
	}
}

// TestIdPCache drives the JWKS cache with a fake clock.
func TestIdPCache(t *testing.T) {
	f := newFakeIdP(t, gen(t, "RS256", 0))
	clock := time.Now()
	p := newIdP(idpConfig{jwksURL: f.srv.URL, issuer: idpIssuer, audience: idpAudience})
	p.now = func() time.Time { return clock }
	ctx := context.Background()
	if _, err := p.keys(ctx); err != nil || f.fetches.Load() != 1 {
		t.Fatalf("first fetch: %v, %d fetches", err, f.fetches.Load())
	}
	clock = clock.Add(time.Minute)
	_, _ = p.keys(ctx)
	if f.fetches.Load() != 1 {
		t.Error("fresh keys were fetched again")
	}
	// Stale: served at once, refreshed in the background.
	clock = clock.Add(refreshAfter)
	if _, err := p.keys(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.fetches.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f.fetches.Load() != 2 {
		t.Fatalf("stale keys were not refreshed: %d fetches", f.fetches.Load())
	}
	for p.refreshing.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// The provider goes down: keys are kept until dropAfter, then refused.
	f.mu.Lock()
	f.status = http.StatusBadGateway
	f.mu.Unlock()
	clock = clock.Add(dropAfter - time.Second)
	if _, err := p.keys(ctx); err != nil {
		t.Errorf("keys dropped before %s: %v", dropAfter, err)
	}
	for p.refreshing.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	clock = clock.Add(2 * time.Second)
	if _, err := p.keys(ctx); err == nil {
		t.Error("keys older than dropAfter are still trusted while the provider is down")
	}
	n := f.fetches.Load()
	_, _ = p.keys(ctx)
	if f.fetches.Load() != n {
		t.Error("a failed fetch was retried within the rate limit")
	}
	clock = clock.Add(minFetchEvery)
	f.mu.Lock()
	f.status = http.StatusOK
	f.mu.Unlock()
	if _, err := p.keys(ctx); err != nil {
		t.Errorf("the provider is back but keys are refused: %v", err)
	}
	// Oversized and malformed JWKS bodies are errors, not panics.
	for name, body := range map[string]string{"oversized": strings.Repeat(" ", maxJWKSBytes+10) + "{}", "html": "<html>", "no keys": `{"keys":[]}`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, body) }))
		q := newIdP(idpConfig{jwksURL: srv.URL})
		if _, err := q.keys(ctx); err == nil {
			t.Errorf("%s JWKS accepted", name)
		}
		srv.Close()
	}
}

var _ = runtime.Public
