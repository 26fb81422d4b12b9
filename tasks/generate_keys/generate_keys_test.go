package generate_keys

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/keys/pstest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// messages returns the "message" of each JSON log line of a run.
func messages(t *testing.T, logs string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		msg, _ := m["message"].(string)
		out = append(out, msg)
	}
	return out
}

// envLines returns the values of NAME=value messages.
func envLines(msgs []string) map[string][]string {
	out := map[string][]string{}
	for _, m := range msgs {
		for _, name := range []string{keys.PublicVar, keys.PrivateVar} {
			if v, ok := strings.CutPrefix(m, name+"="); ok {
				out[name] = append(out[name], v)
			}
		}
	}
	return out
}

func newHost(t *testing.T) (*runtimetest.Host, string) {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"testing", "production"} {
		if err := os.WriteFile(filepath.Join(dir, n+".yaml"), []byte("production: false\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dep := deployment.New("testing", false, nil)
	dep.Dir = dir
	return runtimetest.New(t, dep, Task()), dir
}

func runTask(t *testing.T, h *runtimetest.Host, params string) *runtime.Record {
	t.Helper()
	rec, err := h.Run(context.Background(), "generate_keys", json.RawMessage(params), nil)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestPrintsKeys(t *testing.T) {
	h, dir := newHost(t)
	for _, c := range []struct{ params, alg string }{{"", "RS256"}, {`{}`, "RS256"}, {`null`, "RS256"}, {`{"alg":"ES256"}`, "ES256"}, {`{"alg":"EdDSA"}`, "EdDSA"}} {
		rec := runTask(t, h, c.params)
		if rec.Outcome != runtime.Succeeded {
			t.Fatalf("%s: %s", c.params, rec.Error)
		}
		msgs := messages(t, rec.Logs)
		lines := envLines(msgs)
		if len(lines[keys.PublicVar]) != 1 || len(lines[keys.PrivateVar]) != 1 {
			t.Fatalf("%s: want one line of each, got %v", c.params, msgs)
		}
		all := strings.Join(msgs, "\n")
		if !strings.Contains(msgs[0], "DEVELOPMENT ONLY") || !strings.Contains(all, `"save":"production"`) || !strings.Contains(all, OpenSSL[c.alg]) {
			t.Errorf("the messages do not warn and tell how to make %s production keys: %q", c.alg, msgs)
		}
		// A console line adds 13 columns ("15:04:05 INF "): 87 fit 100.
		for _, m := range msgs {
			if len(m) > 87 && !strings.HasPrefix(m, "POWERSYNC_") {
				t.Errorf("a %d-byte message: %q", len(m), m)
			}
		}
		// The lines are exactly NAME=<standard base64>, and load.
		for _, v := range []string{lines[keys.PublicVar][0], lines[keys.PrivateVar][0]} {
			if _, err := base64.StdEncoding.DecodeString(v); err != nil {
				t.Errorf("not standard base64: %v", err)
			}
		}
		set, err := keys.New(lines[keys.PrivateVar][0], lines[keys.PublicVar][0])
		if err != nil {
			t.Fatal(err)
		}
		if set.SigningAlg() != c.alg {
			t.Errorf("%s: alg %s, want %s", c.params, set.SigningAlg(), c.alg)
		}
	}
	if _, err := os.Stat(deployment.LocalFile(dir, "testing")); err == nil {
		t.Error("a run without save wrote a file")
	}
}

func TestRefusesBadParams(t *testing.T) {
	h, _ := newHost(t)
	cases := []struct{ params, want string }{
		{`{"alg":"HS256"}`, "unsupported alg"},
		{`{"alg":"rs256"}`, "unsupported alg"},
		{`{"algo":"RS256"}`, "unknown field"},
		{`{"alg":1}`, "params"},
		{`[1]`, "JSON object"},
		{`"RS256"`, "JSON object"},
		{`{"save":"../etc"}`, "invalid deployment name"},
		{`{"save":"Prod"}`, "invalid deployment name"},
		{`{"save":"nosuch"}`, "unknown deployment"},
		{`{"rotate":true}`, `"rotate" needs "save"`},
		{`{"alg":"` + strings.Repeat("x", 5000) + `"}`, "unsupported alg"},
	}
	for _, c := range cases {
		rec := runTask(t, h, c.params)
		if rec.Outcome != runtime.Failed || !strings.Contains(rec.Error, c.want) {
			t.Errorf("%.40s: outcome %s error %q, want %q", c.params, rec.Outcome, rec.Error, c.want)
		}
		if len(rec.Error) > 400 {
			t.Errorf("%.40s: error of %d bytes echoes the input", c.params, len(rec.Error))
		}
		if len(envLines(messages(t, rec.Logs))) != 0 {
			t.Errorf("%.40s: printed keys", c.params)
		}
	}
}

func TestSaveAndRotate(t *testing.T) {
	h, dir := newHost(t)
	path := deployment.LocalFile(dir, "production")
	if err := os.WriteFile(path, []byte("# secrets\nMONGO_URI=mongodb://x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := runTask(t, h, `{"save":"production","alg":"ES256"}`)
	if rec.Outcome != runtime.Succeeded {
		t.Fatal(rec.Error)
	}
	env, err := deployment.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if env["MONGO_URI"] != "mongodb://x" {
		t.Error("other lines of the file were lost")
	}
	first, err := keys.New(env[keys.PrivateVar], env[keys.PublicVar])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rec.Logs, env[keys.PrivateVar]) || len(envLines(messages(t, rec.Logs))[keys.PrivateVar]) != 0 {
		t.Error("save printed the private key")
	}
	if !strings.Contains(rec.Logs, first.SigningKID()) {
		t.Error("save did not log the kid")
	}
	now := time.Now()
	oldTok, err := first.Sign(keys.Claims{Subject: "u", Audience: []string{"a"}, IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 60})
	if err != nil {
		t.Fatal(err)
	}

	// A second save would lose the key: refused without rotate.
	rec = runTask(t, h, `{"save":"production"}`)
	if rec.Outcome != runtime.Failed || !strings.Contains(rec.Error, "rotate") {
		t.Fatalf("second save: %s %q", rec.Outcome, rec.Error)
	}
	if after, _ := deployment.ReadEnvFile(path); after[keys.PrivateVar] != env[keys.PrivateVar] {
		t.Fatal("the refused save changed the file")
	}

	rec = runTask(t, h, `{"save":"production","rotate":true}`)
	if rec.Outcome != runtime.Succeeded {
		t.Fatal(rec.Error)
	}
	env2, _ := deployment.ReadEnvFile(path)
	rotated, err := keys.New(env2[keys.PrivateVar], env2[keys.PublicVar])
	if err != nil {
		t.Fatal(err)
	}
	kids := rotated.KIDs()
	if len(kids) != 2 || kids[1] != first.SigningKID() || rotated.SigningKID() != kids[0] || rotated.SigningAlg() != "RS256" {
		t.Fatalf("rotated kids %v signing %s", kids, rotated.SigningKID())
	}
	if _, _, err := pstest.Verify(rotated.JWKS(), oldTok, "a", now); err != nil {
		t.Errorf("a token signed before the rotation no longer verifies: %v", err)
	}
	newTok, _ := rotated.Sign(keys.Claims{Subject: "u", Audience: []string{"a"}, IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 60})
	if _, _, err := pstest.Verify(rotated.JWKS(), newTok, "a", now); err != nil {
		t.Error(err)
	}
}

func TestRotateBrokenFile(t *testing.T) {
	h, dir := newHost(t)
	path := deployment.LocalFile(dir, "testing")
	if err := os.WriteFile(path, []byte("POWERSYNC_PRIVATE_KEY=secret-garbage-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := runTask(t, h, `{"save":"testing","rotate":true}`)
	if rec.Outcome != runtime.Failed || !strings.Contains(rec.Error, "cannot be rotated") || strings.Contains(rec.Error+rec.Logs, "secret-garbage-value") {
		t.Errorf("outcome %s error %q", rec.Outcome, rec.Error)
	}
}

// The openssl advice makes a key of the run's algorithm that the keys
// package loads.
func TestOpenSSLAdvice(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	for alg, cmd := range OpenSSL {
		dir := t.TempDir()
		for _, line := range []string{cmd, "openssl pkey -in private.pem -pubout -out public.pem"} {
			args := strings.Fields(line)
			c := exec.Command(bin, args[1:]...)
			c.Dir = dir
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
		}
		priv, _ := os.ReadFile(filepath.Join(dir, "private.pem"))
		pub, _ := os.ReadFile(filepath.Join(dir, "public.pem"))
		set, err := keys.New(string(priv), string(pub))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if set.SigningAlg() != alg {
			t.Errorf("%s makes a %s key", cmd, set.SigningAlg())
		}
	}
}
