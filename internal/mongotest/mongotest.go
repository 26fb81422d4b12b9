// Package mongotest gives tests, benchmarks and soak runs a real MongoDB
// wire-protocol server: TEST_MONGO_URI when set, else an embedded FerretDB
// on SQLite (internal/devstore) listening on loopback, one per test binary
// (URI), or one of their own that they can stop and start again in place
// (Store). internal/store/storetest adds per-test databases on top.
package mongotest

import (
	"os"
	"sync"
	"testing"
)

// EnvURI names the environment variable of a real server for tests.
const EnvURI = "TEST_MONGO_URI"

var (
	once   sync.Once
	shared string
	err    error
)

// URI returns TEST_MONGO_URI when set, else the URI (no database) of one
// embedded server shared by the whole test binary, started on first use
// in a temporary folder and left running until the binary exits (a
// FerretDB per test would cost ~100 ms each).
func URI(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURI); u != "" {
		return u
	}
	once.Do(func() {
		dir, derr := os.MkdirTemp("", "mongotest")
		if derr != nil {
			err = derr
			return
		}
		var s *Store
		s, err = StartStore("127.0.0.1:0", dir, nil)
		if err == nil {
			shared = s.URI("")
		}
	})
	if err != nil {
		t.Fatalf("starting the test MongoDB server: %v", err)
	}
	return shared
}

// External reports whether the tests run against TEST_MONGO_URI, a server
// they cannot stop.
func External() bool { return os.Getenv(EnvURI) != "" }
