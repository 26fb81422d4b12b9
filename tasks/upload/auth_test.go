package upload

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/taskrun/taskrun/internal/keys"
)

const testAudience = "https://powersync.example.test"

// testKeys generates an Ed25519 pair (fast) and returns the deployment
// variables for it and a set that signs with it.
func testKeys(t testing.TB) (map[string]string, *keys.Set) {
	t.Helper()
	priv, pub, _, err := keys.Generate("EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	set, err := keys.New(priv, pub)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"UPLOAD_AUTH":   "on",
		"POWERSYNC_URL": testAudience,
		keys.PrivateVar: priv,
		keys.PublicVar:  pub,
		"UPLOAD_ALLOW":  "lists",
	}, set
}

func sign(t testing.TB, set *keys.Set, sub string, aud string, iat, exp time.Time) string {
	t.Helper()
	tok, err := set.Sign(keys.Claims{Subject: sub, Audience: []string{aud}, IssuedAt: iat.Unix(), ExpiresAt: exp.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAuth requires a token of the deployment's keys and audience.
func TestAuth(t *testing.T) {
	vars, set := testKeys(t)
	_, other := testKeys(t)
	h := newHost(t, nil, vars)
	now := time.Now()
	good := sign(t, set, "user-1", testAudience, now, now.Add(5*time.Minute))
	parts := strings.Split(good, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"`+set.SigningKID()+`"}`)) + "." + parts[1] + "."
	batch := `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":1}},{"op":"PUT","table":"other","id":"b","data":{}}]}`

	tests := []struct {
		name   string
		auth   string
		status int
		errHas string
	}{
		{"no header", "", 401, "missing token"},
		{"basic auth", "Basic dXNlcjpwYXNz", 401, "missing token"},
		{"bearer without a token", "Bearer ", 401, "missing token"},
		{"garbage", "Bearer not-a-jwt", 401, "invalid token"},
		{"expired", "Bearer " + sign(t, set, "user-1", testAudience, now.Add(-2*time.Hour), now.Add(-time.Hour)), 401, "invalid token"},
		{"wrong audience", "Bearer " + sign(t, set, "user-1", "https://elsewhere.example.test", now, now.Add(5*time.Minute)), 401, "invalid token"},
		{"unknown kid (another deployment's key)", "Bearer " + sign(t, other, "user-1", testAudience, now, now.Add(5*time.Minute)), 401, "invalid token"},
		{"tampered signature", "Bearer " + tampered, 401, "invalid token"},
		{"alg none", "Bearer " + none, 401, "invalid token"},
		{"valid, Bearer", "Bearer " + good, 200, ""},
		{"valid, Token", "Token " + good, 200, ""},
		{"valid, lower-case scheme", "bearer " + good, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := dump(t, h.db)
			header := []string{"Content-Type", "application/json"}
			if tc.auth != "" {
				header = append(header, "Authorization", tc.auth)
			}
			status, m, hdr := h.post(t, batch, header...)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if status == 401 {
				if msg, _ := m["error"].(string); !strings.Contains(msg, tc.errHas) {
					t.Errorf("error %q does not contain %q", msg, tc.errHas)
				}
				if hdr.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
				if after := dump(t, h.db); len(after) != len(before) || len(after["lists"]) != len(before["lists"]) {
					t.Errorf("a refused caller changed the database: %v", after)
				}
				return
			}
			// The refused operation's record names the token's subject.
			recs := deadLetterDocs(t, h.db, DefaultRefusedCol)
			if len(recs) != 1 || recs[0]["user"] != "user-1" {
				t.Errorf("dead-letter records %v, want one by user-1", recs)
			}
		})
	}
	if strings.Contains(h.Logs.String(), good) {
		t.Error("a token appears in the logs")
	}
}

// joseTokenKID signs claims as given, with go-jose and the deployment's
// private key, so that tokens Sign would refuse (an empty subject) can be
// sent.
func joseTokenKID(t testing.TB, privB64, kid string, claims map[string]any) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(privB64)
	if err != nil {
		t.Fatal(err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(raw); err != nil || key.KeyID != kid {
		t.Fatalf("the private JWK: %v, kid %q", err, key.KeyID)
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sg).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAuthTightened: with TOKEN_ISSUER set, a token must name it; iat may
// not be later than now plus the skew; sub may not be empty.
func TestAuthTightened(t *testing.T) {
	vars, set := testKeys(t)
	const issuer = "https://app.example.test"
	vars[keys.IssuerVar] = issuer
	h := newHost(t, nil, vars)
	now := time.Now().Unix()
	claims := func(change map[string]any) map[string]any {
		c := map[string]any{"sub": "user-1", "aud": testAudience, "iss": issuer, "iat": now, "exp": now + 300}
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	priv := vars[keys.PrivateVar]
	kid := set.SigningKID()
	batch := `{"batch":[{"op":"PUT","table":"lists","id":"t1","data":{"n":1}}]}`
	for _, tc := range []struct {
		name   string
		change map[string]any
		status int
		errHas string
	}{
		{"valid", nil, 200, ""},
		{"iat 60 s ahead (skew)", map[string]any{"iat": now + 60}, 200, ""},
		{"other issuer", map[string]any{"iss": "https://evil.example.test"}, 401, `"iss"`},
		{"no issuer", map[string]any{"iss": nil}, 401, `"iss"`},
		{"iat beyond the skew", map[string]any{"iat": now + 120}, 401, `"iat"`},
		{"empty sub", map[string]any{"sub": ""}, 401, `"sub"`},
		{"no sub", map[string]any{"sub": nil}, 401, `"sub"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := joseTokenKID(t, priv, kid, claims(tc.change))
			status, m, _ := h.post(t, batch, "Content-Type", "application/json", "Authorization", "Bearer "+tok)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if msg, _ := m["error"].(string); !strings.Contains(msg, tc.errHas) {
				t.Errorf("error %q does not contain %q", msg, tc.errHas)
			}
		})
	}
	// The deployment's own /token tokens carry its issuer: Sign with it passes.
	c := keys.Claims{Subject: "user-2", Issuer: issuer, Audience: []string{testAudience}, IssuedAt: now, ExpiresAt: now + 60}
	tok, err := set.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	if status, m, _ := h.post(t, batch, "Content-Type", "application/json", "Authorization", "Bearer "+tok); status != 200 {
		t.Errorf("a token of the deployment's issuer: status %d %v", status, m)
	}
}
