package cli

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/templates"
)

func (a App) newTask(args []string) error {
	fs := flag.NewFlagSet("new", flag.ContinueOnError)
	withHTTP := fs.Bool("http", false, "scaffold an HTTP handler too")
	root := fs.String("root", "", "project folder")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	name := pos[0]
	switch {
	case !runtime.NameRE.MatchString(name):
		return usageErr("invalid task name %q: want %s (it is a folder, a URL path and a Go package)", name, runtime.NameRE)
	case runtime.IsReserved(name):
		return usageErr("task name %q is reserved (reserved: %s)", name, strings.Join(runtime.Reserved, ", "))
	case token.IsKeyword(name) || name == "main":
		return usageErr("task name %q cannot name a Go package that tasks/all.go imports", name)
	}
	r, err := FindRoot(*root)
	if err != nil {
		return err
	}
	module, err := ModulePath(r)
	if err != nil {
		return err
	}
	dir := filepath.Join(r, "tasks", name)
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	files, err := templates.Task(templates.TaskData{Module: module, Name: name, HTTP: *withHTTP})
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
