package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// The token benchmarks go through the host's handler in process, as a
// request would; the StdlibSign benchmarks sign the same claims with the
// standard library alone (encoding/json, base64, crypto), the baseline of
// the performance target: ns/op(StdlibSign) / ns/op(Token) >= 0.85.

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

// stdlibKey decodes the benchmark's private JWK with the standard library
// alone, so that the baseline does not use package keys.
func stdlibKey(b *testing.B, alg string) (crypto.Signer, string) {
	b.Helper()
	p := gen(b, alg, 0)
	raw, _ := base64.StdEncoding.DecodeString(p.priv)
	var jwk map[string]string
	_ = json.Unmarshal(raw, &jwk)
	d := func(k string) []byte { v, _ := base64.RawURLEncoding.DecodeString(jwk[k]); return v }
	var key crypto.Signer
	switch alg {
	case "RS256":
		k, err := rsaFromJWK(d)
		if err != nil {
			b.Fatal(err)
		}
		key = k
	case "ES256":
		k, err := ecdsaFromJWK(d)
		if err != nil {
			b.Fatal(err)
		}
		key = k
	case "EdDSA":
		key = ed25519.NewKeyFromSeed(d("d"))
	}
	return key, p.kid
}

func benchStdlib(b *testing.B, alg string) {
	key, kid := stdlibKey(b, alg)
	type header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	type claims struct {
		Sub string `json:"sub"`
		Iss string `json:"iss"`
		Aud string `json:"aud"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now := time.Now().Unix()
		hb, _ := json.Marshal(header{alg, kid, "JWT"})
		cb, _ := json.Marshal(claims{"user-12345", DefaultIssuer, psURL, now, now + 300})
		in := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
		var sig []byte
		var err error
		switch k := key.(type) {
		case *rsa.PrivateKey:
			sum := sha256.Sum256([]byte(in))
			sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
		case *ecdsa.PrivateKey:
			sum := sha256.Sum256([]byte(in))
			r, s, e := ecdsa.Sign(rand.Reader, k, sum[:])
			err = e
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		case ed25519.PrivateKey:
			sig = ed25519.Sign(k, []byte(in))
		}
		if err != nil {
			b.Fatal(err)
		}
		_ = in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
}

func BenchmarkStdlibSign_RS256(b *testing.B) { benchStdlib(b, "RS256") }
func BenchmarkStdlibSign_ES256(b *testing.B) { benchStdlib(b, "ES256") }
func BenchmarkStdlibSign_EdDSA(b *testing.B) { benchStdlib(b, "EdDSA") }

func rsaFromJWK(d func(string) []byte) (*rsa.PrivateKey, error) {
	n := new(big.Int).SetBytes(d("n"))
	e := int(new(big.Int).SetBytes(d("e")).Int64())
	k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: new(big.Int).SetBytes(d("d")),
		Primes: []*big.Int{new(big.Int).SetBytes(d("p")), new(big.Int).SetBytes(d("q"))}}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	k.Precompute()
	return k, nil
}

func ecdsaFromJWK(d func(string) []byte) (*ecdsa.PrivateKey, error) {
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), d("d"))
}
