package deployment_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime/deployment"
)

const testdata = "testdata"

func load(t *testing.T, name string, opts deployment.Options) *deployment.Deployment {
	t.Helper()
	d, err := deployment.Load(testdata, name, opts)
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return d
}

func TestLoadSettings(t *testing.T) {
	d := load(t, "full", deployment.Options{})
	if d.Name != "full" || !d.Production || d.Listen != "0.0.0.0:9090" || d.URL != "https://tasks.example.test" ||
		d.BodyLimit != 512<<10 || d.Grace != 3*time.Second || d.RequestTimeout != 7*time.Second || d.Dir != testdata ||
		d.RunRetention != 72*time.Hour || d.RunsPerTask != 50 {
		t.Errorf("settings: %+v", *d)
	}
	if d.LocalFile() != filepath.Join(testdata, "full.local.env") {
		t.Errorf("LocalFile() = %s", d.LocalFile())
	}
}

func TestLoadDefaults(t *testing.T) {
	d := load(t, "minimal", deployment.Options{})
	if d.Production || d.Listen != deployment.DefaultListen || d.URL != "" ||
		d.BodyLimit != deployment.DefaultBodyLimit || d.Grace != deployment.DefaultGrace || d.RunRetention != 0 || d.RunsPerTask != 0 {
		t.Errorf("defaults: %+v", *d)
	}
	if deployment.DefaultBodyLimit != 5<<20 || deployment.DefaultListen != "127.0.0.1:8080" {
		t.Error("the documented defaults changed")
	}
	if len(d.Vars()) != 0 {
		t.Errorf("vars %v", d.Vars())
	}
}

