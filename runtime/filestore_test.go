package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/runstoretest"
)

func TestFileRunStore(t *testing.T) {
	runstoretest.Test(t, func(t *testing.T) runstoretest.Opener {
		dir := t.TempDir()
		return func(dep string) runtime.RunStore { return runtime.NewFileRunStore(dir, dep) }
	})
}

// The files are private, and a broken one is reported with its path.
func TestFileRunStoreFiles(t *testing.T) {
	dir := t.TempDir()
	st := runtime.NewFileRunStore(dir, "testing")
	ctx := context.Background()
	if err := st.SaveRun(ctx, runstoretest.Record("abc", "job", time.Now())); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "runs", "testing", "job", "*-abc.json"))
	if len(files) != 1 {
		t.Fatalf("record files %v", files)
	}
	for _, f := range append(files, filepath.Join(dir, "runs", "testing", ".ids", "abc")) {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v", f, err, st.Mode().Perm())
		}
	}
	if err := os.WriteFile(files[0], []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetRun(ctx, "abc"); err == nil || !strings.Contains(err.Error(), files[0]) {
		t.Errorf("GetRun of a broken file = %v, want its path", err)
	}
	if _, err := st.ListRuns(ctx, runtime.RunFilter{}); err == nil || !strings.Contains(err.Error(), files[0]) {
		t.Errorf("ListRuns over a broken file = %v, want its path", err)
	}
	// Ids and task names that are not file names are refused.
	for _, r := range []*runtime.Record{runstoretest.Record("../x", "job", time.Now()), runstoretest.Record(".ids", "job", time.Now()),
		runstoretest.Record("ok", "../job", time.Now())} {
		if err := st.SaveRun(ctx, r); err == nil {
			t.Errorf("SaveRun(id %q, task %q) accepted", r.ID, r.Task)
		}
	}
	if _, err := st.GetRun(ctx, "../../x"); err != runtime.ErrRunNotFound {
		t.Errorf("GetRun(../../x) = %v", err)
	}
}
