package deployment_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime/deployment"
)

func loadYAML(t *testing.T, yaml string) (*deployment.Deployment, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "d.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return deployment.Load(dir, "d", deployment.Options{})
}

func TestCORSOrigins(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want []string
		err  string
	}{
		{"production: false\n", deployment.DevelopmentOrigins(), ""},
		{"production: true\n", nil, ""},
		{"production: true\ncors_origins: [https://app.example.com, \"http://localhost:*\"]\n", []string{"https://app.example.com", "http://localhost:*"}, ""},
		{"production: false\ncors_origins: []\n", nil, ""},
		{"cors_origins: [\"*\"]\n", []string{"*"}, ""},
		{"cors_origins: [\"*\"]\ncors_credentials: true\n", nil, `"*" with cors_credentials`},
		{"cors_origins: [\"https://*.example.com\"]\n", nil, "only the port may be *"},
		{"cors_origins: [\"https://example.com:*\"]\n", nil, "only for localhost"},
		{"cors_origins: [\"https://example.com/app\"]\n", nil, "nothing else"},
		{"cors_origins: [\"ftp://example.com\"]\n", nil, "http or https"},
		{"cors_origins: [\"https://Example.com\"]\n", nil, "lower case"},
	} {
		d, err := loadYAML(t, tt.yaml)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
			continue
		}
		if !slices.Equal(d.CORSOrigins, tt.want) {
			t.Errorf("%q: origins %q, want %q", tt.yaml, d.CORSOrigins, tt.want)
		}
	}
}

func TestOriginAllowed(t *testing.T) {
	list := []string{"https://app.example.com", "http://localhost:*"}
	for origin, want := range map[string]bool{
		"https://app.example.com":      true,
		"http://app.example.com":       false,
		"https://app.example.com:8443": false,
		"http://localhost:3000":        true,
		"http://localhost":             false,
		"http://localhost:":            false,
		"http://localhost:3000x":       false,
		"http://localhost:123456":      false,
		"http://localhost.evil.com:80": false,
		"null":                         false,
	} {
		if got := deployment.OriginAllowed(list, origin); got != want {
			t.Errorf("OriginAllowed(%q) = %t, want %t", origin, got, want)
		}
	}
	if !deployment.OriginAllowed([]string{"*"}, "https://any.example") {
		t.Error(`"*" does not allow an origin`)
	}
}

func TestBodyReadTimeout(t *testing.T) {
	d, err := loadYAML(t, "body_read_timeout: 2s\n")
	if err != nil || d.BodyReadTimeout != 2*time.Second {
		t.Fatalf("%v %v", d, err)
	}
	if d, _ := loadYAML(t, "production: false\n"); d.BodyReadTimeout != deployment.DefaultBodyReadTimeout {
		t.Errorf("default %s", d.BodyReadTimeout)
	}
	if _, err := loadYAML(t, "body_read_timeout: soon\n"); err == nil || !strings.Contains(err.Error(), "body_read_timeout") {
		t.Errorf("bad body_read_timeout: %v", err)
	}
}
