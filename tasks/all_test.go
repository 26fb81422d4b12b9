package tasks

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/templates"
)

// TestAllMatchesFolders keeps tasks/all.go honest: it must be exactly what
// `runtime new` generates from the folders under tasks/.
func TestAllMatchesFolders(t *testing.T) {
	root, _ := filepath.Abs("..")
	module, err := cli.ModulePath(root)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := cli.TaskFolders(root)
	if err != nil {
		t.Fatal(err)
	}
	want, err := templates.All(module, folders)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("all.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("tasks/all.go does not match the folders under tasks/ %v; regenerate it (runtime new does).\nwant:\n%s", folders, want)
	}
}

// TestAllRegister checks that every task registers, under its folder's name.
func TestAllRegister(t *testing.T) {
	reg, err := runtime.NewRegistry(All()...)
	if err != nil {
		t.Fatal(err)
	}
	folders, _ := cli.TaskFolders("..")
	names := reg.Names()
	if len(names) != len(folders) {
		t.Fatalf("registered %v, folders %v", names, folders)
	}
	for i := range names {
		if names[i] != folders[i] {
			t.Errorf("task %q lives in folder %q: a task's name must be its folder's", names[i], folders[i])
		}
	}
}
