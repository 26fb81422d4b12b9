package deployment_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// Unknown keys are named with the file, the line and the closest known
// key, all of them in one error.
func TestUnknownKeys(t *testing.T) {
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"unknown-key", []string{filepath.Join(testdata, "unknown-key.yaml") + `:2: unknown key "listen_addr" (did you mean listen?); known keys: body_limit, `}},
		{"unknown-var-key", []string{filepath.Join(testdata, "unknown-var-key.yaml") + `:4: vars[0]: unknown key "secret" (did you mean masked?); known keys: masked, name, value`}},
	} {
		_, err := deployment.Load(testdata, tt.name, deployment.Options{})
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Load(%s) = %v, want %s", tt.name, err, w)
			}
		}
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.yaml"), []byte("production: false\nlistn: 127.0.0.1:1\nShutdown_Grace: 5s\nruns:\n  retension: 1h\nvars:\n  - name: A\n    valeu: b\n  - nmae: C\nbodylimit: 1MB\n"), 0o644)
	_, err := deployment.Load(dir, "x", deployment.Options{})
	if err == nil {
		t.Fatal("accepted")
	}
	file := filepath.Join(dir, "x.yaml")
	for _, w := range []string{
		file + `:2: unknown key "listn" (did you mean listen?)`,
		file + `:5: runs: unknown key "retension" (did you mean retention?)`,
		file + `:8: vars[0]: unknown key "valeu" (did you mean value?)`,
		file + `:9: vars[1]: unknown key "nmae" (did you mean name?)`,
		file + `:10: unknown key "bodylimit" (did you mean body_limit?)`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "Shutdown_Grace") || strings.Contains(err.Error(), "invalid keys") {
		t.Errorf("a key in another case (viper accepts it) or viper's message:\n%v", err)
	}
}

func TestPlaceholders(t *testing.T) {
	for v, want := range map[string]bool{
		"https://YOUR-TENANT.example/": true,
		"YOUR-APP":                     true,
		"your_key_here":                true,
		"https://idp.example.com/.well-known/jwks.json":    true,
		"http://example.org":                               true,
		"https://tenant.example":                           true,
		"https://auth.mycompany.com/.well-known/jwks.json": false,
		"https://examples.com/":                            false,
		"example":                                          false, // not a URL: could be a real word
		"15m":                                              false,
		"":                                                 false,
	} {
		if got := deployment.IsPlaceholder(v); got != want {
			t.Errorf("IsPlaceholder(%q) = %t", v, got)
		}
	}
	d := deployment.New("p", true, map[string]string{"A": "https://YOUR-X.example/", "B": "real", "KEY": "YOUR-KEY"}, "KEY")
	d.URL = "https://api.example.com"
	if got := strings.Join(d.Placeholders([]string{"A", "B", "KEY"}, true), " | "); got != "url=https://api.example.com | A=https://YOUR-X.example/ | KEY" {
		t.Errorf("Placeholders = %s", got)
	}
	if got := d.Placeholders([]string{"B"}, false); len(got) != 0 {
		t.Errorf("Placeholders of B alone = %v", got)
	}
}
