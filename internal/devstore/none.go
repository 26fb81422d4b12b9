//go:build nodevstore

package devstore

import (
	"context"
	"errors"
	"log/slog"
)

// Included reports whether this binary has the development store: this
// one was built with -tags nodevstore.
const Included = false

// ErrNotIncluded is what Start returns in a binary built without the
// development store.
var ErrNotIncluded = errors.New("this binary was built without the development store (-tags nodevstore): set MONGO_URI to a MongoDB server, or use a binary built without that tag (go build ./cmd/runtime, or go run ./cmd/runtime)")

// Config says where a store keeps its files and listens.
type Config struct {
	Dir     string
	Addr    string
	Log     *slog.Logger
	Durable bool
}

// Server is never started in this binary.
type Server struct{}

// Start returns ErrNotIncluded.
func Start(ctx context.Context, cfg Config) (*Server, error) { return nil, ErrNotIncluded }

func (s *Server) Start(ctx context.Context) error { return ErrNotIncluded }
func (s *Server) Stop()                           {}
func (s *Server) Addr() string                    { return "" }
func (s *Server) Dir() string                     { return "" }
func (s *Server) URI(db string) string            { return "" }
