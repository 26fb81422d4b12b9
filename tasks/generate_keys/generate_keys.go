// Package generate_keys makes a key pair for PowerSync tokens. It is run on
// demand, never served:
//
//	runtime test generate_keys [--params '{"alg":"ES256"}']
//
// It writes two lines to the run's output (env.Output: `runtime test`'s
// standard output, its logs going to standard error), ready to append to a
// deployment's local file:
//
//	runtime test generate_keys >> deployments/staging.local.env
//
//	POWERSYNC_PUBLIC_KEY=<base64 of the public JWK>
//	POWERSYNC_PRIVATE_KEY=<base64 of the private JWK>
//
// in the format of PowerSync's own key generator (see keys.Generate), with
// kid "powersync-<10 hex>" and "use":"sig". Printed keys are for
// development only: a terminal's scrollback is shared, and a run without an
// output (the dashboard) logs the lines into its record.
//
// Parameters (JSON, all optional):
//
//   - "alg": "RS256" (default, RSA 2048), "ES256" (P-256) or "EdDSA"
//     (Ed25519). ES256 and EdDSA sign tokens many times faster than RS256.
//   - "save": a deployment name. The pair is written into that deployment's
//     git-ignored deployments/<save>.local.env instead, and the private key
//     is not printed. This is the way to make production keys: run it on a
//     trusted machine, then copy the two lines to the production secrets.
//   - "rotate": true, with "save", when the file already holds keys: the new
//     private key replaces the old one and the new public key is served
//     first, followed by the old public key(s), so tokens signed before the
//     rotation still verify. Drop the old key from POWERSYNC_PUBLIC_KEY once
//     the longest token lifetime has passed.
//
// It reads no deployment variables.
package generate_keys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Task registers generate_keys; tasks/all.go lists it.
func Task() runtime.Task {
	return runtime.Task{
		Name:        "generate_keys",
		Description: "make a PowerSync signing key pair (params: alg RS256|ES256|EdDSA, save <deployment>, rotate)",
		Run:         run,
	}
}

