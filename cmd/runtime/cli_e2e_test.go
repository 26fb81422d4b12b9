package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const secretURI = "mongodb://app:s3cret-pw-e2e@127.0.0.1:9/app"

func TestTasksListing(t *testing.T) {
	r := run(t, project(t), nil, "tasks").must(t, 0)
	for _, want := range []string{"generate_keys", "on demand", "/jwks", "GET /token", "POST /upload", "POWERSYNC_URL"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tasks output lacks %q:\n%s", want, r.stdout)
		}
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var names []string
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, "(") {
			names = append(names, f[0])
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] > names[i] {
			t.Errorf("tasks are not sorted: %v", names)
		}
	}
}

// TestEnvMasksAndPrecedence: process environment > local file > yaml, each
// value's source shown, masked values never printed.
func TestEnvMasksAndPrecedence(t *testing.T) {
	root := project(t)
	os.WriteFile(filepath.Join(root, "deployments", "testing.local.env"),
		[]byte("# local secrets\nTOKEN_LIFETIME=7m\nPOWERSYNC_URL=http://from-local:8080\n"), 0o600)
	r := run(t, root, []string{"MONGO_URI=" + secretURI, "POWERSYNC_URL=http://from-env:8080", "UNRELATED_VAR=zzz"}, "env", "testing").must(t, 0)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`POWERSYNC_URL\s+http://from-env:8080\s+process`),
		regexp.MustCompile(`TOKEN_LIFETIME\s+7m\s+local`),
		regexp.MustCompile(`MONGO_DATABASE\s+powersync\s+file`),
		regexp.MustCompile(`MONGO_URI\s+\*{8}\s+process`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("env output does not match %s:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret-pw-e2e") || strings.Contains(r.stdout, "UNRELATED_VAR") {
		t.Errorf("env printed a secret or an unrelated process variable:\n%s", r.stdout)
	}
}

