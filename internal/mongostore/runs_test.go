package mongostore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runstoretest"
)

// The run store against the real wire protocol (FerretDB, or the MongoDB
// of TEST_MONGO_URI).
func TestRuns(t *testing.T) {
	runstoretest.Test(t, func(t *testing.T) runstoretest.Opener {
		db := storetest.Database(t)
		return func(dep string) runtime.RunStore { return mongostore.NewRuns(db, dep) }
	})
}

// The listings' indexes exist once a run is saved, and are created by a
// second store on the same collection without error.
func TestRunsIndexes(t *testing.T) {
	db := storetest.Database(t)
	ctx := context.Background()
	for _, dep := range []string{"a", "b"} {
		if err := mongostore.NewRuns(db, dep).SaveRun(ctx, runstoretest.Record("x", "job", time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	specs, err := db.Collection(mongostore.RunsCollection).Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range specs {
		names[s.Name] = true
	}
	if !names["deployment_start"] || !names["deployment_task_start"] {
		t.Errorf("indexes %v", names)
	}
}

// OpenRuns keeps the runs of a deployment with MONGO_URI in its database,
// through the client upload uses; one on the development store keeps them
// in files and starts no store.
func TestOpenRuns(t *testing.T) {
	ctx := context.Background()
	var st *store.Store
	probe := runtime.Task{Name: "probe", Vars: store.Vars,
		Run: func(ctx context.Context, env *runtime.Env) error { return nil },
		Init: func(ctx context.Context, s *runtime.Setup) (err error) {
			st, err = store.Open(s)
			return err
		}}
	reg, err := runtime.NewRegistry(probe)
	if err != nil {
		t.Fatal(err)
	}
	dbName := storetest.DatabaseName(t)
	dep := deployment.New("testing", false, map[string]string{store.VarURI: storetest.URI(t) + dbName}, store.VarURI)
	c, err := runtime.NewCore(ctx, reg, dep, runtime.Options{Log: zerolog.Nop(), StateDir: t.TempDir(), OpenRuns: mongostore.OpenRuns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	runs, ok := c.Executor().Store().(*mongostore.Runs)
	if !ok {
		t.Fatalf("run store %T, want *mongostore.Runs", c.Executor().Store())
	}
	if runs.Collection().Database().Client() != st.Client() || runs.Collection().Database().Name() != dbName ||
		runs.Collection().Name() != "_runtime_runs" {
		t.Error("the run store does not use upload's client and database")
	}
	rec, err := c.Run(ctx, "probe", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := st.Database().Collection("_runtime_runs").CountDocuments(ctx, bson.D{{Key: "id", Value: rec.ID}, {Key: "deployment", Value: "testing"}})
	if err != nil || n != 1 {
		t.Errorf("the run is not in _runtime_runs: %d, %v", n, err)
	}

	// The development store: files, and no store started.
	state := t.TempDir()
	reg, err = runtime.NewRegistry(runtime.Task{Name: "plain", Run: func(ctx context.Context, env *runtime.Env) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	c, err = runtime.NewCore(ctx, reg, deployment.New("testing", false, nil), runtime.Options{Log: zerolog.Nop(), StateDir: state, OpenRuns: mongostore.OpenRuns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, ok := c.Executor().Store().(*runtime.FileRunStore); !ok {
		t.Fatalf("run store %T, want *runtime.FileRunStore", c.Executor().Store())
	}
	if _, err := c.Run(ctx, "plain", nil, nil); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(state)
	if len(entries) != 1 || entries[0].Name() != "runs" {
		t.Errorf("state folder holds %v, want only runs/ (no development store)", entries)
	}

	// A production deployment without MONGO_URI has no run store: its
	// runs run, unrecorded, with a warning; listing its runs says why not.
	var logs strings.Builder
	prod := deployment.New("prod", true, nil)
	c, err = runtime.NewCore(ctx, reg, prod, runtime.Options{Log: zerolog.New(&logs), StateDir: state, OpenRuns: mongostore.OpenRuns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if rec, err := c.Run(ctx, "plain", nil, nil); err != nil || rec.Outcome != runtime.Succeeded || c.Executor().Store() != nil {
		t.Errorf("a run in production without MONGO_URI: %+v, %v", rec, err)
	}
	if !strings.Contains(logs.String(), "run records are not kept") || !strings.Contains(logs.String(), "MONGO_URI is unset") {
		t.Errorf("no warning:\n%s", logs.String())
	}
	if _, _, err := runtime.OpenRunStore(ctx, prod, runtime.Options{Log: zerolog.Nop(), StateDir: state, OpenRuns: mongostore.OpenRuns}); !errors.Is(err, runtime.ErrNoRunStore) ||
		!strings.Contains(err.Error(), "a production deployment keeps its runs in its database, and MONGO_URI is unset") {
		t.Errorf("OpenRunStore in production without MONGO_URI: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, "runs", "prod")); !os.IsNotExist(err) {
		t.Errorf("production wrote run files: %v", err)
	}
}
