package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"

	"github.com/taskrun/taskrun/internal/keys/pstest"
)

// pair is a generated key pair, generated once per algorithm: RSA keys take
// a while.
type pair struct{ priv, pub, kid string }

var (
	pairsMu sync.Mutex
	pairs   = map[string][]pair{}
)

// genPair returns the n-th generated pair of alg.
func genPair(t testing.TB, alg string, n int) pair {
	t.Helper()
	pairsMu.Lock()
	defer pairsMu.Unlock()
	for len(pairs[alg]) <= n {
		priv, pub, kid, err := Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		pairs[alg] = append(pairs[alg], pair{priv, pub, kid})
	}
	return pairs[alg][n]
}

func mustNew(t testing.TB, priv, pub string) *Set {
	t.Helper()
	s, err := New(priv, pub)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func claimsAt(now time.Time, sub string) Claims {
	return Claims{Subject: sub, Issuer: "taskrun", Audience: []string{"https://ps.example"},
		IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 300}
}

var kidRE = regexp.MustCompile(`^powersync-[0-9a-f]{10}$`)

// memberOrder returns the member names of a JSON object in order.
func memberOrder(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", b)
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// TestGenerateFormat checks that generated keys are in the format of
// PowerSync's own generator: padded standard base64 of compact JWK JSON,
// members in Node's export order then alg and kid, kid powersync-<10 hex>.
func TestGenerateFormat(t *testing.T) {
	cases := []struct {
		alg        string
		priv, pub  string
		publicKind any
	}{
		{"RS256", "kty n e d p q dp dq qi alg kid use", "kty n e alg kid use", &rsa.PublicKey{}},
		{"ES256", "kty x y crv d alg kid use", "kty x y crv alg kid use", &ecdsa.PublicKey{}},
		{"EdDSA", "crv d x kty alg kid use", "crv x kty alg kid use", ed25519.PublicKey{}},
	}
	for _, c := range cases {
		t.Run(c.alg, func(t *testing.T) {
			p := genPair(t, c.alg, 0)
			if !kidRE.MatchString(p.kid) {
				t.Errorf("kid %q", p.kid)
			}
			for _, v := range []struct {
				name, b64, order string
				private          bool
			}{{"private", p.priv, c.priv, true}, {"public", p.pub, c.pub, false}} {
				raw, err := base64.StdEncoding.DecodeString(v.b64)
				if err != nil {
					t.Fatalf("%s: not padded standard base64: %v", v.name, err)
				}
				var compact bytes.Buffer
				if err := json.Compact(&compact, raw); err != nil || compact.String() != string(raw) {
					t.Errorf("%s: not compact JSON: %s", v.name, raw)
				}
				if got := strings.Join(memberOrder(t, raw), " "); got != v.order {
					t.Errorf("%s members %q, want %q", v.name, got, v.order)
				}
				var m map[string]any
				_ = json.Unmarshal(raw, &m)
				if m["alg"] != c.alg || m["kid"] != p.kid || m["use"] != "sig" {
					t.Errorf("%s: alg %v kid %v use %v", v.name, m["alg"], m["kid"], m["use"])
				}
				var jk jose.JSONWebKey
				if err := jk.UnmarshalJSON(raw); err != nil {
					t.Fatalf("%s: go-jose cannot parse it: %v", v.name, err)
				}
				if jk.IsPublic() == v.private || !jk.Valid() {
					t.Errorf("%s: go-jose says public=%t valid=%t", v.name, jk.IsPublic(), jk.Valid())
				}
				if jk.KeyID != p.kid || jk.Algorithm != c.alg {
					t.Errorf("%s: go-jose kid %q alg %q", v.name, jk.KeyID, jk.Algorithm)
				}
			}
			if c.alg == "RS256" {
				raw, _ := base64.StdEncoding.DecodeString(p.pub)
				var m map[string]string
				_ = json.Unmarshal(raw, &m)
				n, _ := base64.RawURLEncoding.DecodeString(m["n"])
				if len(n) != 256 || n[0] == 0 || m["e"] != "AQAB" {
					t.Errorf("RSA n of %d bytes (first %d), e %q: want 2048 bits unpadded and AQAB", len(n), n[0], m["e"])
				}
			}
		})
	}
	if _, _, _, err := Generate("HS256"); err == nil {
		t.Error("Generate(HS256) succeeded")
	}
	a, b := genPair(t, "EdDSA", 0), genPair(t, "EdDSA", 1)
	if a.kid == b.kid || a.priv == b.priv {
		t.Error("two generated pairs are equal")
	}
}

func pemOf(t testing.TB, typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// TestNewFormats loads keys in every accepted format, signs and verifies.
func TestNewFormats(t *testing.T) {
	rs, es, ed := genPair(t, "RS256", 0), genPair(t, "ES256", 0), genPair(t, "EdDSA", 0)
	rsKey := mustNew(t, rs.priv, rs.pub).signer.key.priv.(*rsa.PrivateKey)
	esKey := mustNew(t, es.priv, es.pub).signer.key.priv.(*ecdsa.PrivateKey)
	edKey := mustNew(t, ed.priv, ed.pub).signer.key.priv.(ed25519.PrivateKey)
	pkcs8 := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf(t, "PRIVATE KEY", der)
	}
	spki := func(k any) string {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf(t, "PUBLIC KEY", der)
	}
	sec1, _ := x509.MarshalECPrivateKey(esKey)
	dec := func(s string) string { b, _ := base64.StdEncoding.DecodeString(s); return string(b) }
	reenc := func(s string, enc *base64.Encoding) string { return enc.EncodeToString([]byte(dec(s))) }
	jwks := base64.StdEncoding.EncodeToString([]byte(`{"keys":[` + dec(rs.pub) + `,` + dec(es.pub) + `]}`))

	cases := []struct {
		name      string
		priv, pub string
		wantKIDs  []string
		signKID   string
		signAlg   string
	}{
		{"RS256 JWK std base64", rs.priv, rs.pub, []string{rs.kid}, rs.kid, "RS256"},
		{"ES256 JWK", es.priv, es.pub, []string{es.kid}, es.kid, "ES256"},
		{"EdDSA JWK", ed.priv, ed.pub, []string{ed.kid}, ed.kid, "EdDSA"},
		{"raw std base64", reenc(rs.priv, base64.RawStdEncoding), reenc(rs.pub, base64.RawStdEncoding), []string{rs.kid}, rs.kid, "RS256"},
		{"url base64", reenc(es.priv, base64.URLEncoding), reenc(es.pub, base64.RawURLEncoding), []string{es.kid}, es.kid, "ES256"},
		{"raw JSON", dec(ed.priv), dec(ed.pub), []string{ed.kid}, ed.kid, "EdDSA"},
		{"surrounding space", "  " + rs.priv + "\n", "\n" + rs.pub + "  ", []string{rs.kid}, rs.kid, "RS256"},
		{"public key derived from private", es.priv, "", []string{es.kid}, es.kid, "ES256"},
		{"several public keys, commas", ed.priv, rs.pub + "," + es.pub + "," + ed.pub, []string{rs.kid, es.kid, ed.kid}, ed.kid, "EdDSA"},
		{"several public keys, white space", rs.priv, es.pub + "\n  " + rs.pub, []string{es.kid, rs.kid}, rs.kid, "RS256"},
		{"public JWKS", es.priv, jwks, []string{rs.kid, es.kid}, es.kid, "ES256"},
		{"duplicate public key dropped", rs.priv, rs.pub + "," + rs.pub, []string{rs.kid}, rs.kid, "RS256"},
		{"PEM PKCS#8 private, JWK public keeps its kid", pkcs8(rsKey), rs.pub, []string{rs.kid}, rs.kid, "RS256"},
		{"PEM private and public", pkcs8(esKey), spki(&esKey.PublicKey), []string{deriveKID(&esKey.PublicKey)}, deriveKID(&esKey.PublicKey), "ES256"},
		{"PEM Ed25519", pkcs8(edKey), spki(edKey.Public()), []string{deriveKID(edKey.Public())}, deriveKID(edKey.Public()), "EdDSA"},
		{"PEM PKCS#1", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsKey)), pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsKey.PublicKey)), []string{deriveKID(&rsKey.PublicKey)}, deriveKID(&rsKey.PublicKey), "RS256"},
		{"PEM SEC1 private, JWK public", pemOf(t, "EC PRIVATE KEY", sec1), es.pub, []string{es.kid}, es.kid, "ES256"},
		{"PEM with literal \\n", strings.ReplaceAll(pkcs8(edKey), "\n", `\n`), strings.ReplaceAll(spki(edKey.Public()), "\n", `\n`), []string{deriveKID(edKey.Public())}, deriveKID(edKey.Public()), "EdDSA"},
		{"base64 of PEM", base64.StdEncoding.EncodeToString([]byte(pkcs8(rsKey))), base64.StdEncoding.EncodeToString([]byte(spki(&rsKey.PublicKey))), []string{deriveKID(&rsKey.PublicKey)}, deriveKID(&rsKey.PublicKey), "RS256"},
		{"two PEM public keys", pkcs8(edKey), spki(&esKey.PublicKey) + spki(edKey.Public()), []string{deriveKID(&esKey.PublicKey), deriveKID(edKey.Public())}, deriveKID(edKey.Public()), "EdDSA"},
		{"public only", "", rs.pub + "," + ed.pub, []string{rs.kid, ed.kid}, "", ""},
	}
	now := time.Now()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustNew(t, c.priv, c.pub)
			if got := strings.Join(s.KIDs(), ","); got != strings.Join(c.wantKIDs, ",") {
				t.Errorf("kids %s, want %s", got, strings.Join(c.wantKIDs, ","))
			}
			if s.SigningKID() != c.signKID || s.SigningAlg() != c.signAlg {
				t.Errorf("signing kid %q alg %q, want %q %q", s.SigningKID(), s.SigningAlg(), c.signKID, c.signAlg)
			}
			if c.signKID == "" {
				if _, err := s.Sign(claimsAt(now, "u")); !errors.Is(err, ErrNoPrivateKey) || s.CanSign() {
					t.Errorf("public-only set: Sign error %v", err)
				}
				return
			}
			tok, err := s.Sign(claimsAt(now, "user-1"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Verify(tok, "https://ps.example", now); err != nil {
				t.Errorf("Verify: %v", err)
			}
			h, cl, err := pstest.Verify(s.JWKS(), tok, "https://ps.example", now)
			if err != nil {
				t.Fatalf("independent verifier: %v", err)
			}
			if h["kid"] != c.signKID || h["alg"] != c.signAlg || h["typ"] != "JWT" || cl["sub"] != "user-1" {
				t.Errorf("header %v claims %v", h, cl)
			}
		})
	}
}

