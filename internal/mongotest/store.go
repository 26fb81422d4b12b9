package mongotest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
)

var newMu sync.Mutex

// Store is an embedded MongoDB-wire store: FerretDB with its SQLite handler,
// listening on a loopback TCP address. Stop and Start keep the address and
// the files, as a database server that goes down and comes back does.
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

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
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
	if s.cancel != nil {
		return fmt.Errorf("store on %s is already running", s.Addr)
	}
	dir, err := filepath.Abs(s.Dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	newMu.Lock() // ferretdb.New writes a package variable
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: s.Addr},
		Handler:   "sqlite",
		SQLiteURL: s.sqliteURL(dir),
		Logger:    log,
	})
	newMu.Unlock()
	if err != nil {
		return fmt.Errorf("starting the store on %s: %w", s.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	// MongoDBURI waits until the listener is up.
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		cancel()
		<-done
		return err
	}
	s.Addr = u.Host
	s.cancel, s.done = cancel, done
	return nil
}

// Stop stops the store and waits until its listener, its connections and
// its files are closed. Stopping a stopped store does nothing.
func (s *Store) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
}

// URI is the store's connection string naming database db.
func (s *Store) URI(db string) string {
	return (&url.URL{Scheme: "mongodb", Host: s.Addr, Path: "/" + db}).String()
}

func (s *Store) sqliteURL(dir string) string {
	u := &url.URL{Scheme: "file", Path: dir + "/"}
	if s.NoSync {
		u.RawQuery = "_pragma=synchronous(normal)"
	}
	return u.String()
}
