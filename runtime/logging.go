package runtime

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// a mask before writing to w, whether it is written as is, quoted (%q) or
// escaped in a JSON string. Writes are serialised.
func Redact(w io.Writer, secrets []string) io.Writer {
	return &redactor{w: w, secrets: secretForms(secrets)}
}

// RedactString masks each secret in s as Redact does.
func RedactString(s string, secrets []string) string {
	return string(redactBytes([]byte(s), secretForms(secrets)))
}

// secretForms returns the ways each secret of 6 bytes or more may be
// written out: as is, Go-quoted, JSON-escaped (as zerolog and encoding/json
// escape), and Go-quoted then JSON-escaped, longest first.
func secretForms(secrets []string) [][]byte {
	seen := map[string]bool{}
	var out [][]byte
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			out = append(out, []byte(f))
		}
	}
	for _, s := range secrets {
		if len(s) < 6 {
			continue
		}
		q := strconv.Quote(s)
		for _, f := range []string{s, q[1 : len(q)-1]} {
			add(f)
			add(jsonEscape(f, false))
			add(jsonEscape(f, true))
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// jsonEscape escapes s as in a JSON string: zerolog escapes quotes,
// backslashes and control characters; encoding/json also escapes <, > and &.
func jsonEscape(s string, html bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c < 0x20 || html && (c == '<' || c == '>' || c == '&'):
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// holdsSecret reports whether s contains a form of a secret (forms as
// secretForms returns them).
func holdsSecret(s string, forms [][]byte) bool {
	for _, f := range forms {
		if strings.Contains(s, string(f)) {
			return true
		}
	}
	return false
}

func redactBytes(p []byte, forms [][]byte) []byte {
	for _, s := range forms {
		if bytes.Contains(p, s) {
			p = bytes.ReplaceAll(p, s, maskBytes)
		}
	}
	return p
}

type redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte
}

var maskBytes = []byte("********")

func (r *redactor) Write(p []byte) (int, error) {
	out := redactBytes(p, r.secrets)
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

// BufferedWriter batches writes to an underlying writer, which is flushed
// when size bytes are pending, every interval, and on Close: one write
// system call per batch of log lines instead of one per request. A crash
// loses at most one interval of lines.
//
// Writers only append to the pending batch; the batch is written by the
// flusher (or Flush) without holding the writers' lock, so a request
// logging its line never waits for a slow stdout (a pipe to a log
// collector) unless 4 batches are pending, which bounds the memory.
type BufferedWriter struct {
	mu      sync.Mutex // guards pending
	pending []byte
	size    int
	wmu     sync.Mutex // held while a batch is taken and written: batches go out in order
	w       io.Writer
	spare   []byte // the last batch written, reused (under wmu)
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// NewBufferedWriter starts a BufferedWriter over w.
func NewBufferedWriter(w io.Writer, size int, interval time.Duration) *BufferedWriter {
	b := &BufferedWriter{w: w, size: size, pending: make([]byte, 0, size),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
			case <-b.kick:
			}
			_ = b.Flush()
		}
	}()
	return b
}

func (b *BufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.pending = append(b.pending, p...)
	n := len(b.pending)
	b.mu.Unlock()
	switch {
	case n >= 4*b.size: // the flusher is behind: wait for the output
		if err := b.Flush(); err != nil {
			return 0, err
		}
	case n >= b.size:
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Flush writes what is pending now.
func (b *BufferedWriter) Flush() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = b.spare[:0]
	b.mu.Unlock()
	if len(batch) == 0 {
		b.spare = batch
		return nil
	}
	_, err := b.w.Write(batch)
	if cap(batch) <= 4*b.size {
		b.spare = batch
	} else {
		b.spare = nil // after a burst: not kept
	}
	return err
}

// Close stops the flusher and writes what is pending.
func (b *BufferedWriter) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}

// accessLogger writes the access log's lines. Given a writer of its own
// (Options.AccessLog) it writes there without the redactor, which scanned
// every line for every form of every secret, and stamps "time" itself
// from a string made once a second (the format, RFC 3339, has seconds
// only) where zerolog's Timestamp formats the time on every line. Without
// one, its lines go to the runtime's log as any other.
type accessLogger struct {
	log   zerolog.Logger
	stamp bool // log has no Timestamp hook: add "time"
	last  atomic.Pointer[timeStamp]
}

type timeStamp struct {
	sec int64
	s   string
}

func newAccessLogger(w io.Writer, log zerolog.Logger) *accessLogger {
	if w == nil {
		return &accessLogger{log: log}
	}
	return &accessLogger{log: zerolog.New(w), stamp: true}
}

// event starts a line at level info, or error for a status of 500 or more.
func (a *accessLogger) event(status int) *zerolog.Event {
	if status >= 500 {
		return a.log.Error()
	}
	return a.log.Info()
}

// msg ends the line as zerolog's Timestamp would: "time", then "message".
func (a *accessLogger) msg(ev *zerolog.Event, now time.Time) {
	if a.stamp {
		ev = ev.Str(zerolog.TimestampFieldName, a.timeString(now))
	}
	ev.Msg("request")
}

func (a *accessLogger) timeString(now time.Time) string {
	sec := now.Unix()
	if ts := a.last.Load(); ts != nil && ts.sec == sec {
		return ts.s
	}
	ts := &timeStamp{sec: sec, s: now.Format(time.RFC3339)}
	a.last.Store(ts)
	return ts.s
}
