package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/rs/zerolog"
)

// StartEmbedded starts an embedded FerretDB that keeps its data in SQLite
// files under dir (created if missing), listening on a free loopback port,
// and returns its connection string. stop shuts it down and waits for it;
// disconnect clients first, or stop waits a few seconds for them. log gets
// FerretDB's own log (nil: discarded); see NewSlogger.
func StartEmbedded(ctx context.Context, dir string, log *slog.Logger) (uri string, stop func(), err error) {
	if err := ensureDir(dir); err != nil {
		return "", nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	startMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:   log,
		Handler:  "sqlite",
		// synchronous=normal: with FerretDB's WAL journal, a commit no
		// longer waits for an fsync; a power cut may lose the last writes
		// but never corrupts the files, which suits a development store.
		SQLiteURL: (&url.URL{Scheme: "file", Path: dir + "/", RawQuery: "_pragma=synchronous(normal)"}).String(),
	})
	startMu.Unlock()
	if err != nil {
		return "", nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(runCtx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				log.Error("the embedded store did not stop within 15s")
			}
		})
	}
	return f.MongoDBURI(), stop, nil
}

// NewSlogger returns a slog.Logger that passes errors only to a zerolog
// logger, for FerretDB: at warning level FerretDB logs every failed
// command's whole wire message (data included) and every dropped
// connection.
func NewSlogger(l zerolog.Logger) *slog.Logger {
	return slog.New(&zeroHandler{l: l.With().Str("component", "devstore").Logger(), min: slog.LevelError})
}

type zeroHandler struct {
	l     zerolog.Logger
	min   slog.Level
	attrs []slog.Attr
	group string
}

func (h *zeroHandler) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= h.min }

func (h *zeroHandler) Handle(_ context.Context, r slog.Record) error {
	ev := h.l.Warn()
	if r.Level >= slog.LevelError {
		ev = h.l.Error()
	}
	add := func(a slog.Attr) bool {
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		ev = ev.Str(key, fmt.Sprint(a.Value.Resolve().Any()))
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	ev.Msg(r.Message)
	return nil
}

func (h *zeroHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *zeroHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
