package keys_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// loader is a task whose Init loads the keys into *got.
func loader(name string, got **keys.Set) runtime.Task {
	return runtime.Task{
		Name: name,
		Run:  func(context.Context, *runtime.Env) error { return nil },
		Vars: keys.Vars,
		Init: func(ctx context.Context, s *runtime.Setup) error {
			set, err := keys.Load(s)
			*got = set
			return err
		},
	}
}

func TestLoadGeneratesDevelopmentKeys(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "testing.yaml"), []byte("production: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dep := deployment.New("testing", false, nil)
	dep.Dir = dir
	var a, b *keys.Set
	h := runtimetest.New(t, dep, loader("one", &a), loader("two", &b))
	if a == nil || a != b {
		t.Fatalf("the two tasks got different sets: %p %p", a, b)
	}
	if !a.Generated || !a.CanSign() || a.SigningAlg() != "RS256" {
		t.Fatalf("generated=%t canSign=%t alg=%s", a.Generated, a.CanSign(), a.SigningAlg())
	}
	path := deployment.LocalFile(dir, "testing")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("local file mode %v, want 0600", st.Mode().Perm())
	}
	env, err := deployment.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	priv := env[keys.PrivateVar]
	if priv == "" || env[keys.PublicVar] == "" {
		t.Fatalf("local file holds %v", env)
	}
	logs := h.Logs.String()
	if !strings.Contains(logs, "DEVELOPMENT KEYS") || !strings.Contains(logs, a.SigningKID()) || strings.Count(logs, "DEVELOPMENT KEYS") != 1 {
		t.Errorf("the log does not announce the generated keys once by kid:\n%s", logs)
	}
	raw, _ := base64.StdEncoding.DecodeString(priv)
	var jwk map[string]string
	_ = json.Unmarshal(raw, &jwk)
	for _, secret := range []string{priv, jwk["d"], jwk["p"]} {
		if secret == "" || strings.Contains(logs, secret[:20]) {
			t.Errorf("the log holds the private key")
		}
	}

	// The next start reads the saved pair instead of generating another.
	dep2, err := deployment.Load(dir, "testing", deployment.Options{Secret: []string{keys.PrivateVar}})
	if err != nil {
		t.Fatal(err)
	}
	var c *keys.Set
	runtimetest.New(t, dep2, loader("three", &c))
	if c.Generated || c.SigningKID() != a.SigningKID() {
		t.Errorf("second start: generated=%t kid %s, want %s", c.Generated, c.SigningKID(), a.SigningKID())
	}
	tok, err := a.Sign(keys.Claims{Subject: "u", Audience: []string{"x"}, IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Unix() + 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(tok, "x", time.Now()); err != nil {
		t.Errorf("a token of the first start does not verify after a restart: %v", err)
	}
}

func TestLoadRefusals(t *testing.T) {
	priv, pub, _, err := keys.Generate("EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	priv2, _, _, _ := keys.Generate("EdDSA")
	cases := []struct {
		name       string
		production bool
		vars       map[string]string
		want       []string
	}{
		{"production without keys", true, nil, []string{keys.PrivateVar, keys.PublicVar, "generate_keys"}},
		{"mismatched pair", false, map[string]string{keys.PrivateVar: priv2, keys.PublicVar: pub}, []string{keys.PrivateVar, "matches none"}},
		{"garbage public", true, map[string]string{keys.PrivateVar: priv, keys.PublicVar: "garbage-value-xyz"}, []string{keys.PublicVar}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dep := deployment.New("d", c.production, c.vars, keys.PrivateVar)
			var got *keys.Set
			h, err := runtimetest.Start(t, dep, loader("one", &got))
			if err == nil {
				t.Fatal("started")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, v := range c.vars {
				if strings.Contains(err.Error(), v[:16]) || strings.Contains(h.Logs.String(), v[:16]) {
					t.Errorf("a value leaked: %v", err)
				}
			}
			if _, statErr := os.Stat(deployment.LocalFile(dep.Dir, "d")); statErr == nil {
				t.Error("keys were generated")
			}
		})
	}
}

func TestLoadPublicOnly(t *testing.T) {
	_, pub, kid, err := keys.Generate("ES256")
	if err != nil {
		t.Fatal(err)
	}
	var got *keys.Set
	runtimetest.New(t, deployment.New("prod", true, map[string]string{keys.PublicVar: pub}), loader("one", &got))
	if got.CanSign() || got.KIDs()[0] != kid {
		t.Errorf("canSign=%t kids %v", got.CanSign(), got.KIDs())
	}
	if _, err := got.Sign(keys.Claims{Subject: "u", Audience: []string{"x"}, IssuedAt: 1, ExpiresAt: 2}); err != keys.ErrNoPrivateKey {
		t.Errorf("Sign: %v", err)
	}
}
