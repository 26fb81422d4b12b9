package token

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// The token benchmarks go through the host's handler in process, as a
// request would; the JoseSign benchmarks sign the same claims with go-jose
// alone, the baseline: ns/op(JoseSign) / ns/op(Token) is what the host and
// the handler cost on top of signing.

func benchHost(b *testing.B, alg string) http.Handler {
	b.Helper()
	p := gen(b, alg, 0)
	dep := deployment.New("bench", false, vars(p), keys.PrivateVar)
	dep.Dir = b.TempDir()
	reg, err := runtime.NewRegistry(Task())
	if err != nil {
		b.Fatal(err)
	}
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	return h.Handler()
}

func benchToken(b *testing.B, alg string) {
	handler := benchHost(b, alg)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "/token?user_id=user-12345", nil)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
}

func BenchmarkToken_RS256(b *testing.B) { benchToken(b, "RS256") }
func BenchmarkToken_ES256(b *testing.B) { benchToken(b, "ES256") }
func BenchmarkToken_EdDSA(b *testing.B) { benchToken(b, "EdDSA") }

// benchJose signs the same claims with go-jose alone: the key parsed from
// the deployment's JWK by go-jose, the token built by its jwt package.
func benchJose(b *testing.B, alg string) {
	p := gen(b, alg, 0)
	raw, err := base64.StdEncoding.DecodeString(p.priv)
	if err != nil {
		b.Fatal(err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(raw); err != nil {
		b.Fatal(err)
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now := time.Now()
		c := jwt.Claims{Subject: "user-12345", Issuer: DefaultIssuer, Audience: jwt.Audience{psURL},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}
		if _, err := jwt.Signed(sg).Claims(c).Serialize(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJoseSign_RS256(b *testing.B) { benchJose(b, "RS256") }
func BenchmarkJoseSign_ES256(b *testing.B) { benchJose(b, "ES256") }
func BenchmarkJoseSign_EdDSA(b *testing.B) { benchJose(b, "EdDSA") }
