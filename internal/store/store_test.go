package store_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// probe is a task that opens the store in Init and keeps it.
func probe(name string, got **store.Store) runtime.Task {
	return runtime.Task{
		Name: name,
		Run:  func(ctx context.Context, env *runtime.Env) error { return nil },
		Vars: store.Vars,
		Init: func(ctx context.Context, s *runtime.Setup) error {
			st, err := store.Open(s)
			*got = st
			return err
		},
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mongodb://user:s3cret@host:27017/db?authSource=admin&tlsCertificateKeyFilePassword=x", "mongodb://user:xxxxx@host:27017/db"},
		{"mongodb+srv://user:p%40ss@cluster0.example.net/powersync?retryWrites=true", "mongodb+srv://user:xxxxx@cluster0.example.net/powersync"},
		{"mongodb://a:1,b:2/db", "mongodb://a:1,b:2/db"},
		{"mongodb://user@host/", "mongodb://user@host/"},
		{"mongodb://host?x=1", "mongodb://host"},
		{"not a uri with a s3cret", "(unparseable connection string)"},
	}
	for _, tc := range tests {
		if got := store.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidDatabaseName(t *testing.T) {
	for _, ok := range []string{"powersync", "my_app-1", strings.Repeat("d", 63)} {
		if err := store.ValidDatabaseName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a/b", "a b", "$x", "a\x00", strings.Repeat("d", 64)} {
		if err := store.ValidDatabaseName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDevelopmentStore starts the embedded store of a development
// deployment without MONGO_URI, writes through it, and closes it with the
// host.
func TestDevelopmentStore(t *testing.T) {
	var st *store.Store
	h := runtimetest.New(t, deployment.New("testing", false, map[string]string{}), probe("probe", &st))
	if !st.Embedded() || !strings.HasSuffix(st.Dir(), filepath.Join("devstore", "testing")) {
		t.Fatalf("embedded %t, dir %q", st.Embedded(), st.Dir())
	}
	if st.Database().Name() != store.DevDatabase {
		t.Errorf("database %q, want %q", st.Database().Name(), store.DevDatabase)
	}
	logs := h.Logs.String()
	if !strings.Contains(logs, "DEVELOPMENT STORE") || !strings.Contains(logs, st.Dir()) {
		t.Errorf("the development store is not announced with its folder:\n%s", logs)
	}
	ctx := context.Background()
	if _, err := st.Database().Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(st.Dir())
	if err != nil || len(entries) == 0 {
		t.Errorf("no files in %s (%v)", st.Dir(), err)
	}
	resp := h.Do(http.MethodGet, "/readyz", nil)
	var ready map[string]any
	runtimetest.JSON(t, resp, &ready)
	if checks, _ := ready["checks"].(map[string]any); checks["mongo"] != "ok" {
		t.Errorf("/readyz: %v", ready)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(ctx); !errors.Is(err, mongo.ErrClientDisconnected) {
		t.Errorf("after Close, Ping = %v, want ErrClientDisconnected", err)
	}
}

// TestOpen covers the ways of choosing the server and the database.
func TestOpen(t *testing.T) {
	uri := storetest.URI(t)
	tests := []struct {
		name   string
		prod   bool
		vars   map[string]string
		db     string // wanted database; "" : Open must fail
		errHas string
	}{
		{"database from the URI path", true, map[string]string{"MONGO_URI": uri + "from_path"}, "from_path", ""},
		{"URI path wins over MONGO_DATABASE", false, map[string]string{"MONGO_URI": uri + "from_path", "MONGO_DATABASE": "other"}, "from_path", ""},
		{"MONGO_DATABASE when the URI names none", false, map[string]string{"MONGO_URI": uri, "MONGO_DATABASE": "from_var"}, "from_var", ""},
		{"MONGO_DATABASE for the development store", false, map[string]string{"MONGO_DATABASE": "dev_db"}, "dev_db", ""},
		{"no database at all", false, map[string]string{"MONGO_URI": uri}, "", "names none in its path"},
		{"production without MONGO_URI", true, map[string]string{}, "", "production deployment needs a MongoDB server"},
		{"invalid database name", false, map[string]string{"MONGO_URI": uri, "MONGO_DATABASE": "a.b"}, "", "invalid database name"},
		{"not a connection string", false, map[string]string{"MONGO_URI": "postgres://u:hunter22@h/db"}, "", "not a valid MongoDB connection string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st *store.Store
			h, err := runtimetest.Start(t, deployment.New("testing", tc.prod, tc.vars), probe("probe", &st))
			if tc.db == "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one containing %q", err, tc.errHas)
				}
				if strings.Contains(err.Error(), "hunter22") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Database().Name(); got != tc.db {
				t.Errorf("database %q, want %q", got, tc.db)
			}
			if err := st.Ping(context.Background()); err != nil {
				t.Errorf("ping: %v", err)
			}
			if strings.Contains(h.Logs.String(), "hunter22") {
				t.Errorf("password in the logs")
			}
		})
	}
}

// TestSharedOnce checks that every task of a process gets the same client.
func TestSharedOnce(t *testing.T) {
	var a, b *store.Store
	runtimetest.New(t, deployment.New("testing", false, map[string]string{"MONGO_URI": storetest.URI(t) + "shared"}),
		probe("one", &a), probe("two", &b))
	if a == nil || a != b {
		t.Errorf("two stores: %p %p", a, b)
	}
}

// TestPasswordNeverShown opens a URI with credentials (not marked secret,
// so that the runtime's own masking does not hide a leak) against a server
// that is not there.
func TestPasswordNeverShown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var st *store.Store
	h := runtimetest.New(t, deployment.New("testing", false, map[string]string{
		"MONGO_URI": "mongodb://admin:hunter22@" + addr + "/db?serverSelectionTimeoutMS=200",
	}), probe("probe", &st))
	if st.URI() != "mongodb://admin:xxxxx@"+addr+"/db" {
		t.Errorf("URI() = %q", st.URI())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := st.Ping(ctx); err == nil || strings.Contains(err.Error(), "hunter22") {
		t.Errorf("ping: %v", err)
	}
	resp := h.Do(http.MethodGet, "/readyz", nil)
	var ready map[string]any
	runtimetest.JSON(t, resp, &ready)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d with the server away: %v", resp.StatusCode, ready)
	}
	if logs := h.Logs.String(); strings.Contains(logs, "hunter22") || !strings.Contains(logs, "admin:xxxxx@") {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestStartEmbedded starts and stops a FerretDB on its own.
func TestStartEmbedded(t *testing.T) {
	ctx := context.Background()
	uri, stop, err := store.StartEmbedded(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "mongodb://127.0.0.1:") {
		t.Errorf("uri %q is not on loopback", uri)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("not listening: %v", err)
	}
	c.Close()
	stop()
	stop() // twice is fine
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("still listening after stop")
	}
}

// TestDatabase checks that Database gives the runtime's stores the same
// client as Open, and that Development needs nothing opened.
func TestDatabase(t *testing.T) {
	dep := deployment.New("testing", false, map[string]string{"MONGO_URI": storetest.URI(t) + "shared_db"})
	if store.Development(dep) {
		t.Error("a deployment with MONGO_URI is the development store")
	}
	if !store.Development(deployment.New("testing", false, map[string]string{})) {
		t.Error("a development deployment without MONGO_URI is not the development store")
	}
	if store.Development(deployment.New("testing", true, map[string]string{})) {
		t.Error("a production deployment is the development store")
	}
	var st *store.Store
	var db *mongo.Database
	runtimetest.New(t, dep, probe("probe", &st), runtime.Task{
		Name: "other",
		Run:  func(ctx context.Context, env *runtime.Env) error { return nil },
		Init: func(ctx context.Context, s *runtime.Setup) (err error) {
			db, err = store.Database(s)
			return err
		},
	})
	if db == nil || db.Client() != st.Client() || db.Name() != "shared_db" {
		t.Errorf("Database = %v, want the store's own client and database shared_db", db)
	}
}
