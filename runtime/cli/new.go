package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/templates"
)

func (a *App) newCmd() *cobra.Command {
	var withHTTP bool
	c := &cobra.Command{
		Use:   "new <task>",
		Short: "scaffold a task, registered in tasks/all.go",
		Long: `runtime new: scaffold a task under tasks/<task>/ from templates/.

It writes a Run function (and with --http a GET handler) and their test,
then regenerates tasks/all.go. The name is a folder, a URL path and a Go
package: ^[a-z][a-z0-9_]*$, not reserved, not a Go keyword, and not a
package the generated code imports.`,
		Example: "  runtime new hello --http",
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return a.newTask(args[0], withHTTP)
		},
	}
	c.Flags().BoolVar(&withHTTP, "http", false, "scaffold an HTTP handler too")
	return c
}

func (a *App) newTask(name string, withHTTP bool) error {
	switch {
	case !runtime.NameRE.MatchString(name):
		return usageErr("invalid task name %q: want %s (it is a folder, a URL path and a Go package)", name, runtime.NameRE)
	case runtime.IsReserved(name):
		return usageErr("task name %q is reserved (reserved: %s)", name, strings.Join(runtime.Reserved, ", "))
	case token.IsKeyword(name) || name == "main":
		return usageErr("task name %q cannot name a Go package that tasks/all.go imports", name)
	}
	r, err := FindRoot(a.root)
	if err != nil {
		return err
	}
	module, err := ModulePath(r)
	if err != nil {
		return err
	}
	clash, err := importNames(module)
	if err != nil {
		return err
	}
	if slices.Contains(clash, name) {
		return usageErr("task name %q clashes with a package the generated code imports (%s)", name, strings.Join(clash, ", "))
	}
	dir := filepath.Join(r, "tasks", name)
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	files, err := templates.Task(templates.TaskData{Module: module, Name: name, HTTP: withHTTP})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	if err := WriteAll(r, module); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "created %s and registered it in tasks/all.go\nnext: go test ./tasks/%s/ && go build -o bin/runtime ./cmd/runtime\n",
		filepath.Join("tasks", name), name)
	return nil
}

// importNames lists, sorted, the names under which the generated files
// (tasks/all.go, a task and its test) import packages: a task of one of
// these names would be declared twice in them. It renders the templates
// rather than keeping a list, so that it follows them.
func importNames(module string) ([]string, error) {
	const probe = "probe_task"
	files, err := templates.Task(templates.TaskData{Module: module, Name: probe, HTTP: true})
	if err != nil {
		return nil, err
	}
	all, err := templates.All(module, []string{probe})
	if err != nil {
		return nil, err
	}
	files["all.go"] = all
	seen := map[string]bool{}
	for name, src := range files {
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			return nil, err
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			n := path.Base(p)
			if majorRE.MatchString(n) { // github.com/labstack/echo/v4
				n = path.Base(path.Dir(p))
			}
			if im.Name != nil {
				n = im.Name.Name
			}
			if n != probe && n != "_" && n != "." {
				seen[n] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

var majorRE = regexp.MustCompile(`^v[0-9]+$`)

// TaskFolders lists the folders under tasks/ that hold a task: every folder
// but internal/ and testdata/.
func TaskFolders(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "tasks"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "internal" && e.Name() != "testdata" && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// WriteAll regenerates tasks/all.go from the task folders.
func WriteAll(root, module string) error {
	names, err := TaskFolders(root)
	if err != nil {
		return err
	}
	b, err := templates.All(module, names)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "tasks", "all.go"), b, 0o644)
}

// ModulePath reads the module path from root/go.mod.
func ModulePath(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("runtime new needs the project's go.mod: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			m, _, _ = strings.Cut(m, "//") // a trailing comment
			return strings.Trim(strings.TrimSpace(m), `"`), nil
		}
	}
	return "", errors.New("go.mod has no module line")
}
