package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// Secrets of the shapes this project keeps: a URI with a password, a PEM
// key (newlines), a JWK (quotes), a token (plain). Each has a distinctive
// fragment that must never appear in any output, in any encoding.
var secrets = []struct {
	name, value, fragment string
}{
	{"MONGO_URI", "mongodb://admin:Sup3rS3cretPass@db.internal:27017/app", "Sup3rS3cretPass"},
	{"PRIVATE_PEM", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"},
	{"JWK", `{"kty":"oct","kid":"k1","k":"c2VjcmV0LWtleS1ieXRlcy1mb3ItaG1hYw"}`, "c2VjcmV0LWtleS1ieXRlcy1mb3ItaG1hYw"},
	{"API_TOKEN", `tok_Zx9"back\slash'quote`, "tok_Zx9"},
}

func secretDep() *deployment.Deployment {
	vars := map[string]string{"PUBLIC_URL": "https://example.test"}
	var names []string
	for _, s := range secrets {
		vars[s.name] = s.value
		names = append(names, s.name)
	}
	return deployment.New("testing", false, vars, names...)
}

func secretVars() []runtime.Var {
	var out []runtime.Var
	for _, s := range secrets {
		out = append(out, runtime.Var{Name: s.name, Secret: true})
	}
	return out
}

// leakyTask does everything a careless task might do with its secrets.
func leakyTask() runtime.Task {
	all := func(env *runtime.Env) string {
		var b strings.Builder
		for _, s := range secrets {
			b.WriteString(env.Var(s.name) + " ")
		}
		return b.String()
	}
	logAll := func(env *runtime.Env) {
		for _, s := range secrets {
			v := env.Var(s.name)
			env.Log.Info().Str("value", v).Msg("using " + v)
			env.Log.Info().Interface("var", env.Deployment.Var(s.name)).Msg("the var")
			env.Log.Info().Str("quoted", fmt.Sprintf("%q", v)).Err(errors.New(v)).Msg("error " + v)
		}
		env.Log.Info().Stringer("deployment", env.Deployment).Msg("deployment")
		env.Log.Info().Str("gostring", fmt.Sprintf("%#v", env.Deployment)).Msg("deployment")
	}
	return runtime.Task{
		Name:   "leaky",
		Access: runtime.Public,
		Vars:   secretVars(),
		Init: func(ctx context.Context, s *runtime.Setup) error {
			for _, sec := range secrets {
				s.Log.Info().Str("value", s.Deployment.Get(sec.name)).Msg("init")
			}
			return nil
		},
		HTTP: map[string]runtime.HTTPFunc{
			http.MethodGet: func(c echo.Context, env *runtime.Env) error {
				logAll(env)
				switch c.QueryParam("do") {
				case "panic":
					panic("cannot use " + all(env))
				case "client":
					return runtime.BadRequest("the key %s is wrong", all(env)).With("key", all(env))
				case "unavailable":
					return runtime.Unavailable(1, errors.New(all(env)), "down: %s", all(env))
				}
				return fmt.Errorf("connecting with %s: %w", all(env), errors.New("refused"))
			},
		},
		Run: func(ctx context.Context, env *runtime.Env) error {
			logAll(env)
			switch string(env.Params) {
			case `"panic"`:
				panic(errors.New("cannot use " + all(env)))
			case `"client"`:
				return runtime.BadRequest("the key %s is wrong", all(env))
			}
			return fmt.Errorf("connecting with %s: %w", all(env), errors.New("refused"))
		},
	}
}

// assertNoSecret fails if any secret, raw or in any encoding a log or an
// error may give it, is in out.
func assertNoSecret(t *testing.T, where, out string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s.fragment) {
			i := strings.Index(out, s.fragment)
			lo, hi := max(0, i-80), min(len(out), i+80)
			t.Errorf("%s contains the secret %s: ...%s...", where, s.name, out[lo:hi])
		}
	}
}

func TestSecretsNeverInServedRequests(t *testing.T) {
	for _, do := range []string{"error", "panic", "client", "unavailable"} {
		t.Run(do, func(t *testing.T) {
			h := runtimetest.New(t, secretDep(), leakyTask())
			resp := h.Do("GET", "/leaky?do="+do, nil)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode < 400 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var hdr bytes.Buffer
			_ = resp.Header.Write(&hdr)
			assertNoSecret(t, "the response body", string(b))
			assertNoSecret(t, "the response headers", hdr.String())
			logs := h.Logs.String()
			assertNoSecret(t, "the logs", logs)
			if !strings.Contains(logs, deployment.Mask) {
				t.Errorf("the logs show no mask at all: the test does not test anything\n%s", logs)
			}
			if !strings.Contains(logs, "example.test") && do == "error" {
				t.Log("(public values are not required in the logs)")
			}
		})
	}
}

