package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/internal/devstore"
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
		{"mongodb://host/?authMechanismProperties=TOKEN:s3cret@x", "(unparseable connection string)"},
		{"not a uri with a s3cret", "(unparseable connection string)"},
		{"postgres://u:s3cret@h/db", "(unparseable connection string)"},
		// Passwords as people write them, escaped or not: the driver ends
		// the user information at the first '@'.
		{"mongodb://admin:s3c?ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c?ret@db.example.net/app?w=1", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c@ret@db.example.net/app", "(unparseable connection string)"},
		{"mongodb://admin:s3c%40ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c/ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c%2Fret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c#ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c%ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb://admin:s3c%25ret@db.example.net/app", "mongodb://admin:xxxxx@db.example.net/app"},
		{"mongodb+srv://admin:?s3c#r/e%t@@cluster0.example.net/app", "(unparseable connection string)"},
		{"mongodb://admin:s3c?ret@h1:1,h2:2/?replicaSet=rs", "mongodb://admin:xxxxx@h1:1,h2:2/"},
	}
	for _, tc := range tests {
		got := store.Redact(tc.in)
		if got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for _, secret := range []string{"s3c", "ret", "TOKEN"} {
			if strings.Contains(got, secret) {
				t.Errorf("Redact(%q) = %q shows %q", tc.in, got, secret)
			}
		}
	}
}

// TestPasswordsNeverLogged opens URIs whose passwords hold the characters
// that break naive parsing, against a server that is not there, and looks
// for any part of the password in the logs and errors.
func TestPasswordsNeverLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, pass := range []string{"hun?ter22", "hun%40ter22", "hun@ter22", "hun/ter22", "hun#ter22", "hun%ter22", "hun%25ter22", "?hun#/ter@%22"} {
		t.Run(pass, func(t *testing.T) {
			var st *store.Store
			h, err := runtimetest.Start(t, deployment.New("testing", false, map[string]string{
				// Not marked secret: the runtime's own masking must not hide a leak.
				"MONGO_URI": "mongodb://admin:" + pass + "@" + addr + "/db?serverSelectionTimeoutMS=100",
			}), probe("probe", &st))
			out := h.Logs.String()
			if err != nil {
				out += err.Error()
			}
			for _, part := range []string{"hun", "ter22"} {
				if strings.Contains(out, part) {
					t.Errorf("%q of the password is shown:\n%s", part, out)
				}
			}
			if err == nil && st.URI() != "mongodb://admin:xxxxx@"+addr+"/db" {
				t.Errorf("URI() = %q", st.URI())
			}
		})
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

// devDeployment is a development deployment without MONGO_URI whose
// store listens on any free port (never a fixed port in a test).
func devDeployment(vars ...string) *deployment.Deployment {
	m := map[string]string{store.VarDevListen: "127.0.0.1:0"}
	for i := 0; i+1 < len(vars); i += 2 {
		m[vars[i]] = vars[i+1]
	}
	return deployment.New("testing", false, m)
}

// startHost starts a host of dep with tasks on the state folder stateDir,
// closed when the test ends.
func startHost(t *testing.T, dep *deployment.Deployment, stateDir string, tasks ...runtime.Task) (*runtime.Host, *runtimetest.Buffer, error) {
	t.Helper()
	reg, err := runtime.NewRegistry(tasks...)
	if err != nil {
		t.Fatal(err)
	}
	logs := &runtimetest.Buffer{}
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(logs, nil), StateDir: stateDir})
	if err != nil {
		return nil, logs, err
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h, logs, nil
}

// TestDevelopmentStore starts the embedded store of a development
// deployment without MONGO_URI, writes through it, and closes it with the
// host.
func TestDevelopmentStore(t *testing.T) {
	var st *store.Store
	h := runtimetest.New(t, devDeployment(), probe("probe", &st))
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
	mongosh := regexp.MustCompile(`mongosh mongodb://127\.0\.0\.1:(\d+)/powersync`).FindStringSubmatch(logs)
	if mongosh == nil || st.URI() != "mongodb://127.0.0.1:"+mongosh[1]+"/" {
		t.Errorf("no mongosh line for %s in the log:\n%s", st.URI(), logs)
	}
	if lim := st.WriteLimits(context.Background()); lim != devstore.FerretDBLimits() {
		t.Errorf("WriteLimits = %+v, want FerretDB's", lim)
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
	if holder, err := devstore.Held(st.Dir(), devstore.StoreLock); err != nil || holder != nil {
		t.Errorf("after Close the store is still held: %+v %v", holder, err)
	}
}

// TestOneDevelopmentStore opens a deployment's development store from two
// hosts on one state folder: the first runs it, the second uses it, and
// it stays up until the first closes.
func TestOneDevelopmentStore(t *testing.T) {
	state := t.TempDir()
	var first, second *store.Store
	h1, _, err := startHost(t, devDeployment(), state, probe("probe", &first))
	if err != nil {
		t.Fatal(err)
	}
	h2, logs2, err := startHost(t, devDeployment(), state, probe("probe", &second))
	if err != nil {
		t.Fatal(err)
	}
	if first.URI() != second.URI() || !second.Embedded() {
		t.Fatalf("second store %s (embedded %t), first %s: want the same", second.URI(), second.Embedded(), first.URI())
	}
	if !strings.Contains(logs2.String(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("the second does not name the process that runs the store:\n%s", logs2)
	}
	ctx := context.Background()
	if _, err := second.Database().Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "from-second"}}); err != nil {
		t.Fatal(err)
	}
	if err := h2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := first.Database().Collection("c").CountDocuments(ctx, bson.D{{Key: "_id", Value: "from-second"}}); err != nil || n != 1 {
		t.Errorf("the first sees %d documents (%v) after the second closed, want 1", n, err)
	}
	if err := h1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The store is free again: a new host runs it.
	var third *store.Store
	if _, _, err := startHost(t, devDeployment(), state, probe("probe", &third)); err != nil {
		t.Fatal(err)
	}
	if n, err := third.Database().Collection("c").CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
		t.Errorf("after a restart: %d documents (%v), want 1", n, err)
	}
}

