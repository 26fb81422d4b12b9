// Package storetest gives tests a real MongoDB wire server (mongotest.URI:
// the one named by TEST_MONGO_URI when set, a real MongoDB, else one
// embedded FerretDB per test binary) and a client of it.
//
// Each test gets its own database (Database, or DatabaseName for a task
// under test), dropped when the test ends.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/mongotest"
)

// EnvURI names the environment variable of a real server for tests.
const EnvURI = mongotest.EnvURI

var (
	once    sync.Once
	client  *mongo.Client
	initErr error
)

// URI returns the test server's connection string (mongotest.URI: one
// server per test binary).
func URI(t testing.TB) string {
	t.Helper()
	uri := mongotest.URI(t)
	once.Do(func() {
		client, initErr = mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second))
	})
	if initErr != nil {
		t.Fatalf("connecting to the test MongoDB server: %v", initErr)
	}
	return uri
}

// Real reports whether tests run against a real MongoDB (TEST_MONGO_URI)
// rather than the embedded FerretDB.
func Real() bool { return mongotest.External() }

// Client returns a client connected to the test server, shared by the tests
// of the binary.
func Client(t testing.TB) *mongo.Client {
	t.Helper()
	URI(t)
	return client
}

// DatabaseName returns a fresh database name, unique to this test, and
// drops that database when the test ends.
func DatabaseName(t testing.TB) string {
	t.Helper()
	c := Client(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + sanitize(t.Name()) + "_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Database(name).Drop(ctx)
	})
	return name
}

// Database returns a fresh database unique to this test, dropped when the
// test ends.
func Database(t testing.TB) *mongo.Database {
	t.Helper()
	return Client(t).Database(DatabaseName(t))
}

// sanitize keeps a short, valid prefix of a test name.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= 30 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