func TestSecretsNeverInRuns(t *testing.T) {
	for _, params := range []string{`"error"`, `"panic"`, `"client"`} {
		t.Run(params, func(t *testing.T) {
			h := runtimetest.New(t, secretDep(), leakyTask())
			var term bytes.Buffer
			rec, err := h.Run(context.Background(), "leaky", []byte(params), &term)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Outcome != runtime.Failed {
				t.Fatalf("outcome %s", rec.Outcome)
			}
			assertNoSecret(t, "the run's logs", rec.Logs)
			assertNoSecret(t, "the run's error", rec.Error)
			assertNoSecret(t, "the terminal", term.String())
			assertNoSecret(t, "the host's logs", h.Logs.String())
			var printed bytes.Buffer
			rec.Print(&printed)
			assertNoSecret(t, "the printed record", printed.String())
			if !strings.Contains(rec.Logs, deployment.Mask) {
				t.Errorf("no mask in the run's logs: the test does not test anything\n%s", rec.Logs)
			}
		})
	}
}

func TestSecretsNeverInSavedRecords(t *testing.T) {
	reg, err := runtime.NewRegistry(leakyTask())
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	var logs bytes.Buffer
	dep := secretDep()
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(&logs, dep.Secrets()), StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	if _, err := h.Run(context.Background(), "leaky", []byte(`"panic"`), nil); err != nil {
		t.Fatal(err)
	}
	err = filepath.Walk(state, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		assertNoSecret(t, path, string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "the host's logs", logs.String())
}

func TestRedact(t *testing.T) {
	uri := "mongodb://u:pw1234@h/db?a=1&b=<2>"
	tests := []struct {
		name, in, want string
	}{
		{"raw, twice", "x longsecret y longsecret\n", "x ******** y ********\n"},
		{"shorter than 6 bytes stays", "short stays: short\n", "short stays: short\n"},
		{"JSON-escaped", `{"v":"a\"b\\c\nd-quoted"}` + "\n", `{"v":"********"}` + "\n"},
		{"Go-quoted", fmt.Sprintf("err: %q\n", "a\"b\\c\nd-quoted"), "err: \"********\"\n"},
		{"Go-quoted then JSON-escaped", mustMarshal(fmt.Sprintf("%q", "a\"b\\c\nd-quoted")), `"\"********\""`},
		{"HTML-escaped by encoding/json", mustMarshal(uri), `"********"`},
		{"raw URI", uri, "********"},
		{"no secret", "nothing here\n", "nothing here\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := runtime.Redact(&out, []string{"longsecret", "short", "", "a\"b\\c\nd-quoted", uri})
			n, err := w.Write([]byte(tt.in))
			if err != nil || n != len(tt.in) {
				t.Errorf("Write = %d, %v; want %d", n, err, len(tt.in))
			}
			if out.String() != tt.want {
				t.Errorf("got %q, want %q", out.String(), tt.want)
			}
			if got := runtime.RedactString(tt.in, []string{"longsecret", "a\"b\\c\nd-quoted", uri}); got != tt.want {
				t.Errorf("RedactString = %q, want %q", got, tt.want)
			}
		})
	}
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Write must not change the caller's buffer (io.Writer's contract).
func TestRedactLeavesTheBufferAlone(t *testing.T) {
	p := []byte("a longsecret b")
	w := runtime.Redact(io.Discard, []string{"longsecret"})
	_, _ = w.Write(p)
	if string(p) != "a longsecret b" {
		t.Errorf("buffer changed to %q", p)
	}
}

func TestNewLoggerWritesJSONLines(t *testing.T) {
	var out bytes.Buffer
	log := runtime.NewLogger(&out, []string{"topsecret"})
	log.Info().Str("k", "topsecret").Msg("hello")
	lines := logLines(t, out.String())
	if len(lines) != 1 || lines[0]["message"] != "hello" || lines[0]["k"] != deployment.Mask || lines[0]["time"] == nil {
		t.Errorf("log %q", out.String())
	}
	var console bytes.Buffer
	cw := runtime.Console(&console)
	_, _ = cw.Write([]byte(`{"level":"info","task":"t","run_id":"r","x":1,"time":"2030-01-01T00:00:00Z","message":"hi"}` + "\n"))
	if got := console.String(); !strings.Contains(got, "INF hi x=1") || strings.Contains(got, "\x1b[") || strings.Contains(got, "run_id") {
		t.Errorf("console %q", got)
	}
}