// TestServingClaim: a second `deploy` of a development deployment fails
// at once naming the first; a serving process does not use a store that a
// one-off command runs; a deployment with MONGO_URI takes no lock.
func TestServingClaim(t *testing.T) {
	state := t.TempDir()
	dep := devDeployment()
	release, err := store.ClaimServing(dep, state, "http://127.0.0.1:6060")
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.ClaimServing(dep, state, "http://127.0.0.1:6061")
	if err == nil {
		t.Fatal("a second claim succeeded")
	}
	for _, want := range []string{"already served", fmt.Sprintf("pid %d", os.Getpid()), "http://127.0.0.1:6060", "MONGO_URI"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	release()
	other := deployment.New("testing", false, map[string]string{"MONGO_URI": storetest.URI(t) + "db"})
	for range 2 {
		r, err := store.ClaimServing(other, state, "http://x")
		if err != nil {
			t.Fatalf("with MONGO_URI: %v", err)
		}
		defer r()
	}

	// A one-off command runs the store; then this process claims serving.
	var oneOff, served *store.Store
	if _, _, err := startHost(t, dep, state, probe("probe", &oneOff)); err != nil {
		t.Fatal(err)
	}
	release, err = store.ClaimServing(dep, state, "http://127.0.0.1:6060")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	_, _, err = startHost(t, dep, state, probe("probe", &served))
	if err == nil || !strings.Contains(err.Error(), "one-off command") || !strings.Contains(err.Error(), "retry") {
		t.Errorf("serving on a one-off command's store: %v", err)
	}
}

// TestDevListen checks the development store's address setting.
func TestDevListen(t *testing.T) {
	if a, b := store.DefaultDevPort("testing"), store.DefaultDevPort("staging"); a == b || a < 27100 || a > 27999 || a != store.DefaultDevPort("testing") {
		t.Errorf("default ports %d and %d", a, b)
	}
	for _, bad := range []string{"0.0.0.0:27017", "example.net:1", "27017", "127.0.0.1:x"} {
		_, err := runtimetest.Start(t, devDeployment(store.VarDevListen, bad), probe("probe", new(*store.Store)))
		if err == nil || !strings.Contains(err.Error(), store.VarDevListen) {
			t.Errorf("%s=%s: %v", store.VarDevListen, bad, err)
		}
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
		{"MONGO_DATABASE for the development store", false, map[string]string{"MONGO_DATABASE": "dev_db", store.VarDevListen: "127.0.0.1:0"}, "dev_db", ""},
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

// TestHold: a supervisor holds the development store; the deployment's
// other processes use it, a second supervisor or deploy is refused, and
// release stops it.
func TestHold(t *testing.T) {
	state := t.TempDir()
	dep := devDeployment()
	ctx := context.Background()
	uri, release, err := store.Hold(ctx, dep, state, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Hold(ctx, dep, state, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "runtime dev") {
		t.Errorf("a second Hold: %v", err)
	}
	if _, err := store.ClaimServing(dep, state, "http://x"); err == nil || !strings.Contains(err.Error(), "already served") {
		t.Errorf("a deploy that is not its child: %v", err)
	}
	var st *store.Store
	if _, _, err := startHost(t, dep, state, probe("probe", &st)); err != nil {
		t.Fatal(err)
	}
	if st.URI() != uri {
		t.Errorf("the host uses %s, the supervisor holds %s", st.URI(), uri)
	}
	if _, err := st.Database().Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	_ = st.Client().Disconnect(ctx)
	release()
	if h, err := devstore.Held(st.Dir(), devstore.StoreLock); err != nil || h != nil {
		t.Errorf("after release the store is held: %+v %v", h, err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the store still listens after release")
	}
}