// TestNewRefusals: each bad configuration fails with an error naming the
// variable and never holding the value.
func TestNewRefusals(t *testing.T) {
	rs, rs2, es, ed := genPair(t, "RS256", 0), genPair(t, "RS256", 1), genPair(t, "ES256", 0), genPair(t, "EdDSA", 0)
	dec := func(s string) map[string]any {
		b, _ := base64.StdEncoding.DecodeString(s)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	enc := func(m map[string]any) string { b, _ := json.Marshal(m); return base64.StdEncoding.EncodeToString(b) }
	with := func(s string, k string, v any) string {
		m := dec(s)
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return enc(m)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	hmac := base64.StdEncoding.EncodeToString([]byte(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0","alg":"HS256","kid":"h"}`))
	encPEM := "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END PRIVATE KEY-----\n"
	rsPubWrongKid := with(rs.pub, "kid", "other-kid")
	cases := []struct {
		name, priv, pub, wantVar, want string
	}{
		{"garbage private", "not a key at all!", rs.pub, PrivateVar, "neither"},
		{"garbage public", rs.priv, "%%%%", PublicVar, "neither base64"},
		{"base64 of nonsense", base64.StdEncoding.EncodeToString([]byte("hello world")), rs.pub, PrivateVar, "decodes to neither"},
		{"malformed JSON", base64.StdEncoding.EncodeToString([]byte(`{"kty":`)), rs.pub, PrivateVar, "malformed"},
		{"private matches no public key", rs.priv, rs2.pub, PrivateVar, "matches none"},
		{"same kid, other key", rs.priv, with(rs2.pub, "kid", rs.kid), PrivateVar, "does not match the key of the same kid"},
		{"kid differs", rs.priv, rsPubWrongKid, PrivateVar, "make them equal"},
		{"alg differs", rs.priv, with(rs.pub, "alg", "RS512"), PrivateVar, "make them equal"},
		{"unsupported alg", with(rs.priv, "alg", "PS256"), "", PrivateVar, "unsupported algorithm"},
		{"alg none", rs.priv, with(rs.pub, "alg", "none"), PublicVar, "unsupported algorithm"},
		{"alg for another key type", with(es.priv, "alg", "RS256"), "", PrivateVar, "does not fit"},
		{"EC alg for another curve", es.priv, with(es.pub, "alg", "ES384"), PublicVar, "does not fit"},
		{"symmetric key", hmac, rs.pub, PrivateVar, "symmetric"},
		{"use enc", rs.priv, with(rs.pub, "use", "enc"), PublicVar, `"use"`},
		{"key_ops without verify", rs.priv, with(rs.pub, "key_ops", []string{"encrypt"}), PublicVar, "key_ops"},
		{"private key in the public variable", rs.priv, rs.priv, PublicVar, "private key material"},
		{"public key in the private variable", rs.pub, rs.pub, PrivateVar, "public key only"},
		{"two private keys", rs.priv + "," + es.priv, rs.pub, PrivateVar, "want exactly one"},
		{"RSA too small", pemOf(t, "PRIVATE KEY", smallDER), "", PrivateVar, "too small"},
		{"RSA JWK over 4096 bits", rs.priv, with(rs.pub, "n", base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xc5}, 520))), PublicVar, "4096"},
		{"unsupported curve", ed.priv, pemOf(t, "PUBLIC KEY", p224DER), PublicVar, "unsupported EC curve"},
		{"unsupported JWK curve", es.priv, with(es.pub, "crv", "secp256k1"), PublicVar, "unsupported EC curve"},
		{"Ed448", ed.priv, with(ed.pub, "crv", "Ed448"), PublicVar, "unsupported OKP curve"},
		{"point not on curve", es.priv, with(es.pub, "y", base64.RawURLEncoding.EncodeToString(make([]byte, 32))), PublicVar, "not on declared curve"},
		{"inconsistent RSA private", with(rs.priv, "d", dec(rs2.priv)["d"]), rs.pub, PrivateVar, "RSA private key is invalid"},
		{"EC d does not match", with(es.priv, "d", base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))), "", PrivateVar, "does not match"},
		{"missing kty", base64.StdEncoding.EncodeToString([]byte(`{"n":"x"}`)), rs.pub, PrivateVar, "kty"},
		{"unknown kty", with(rs.priv, "kty", "XYZ"), rs.pub, PrivateVar, "unsupported key type"},
		{"empty JWKS", rs.priv, base64.StdEncoding.EncodeToString([]byte(`{"keys":[]}`)), PublicVar, "empty"},
		{"two keys, one kid", ed.priv, ed.pub + "," + with(es.pub, "kid", ed.kid), PublicVar, "two different keys"},
		{"encrypted PEM", encPEM, "", PrivateVar, "encrypted"},
		{"malformed PEM", "-----BEGIN PRIVATE KEY-----\nAAAA", "", PrivateVar, "malformed PEM"},
		{"unknown PEM block", pemOf(t, "CERTIFICATE", []byte{1, 2, 3}), "", PrivateVar, "unsupported PEM"},
		{"oversized", strings.Repeat("A", maxKeyInput+1), "", PrivateVar, "longer than"},
		{"neither", "", "  ", PrivateVar, "neither"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.priv, c.pub)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.wantVar) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q: want it to name %s and say %q", msg, c.wantVar, c.want)
			}
			for _, v := range []string{c.priv, c.pub} {
				v = strings.TrimSpace(v)
				if len(v) >= 12 && strings.Contains(msg, v[:12]) {
					t.Errorf("error holds the value: %q", msg)
				}
			}
			for _, secret := range []string{rs.priv, rs2.priv, es.priv, ed.priv} {
				if d, _ := dec(secret)["d"].(string); strings.Contains(msg, d[:10]) {
					t.Errorf("error holds a private member: %q", msg)
				}
			}
		})
	}
}

