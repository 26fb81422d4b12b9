package mongotest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/taskrun/taskrun/internal/devstore"
)

// Store is an embedded MongoDB-wire store (internal/devstore) that tests
// stop and start again in place: Stop and Start keep the address and the
// files, as a database server that goes down and comes back does.
type Store struct {
	// Addr is the host:port it listens on, fixed by the first Start.
	Addr string
	// Dir holds the SQLite files.
	Dir string
	// Log receives FerretDB's logs (nil: discarded).
	Log *slog.Logger
	// NoSync skips the fsync of each SQLite commit, as the development store
	// of `runtime deploy` does.
	NoSync bool

	mu  sync.Mutex
	srv *devstore.Server
}

// StartStore starts a store on addr (127.0.0.1:0 for any free port) with
// its files in dir.
func StartStore(addr, dir string, log *slog.Logger) (*Store, error) {
	s := &Store{Addr: addr, Dir: dir, Log: log}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts the store; it is an error to start a running store.
func (s *Store) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := context.Background()
	if s.srv != nil {
		return s.srv.Start(ctx)
	}
	srv, err := devstore.Start(ctx, devstore.Config{Dir: s.Dir, Addr: s.Addr, Log: s.Log, Durable: !s.NoSync})
	if err != nil {
		return err
	}
	s.srv, s.Addr = srv, srv.Addr()
	return nil
}

// Stop stops the store and waits until its listener, its connections and
// its files are closed. Stopping a stopped store does nothing.
func (s *Store) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Stop()
	}
}

// URI is the store's connection string naming database db.
func (s *Store) URI(db string) string { return devstore.URI(s.Addr, db) }
