// Package mongotest gives the commands' tests, benchmarks and soak runs a
// real MongoDB wire-protocol server: TEST_MONGO_URI when set, else an
// embedded FerretDB on SQLite listening on loopback. (The tasks have their
// own in tasks/internal/store; Go's internal rule keeps cmd/ from importing
// it.)
package mongotest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Server is a running embedded FerretDB.
type Server struct {
	URI    string
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs FerretDB with its SQLite files in dir, on addr (such as
// 127.0.0.1:0, or a fixed port to restart a stopped server in place).
func Start(dir, addr string) (*Server, error) {
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})),
	})
	if err != nil {
		return nil, fmt.Errorf("starting FerretDB: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cancel: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = f.Run(ctx) }()
	s.URI = f.MongoDBURI()
	return s, nil
}

// Stop stops the server and waits until it has closed its port.
func (s *Server) Stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

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
		var s *Server
		s, err = Start(dir, "127.0.0.1:0")
		if err == nil {
			shared = s.URI
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
