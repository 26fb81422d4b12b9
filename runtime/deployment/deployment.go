// Package deployment loads one deployment: its settings and its variables,
// layered from a committed YAML file, a git-ignored local secrets file and the
// process environment. Values marked masked never print: String, GoString,
// zerolog marshalling and listings all show a mask. Structured top-level
// sections of the file (upload:, schedules:) are read with Section, which
// keeps the case of their keys and the line of every entry.
package deployment

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Mask is what a masked value prints as.
const Mask = "********"

// Sources of a variable's value, from weakest to strongest.
const (
	SourceFile    = "file"    // deployments/<name>.yaml
	SourceLocal   = "local"   // deployments/<name>.local.env (git-ignored)
	SourceProcess = "process" // the process environment
	SourceUnset   = "unset"
)

// MaxQueueWorkers bounds queue.workers.
const MaxQueueWorkers = 1000

// Defaults for settings a deployment file may leave out.
const (
	DefaultListen    = "127.0.0.1:8080"
	DefaultBodyLimit = 5 << 20 // 5 MB, like CloudCode
	DefaultGrace     = 10 * time.Second
	// DefaultBodyReadTimeout bounds how long a client may take to send a
	// request body, from the end of its headers.
	DefaultBodyReadTimeout = 30 * time.Second
)

var (
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	varRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Var is one resolved variable.
type Var struct {
	Name   string
	Value  string
	Masked bool
	Source string // one of the Source constants
}

// Display is the value as it may be shown: a mask for masked values, and URLs
// with their password redacted.
func (v Var) Display() string {
	if v.Value == "" {
		return ""
	}
	if v.Masked {
		return Mask
	}
	return redactURL(v.Value)
}

// String shows the name and the displayed value, never a masked value.
func (v Var) String() string { return v.Name + "=" + v.Display() }

// GoString never shows a masked value either.
func (v Var) GoString() string {
	return fmt.Sprintf("deployment.Var{Name:%q, Value:%q, Masked:%t, Source:%q}", v.Name, v.Display(), v.Masked, v.Source)
}

// MarshalJSON encodes the displayed value, never a masked value.
func (v Var) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name, Value string
		Masked      bool
		Source      string
	}{v.Name, v.Display(), v.Masked, v.Source})
}

func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

// Deployment is one loaded deployment. It is immutable once loaded.
type Deployment struct {
	Name       string
	Production bool
	Listen     string        // host:port to serve on
	URL        string        // public base URL, if set
	BodyLimit  int64         // bytes
	Grace      time.Duration // shutdown grace period
	// RequestTimeout, when set, bounds every request of the deployment's
	// tasks (a task's own shorter Timeout still applies).
	RequestTimeout time.Duration
	// RunRetention and RunsPerTask bound the kept run records (runs:
	// retention, keep_per_task); zero: the runtime's defaults.
	RunRetention time.Duration
	RunsPerTask  int
	// QueueWorkers, QueuePoll, QueueRetention and QueueLease tune the job
	// queue on this instance (queue: workers, poll, retention, lease);
	// zero: the queue's defaults.
	QueueWorkers   int
	QueuePoll      time.Duration
	QueueRetention time.Duration
	QueueLease     time.Duration
	// BodyReadTimeout bounds the sending of a request's body (body_read_timeout).
	BodyReadTimeout time.Duration
	// CORSOrigins are the browser origins allowed to call the tasks
	// (cors_origins; see cors.go); CORSCredentials allows credentialed calls.
	CORSOrigins     []string
	CORSCredentials bool
	// NoDashboard turns the dashboard at /_/ off (dashboard: false).
	NoDashboard bool
	Dir         string // the deployments/ folder it was loaded from
	// File is the deployment file it was loaded from ("" for New).
	File string

	vars     map[string]Var
	sections map[string]*yaml.Node // top-level key -> value node, case kept
}