// craft signs an arbitrary header and payload with a set's private key
// (go-jose computes the signature): with the header's algorithm where the
// key can, else with the key's own.
func craft(t testing.TB, s *Set, alg, header, payload string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	op := cryptosigner.Opaque(s.signer.key.priv)
	sig, err := op.SignPayload([]byte(in), jose.SignatureAlgorithm(alg))
	if err != nil {
		if sig, err = op.SignPayload([]byte(in), jose.SignatureAlgorithm(s.SigningAlg())); err != nil {
			t.Fatal(err)
		}
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestVerifyLikePowerSync checks each rule of the PowerSync service's
// verification, for every algorithm, against Verify and the independent
// verifier.
func TestVerifyLikePowerSync(t *testing.T) {
	const aud = "https://ps.example"
	now := time.Unix(1_800_000_000, 0)
	for _, alg := range GenerateAlgs {
		t.Run(alg, func(t *testing.T) {
			p := genPair(t, alg, 0)
			s := mustNew(t, p.priv, p.pub)
			hdr := fmt.Sprintf(`{"alg":%q,"kid":%q}`, alg, p.kid)
			payload := func(extra string) string {
				return `{"sub":"u1","aud":"` + aud + `","iat":1800000000,"exp":1800000300` + extra + `}`
			}
			n := now.Unix()
			cases := []struct {
				name, header, payload string
				ok                    bool
			}{
				{"valid", hdr, payload(""), true},
				{"no typ is fine", hdr, payload(""), true},
				{"aud array", hdr, `{"sub":"u1","aud":["x","` + aud + `"],"iat":1800000000,"exp":1800000300}`, true},
				{"float times", hdr, `{"sub":"u1","aud":"` + aud + `","iat":1800000000.5,"exp":1800000300.25}`, true},
				{"parameters object", hdr, payload(`,"parameters":{"a":1}`), true},
				{"parameters null", hdr, payload(`,"parameters":null`), true},
				{"lifetime exactly 24h", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n, n+86400), true},
				{"expired 59 s ago (skew)", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n-300, n-59), true},
				{"expired 60 s ago", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n-300, n-60), false},
				{"nbf 60 s ahead (skew)", hdr, payload(fmt.Sprintf(`,"nbf":%d`, n+60)), true},
				{"nbf 61 s ahead", hdr, payload(fmt.Sprintf(`,"nbf":%d`, n+61)), false},
				{"lifetime over 24h", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n, n+86401), false},
				{"no kid", fmt.Sprintf(`{"alg":%q}`, alg), payload(""), false},
				{"unknown kid", fmt.Sprintf(`{"alg":%q,"kid":"powersync-0000000000"}`, alg), payload(""), false},
				{"alg other than the key's", fmt.Sprintf(`{"alg":%q,"kid":%q}`, map[string]string{"RS256": "RS384", "ES256": "ES384", "EdDSA": "RS256"}[alg], p.kid), payload(""), false},
				{"alg none", fmt.Sprintf(`{"alg":"none","kid":%q}`, p.kid), payload(""), false},
				{"alg HS256", fmt.Sprintf(`{"alg":"HS256","kid":%q}`, p.kid), payload(""), false},
				{"crit header", fmt.Sprintf(`{"alg":%q,"kid":%q,"crit":["exp"]}`, alg, p.kid), payload(""), false},
				{"no sub", hdr, `{"aud":"` + aud + `","iat":1800000000,"exp":1800000300}`, false},
				{"empty sub", hdr, `{"sub":"","aud":"` + aud + `","iat":1800000000,"exp":1800000300}`, false},
				{"sub a number", hdr, `{"sub":7,"aud":"` + aud + `","iat":1800000000,"exp":1800000300}`, false},
				{"iat 60 s ahead (skew)", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n+60, n+300), true},
				{"iat 61 s ahead", hdr, fmt.Sprintf(`{"sub":"u1","aud":%q,"iat":%d,"exp":%d}`, aud, n+61, n+300), false},
				{"no iat", hdr, `{"sub":"u1","aud":"` + aud + `","exp":1800000300}`, false},
				{"no exp", hdr, `{"sub":"u1","aud":"` + aud + `","iat":1800000000}`, false},
				{"exp a string", hdr, `{"sub":"u1","aud":"` + aud + `","iat":1800000000,"exp":"1800000300"}`, false},
				{"no aud", hdr, `{"sub":"u1","iat":1800000000,"exp":1800000300}`, false},
				{"other aud", hdr, `{"sub":"u1","aud":"https://other","iat":1800000000,"exp":1800000300}`, false},
				{"aud array without it", hdr, `{"sub":"u1","aud":["a","b"],"iat":1800000000,"exp":1800000300}`, false},
				{"parameters array", hdr, payload(`,"parameters":[1]`), false},
				{"parameters string", hdr, payload(`,"parameters":"x"`), false},
				{"payload not an object", hdr, `[1,2]`, false},
			}
			for _, c := range cases {
				tok := craft(t, s, strings.TrimSuffix(strings.Split(strings.Split(c.header, `"alg":"`)[1], `"`)[0], ""), c.header, c.payload)
				_, err := s.Verify(tok, aud, now)
				if (err == nil) != c.ok {
					t.Errorf("%s: Verify error %v, want ok=%t", c.name, err, c.ok)
				}
				if err != nil && !errors.Is(err, ErrInvalidToken) {
					t.Errorf("%s: error %v is not ErrInvalidToken", c.name, err)
				}
				if c.name == "unknown kid" && !errors.Is(err, ErrUnknownKID) {
					t.Errorf("unknown kid: error %v is not ErrUnknownKID", err)
				}
				// The independent verifier must agree, except on what
				// go-jose itself refuses before any claim check.
				if c.name == "alg none" || c.name == "alg HS256" || c.name == "crit header" {
					continue
				}
				if _, _, err := pstest.Verify(s.JWKS(), tok, aud, now); (err == nil) != c.ok {
					t.Errorf("%s: independent verifier error %v, want ok=%t", c.name, err, c.ok)
				}
			}
			good := craft(t, s, alg, hdr, payload(""))
			parts := strings.Split(good, ".")
			tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload(`,"x":1`))) + "." + parts[2]
			other := mustNew(t, genPair(t, alg, 1).priv, "")
			for name, tok := range map[string]string{
				"tampered payload":  tampered,
				"other key's sig":   parts[0] + "." + parts[1] + "." + strings.Split(craft(t, other, alg, hdr, payload("")), ".")[2],
				"empty signature":   parts[0] + "." + parts[1] + ".",
				"two parts":         parts[0] + "." + parts[1],
				"four parts":        good + ".x",
				"header not base64": "!!!." + parts[1] + "." + parts[2],
				"empty":             "",
				"oversized":         strings.Repeat("a", MaxTokenBytes+1),
			} {
				if _, err := s.Verify(tok, aud, now); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("%s: Verify error %v", name, err)
				}
				if err := func() error { _, err := s.Verify(tok, aud, now); return err }(); err != nil && strings.Contains(err.Error(), parts[1]) {
					t.Errorf("%s: the error holds the token", name)
				}
			}
		})
	}
}