func TestLoadBodyLimitAndGrace(t *testing.T) {
	tests := []struct {
		limit, grace string
		wantLimit    int64
		wantGrace    time.Duration
		wantErr      string
	}{
		{"1MB", "0s", 1 << 20, 0, ""},
		{"100", "250ms", 100, 250 * time.Millisecond, ""},
		{"2 kb", "1m", 2 << 10, time.Minute, ""},
		{"1GB", "", 1 << 30, deployment.DefaultGrace, ""},
		{"0", "", 0, 0, "body_limit"},
		{"-5MB", "", 0, 0, "body_limit"},
		{"5TB", "", 0, 0, "body_limit"},
		{"", "-1s", 0, 0, "shutdown_grace"},
		{"", "10", 0, 0, "shutdown_grace"},
	}
	for _, tt := range tests {
		t.Run(tt.limit+"/"+tt.grace, func(t *testing.T) {
			dir := t.TempDir()
			y := "vars: []\n"
			if tt.limit != "" {
				y += fmt.Sprintf("body_limit: %q\n", tt.limit)
			}
			if tt.grace != "" {
				y += fmt.Sprintf("shutdown_grace: %q\n", tt.grace)
			}
			writeFile(t, filepath.Join(dir, "d.yaml"), y)
			d, err := deployment.Load(dir, "d", deployment.Options{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.limit != "" && d.BodyLimit != tt.wantLimit {
				t.Errorf("BodyLimit %d, want %d", d.BodyLimit, tt.wantLimit)
			}
			if d.Grace != tt.wantGrace {
				t.Errorf("Grace %s, want %s", d.Grace, tt.wantGrace)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"nope", []string{`unknown deployment "nope"`, "known: bad-local, bad-settings, bad-yaml, full, minimal, sections, unknown-key, unknown-var-key"}},
		{"Invalid_Name", []string{`invalid deployment name "Invalid_Name"`}},
		{"", []string{`invalid deployment name ""`}},
		{"../testdata/full", []string{"invalid deployment name"}},
		{"full.local", []string{"invalid deployment name"}},
		{"bad-yaml", []string{`deployment "bad-yaml"`, "bad-yaml.yaml"}},
		{"unknown-key", []string{"listen_addr"}},
		{"unknown-var-key", []string{"secret"}},
		{"bad-settings", []string{
			`body_limit: want a size such as 5MB, got "lots"`,
			`shutdown_grace: want a duration such as 10s, got "soon"`,
			`runs.retention: want a duration such as 14d or 36h, got "forever"`,
			"runs.keep_per_task: want a positive number, got -1",
			`vars[0]: invalid variable name "lower-case"`,
			"vars[2]: DUP is listed twice",
		}},
		{"bad-local", []string{"bad-local.local.env:3: want NAME=value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := deployment.Load(testdata, tt.name, deployment.Options{})
			if err == nil {
				t.Fatalf("loaded %v", d)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "a-secret-value") {
				t.Errorf("the error shows a value from the local file: %v", err)
			}
		})
	}
	// No deployments at all.
	_, err := deployment.Load(t.TempDir(), "testing", deployment.Options{})
	if err == nil || !strings.Contains(err.Error(), `unknown deployment "testing": no deployments in`) {
		t.Errorf("empty folder: %v", err)
	}
}

func TestKnown(t *testing.T) {
	want := []string{"bad-local", "bad-settings", "bad-yaml", "full", "minimal", "sections", "unknown-key", "unknown-var-key"}
	if got := deployment.Known(testdata); !reflect.DeepEqual(got, want) {
		t.Errorf("Known = %v, want %v", got, want)
	}
	if got := deployment.Known(t.TempDir()); len(got) != 0 {
		t.Errorf("Known(empty) = %v", got)
	}
}

// Precedence, weakest to strongest: deployments/<name>.yaml, then
// deployments/<name>.local.env, then the process environment, which only
// sets names that a file lists or a task declares (Options.Known).
func TestLoadPrecedence(t *testing.T) {
	d := load(t, "full", deployment.Options{
		Environ: []string{
			"PROCESS_WINS=process",
			"DECLARED=from process",
			"UNRELATED=must not be read",
			"PATH=/usr/bin",
			"LOCAL_ONLY=process beats local too",
			"NOEQUALS",
			"EMPTY=",
		},
		Known: []string{"DECLARED", "DECLARED_UNSET"},
	})
	tests := []struct {
		name, value, source string
	}{
		{"FROM_FILE", "file", deployment.SourceFile},
		{"LOCAL_WINS", "local", deployment.SourceLocal},
		{"PROCESS_WINS", "process", deployment.SourceProcess},
		{"LOCAL_ONLY", "process beats local too", deployment.SourceProcess},
		{"DECLARED", "from process", deployment.SourceProcess},
		{"EMPTY", "", deployment.SourceProcess},
		{"DECLARED_UNSET", "", deployment.SourceUnset},
		{"UNRELATED", "", deployment.SourceUnset},
		{"PATH", "", deployment.SourceUnset},
	}
	for _, tt := range tests {
		v := d.Var(tt.name)
		if v.Name != tt.name || v.Value != tt.value || v.Source != tt.source {
			t.Errorf("%s = %+v, want value %q from %s", tt.name, v, tt.value, tt.source)
		}
		if d.Get(tt.name) != tt.value {
			t.Errorf("Get(%s) = %q", tt.name, d.Get(tt.name))
		}
	}
	var names []string
	for _, v := range d.Vars() {
		names = append(names, v.Name)
	}
	want := []string{"DECLARED", "EMPTY", "FROM_FILE", "LOCAL_ONLY", "LOCAL_WINS", "MongoUri", "POWERSYNC_URL", "PROCESS_WINS"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("Vars() = %v, want %v (sorted, no unrelated process variables)", names, want)
	}
}

func TestLoadLocalOnly(t *testing.T) {
	d := load(t, "full", deployment.Options{})
	if v := d.Var("LOCAL_ONLY"); v.Value != "from local" || v.Source != deployment.SourceLocal {
		t.Errorf("LOCAL_ONLY = %+v", v)
	}
}

func TestLoadKeepsVariableCase(t *testing.T) {
	d := load(t, "full", deployment.Options{})
	if _, ok := d.Lookup("MongoUri"); !ok {
		t.Errorf("MongoUri not found; vars: %v", d.Vars())
	}
	if _, ok := d.Lookup("mongouri"); ok {
		t.Error("the name was lower-cased")
	}
}

func TestLookup(t *testing.T) {
	d := deployment.New("x", false, map[string]string{"SET": "v", "EMPTY": ""})
	if v, ok := d.Lookup("SET"); !ok || v != "v" {
		t.Errorf("Lookup(SET) = %q, %v", v, ok)
	}
	if _, ok := d.Lookup("EMPTY"); ok {
		t.Error("an empty value counts as set")
	}
	if _, ok := d.Lookup("MISSING"); ok {
		t.Error("a missing value counts as set")
	}
}

func TestMasking(t *testing.T) {
	// MongoUri is masked by the file; POWERSYNC_URL by the tasks (Options.Secret);
	// LOCAL_WINS is masked by the tasks and its value comes from the local file.
	d := load(t, "full", deployment.Options{Secret: []string{"POWERSYNC_URL", "LOCAL_WINS", "NOT_SET"}})
	masked := map[string]string{
		"MongoUri":      "mongodb://app:filepass@db.example.test:27017/app",
		"POWERSYNC_URL": "https://ps.example.test",
		"LOCAL_WINS":    "local",
	}
	for name, value := range masked {
		v := d.Var(name)
		if !v.Masked {
			t.Errorf("%s is not masked", name)
		}
		if v.Value != value || d.Get(name) != value {
			t.Errorf("%s: masking changed the value: %q", name, v.Value)
		}
		if v.Display() != deployment.Mask {
			t.Errorf("%s displays as %q", name, v.Display())
		}
	}
	if v := d.Var("FROM_FILE"); v.Masked || v.Display() != "file" {
		t.Errorf("FROM_FILE: %+v displays %q", v, v.Display())
	}
	if got, want := d.Secrets(), []string{"https://ps.example.test", "local", "mongodb://app:filepass@db.example.test:27017/app"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Secrets() = %v, want %v", got, want)
	}
	// Every way of printing the deployment or its variables hides the values.
	vars := d.Vars()
	mongo := d.Var("MongoUri")
	outputs := map[string]string{
		"%v":              fmt.Sprintf("%v", d),
		"%+v":             fmt.Sprintf("%+v", d),
		"%#v":             fmt.Sprintf("%#v", d),
		"%s":              fmt.Sprintf("%s", d),
		"String":          d.String(),
		"GoString":        d.GoString(),
		"var %v":          fmt.Sprintf("%v", mongo),
		"var %+v":         fmt.Sprintf("%+v", mongo),
		"var %#v":         fmt.Sprintf("%#v", mongo),
		"var %s":          fmt.Sprint(mongo),
		"vars %v":         fmt.Sprintf("%v", vars),
		"vars %+v":        fmt.Sprintf("%+v", vars),
		"vars JSON":       mustJSON(t, vars),
		"var JSON":        mustJSON(t, mongo),
		"deployment JSON": mustJSON(t, d),
	}
	for how, out := range outputs {
		for name, value := range masked {
			if strings.Contains(out, value) && len(value) > 5 {
				t.Errorf("%s shows %s: %s", how, name, out)
			}
		}
		if strings.Contains(out, "filepass") {
			t.Errorf("%s shows the password: %s", how, out)
		}
	}
	if !strings.Contains(d.String(), `"full"`) || !strings.Contains(d.String(), "production=true") {
		t.Errorf("String() = %s", d.String())
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDisplayRedactsURLs(t *testing.T) {
	tests := []struct{ value, want string }{
		{"", ""},
		{"plain", "plain"},
		{"https://example.test/path?q=1", "https://example.test/path?q=1"},
		{"mongodb://user:hunter2@db:27017/app", "mongodb://user:xxxxx@db:27017/app"},
		{"mongodb+srv://user:hunter2@cluster.example.test/app?retryWrites=true", "mongodb+srv://user:xxxxx@cluster.example.test/app?retryWrites=true"},
		{"mongodb://user@db/app", "mongodb://user@db/app"},
		{"mongodb://user:hunter2@h1:27017,h2:27017,h3:27017/app?replicaSet=rs0", "mongodb://user:xxxxx@h1:27017,h2:27017,h3:27017/app?replicaSet=rs0"},
		{"postgres://user:p%40ss@db/app", "postgres://user:xxxxx@db/app"},
		{"redis://:hunter2@cache:6379", "redis://:xxxxx@cache:6379"},
		{"mongodb://user:hun@ter2@db/app", "mongodb://user:xxxxx@db/app"},
	}
	for _, tt := range tests {
		d := deployment.New("x", false, map[string]string{"V": tt.value})
		if got := d.Var("V").Display(); got != tt.want {
			t.Errorf("Display(%q) = %q, want %q", tt.value, got, tt.want)
		}
		if strings.Contains(d.Var("V").Display(), "hunter2") || strings.Contains(d.Var("V").Display(), "ter2@") {
			t.Errorf("Display(%q) shows the password", tt.value)
		}
	}
}

func TestNew(t *testing.T) {
	d := deployment.New("testing", true, map[string]string{"A": "1", "SECRET_KEY": "abcdefgh"}, "SECRET_KEY", "UNSET")
	if d.Name != "testing" || !d.Production || d.Listen != deployment.DefaultListen ||
		d.BodyLimit != deployment.DefaultBodyLimit || d.Grace != deployment.DefaultGrace || d.RunRetention != 0 || d.RunsPerTask != 0 {
		t.Errorf("New: %+v", *d)
	}
	if v := d.Var("A"); v.Value != "1" || v.Masked || v.Source != deployment.SourceFile {
		t.Errorf("A = %+v", v)
	}
	if v := d.Var("SECRET_KEY"); !v.Masked {
		t.Errorf("SECRET_KEY = %+v", v)
	}
	if got := d.Secrets(); !reflect.DeepEqual(got, []string{"abcdefgh"}) {
		t.Errorf("Secrets() = %v", got)
	}
	if got := d.Var("UNSET"); got.Source != deployment.SourceUnset || got.Value != "" {
		t.Errorf("UNSET = %+v", got)
	}
}

func TestReadEnvFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.local.env")
	writeFile(t, path, `# a comment
   # an indented comment

PLAIN=value
SPACED = spaced value  
export EXPORTED=yes
DQ="double quoted"
SQ='single quoted'
MIXED="not closed'
EQUALS=a=b=c
HASH=abc#def
EMPTY=
QUOTED_EMPTY=""
lower_case=ok
DOLLAR=pa$SWORD${HOME}
DQ_BACKSLASH="a\nb"
`)
	got, err := deployment.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PLAIN": "value", "SPACED": "spaced value", "EXPORTED": "yes", "DQ": "double quoted",
		"SQ": "single quoted", "MIXED": `"not closed'`, "EQUALS": "a=b=c", "HASH": "abc#def",
		"EMPTY": "", "QUOTED_EMPTY": "", "lower_case": "ok",
		"DOLLAR": "pa$SWORD${HOME}", "DQ_BACKSLASH": `a\nb`, // nothing expanded or unescaped
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}

	for i, bad := range []string{
		"OK=1\nhunter2-secret-line\n",
		"OK=1\n\n1BAD=hunter2-secret-line\n",
		"OK=1\n# c\n\nexport\nX=hunter2-secret-line\n",
		"OK=1\nBAD NAME=hunter2-secret-line\n",
		"OK=1\nCOLON: hunter2-secret-line\n",
	} {
		writeFile(t, path, bad)
		_, err := deployment.ReadEnvFile(path)
		wantLine := []string{":2:", ":3:", ":4:", ":2:", ":2:"}[i]
		if err == nil || !strings.Contains(err.Error(), path+wantLine) {
			t.Errorf("bad file %d: error %v, want line %s", i, err, wantLine)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the value: %v", err)
		}
	}
	if _, err := deployment.ReadEnvFile(filepath.Join(dir, "missing.env")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestAppendEnvFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.local.env")
	writeFile(t, path, "# keep this comment\nKEEP=1\nexport REPLACE=old\n\nALSO_KEEP='x y'\n")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := deployment.AppendEnvFile(path, map[string]string{"REPLACE": "new", "ADDED_B": "b", "ADDED_A": "a"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# keep this comment\nKEEP=1\nALSO_KEEP='x y'\nADDED_A=a\nADDED_B=b\nREPLACE=new\n"
	if string(b) != want {
		t.Errorf("file:\n%s\nwant:\n%s", b, want)
	}
	if runtime.GOOS != "windows" {
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", st.Mode().Perm())
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left: %v", err)
	}
	// A new file is created with mode 0600.
	fresh := filepath.Join(dir, "new.local.env")
	if err := deployment.AppendEnvFile(fresh, map[string]string{"A": "1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(fresh); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new file: %v %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(fresh); string(b) != "A=1\n" {
		t.Errorf("new file: %q", b)
	}
}

// What AppendEnvFile writes, ReadEnvFile reads back unchanged.
func TestAppendEnvFileRoundTrip(t *testing.T) {
	values := map[string]string{
		"PLAIN":     "abc",
		"SPACES":    "a b c",
		"EDGES":     "  padded  ",
		"DQ":        `"quoted"`,
		"SQ":        `'quoted'`,
		"BOTH":      `'"`,
		"HASH":      "a#b",
		"EQ":        "a=b",
		"EMPTY":     "",
		"JWK":       `{"kty":"oct","k":"abc"}`,
		"BACKSLASH": `a\nb`,
	}
	path := filepath.Join(t.TempDir(), "x.local.env")
	if err := deployment.AppendEnvFile(path, values); err != nil {
		t.Fatal(err)
	}
	got, err := deployment.ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, values) {
		b, _ := os.ReadFile(path)
		t.Errorf("read back %q\nwant %q\nfile:\n%s", got, values, b)
	}
	// A value that one line cannot hold is refused, not written broken.
	err = deployment.AppendEnvFile(path, map[string]string{"PEM": "line1\nline2"})
	if err == nil {
		t.Error("a value with a newline was accepted")
	} else if strings.Contains(err.Error(), "line1") {
		t.Errorf("the error shows the value: %v", err)
	}
	if got2, _ := deployment.ReadEnvFile(path); !reflect.DeepEqual(got2, values) {
		t.Errorf("a refused write changed the file: %v", got2)
	}
	if err := deployment.AppendEnvFile(path, map[string]string{"bad name": "x"}); err == nil {
		t.Error("an invalid name was accepted")
	}
}

func TestParseDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"14d": 14 * 24 * time.Hour, "1d": 24 * time.Hour, "36h": 36 * time.Hour, " 90m ": 90 * time.Minute} {
		if got, err := deployment.ParseDays(in); err != nil || got != want {
			t.Errorf("ParseDays(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-1d", "1.5d", "d", "0s", "-3h", "14 days", "100000d"} {
		if got, err := deployment.ParseDays(in); err == nil {
			t.Errorf("ParseDays(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1, true},
		{"1048576", 1 << 20, true},
		{"5MB", 5 << 20, true},
		{"5mb", 5 << 20, true},
		{" 5 MB ", 5 << 20, true},
		{"512KB", 512 << 10, true},
		{"2GB", 2 << 30, true},
		{"10B", 10, true},
		{"", 0, false},
		{"MB", 0, false},
		{"0", 0, false},
		{"0MB", 0, false},
		{"-1", 0, false},
		{"1.5MB", 0, false},
		{"5 M", 0, false},
		{"5MiB", 0, false},
		{"+5", 0, false},
		{"05", 0, false},
		{"12abc", 0, false},
		{"99999999999GB", 0, false}, // overflows int64
	}
	for _, tt := range tests {
		got, err := deployment.ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParseSize(%q) error does not quote the input: %v", tt.in, err)
		}
	}
}