// TestRunGenerateKeysAndLogs runs the on-demand task, then reads its record
// back; the printed private key is not kept in the record.
func TestRunGenerateKeysAndLogs(t *testing.T) {
	root := project(t)
	r := run(t, root, nil, "test", "generate_keys").must(t, 0)
	m := regexp.MustCompile(`^POWERSYNC_PUBLIC_KEY=([A-Za-z0-9+/=]+)\nPOWERSYNC_PRIVATE_KEY=([A-Za-z0-9+/=]+)\n$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("stdout is not exactly the two key lines:\n%s", r.stdout)
	}
	raw, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil {
		t.Fatalf("public key is not standard base64: %v", err)
	}
	var jwk map[string]any
	if err := json.Unmarshal(raw, &jwk); err != nil || jwk["kty"] != "RSA" || jwk["alg"] != "RS256" || jwk["d"] != nil {
		t.Errorf("public JWK: %s (%v)", raw, err)
	}
	kid, _ := jwk["kid"].(string)
	if !regexp.MustCompile(`^powersync-[0-9a-f]{10}$`).MatchString(kid) {
		t.Errorf("kid %v", jwk["kid"])
	}
	for _, w := range []string{"DEVELOPMENT ONLY", "openssl genpkey -algorithm RSA", `"save":"production"`} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	// The task's console lines ("15:04:05 INF ...") fit 100 columns.
	for _, l := range strings.Split(r.stderr, "\n") {
		if regexp.MustCompile(`^\d\d:\d\d:\d\d [A-Z]{3} `).MatchString(l) && len(l) > 100 {
			t.Errorf("a %d-column line on stderr: %s", len(l), l)
		}
	}
	id := regexp.MustCompile(`run ([0-9a-f]{16}) of generate_keys succeeded`).FindStringSubmatch(r.stderr)
	if id == nil {
		t.Fatalf("no run summary:\n%s", r.stderr)
	}
	logs := run(t, root, nil, "logs", "generate_keys").must(t, 0)
	if !strings.Contains(logs.stdout, id[1]) || !strings.Contains(logs.stdout, kid) || !strings.Contains(logs.stdout, "succeeded") {
		t.Errorf("logs does not show the latest run:\n%s", logs.stdout)
	}
	run(t, root, nil, "logs", "generate_keys", "--run", id[1]).must(t, 0)
	run(t, root, nil, "logs", "generate_keys", "--run", "ffffffffffffffff").must(t, 1)

	// EdDSA: the advice is EdDSA's.
	ed := run(t, root, nil, "test", "generate_keys", "--params", `{"alg":"EdDSA"}`).must(t, 0)
	if !strings.Contains(ed.stderr, "openssl genpkey -algorithm ED25519") || strings.Contains(ed.stderr, "RSA") {
		t.Errorf("EdDSA advice:\n%s", ed.stderr)
	}

	bad := run(t, root, nil, "test", "generate_keys", "--params", `{"alg":"HS256"}`).must(t, 1)
	if !strings.Contains(bad.stdout+bad.stderr, "HS256") || bad.stdout != "" {
		t.Errorf("an unsupported algorithm should be named, on stderr:\n%s%s", bad.stdout, bad.stderr)
	}
	run(t, root, nil, "test", "generate_keys", "--params", `{not json`).must(t, 2)
	run(t, root, nil, "test", "jwks").must(t, 2) // HTTP only

	// MONGO_URI names a database that does not answer: the run still
	// happens and prints its output and logs; its record cannot be kept,
	// and the errors that say so never show the URI's password.
	env := []string{"MONGO_URI=" + secretURI + "?serverSelectionTimeoutMS=300&connectTimeoutMS=300"}
	down := run(t, root, env, "test", "generate_keys").must(t, 0)
	if !strings.Contains(down.stdout, "POWERSYNC_PRIVATE_KEY=") || !strings.Contains(down.stderr, "the run store does not answer") ||
		!strings.Contains(down.stderr, "dropped run records") {
		t.Errorf("a run with its store down:\nstdout:\n%s\nstderr:\n%s", down.stdout, down.stderr)
	}
	if strings.Contains(down.stdout+down.stderr, "s3cret-pw-e2e") {
		t.Error("the database's password shows in a run's output")
	}

	all := r.stderr + logs.stdout + bad.stdout + bad.stderr + ed.stderr + down.stderr
	files, _ := filepath.Glob(filepath.Join(root, ".runtime", "runs", "*", "*", "*.json"))
	records := ""
	for _, f := range files {
		b, _ := os.ReadFile(f)
		records += string(b)
	}
	if len(files) != 3 {
		t.Errorf("run records: %v (want the 3 runs without MONGO_URI)", files)
	}
	if strings.Contains(all+records, m[2]) {
		t.Error("the private key is in the logs or a record")
	}
}

// generate_keys' standard output, appended to a deployment's local file,
// is the key pair that deployment then serves.
func TestGenerateKeysIntoLocalEnv(t *testing.T) {
	root := project(t)
	gen := run(t, root, nil, "test", "generate_keys", "--params", `{"alg":"ES256"}`).must(t, 0)
	local := filepath.Join(root, "deployments", "testing.local.env")
	f, err := os.OpenFile(local, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600) // the shell's >>
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(gen.stdout)
	f.Close()
	pub := regexp.MustCompile(`(?m)^POWERSYNC_PUBLIC_KEY=(\S+)$`).FindStringSubmatch(gen.stdout)
	if pub == nil {
		t.Fatalf("stdout: %q", gen.stdout)
	}
	raw, _ := base64.StdEncoding.DecodeString(pub[1])
	var jwk struct{ Kid string }
	json.Unmarshal(raw, &jwk)

	s := deploy(t, root, "testing", "UPLOAD_AUTH=off")
	defer s.stop(t)
	var jwks struct{ Keys []struct{ Kid, Alg string } }
	getJSON(t, s.url+"/jwks", &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0].Kid != jwk.Kid || jwks.Keys[0].Alg != "ES256" {
		t.Errorf("jwks %+v, want the generated %s", jwks, jwk.Kid)
	}
	if strings.Contains(s.logs.String(), "DEVELOPMENT KEYS") {
		t.Error("the deployment generated its own keys instead of serving the pasted ones")
	}
}

// The shipped production deployment, unfilled, reports every problem in
// one message: its placeholders, the keys and MONGO_URI.
func TestProductionProblemsAtOnce(t *testing.T) {
	root := project(t)
	r := run(t, root, nil, "deploy", "production", "--listen", "127.0.0.1:0").must(t, 1)
	for _, want := range []string{
		`deployment "production" cannot start`,
		"placeholder values", "TOKEN_IDP_ISSUER=https://YOUR-TENANT.example/", "POWERSYNC_URL=https://YOUR-INSTANCE",
		"neither POWERSYNC_PRIVATE_KEY nor POWERSYNC_PUBLIC_KEY",
		"MONGO_URI is unset",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	// A misspelled key: the file, the line, the closest key.
	os.WriteFile(filepath.Join(root, "deployments", "typo.yaml"), []byte("production: false\nlistn: 127.0.0.1:0\n"), 0o644)
	r = run(t, root, nil, "env", "typo").must(t, 1)
	if !strings.Contains(r.stderr, filepath.Join("deployments", "typo.yaml")+`:2: unknown key "listn" (did you mean listen?)`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}