// TestSign checks what Sign writes and refuses.
func TestSign(t *testing.T) {
	p := genPair(t, "EdDSA", 0)
	s := mustNew(t, p.priv, p.pub)
	now := time.Now()
	subjects := []string{"user-1", "ünïcødé 用户", "with space", "a&b=c", "a/b", "100%", `quote" back\slash`, "tab\tnew\nline", "\u2028", "<script>"}
	for _, sub := range subjects {
		tok, err := s.Sign(claimsAt(now, sub))
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Verify(tok, "https://ps.example", now)
		if err != nil {
			t.Fatal(err)
		}
		_, ind, err := pstest.Verify(s.JWKS(), tok, "https://ps.example", now)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != sub || ind["sub"] != sub || ind["iss"] != "taskrun" {
			t.Errorf("sub %q came back as %q / %v", sub, c.Subject, ind["sub"])
		}
	}
	multi := claimsAt(now, "u")
	multi.Audience = []string{"a", "https://ps.example"}
	multi.Parameters = map[string]any{"team": "x"}
	tok, err := s.Sign(multi)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Verify(tok, "https://ps.example", now); err != nil || len(c.Audience) != 2 || c.Parameters["team"] != "x" {
		t.Errorf("multi-audience token: %v %+v", err, c)
	}
	for name, c := range map[string]Claims{
		"empty subject":   claimsAt(now, ""),
		"invalid UTF-8":   claimsAt(now, "a\xffb"),
		"no audience":     {Subject: "u", IssuedAt: 1, ExpiresAt: 2},
		"lifetime 0":      {Subject: "u", Audience: []string{"a"}, IssuedAt: 5, ExpiresAt: 5},
		"lifetime > 24 h": {Subject: "u", Audience: []string{"a"}, IssuedAt: 0, ExpiresAt: 86401},
	} {
		if _, err := s.Sign(c); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

// TestSignIsGoJose: the signer's tokens are byte for byte what go-jose's
// own Signer makes of the same claims, for the algorithms whose signatures
// are deterministic; ES256's verify with go-jose.
func TestSignIsGoJose(t *testing.T) {
	now := time.Now()
	for _, alg := range GenerateAlgs {
		p := genPair(t, alg, 0)
		s := mustNew(t, p.priv, p.pub)
		tok, err := s.Sign(claimsAt(now, "user-1"))
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(tok, ".")
		claims, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: s.signer.key.priv, KeyID: p.kid}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		obj, err := js.Sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := obj.CompactSerialize()
		if alg == "ES256" { // randomised: compare all but the signature
			want, tok = want[:strings.LastIndexByte(want, '.')], tok[:strings.LastIndexByte(tok, '.')]
			parsed, err := jose.ParseSignedCompact(strings.Join(parts, "."), []jose.SignatureAlgorithm{jose.ES256})
			if err == nil {
				_, err = parsed.Verify(s.Keys()[0].Public())
			}
			if err != nil {
				t.Errorf("ES256: go-jose refuses the token: %v", err)
			}
		}
		if tok != want {
			t.Errorf("%s: token\n%s\ngo-jose's\n%s", alg, tok, want)
		}
	}
}

// TestRotation: with the new key signing and both public keys served, old
// tokens still verify and new ones carry the new kid.
func TestRotation(t *testing.T) {
	for _, algs := range [][2]string{{"RS256", "ES256"}, {"RS256", "RS256"}, {"ES256", "EdDSA"}} {
		old, nu := genPair(t, algs[0], 0), genPair(t, algs[1], 1)
		now := time.Now()
		before := mustNew(t, old.priv, old.pub)
		oldTok, _ := before.Sign(claimsAt(now, "u-old"))
		rotated := mustNew(t, nu.priv, nu.pub+","+old.pub)
		newTok, _ := rotated.Sign(claimsAt(now, "u-new"))
		if rotated.SigningKID() != nu.kid {
			t.Errorf("signing kid %s, want the new %s", rotated.SigningKID(), nu.kid)
		}
		for _, tok := range []string{oldTok, newTok} {
			if _, err := rotated.Verify(tok, "https://ps.example", now); err != nil {
				t.Errorf("%v: %v", algs, err)
			}
			if _, _, err := pstest.Verify(rotated.JWKS(), tok, "https://ps.example", now); err != nil {
				t.Errorf("%v independent: %v", algs, err)
			}
		}
		if _, err := before.Verify(newTok, "https://ps.example", now); !errors.Is(err, ErrUnknownKID) {
			t.Errorf("the old set verifies the new token: %v", err)
		}
	}
}

// TestJWKSPublicOnly: the JWKS holds public members, kid, alg and use only.
func TestJWKSPublicOnly(t *testing.T) {
	var all []string
	var privs []string
	for _, alg := range GenerateAlgs {
		p := genPair(t, alg, 0)
		all = append(all, p.pub)
		privs = append(privs, p.priv)
	}
	s := mustNew(t, privs[0], strings.Join(all, ","))
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &doc); err != nil || len(doc.Keys) != 3 {
		t.Fatalf("JWKS %s: %v", s.JWKS(), err)
	}
	allowed := map[string]bool{"kty": true, "kid": true, "alg": true, "use": true, "n": true, "e": true, "crv": true, "x": true, "y": true}
	for _, k := range doc.Keys {
		for m := range k {
			if !allowed[m] {
				t.Errorf("JWKS key has member %q", m)
			}
		}
		if k["use"] != "sig" || k["kid"] == "" || k["alg"] == "" {
			t.Errorf("key %v", k)
		}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || !k.Valid() {
			t.Errorf("go-jose: key %s public=%t valid=%t", k.KeyID, k.IsPublic(), k.Valid())
		}
	}
	for _, priv := range privs {
		raw, _ := base64.StdEncoding.DecodeString(priv)
		var m map[string]string
		_ = json.Unmarshal(raw, &m)
		if bytes.Contains(s.JWKS(), []byte(m["d"])) {
			t.Error("the JWKS holds a private member")
		}
	}
}

