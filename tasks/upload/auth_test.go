package upload

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

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
