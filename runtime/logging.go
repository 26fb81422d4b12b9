package runtime

import (
	"bytes"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// NewLogger returns a logger that writes JSON lines to w, or a readable
// console format when w is a terminal, with every secret replaced by a mask.
func NewLogger(w io.Writer, secrets []string) zerolog.Logger {
	out := Redact(w, secrets)
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(out).With().Timestamp().Logger()
}

// Redact returns a writer that replaces each secret (of 6 bytes or more) by
// a mask before writing to w. Writes are serialised.
func Redact(w io.Writer, secrets []string) io.Writer {
	r := &redactor{w: w}
	for _, s := range secrets {
		if len(s) >= 6 {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
	return r
}

type redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte
}

var maskBytes = []byte("********")

func (r *redactor) Write(p []byte) (int, error) {
	out := p
	for _, s := range r.secrets {
		if bytes.Contains(out, s) {
			out = bytes.ReplaceAll(out, s, maskBytes)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CappedBuffer is a goroutine-safe buffer that keeps the first Max bytes
// written and counts what it dropped.
type CappedBuffer struct {
	Max     int
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int
}

func (b *CappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.Max - b.buf.Len()
	if room >= len(p) {
		b.buf.Write(p)
		return len(p), nil
	}
	// Keep whole lines only, so the kept part stays parseable.
	if room > 0 {
		if i := bytes.LastIndexByte(p[:room], '\n'); i >= 0 {
			b.buf.Write(p[:i+1])
			b.dropped += len(p) - (i + 1)
			return len(p), nil
		}
	}
	b.dropped += len(p)
	return len(p), nil
}

// Bytes returns a copy of what was kept, and how many bytes were dropped.
func (b *CappedBuffer) Bytes() ([]byte, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes()), b.dropped
}

// Console returns a writer that renders zerolog JSON lines readably, with
// colour only on a terminal.
func Console(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	color := ok && isatty.IsTerminal(f.Fd())
	return zerolog.ConsoleWriter{Out: w, NoColor: !color, TimeFormat: time.TimeOnly, FieldsExclude: []string{"task", "run_id"}}
}
