// Package templates holds the scaffolds of `runtime new` and the generator
// of tasks/all.go. The files end in .tmpl so that `go build ./...` ignores
// them; tests render each one and compile the result.
package templates

import (
	"bytes"
	"embed"
	"fmt"
	"go/format"
	"sort"
	"text/template"
)

//go:embed *.tmpl
var files embed.FS

var tmpl = template.Must(template.ParseFS(files, "*.tmpl"))

// TaskData fills the task templates.
type TaskData struct {
	Module string // the Go module path, from go.mod
	Name   string // the task name: folder, package, URL path
	HTTP   bool   // scaffold an HTTP handler (else an on-demand Run)
}

// Task renders a new task's files, by file name.
func Task(d TaskData) (map[string][]byte, error) {
	out := map[string][]byte{}
	for file, t := range map[string]string{d.Name + ".go": "task.go.tmpl", d.Name + "_test.go": "task_test.go.tmpl"} {
		b, err := render(t, d)
		if err != nil {
			return nil, err
		}
		out[file] = b
	}
	return out, nil
}

// All renders tasks/all.go for the given task names.
func All(module string, names []string) ([]byte, error) {
	names = append([]string(nil), names...)
	sort.Strings(names)
	return render("all.go.tmpl", struct {
		Module string
		Names  []string
	}{module, names})
}

func render(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		return nil, err
	}
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s renders invalid Go: %w", name, err)
	}
	return src, nil
}