// TestVerifyIssuer: with an issuer to check, a token must name it.
func TestVerifyIssuer(t *testing.T) {
	p := genPair(t, "EdDSA", 0)
	s := mustNew(t, p.priv, p.pub)
	now := time.Now()
	sign := func(iss string) string {
		c := claimsAt(now, "u")
		c.Issuer = iss
		tok, err := s.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, c := range []struct {
		name, tokenIss, want string
		ok                   bool
	}{
		{"same issuer", "https://app.example", "https://app.example", true},
		{"other issuer", "https://evil.example", "https://app.example", false},
		{"no iss claim", "", "https://app.example", false},
		{"no issuer to check", "https://evil.example", "", true},
	} {
		_, err := s.VerifyWith(sign(c.tokenIss), VerifyOptions{Audience: "https://ps.example", Issuer: c.want, MaxLifetime: MaxLifetime, Now: now})
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok=%t", c.name, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), `"iss"`) {
			t.Errorf("%s: error %q does not name iss", c.name, err)
		}
	}
}

// TestParseJWKS: an identity provider's JWKS, with keys to skip, keys
// without kid or alg.
func TestParseJWKS(t *testing.T) {
	rs, es := genPair(t, "RS256", 0), genPair(t, "ES256", 0)
	dec := func(s string) map[string]any {
		b, _ := base64.StdEncoding.DecodeString(s)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	rsPub, esPub := dec(rs.pub), dec(es.pub)
	delete(esPub, "kid")
	delete(esPub, "alg")
	delete(rsPub, "alg")
	rsPriv := dec(rs.priv)
	body, _ := json.Marshal(map[string]any{"keys": []any{
		map[string]any{"kty": "oct", "k": "AAAA", "kid": "sym"},
		map[string]any{"kty": "RSA", "use": "enc", "kid": "enc", "n": rsPub["n"], "e": "AQAB"},
		map[string]any{"kty": "RSA", "key_ops": []string{"encrypt"}, "kid": "ops", "n": rsPub["n"], "e": "AQAB"},
		map[string]any{"kty": "EC", "crv": "P-256", "kid": "bad", "x": "AA", "y": "AA"},
		"not an object",
		rsPub, esPub,
	}})
	s, err := ParseJWKS(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Keys()) != 2 || len(s.wildcard) != 1 || s.byKID[rs.kid] == nil {
		t.Fatalf("kept %v (wildcard %d)", s.KIDs(), len(s.wildcard))
	}
	if bytes.Contains(s.JWKS(), []byte(`"d"`)) {
		t.Error("kept private members")
	}
	now := time.Now()
	opts := VerifyOptions{Audience: "app", Issuer: "https://idp.example/", Now: now}
	rsSet, esSet := mustNew(t, rs.priv, ""), mustNew(t, es.priv, "")
	good := fmt.Sprintf(`{"sub":"auth0|1","aud":["app","other"],"iss":"https://idp.example/","exp":%d}`, now.Unix()+60)
	cases := []struct {
		name string
		tok  string
		ok   bool
	}{
		{"RS256 by kid", craft(t, rsSet, "RS256", `{"alg":"RS256","kid":"`+rs.kid+`"}`, good), true},
		{"RS512 on an alg-less RSA key", craft(t, rsSet, "RS512", `{"alg":"RS512","kid":"`+rs.kid+`"}`, good), true},
		{"ES256 on the kid-less key", craft(t, esSet, "ES256", `{"alg":"ES256"}`, good), true},
		{"ES256 with an unknown kid falls back to kid-less keys", craft(t, esSet, "ES256", `{"alg":"ES256","kid":"nope"}`, good), true},
		{"wrong issuer", craft(t, rsSet, "RS256", `{"alg":"RS256","kid":"`+rs.kid+`"}`, strings.Replace(good, "idp.example", "evil.example", 1)), false},
		{"wrong audience", craft(t, rsSet, "RS256", `{"alg":"RS256","kid":"`+rs.kid+`"}`, strings.Replace(good, `"app"`, `"nope"`, 1)), false},
		{"no exp", craft(t, rsSet, "RS256", `{"alg":"RS256","kid":"`+rs.kid+`"}`, `{"sub":"x","aud":"app","iss":"https://idp.example/"}`), false},
		{"RSA token on the EC key", craft(t, rsSet, "RS256", `{"alg":"RS256"}`, good), false},
	}
	for _, c := range cases {
		if _, err := s.VerifyWith(c.tok, opts); (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok=%t", c.name, err, c.ok)
		}
	}
	_ = rsPriv
	for name, body := range map[string]string{
		"not JSON": "<html>", "no keys": `{"x":1}`, "keys not array": `{"keys":{}}`,
		"nothing usable": `{"keys":[{"kty":"oct","k":"AAAA"}]}`, "empty": `{"keys":[]}`,
	} {
		if _, err := ParseJWKS([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestVerifyHostile feeds Verify malformed input; it must refuse without
// panicking.
func TestVerifyHostile(t *testing.T) {
	p := genPair(t, "EdDSA", 0)
	s := mustNew(t, p.priv, p.pub)
	b := base64.RawURLEncoding.EncodeToString
	inputs := []string{
		"", ".", "..", "...", "a.b.c", "a..c", ".b.c", "a.b.",
		b([]byte(`null`)) + "." + b([]byte(`{}`)) + ".AA",
		b([]byte(`"str"`)) + "." + b([]byte(`{}`)) + ".AA",
		b([]byte(`{"alg":5}`)) + ".e30.AA",
		b([]byte(`{"alg":"EdDSA","kid":{"x":1}}`)) + ".e30.AA",
		b([]byte(`{"alg":"EdDSA","kid":"`+strings.Repeat("k", 5000)+`"}`)) + ".e30.AA",
		b([]byte(`{"alg":"EdDSA","kid":"`+p.kid+`"}`)) + ".e30." + b(make([]byte, 64)),
		b([]byte(`{"alg":"EdDSA","kid":"`+p.kid+`"}`)) + "." + b([]byte(strings.Repeat("[", 4000))) + "." + b(make([]byte, 64)),
		strings.Repeat(".", 1000),
		"\x00\xff.\xfe.\x01",
	}
	for i, in := range inputs {
		if _, err := s.Verify(in, "a", time.Now()); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("input %d: %v", i, err)
		}
	}
}

// TestKeyHelpers covers the small accessors.
func TestKeyHelpers(t *testing.T) {
	p := genPair(t, "ES256", 0)
	s := mustNew(t, p.priv, p.pub)
	k := s.Keys()[0]
	if k.HasPrivate() || k.Public() == nil {
		t.Error("public key reports private")
	}
	if _, ok := k.Public().(*ecdsa.PublicKey); !ok {
		t.Errorf("public key is a %T", k.Public())
	}
}

// TestOtherAlgorithms signs and verifies with ES384, ES512, RS384 and RS512
// keys, which Generate does not make but deployments may bring.
func TestOtherAlgorithms(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		alg   string
		curve elliptic.Curve
	}{{"ES384", elliptic.P384()}, {"ES512", elliptic.P521()}} {
		k, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		s := mustNew(t, pemOf(t, "PRIVATE KEY", der), "")
		if s.SigningAlg() != c.alg {
			t.Fatalf("alg %s, want %s", s.SigningAlg(), c.alg)
		}
		for i := 0; i < 20; i++ { // r and s of every length
			tok, err := s.Sign(claimsAt(now, fmt.Sprint("u", i)))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := pstest.Verify(s.JWKS(), tok, "https://ps.example", now); err != nil {
				t.Fatalf("%s: %v", c.alg, err)
			}
		}
	}
	rs := genPair(t, "RS256", 0)
	for _, alg := range []string{"RS384", "RS512"} {
		set := func(v string) string {
			b, _ := base64.StdEncoding.DecodeString(v)
			return base64.StdEncoding.EncodeToString(bytes.Replace(b, []byte(`"RS256"`), []byte(`"`+alg+`"`), 1))
		}
		s := mustNew(t, set(rs.priv), set(rs.pub))
		tok, err := s.Sign(claimsAt(now, "u"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := pstest.Verify(s.JWKS(), tok, "https://ps.example", now); err != nil || s.SigningAlg() != alg {
			t.Errorf("%s: %v", alg, err)
		}
	}
}