// Params are the run's parameters.
type Params struct {
	Alg    string `json:"alg"`
	Save   string `json:"save"`
	Rotate bool   `json:"rotate"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// OpenSSL is, by alg, the openssl command that makes the same kind of
// private key as a PEM file (keys.New reads PKCS#8 PEM).
var OpenSSL = map[string]string{
	"RS256": "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out private.pem",
	"ES256": "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out private.pem",
	"EdDSA": "openssl genpkey -algorithm ED25519 -out private.pem",
}

// productionHint says, in lines short enough for a terminal, how to make
// keys of alg that are never printed.
func productionHint(alg string) []string {
	return []string{
		"for production, make the keys where they are used and never print the private one:",
		`  runtime test generate_keys --params '{"alg":"` + alg + `","save":"production"}'`,
		"  writes both into the git-ignored deployments/production.local.env; or with openssl:",
		"  " + OpenSSL[alg],
		"  openssl pkey -in private.pem -pubout -out public.pem",
		"  then set " + keys.PrivateVar + " to the contents of private.pem",
		"  and " + keys.PublicVar + " to those of public.pem",
	}
}

func parseParams(raw json.RawMessage) (Params, error) {
	p := Params{Alg: "RS256"}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	if raw[0] != '{' {
		return p, errors.New(`params must be a JSON object such as {"alg":"ES256"}`)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf(`params: %v (known: "alg", "save", "rotate")`, err)
	}
	if dec.More() {
		return p, errors.New("params: trailing data after the JSON object")
	}
	if p.Alg == "" {
		p.Alg = "RS256"
	}
	ok := false
	for _, a := range keys.GenerateAlgs {
		ok = ok || a == p.Alg
	}
	if !ok {
		return p, fmt.Errorf("params: unsupported alg %q (want one of %s)", clip(p.Alg), strings.Join(keys.GenerateAlgs, ", "))
	}
	if p.Save != "" && !nameRE.MatchString(p.Save) {
		return p, fmt.Errorf("params: save: invalid deployment name %q (want %s)", clip(p.Save), nameRE)
	}
	if p.Rotate && p.Save == "" {
		return p, errors.New(`params: "rotate" needs "save"`)
	}
	return p, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

func run(ctx context.Context, env *runtime.Env) error {
	p, err := parseParams(env.Params)
	if err != nil {
		return err
	}
	if p.Save != "" {
		return save(env, p)
	}
	priv, pub, kid, err := keys.Generate(p.Alg)
	if err != nil {
		return err
	}
	env.Log.Warn().Msg("DEVELOPMENT ONLY: this prints a private key that anyone who sees it can use")
	for _, l := range productionHint(p.Alg) {
		env.Log.Info().Msg(l)
	}
	if _, err := fmt.Fprintf(env.Output, "%s=%s\n%s=%s\n", keys.PublicVar, pub, keys.PrivateVar, priv); err != nil {
		return fmt.Errorf("writing the keys: %w", err)
	}
	env.Log.Info().Str("kid", kid).Str("alg", p.Alg).Msg("append both lines to deployments/<name>.local.env")
	return ctx.Err()
}

func save(env *runtime.Env, p Params) error {
	dir := env.Deployment.Dir
	if dir == "" {
		return errors.New("save: the deployments folder is unknown")
	}
	if _, err := os.Stat(filepath.Join(dir, p.Save+".yaml")); err != nil {
		known := deployment.Known(dir)
		return fmt.Errorf("save: unknown deployment %q (known: %s)", p.Save, strings.Join(known, ", "))
	}
	path := deployment.LocalFile(dir, p.Save)
	old, err := deployment.ReadEnvFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save: %w", err)
	}
	oldPriv, oldPub := strings.TrimSpace(old[keys.PrivateVar]), strings.TrimSpace(old[keys.PublicVar])
	if (oldPriv != "" || oldPub != "") && !p.Rotate {
		return fmt.Errorf(`save: %s already holds %s or %s; replacing them would invalidate every token signed so far. Pass "rotate": true to add a new key and keep serving the old public key`,
			path, keys.PrivateVar, keys.PublicVar)
	}
	priv, pub, kid, err := keys.Generate(p.Alg)
	if err != nil {
		return err
	}
	newPub := pub
	var oldKIDs []string
	if p.Rotate && (oldPriv != "" || oldPub != "") {
		// Keep serving the old public keys; check they parse first.
		oldSet, err := keys.New(oldPriv, oldPub)
		if err != nil {
			return fmt.Errorf("save: the keys in %s do not load, so they cannot be rotated: %w", path, err)
		}
		oldKIDs = oldSet.KIDs()
		if oldPub == "" {
			oldPub = oldPublicOf(oldSet)
		}
		newPub = pub + "," + oldPub
	}
	if _, err := keys.New(priv, newPub); err != nil {
		return fmt.Errorf("save: the new key set does not load: %w", err)
	}
	if err := deployment.AppendEnvFile(path, map[string]string{keys.PrivateVar: priv, keys.PublicVar: newPub}); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	ev := env.Log.Info().Str("kid", kid).Str("alg", p.Alg).Str("file", path)
	if len(oldKIDs) > 0 {
		ev = ev.Strs("still_served", oldKIDs)
	}
	ev.Msg("saved a new key pair in the deployment's git-ignored local file; the private key is not printed. Keep that file out of version control and copy it to the deployment's secrets")
	if _, err := fmt.Fprintf(env.Output, "%s=%s\n", keys.PublicVar, newPub); err != nil {
		return fmt.Errorf("writing the public key: %w", err)
	}
	return nil
}

// oldPublicOf returns base64 of the JWKS of a set, for rotating a file that
// held only a private key.
func oldPublicOf(s *keys.Set) string {
	return base64.StdEncoding.EncodeToString(s.JWKS())
}
