// Package mongotest gives the commands' tests, benchmarks and soak runs a
// real MongoDB wire-protocol server: TEST_MONGO_URI when set, else an
// embedded FerretDB on SQLite listening on loopback (Store), which can be
// stopped and started again in place.
package mongotest

import (
	"os"
	"sync"
	"testing"
)

var (
	once   sync.Once
	shared string
	err    error
)

// URI returns TEST_MONGO_URI when set, else the URI of one embedded server
// shared by the whole test binary.
func URI(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("TEST_MONGO_URI"); u != "" {
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
		t.Fatal(err)
	}
	return shared
}

// External reports whether the tests run against TEST_MONGO_URI, a server
// they cannot stop.
func External() bool { return os.Getenv("TEST_MONGO_URI") != "" }
