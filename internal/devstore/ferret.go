//go:build !nodevstore

package devstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Included reports whether this binary has the development store (it was
// not built with -tags nodevstore).
const Included = true

// Config says where a store keeps its files and listens.
type Config struct {
	// Dir holds the SQLite files (created, private to the user).
	Dir string
	// Addr is host:port to listen on; empty: 127.0.0.1:0, any free port.
	Addr string
	// Log gets FerretDB's own log (nil: discarded); see Slogger.
	Log *slog.Logger
	// Durable makes every commit wait for an fsync. Without it (the
	// default, synchronous=normal with FerretDB's WAL journal) a power cut
	// may lose the last writes but never corrupts the files, which suits a
	// development store.
	Durable bool
}

// Server is a running embedded store: FerretDB with its SQLite handler on a
// loopback TCP address. Stop and Start again keep the address and the
// files, as a database server that goes down and comes back does.
type Server struct {
	cfg Config
	dir string

	mu     sync.Mutex
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	ix     *indexer
}

// newMu serializes ferretdb.New, which writes a package variable.
var newMu sync.Mutex

// Start starts a store. ctx bounds only the start; the store runs until
// Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Log == nil {
		// Disabled at every level: FerretDB then does not even format
		// its records (at warning level, every failed command's whole
		// wire message).
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, dir: dir, addr: cfg.Addr}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts a stopped store again on the same address and files; it is
// an error to start a running one.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return fmt.Errorf("the store on %s is already running", s.addr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	q := url.Values{}
	if !s.cfg.Durable {
		q.Set("_pragma", "synchronous(normal)")
	}
	newMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: s.addr},
		Handler:   "sqlite",
		SQLiteURL: (&url.URL{Scheme: "file", Path: s.dir + "/", RawQuery: q.Encode()}).String(),
		Logger:    s.cfg.Log,
	})
	newMu.Unlock()
	if err != nil {
		return fmt.Errorf("starting the development store on %s: %w", s.addr, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(runCtx)
	}()
	// MongoDBURI waits until the listener is up.
	u, err := url.Parse(f.MongoDBURI())
	if err != nil || u.Host == "" {
		cancel()
		<-done
		return errors.Join(errors.New("the development store did not start listening"), err)
	}
	s.addr, s.cancel, s.done = u.Host, cancel, done
	s.ix = startIndexer(s.dir, s.cfg.Log)
	return nil
}

// Stop stops the store and waits until its listener, its connections and
// its files are closed (at most 15 s: clients still connected keep
// FerretDB waiting for them; disconnect them first). Stopping a stopped
// store does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel == nil {
		return
	}
	s.ix.close()
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cfg.Log.Error("the development store did not stop within 15s")
	}
	s.cancel, s.done, s.ix = nil, nil, nil
}

// Addr is the host:port the store listens on.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Dir is the folder of the store's files.
func (s *Server) Dir() string { return s.dir }

// URI is the store's connection string, naming database db ("" : none).
func (s *Server) URI(db string) string { return URI(s.Addr(), db) }
