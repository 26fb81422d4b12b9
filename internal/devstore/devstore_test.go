package devstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/devstore"
)

// start starts a store in a temporary folder, stopped when the test ends
// after the clients of connect are disconnected (FerretDB waits for them).
func start(t *testing.T) (*devstore.Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := devstore.Start(context.Background(), devstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, dir
}

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// TestStopAndStartAgain stops a store and starts it again on the same
// address and files.
func TestStopAndStartAgain(t *testing.T) {
	ctx := context.Background()
	s, _ := start(t)
	addr := s.Addr()
	if h, _, _ := net.SplitHostPort(addr); h != "127.0.0.1" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("addr %q: want a port on loopback", addr)
	}
	if got, want := s.URI("db"), "mongodb://"+addr+"/db"; got != want {
		t.Errorf("URI = %q, want %q", got, want)
	}
	c := connect(t, s.URI(""))
	if _, err := c.Database("db").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("starting a running store succeeded")
	}
	_ = c.Disconnect(ctx)
	s.Stop()
	s.Stop() // twice is fine
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("still listening after Stop")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("started again on %s, was %s", s.Addr(), addr)
	}
	c = connect(t, s.URI(""))
	if n, err := c.Database("db").Collection("c").CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
		t.Errorf("after a restart: %d documents (%v), want 1", n, err)
	}
}

// TestIDIndex checks that a new collection gets an index on the expression
// FerretDB's writes by _id query, and that SQLite uses it for them.
func TestIDIndex(t *testing.T) {
	ctx := context.Background()
	s, dir := start(t)
	coll := connect(t, s.URI("")).Database("idx").Collection("todos")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "idx.sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var table string
	if err := db.QueryRow(`SELECT table_name FROM _ferretdb_collections WHERE name = 'todos'`).Scan(&table); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql LIKE '%''$._id''%'`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no _id expression index on %s after 5s", table)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var plan bytes.Buffer
	rows, err := db.Query(fmt.Sprintf(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM %q WHERE _ferretdb_sjson->'$._id' = ?`, table), `"a"`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(detail + "\n")
	}
	rows.Close()
	if !strings.Contains(plan.String(), "USING INDEX") {
		t.Errorf("a write by _id scans the table:\n%s", plan.String())
	}
	// FerretDB does not see the index: listIndexes shows its own only.
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var idx []bson.M
	if err := cur.All(ctx, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx) != 1 || idx[0]["name"] != "_id_" {
		t.Errorf("listIndexes: %v, want only _id_", idx)
	}
	// A dropped and recreated collection is indexed again.
	if err := coll.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_master m JOIN _ferretdb_collections c ON m.tbl_name = c.table_name
			WHERE c.name = 'todos' AND m.type = 'index' AND m.sql LIKE '%''$._id''%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recreated collection has no _id expression index after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLocks takes a folder's lock, sees it held from another file
// descriptor (as another process would), and releases it.
func TestLocks(t *testing.T) {
	dir := t.TempDir()
	l, other, err := devstore.TryLock(dir, devstore.StoreLock, devstore.Holder{Role: devstore.RoleServe}, 0)
	if err != nil || l == nil || other != nil {
		t.Fatalf("TryLock = %v, %v, %v", l, other, err)
	}
	if err := l.Update(devstore.Holder{Role: devstore.RoleServe, Addr: "127.0.0.1:27999"}); err != nil {
		t.Fatal(err)
	}
	l2, other, err := devstore.TryLock(dir, devstore.StoreLock, devstore.Holder{Role: devstore.RoleRun}, time.Second)
	if err != nil || l2 != nil || other == nil {
		t.Fatalf("second TryLock = %v, %v, %v: want the holder", l2, other, err)
	}
	if other.PID != os.Getpid() || other.Addr != "127.0.0.1:27999" || !other.Long() {
		t.Errorf("holder %+v", other)
	}
	if s := other.String(); !strings.Contains(s, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(s, "127.0.0.1:27999") {
		t.Errorf("holder shows as %q", s)
	}
	if h, err := devstore.Held(dir, devstore.StoreLock); err != nil || h == nil || h.PID != os.Getpid() {
		t.Errorf("Held = %+v, %v", h, err)
	}
	if h, err := devstore.Held(dir, devstore.ServeLock); err != nil || h != nil {
		t.Errorf("Held(serve) = %+v, %v: want none", h, err)
	}
	l.Release()
	l.Release()
	if h, err := devstore.Held(dir, devstore.StoreLock); err != nil || h != nil {
		t.Errorf("after Release, Held = %+v, %v", h, err)
	}
	l3, _, err := devstore.TryLock(dir, devstore.StoreLock, devstore.Holder{Role: devstore.RoleRun}, 0)
	if err != nil || l3 == nil {
		t.Fatalf("TryLock after Release = %v, %v", l3, err)
	}
	l3.Release()
}

// TestSlogger passes FerretDB's errors on, tagged, and nothing below.
func TestSlogger(t *testing.T) {
	var buf bytes.Buffer
	log := devstore.Slogger(zerolog.New(&buf))
	log.Warn("a failed command", "msg", "document data")
	log.Error("cannot open", "file", "x.sqlite", "n", 3)
	got := buf.String()
	if strings.Contains(got, "document data") {
		t.Errorf("a warning was passed on: %s", got)
	}
	for _, want := range []string{`"level":"error"`, `"component":"devstore"`, `"file":"x.sqlite"`, `"n":3`, `"message":"cannot open"`} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in %s", want, got)
		}
	}
}
