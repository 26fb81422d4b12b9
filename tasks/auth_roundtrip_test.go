package tasks_test

// This test crosses tasks on purpose, which is why it lives in package tasks:
// keys printed by generate_keys, pasted
// into a deployment, must serve a JWKS (jwks) and tokens (token) that the
// PowerSync service accepts.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/keys/pstest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
	"github.com/taskrun/taskrun/tasks/generate_keys"
	"github.com/taskrun/taskrun/tasks/jwks"
	"github.com/taskrun/taskrun/tasks/token"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, params := range []string{"", `{"alg":"ES256"}`, `{"alg":"EdDSA"}`} {
		dir := t.TempDir()
		yaml := "production: false\nvars:\n  - name: POWERSYNC_URL\n    value: https://rt.powersync.example\n"
		if err := os.WriteFile(filepath.Join(dir, "testing.yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		gen := deployment.New("testing", false, nil)
		gen.Dir = dir
		g := runtimetest.New(t, gen, generate_keys.Task())
		rec, err := g.Run(context.Background(), "generate_keys", json.RawMessage(params), nil)
		if err != nil || rec.Outcome != runtime.Succeeded {
			t.Fatalf("generate_keys %s: %v %s", params, err, rec.Error)
		}
		// Paste the two printed lines into the deployment's local file.
		var pasted []string
		for _, line := range strings.Split(strings.TrimSpace(rec.Logs), "\n") {
			var m map[string]any
			_ = json.Unmarshal([]byte(line), &m)
			msg, _ := m["message"].(string)
			if strings.HasPrefix(msg, keys.PublicVar+"=") || strings.HasPrefix(msg, keys.PrivateVar+"=") {
				pasted = append(pasted, msg)
			}
		}
		if len(pasted) != 2 {
			t.Fatalf("printed lines: %v", pasted)
		}
		if err := os.WriteFile(deployment.LocalFile(dir, "testing"), []byte(strings.Join(pasted, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		dep, err := deployment.Load(dir, "testing", deployment.Options{Secret: []string{keys.PrivateVar}})
		if err != nil {
			t.Fatal(err)
		}
		h := runtimetest.New(t, dep, jwks.Task(), token.Task())
		if strings.Contains(h.Logs.String(), "DEVELOPMENT KEYS") {
			t.Fatal("the pasted keys were not used")
		}
		resp := h.Do(http.MethodGet, "/jwks", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || strings.Contains(string(body), `"d"`) {
			t.Fatalf("jwks: %d %s", resp.StatusCode, body)
		}
		var tr struct {
			Token        string `json:"token"`
			PowerSyncURL string `json:"powersync_url"`
		}
		runtimetest.JSON(t, h.Do(http.MethodGet, "/token?user_id=round%20trip", nil), &tr)
		hdr, claims, err := pstest.Verify(body, tr.Token, "https://rt.powersync.example", time.Now())
		if err != nil {
			t.Fatalf("%s: the PowerSync check refuses the token: %v", params, err)
		}
		if claims["sub"] != "round trip" || tr.PowerSyncURL != "https://rt.powersync.example" || !strings.Contains(rec.Logs, hdr["kid"].(string)) {
			t.Errorf("%s: header %v claims %v", params, hdr, claims)
		}
		if priv := strings.TrimPrefix(pasted[1], keys.PrivateVar+"="); strings.Contains(h.Logs.String(), priv[:40]) {
			t.Error("the deployment logged the private key")
		}
	}
}