// String never shows values.
func (d *Deployment) String() string {
	return fmt.Sprintf("deployment %q (production=%t, %d variables)", d.Name, d.Production, len(d.vars))
}

// GoString never shows values either.
func (d *Deployment) GoString() string { return d.String() }

// Get returns a variable's value ("" when unset).
func (d *Deployment) Get(name string) string { return d.vars[name].Value }

// Lookup reports whether a variable is set to a non-empty value.
func (d *Deployment) Lookup(name string) (string, bool) {
	v, ok := d.vars[name]
	return v.Value, ok && v.Value != ""
}

// Var returns a variable with its source, or a Var with Source "unset".
func (d *Deployment) Var(name string) Var {
	if v, ok := d.vars[name]; ok {
		return v
	}
	return Var{Name: name, Source: SourceUnset}
}

// Vars returns every variable, sorted by name.
func (d *Deployment) Vars() []Var {
	out := make([]Var, 0, len(d.vars))
	for _, v := range d.vars {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Secrets returns the non-empty masked values, for output redaction.
func (d *Deployment) Secrets() []string {
	var out []string
	for _, v := range d.vars {
		if v.Masked && v.Value != "" {
			out = append(out, v.Value)
		}
	}
	sort.Strings(out)
	return out
}

// LocalFile is the path of the git-ignored secrets file of this deployment.
func (d *Deployment) LocalFile() string { return LocalFile(d.Dir, d.Name) }

// LocalFile is the path of the git-ignored secrets file of a deployment.
func LocalFile(dir, name string) string { return filepath.Join(dir, name+".local.env") }

// Options tune Load.
type Options struct {
	// Environ is the process environment (os.Environ() in main), passed in
	// so that tests never touch the real one.
	Environ []string
	// Known names are variables read from Environ even when no file names them
	// (the variables tasks declare).
	Known []string
	// Secret names are masked whatever the files say (tasks declare them).
	Secret []string
}

// file is the shape of deployments/<name>.yaml. Variables are a list, not a
// map, because viper lower-cases map keys and variable names keep their case.
//
// Structured sections whose keys keep their case (collection names, field
// names, JSON params) are declared here as any, so that viper accepts the
// key, and read with Deployment.Section, which decodes the file again
// with case kept.
type file struct {
	Production bool     `mapstructure:"production"`
	Listen     string   `mapstructure:"listen"`
	URL        string   `mapstructure:"url"`
	BodyLimit  string   `mapstructure:"body_limit"`
	Grace      string   `mapstructure:"shutdown_grace"`
	Timeout    string   `mapstructure:"request_timeout"`
	BodyRead   string   `mapstructure:"body_read_timeout"`
	CORS       []string `mapstructure:"cors_origins"`
	CORSCreds  bool     `mapstructure:"cors_credentials"`
	Dashboard  *bool    `mapstructure:"dashboard"`
	Runs       struct {
		Retention   string `mapstructure:"retention"`
		KeepPerTask int    `mapstructure:"keep_per_task"`
	} `mapstructure:"runs"`
	Queue struct {
		Workers   int    `mapstructure:"workers"`
		Poll      string `mapstructure:"poll"`
		Retention string `mapstructure:"retention"`
		Lease     string `mapstructure:"lease"`
	} `mapstructure:"queue"`
	Vars []struct {
		Name   string `mapstructure:"name"`
		Value  string `mapstructure:"value"`
		Masked bool   `mapstructure:"masked"`
	} `mapstructure:"vars"`

	Upload    any `mapstructure:"upload"`    // upload's write rules: Section("upload")
	Schedules any `mapstructure:"schedules"` // Section("schedules")
}

// Known lists the deployments in dir, sorted.
func Known(dir string) []string {
	matches, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var out []string
	for _, m := range matches {
		n := strings.TrimSuffix(filepath.Base(m), ".yaml")
		if nameRE.MatchString(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Load reads deployments/<name>.yaml, then the local secrets file, then the
// process environment; each later layer overrides the earlier ones. The
// process environment only sets names that a file lists or that are in
// opts.Known (the variables tasks declare): PATH and the like never become
// deployment variables.
func Load(dir, name string, opts Options) (*Deployment, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("invalid deployment name %q (want %s)", name, nameRE)
	}
	path := filepath.Join(dir, name+".yaml")
	if _, err := os.Stat(path); err != nil {
		known := Known(dir)
		if len(known) == 0 {
			return nil, fmt.Errorf("unknown deployment %q: no deployments in %s", name, dir)
		}
		return nil, fmt.Errorf("unknown deployment %q (known: %s)", name, strings.Join(known, ", "))
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deployment %q: reading %s: %w", name, path, err)
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(src)); err != nil {
		return nil, fmt.Errorf("deployment %q: reading %s: %w", name, path, err)
	}
	if errs := checkKeys(path, src); len(errs) > 0 {
		return nil, fmt.Errorf("deployment %q: %w", name, errors.Join(errs...))
	}
	var f file
	if err := v.UnmarshalExact(&f); err != nil {
		return nil, fmt.Errorf("deployment %q: %s: %w", name, path, err)
	}
	d := &Deployment{
		Name:       name,
		Production: f.Production,
		Listen:     f.Listen,
		URL:        f.URL,
		BodyLimit:  DefaultBodyLimit,
		Grace:      DefaultGrace,
		Dir:        dir,

		BodyReadTimeout: DefaultBodyReadTimeout,
		CORSCredentials: f.CORSCreds,
		vars:            map[string]Var{},
	}
	if err := d.SetSections(path, src); err != nil {
		return nil, fmt.Errorf("deployment %q: %w", name, err)
	}
	if d.Listen == "" {
		d.Listen = DefaultListen
	}
	var errs []error
	if f.BodyLimit != "" {
		n, err := ParseSize(f.BodyLimit)
		if err != nil {
			errs = append(errs, fmt.Errorf("body_limit: %w", err))
		}
		d.BodyLimit = n
	}
	if f.BodyRead != "" {
		bt, err := time.ParseDuration(f.BodyRead)
		if err != nil || bt <= 0 {
			errs = append(errs, fmt.Errorf("body_read_timeout: want a duration such as 30s, got %q", f.BodyRead))
		}
		d.BodyReadTimeout = bt
	}
	origins, err := corsOrigins(f.CORS, v.IsSet("cors_origins"), d.Production, d.CORSCredentials)
	if err != nil {
		errs = append(errs, err)
	}
	d.CORSOrigins = origins
	d.NoDashboard = f.Dashboard != nil && !*f.Dashboard
	if f.Grace != "" {
		g, err := time.ParseDuration(f.Grace)
		if err != nil || g < 0 {
			errs = append(errs, fmt.Errorf("shutdown_grace: want a duration such as 10s, got %q", f.Grace))
		}
		d.Grace = g
	}
	if f.Timeout != "" {
		rt, err := time.ParseDuration(f.Timeout)
		if err != nil || rt <= 0 {
			errs = append(errs, fmt.Errorf("request_timeout: want a duration such as 30s, got %q", f.Timeout))
		}
		d.RequestTimeout = rt
	}
	if f.Runs.Retention != "" {
		r, err := ParseDays(f.Runs.Retention)
		if err != nil {
			errs = append(errs, fmt.Errorf("runs.retention: %w", err))
		}
		d.RunRetention = r
	}
	if f.Runs.KeepPerTask < 0 {
		errs = append(errs, fmt.Errorf("runs.keep_per_task: want a positive number, got %d", f.Runs.KeepPerTask))
	}
	d.RunsPerTask = f.Runs.KeepPerTask
	if f.Queue.Workers < 0 || f.Queue.Workers > MaxQueueWorkers {
		errs = append(errs, fmt.Errorf("queue.workers: want 1 to %d (0: the default), got %d", MaxQueueWorkers, f.Queue.Workers))
	}
	d.QueueWorkers = f.Queue.Workers
	if f.Queue.Poll != "" {
		p, err := time.ParseDuration(f.Queue.Poll)
		if err != nil || p < 10*time.Millisecond || p > time.Second {
			errs = append(errs, fmt.Errorf("queue.poll: want a duration from 10ms to 1s, got %q", f.Queue.Poll))
		}
		d.QueuePoll = p
	}
	if f.Queue.Retention != "" {
		r, err := ParseDays(f.Queue.Retention)
		if err != nil {
			errs = append(errs, fmt.Errorf("queue.retention: %w", err))
		}
		d.QueueRetention = r
	}
	if f.Queue.Lease != "" {
		l, err := time.ParseDuration(f.Queue.Lease)
		if err != nil || l < time.Second || l > time.Hour {
			errs = append(errs, fmt.Errorf("queue.lease: want a duration from 1s to 1h, got %q", f.Queue.Lease))
		}
		d.QueueLease = l
	}
	masked := map[string]bool{}
	for _, s := range opts.Secret {
		masked[s] = true
	}
	for i, fv := range f.Vars {
		if !varRE.MatchString(fv.Name) {
			errs = append(errs, fmt.Errorf("vars[%d]: invalid variable name %q", i, fv.Name))
			continue
		}
		if _, dup := d.vars[fv.Name]; dup {
			errs = append(errs, fmt.Errorf("vars[%d]: %s is listed twice", i, fv.Name))
			continue
		}
		if fv.Masked {
			masked[fv.Name] = true
		}
		d.vars[fv.Name] = Var{Name: fv.Name, Value: fv.Value, Source: SourceFile}
	}
	local, err := ReadEnvFile(d.LocalFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for k, val := range local {
		d.vars[k] = Var{Name: k, Value: val, Source: SourceLocal}
	}
	known := map[string]bool{}
	for _, k := range opts.Known {
		known[k] = true
	}
	for k := range d.vars {
		known[k] = true
	}
	for _, kv := range opts.Environ {
		k, val, ok := strings.Cut(kv, "=")
		if ok && known[k] {
			d.vars[k] = Var{Name: k, Value: val, Source: SourceProcess}
		}
	}
	for k, v := range d.vars {
		v.Masked = masked[k]
		d.vars[k] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("deployment %q (%s): %w", name, path, err)
	}
	return d, nil
}

// New builds a deployment from values, for tests and tools. Names in secret
// are masked.
func New(name string, production bool, vars map[string]string, secret ...string) *Deployment {
	d := &Deployment{Name: name, Production: production, Listen: DefaultListen,
		BodyLimit: DefaultBodyLimit, Grace: DefaultGrace, BodyReadTimeout: DefaultBodyReadTimeout, vars: map[string]Var{}}
	d.CORSOrigins, _ = corsOrigins(nil, false, production, false)
	m := map[string]bool{}
	for _, s := range secret {
		m[s] = true
	}
	for k, v := range vars {
		d.vars[k] = Var{Name: k, Value: v, Source: SourceFile, Masked: m[k]}
	}
	return d
}

// Section is one top-level section of a deployment file, decoded with the
// case of its keys kept (viper lower-cases keys) and with the position of
// every entry, so that an error can name the file and the line.
type Section struct {
	// File is the deployment file's path ("" when built without one).
	File string
	// Node is the section's value: a mapping, a sequence or a scalar.
	// It is the caller's own copy.
	Node *yaml.Node
}

// Section returns the top-level key name of the deployment file, and
// whether the file has it (a key with an empty value has it: Node is then
// a null scalar). Decode it with Node.Decode, or walk Node for positions:
//
//	sec, ok := dep.Section("schedules")
//	var list []struct{ Name string `yaml:"name"` }
//	if err := sec.Node.Decode(&list); err != nil { return sec.Errorf(sec.Node, "%v", err) }
func (d *Deployment) Section(name string) (Section, bool) {
	n, ok := d.sections[name]
	if !ok {
		return Section{File: d.File}, false
	}
	return Section{File: d.File, Node: copyNode(n, map[*yaml.Node]*yaml.Node{})}, true
}

// Pos names a node of the section as file:line (line alone without a
// file).
func (s Section) Pos(n *yaml.Node) string {
	if n == nil {
		n = s.Node
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	if s.File == "" {
		return fmt.Sprintf("line %d", line)
	}
	return fmt.Sprintf("%s:%d", s.File, line)
}

// Errorf returns an error prefixed with the node's position (Pos).
func (s Section) Errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s: %s", s.Pos(n), fmt.Sprintf(format, args...))
}

// SetSections parses src, a deployment file's YAML, and keeps its
// top-level sections for Section; file names it in errors. Load calls it;
// tests and tools call it on a deployment from New.
func (d *Deployment) SetSections(file string, src []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	d.File = file
	d.sections = map[string]*yaml.Node{}
	if len(root.Content) == 0 {
		return nil // an empty file
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: a deployment file is a mapping of settings", file, doc.Line)
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		d.sections[doc.Content[i].Value] = doc.Content[i+1]
	}
	return nil
}

// copyNode copies a node tree, so that callers cannot change the
// deployment's; done keeps an anchor shared by its aliases.
func copyNode(n *yaml.Node, done map[*yaml.Node]*yaml.Node) *yaml.Node {
	if c, ok := done[n]; ok {
		return c
	}
	c := new(yaml.Node)
	done[n] = c
	*c = *n
	if n.Content != nil {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			c.Content[i] = copyNode(k, done)
		}
	}
	if n.Alias != nil {
		c.Alias = copyNode(n.Alias, done)
	}
	return c
}

// ReadEnvFile parses a dotenv file: KEY=VALUE lines, # comments, optional
// "export ", values optionally in single or double quotes. Nothing is
// expanded or unescaped. Parse errors name the line, never its value.
//
// It is the standard library's bufio and strings rather than the dotenv
// reader viper brings (github.com/subosito/gotenv), which is not as strict:
// it expands $NAME from the process environment inside values (a password
// holding "$" would change silently), turns \n into a newline in double
// quotes, accepts "KEY: value" and values spanning lines, and echoes the
// offending line, secret included, in its errors.
func ReadEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !varRE.MatchString(k) {
			return nil, fmt.Errorf("%s:%d: want NAME=value", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// AppendEnvFile adds or replaces variables in a dotenv file, creating it with
// mode 0600, and keeps the other lines as they were.
func AppendEnvFile(path string, vars map[string]string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for k, v := range vars {
		if !varRE.MatchString(k) {
			return fmt.Errorf("%s: invalid variable name %q", path, k)
		}
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("%s: the value of %s spans several lines, which a dotenv line cannot hold", path, k)
		}
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		k, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
		if _, replaced := vars[strings.TrimSpace(k)]; replaced || line == "" {
			continue
		}
		b.WriteString(line + "\n")
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := vars[k]
		// Quote what ReadEnvFile would otherwise trim or unquote; it strips
		// one outer pair of quotes, whatever is inside.
		if v != strings.TrimSpace(v) || len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = "'" + v + "'"
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ParseDays reads a positive duration such as 14d, 36h or 90m (a Go
// duration, or whole days with a d suffix).
func ParseDays(in string) (time.Duration, error) {
	s := strings.TrimSpace(in)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int64
		if _, err := fmt.Sscanf(days, "%d", &n); err == nil && fmt.Sprint(n) == days && n > 0 && n < 100_000 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("want a duration such as 14d or 36h, got %q", in)
}

// ParseSize reads sizes such as 5MB, 512KB, 1048576.
func ParseSize(in string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(in))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("want a size such as 5MB, got %q", in)
	}
	return n * mult, nil
}
