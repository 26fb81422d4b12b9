package templates_test

import (
	"bytes"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/taskrun/taskrun/templates"
)

// parse checks that src is gofmt'd, valid Go, and returns its syntax tree.
func parse(t *testing.T, name string, src []byte) *ast.File {
	t.Helper()
	formatted, err := format.Source(src)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !bytes.Equal(formatted, src) {
		t.Errorf("%s is not gofmt'd", name)
	}
	f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ParseComments)
	if err != nil {
		t.Fatalf("%s is not valid Go: %v\n%s", name, err, src)
	}
	return f
}

func imports(f *ast.File) []string {
	var out []string
	for _, i := range f.Imports {
		p, _ := strconv.Unquote(i.Path.Value)
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func funcs(f *ast.File) map[string]bool {
	out := map[string]bool{}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok {
			out[fd.Name.Name] = true
		}
	}
	return out
}

func TestTask(t *testing.T) {
	tests := []struct {
		http        bool
		taskImports []string
		testImports []string
		taskFuncs   []string
		testFuncs   []string
	}{
		{
			http:        false,
			taskImports: []string{"context", "example.test/m/runtime"},
			testImports: []string{"context", "example.test/m/runtime", "example.test/m/runtime/deployment", "example.test/m/runtime/runtimetest", "strings", "testing"},
			taskFuncs:   []string{"Task", "run", "orEmpty"},
			testFuncs:   []string{"TestRun"},
		},
		{
			http:        true,
			taskImports: []string{"context", "example.test/m/runtime", "github.com/labstack/echo/v4", "net/http"},
			testImports: []string{"context", "example.test/m/runtime", "example.test/m/runtime/deployment", "example.test/m/runtime/runtimetest", "net/http", "strings", "testing"},
			taskFuncs:   []string{"Task", "run", "orEmpty", "get"},
			testFuncs:   []string{"TestRun", "TestGet"},
		},
	}
	for _, tt := range tests {
		t.Run(map[bool]string{false: "on demand", true: "http"}[tt.http], func(t *testing.T) {
			files, err := templates.Task(templates.TaskData{Module: "example.test/m", Name: "send_mail", HTTP: tt.http})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for n := range files {
				names = append(names, n)
			}
			sort.Strings(names)
			if !reflect.DeepEqual(names, []string{"send_mail.go", "send_mail_test.go"}) {
				t.Fatalf("files %v", names)
			}
			task := parse(t, "send_mail.go", files["send_mail.go"])
			test := parse(t, "send_mail_test.go", files["send_mail_test.go"])
			for _, f := range []*ast.File{task, test} {
				if f.Name.Name != "send_mail" {
					t.Errorf("package %s", f.Name.Name)
				}
			}
			if got := imports(task); !reflect.DeepEqual(got, tt.taskImports) {
				t.Errorf("task imports %v, want %v", got, tt.taskImports)
			}
			if got := imports(test); !reflect.DeepEqual(got, tt.testImports) {
				t.Errorf("test imports %v, want %v", got, tt.testImports)
			}
			fs := funcs(task)
			for _, fn := range tt.taskFuncs {
				if !fs[fn] {
					t.Errorf("task has no func %s", fn)
				}
			}
			if len(fs) != len(tt.taskFuncs) {
				t.Errorf("task funcs %v, want %v", fs, tt.taskFuncs)
			}
			ts := funcs(test)
			if len(ts) != len(tt.testFuncs) {
				t.Errorf("test funcs %v, want %v", ts, tt.testFuncs)
			}
			src := string(files["send_mail.go"])
			for _, w := range []string{`Name:        "send_mail"`, "Run:  run", "func Task() runtime.Task"} {
				if !strings.Contains(strings.Join(strings.Fields(src), " "), strings.Join(strings.Fields(w), " ")) {
					t.Errorf("send_mail.go does not contain %q:\n%s", w, src)
				}
			}
			if both := src + string(files["send_mail_test.go"]); strings.Contains(both, "{{.") || strings.Contains(both, "{{-") || strings.Contains(both, "{{end") {
				t.Error("a template action was left in the output")
			}
			if tt.http != strings.Contains(src, "runtime.Public") {
				t.Errorf("Access: Public present = %v, want %v", !tt.http, tt.http)
			}
			// The commented Vars example renders with its braces.
			if !strings.Contains(src, `// Vars: []runtime.Var{{Name: "GREETING"`) {
				t.Errorf("the Vars example is not rendered:\n%s", src)
			}
		})
	}
}

func TestAll(t *testing.T) {
	names := []string{"zeta", "alpha", "mid_1"}
	src, err := templates.All("example.test/m", names)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names, []string{"zeta", "alpha", "mid_1"}) {
		t.Errorf("All sorted its argument in place: %v", names)
	}
	f := parse(t, "all.go", src)
	if f.Name.Name != "tasks" {
		t.Errorf("package %s", f.Name.Name)
	}
	want := []string{"example.test/m/runtime", "example.test/m/tasks/alpha", "example.test/m/tasks/mid_1", "example.test/m/tasks/zeta"}
	if got := imports(f); !reflect.DeepEqual(got, want) {
		t.Errorf("imports %v, want %v", got, want)
	}
	// The returned list is in name order.
	s := string(src)
	a, m, z := strings.Index(s, "alpha.Task()"), strings.Index(s, "mid_1.Task()"), strings.Index(s, "zeta.Task()")
	if a < 0 || !(a < m && m < z) {
		t.Errorf("calls out of order:\n%s", s)
	}
	if !strings.HasPrefix(s, "// Code generated by `runtime new`; DO NOT EDIT.") {
		t.Errorf("no generated-code header:\n%s", s)
	}
	if !funcs(f)["All"] {
		t.Error("no func All")
	}
}

func TestAllEmpty(t *testing.T) {
	src, err := templates.All("example.test/m", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := parse(t, "all.go", src)
	if got := imports(f); !reflect.DeepEqual(got, []string{"example.test/m/runtime"}) {
		t.Errorf("imports %v", got)
	}
	if !strings.Contains(string(src), "return []runtime.Task{}") {
		t.Errorf("all.go:\n%s", src)
	}
}

func TestInvalidOutputIsAnError(t *testing.T) {
	// A name that is not a Go identifier renders invalid Go: refused with a
	// message naming the template, not written.
	_, err := templates.Task(templates.TaskData{Module: "example.test/m", Name: "bad-name"})
	if err == nil || !strings.Contains(err.Error(), "renders invalid Go") {
		t.Errorf("error = %v", err)
	}
}
