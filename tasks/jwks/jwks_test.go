package jwks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

type pair struct{ priv, pub, kid string }

func gen(t testing.TB, alg string) pair {
	t.Helper()
	priv, pub, kid, err := keys.Generate(alg)
	if err != nil {
		t.Fatal(err)
	}
	return pair{priv, pub, kid}
}

func body(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServesJWKS(t *testing.T) {
	old, cur := gen(t, "RS256"), gen(t, "EdDSA")
	es := gen(t, "ES256")
	dep := deployment.New("testing", false, map[string]string{
		keys.PrivateVar: cur.priv,
		keys.PublicVar:  cur.pub + "," + old.pub + "\n" + es.pub,
	}, keys.PrivateVar)
	h := runtimetest.New(t, dep, Task())
	resp := h.Do(http.MethodGet, "/jwks", nil, "Accept", "application/json")
	b := body(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != CacheControl {
		t.Errorf("Cache-Control %q", cc)
	}
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
		t.Errorf("ETag %q", etag)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("go-jose cannot read the JWKS: %v", err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
		if !k.IsPublic() || !k.Valid() || k.Use != "sig" || k.Algorithm == "" {
			t.Errorf("key %s: public=%t valid=%t use=%q alg=%q", k.KeyID, k.IsPublic(), k.Valid(), k.Use, k.Algorithm)
		}
	}
	if strings.Join(kids, ",") != cur.kid+","+old.kid+","+es.kid {
		t.Errorf("kids %v", kids)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	_ = json.Unmarshal(b, &raw)
	for _, k := range raw.Keys {
		for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
			if _, ok := k[m]; ok {
				t.Errorf("key %v has private member %q", k["kid"], m)
			}
		}
	}
	// The same bytes every time: built once.
	again := body(t, h.Do(http.MethodGet, "/jwks?x=1", nil))
	if !bytes.Equal(again, b) {
		t.Error("the body changed between requests")
	}
	logs := h.Logs.String()
	if strings.Contains(logs, cur.priv[:40]) || !strings.Contains(logs, cur.kid) {
		t.Errorf("logs hold the private key or lack the kid:\n%s", logs)
	}

	// Conditional and HEAD requests.
	cases := []struct {
		method, inm string
		status      int
		empty       bool
	}{
		{http.MethodGet, etag, http.StatusNotModified, true},
		{http.MethodGet, "W/" + etag, http.StatusNotModified, true},
		{http.MethodGet, `"other", ` + etag, http.StatusNotModified, true},
		{http.MethodGet, "*", http.StatusNotModified, true},
		{http.MethodGet, `"other"`, http.StatusOK, false},
		{http.MethodGet, strings.Repeat(`"x",`, 2000) + etag, http.StatusOK, false},
		{http.MethodHead, "", http.StatusOK, true},
	}
	for _, c := range cases {
		var hdr []string
		if c.inm != "" {
			hdr = []string{"If-None-Match", c.inm}
		}
		resp := h.Do(c.method, "/jwks", nil, hdr...)
		got := body(t, resp)
		if resp.StatusCode != c.status || (len(got) == 0) != c.empty {
			t.Errorf("%s If-None-Match %.30q: status %d, %d bytes", c.method, c.inm, resp.StatusCode, len(got))
		}
		if resp.Header.Get("ETag") != etag {
			t.Errorf("%s: ETag %q", c.method, resp.Header.Get("ETag"))
		}
	}
}

func TestHostileRequests(t *testing.T) {
	p := gen(t, "ES256")
	h := runtimetest.New(t, deployment.New("testing", false, map[string]string{keys.PrivateVar: p.priv}, keys.PrivateVar), Task())
	want := body(t, h.Do(http.MethodGet, "/jwks", nil))
	for name, target := range map[string]string{
		"long query":     "/jwks?" + strings.Repeat("a=b&", 4000),
		"odd query":      "/jwks?%zz&;&=&kid=../../etc",
		"encoded path":   "/jwks?x=%00%ff",
		"trailing query": "/jwks?",
	} {
		resp := h.Do(http.MethodGet, target, strings.NewReader(strings.Repeat("x", 1<<16)), "Accept", "text/html", "Content-Type", "application/xml")
		if got := body(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp := h.Do(m, "/jwks", strings.NewReader(`{"keys":[]}`))
		var e map[string]any
		runtimetest.JSON(t, resp, &e)
		if resp.StatusCode != http.StatusMethodNotAllowed || e["error"] == nil {
			t.Errorf("%s: status %d %v", m, resp.StatusCode, e)
		}
	}
	if resp := h.Do(http.MethodGet, "/jwks", nil); resp.StatusCode != http.StatusOK {
		t.Error("the server broke")
	}
}

func TestPublicOnlyAndRefusals(t *testing.T) {
	p := gen(t, "EdDSA")
	h := runtimetest.New(t, deployment.New("prod", true, map[string]string{keys.PublicVar: p.pub}), Task())
	if got := body(t, h.Do(http.MethodGet, "/jwks", nil)); !bytes.Contains(got, []byte(p.kid)) {
		t.Errorf("public-only deployment serves %s", got)
	}
	_, err := runtimetest.Start(t, deployment.New("prod", true, nil), Task())
	if err == nil || !strings.Contains(err.Error(), keys.PrivateVar) {
		t.Errorf("production without keys: %v", err)
	}
	_, err = runtimetest.Start(t, deployment.New("prod", true, map[string]string{keys.PublicVar: "bm90IGEga2V5"}), Task())
	if err == nil || !strings.Contains(err.Error(), keys.PublicVar) || strings.Contains(err.Error(), "bm90IGEga2V5") {
		t.Errorf("garbage public key: %v", err)
	}
	// A development deployment without keys generates and serves a pair.
	h = runtimetest.New(t, deployment.New("testing", false, nil), Task())
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	runtimetest.JSON(t, h.Do(http.MethodGet, "/jwks", nil), &doc)
	if len(doc.Keys) != 1 || doc.Keys[0]["alg"] != "RS256" || !strings.Contains(h.Logs.String(), "DEVELOPMENT KEYS") {
		t.Errorf("development deployment: %v", doc)
	}
}

// BenchmarkJWKS serves the JWKS in process, through the host's handler.
func BenchmarkJWKS(b *testing.B) {
	p := gen(b, "RS256")
	dep := deployment.New("bench", false, map[string]string{keys.PrivateVar: p.priv}, keys.PrivateVar)
	dep.Dir = b.TempDir()
	reg, err := runtime.NewRegistry(Task())
	if err != nil {
		b.Fatal(err)
	}
	host, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil)})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close(context.Background())
	handler := host.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "/jwks", nil)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
