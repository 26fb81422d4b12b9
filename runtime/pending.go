package runtime

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Bounds of the records waiting for an unreachable run store.
const (
	MaxPendingRuns  = 1000
	MaxPendingBytes = 32 << 20
)

// Retry delays of the records waiting for the store: doubling from the
// first to the last.
const (
	pendingFirstRetry = 500 * time.Millisecond
	pendingLastRetry  = 30 * time.Second
)

// DroppedRecordsMetric counts the run records that never reached the
// store, by reason: buffer_full (the buffer was full: the oldest went) or
// shutdown (the process stopped before the store came back).
const DroppedRecordsMetric = "runtime_run_records_dropped_total"

// pending holds the records the store did not take, in order, and retries
// them in one goroutine while there are any. While it holds any, new
// records queue behind them (keeping their order, and not waiting on a
// store that is known to fail).
type pending struct {
	store    RunStore
	log      zerolog.Logger
	dropped  *Counter
	maxRuns  int // MaxPendingRuns
	maxBytes int // MaxPendingBytes

	mu       sync.Mutex
	items    []pendingRecord
	bytes    int
	retrying bool
	closed   bool
	stop     chan struct{}
	done     chan struct{}
}

type pendingRecord struct {
	rec      *Record
	inserted bool // its start was inserted: update it
}

func (p pendingRecord) size() int {
	return len(p.rec.Logs) + len(p.rec.Params) + len(p.rec.Error) + 512
}

func newPending(store RunStore, log zerolog.Logger, dropped *Counter) *pending {
	return &pending{store: store, log: log, dropped: dropped, maxRuns: MaxPendingRuns, maxBytes: MaxPendingBytes, stop: make(chan struct{})}
}

func (p *pending) failing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items) > 0
}

func (p *pending) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items)
}

func (p *pending) add(r *Record, inserted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it := pendingRecord{rec: r, inserted: inserted}
	p.items = append(p.items, it)
	p.bytes += it.size()
	for len(p.items) > 1 && (len(p.items) > p.maxRuns || p.bytes > p.maxBytes) {
		old := p.items[0]
		p.items = p.items[1:]
		p.bytes -= old.size()
		p.drop("buffer_full", []pendingRecord{old})
	}
	if !p.retrying && !p.closed {
		p.retrying = true
		p.done = make(chan struct{})
		go p.retry(p.done)
	}
}

// drop counts and logs records given up on. p.mu is held.
func (p *pending) drop(reason string, items []pendingRecord) {
	if len(items) == 0 {
		return
	}
	if p.dropped != nil {
		p.dropped.Add(reason, int64(len(items)))
	}
	ids := make([]string, 0, 10)
	for _, it := range items[:min(len(items), 10)] {
		ids = append(ids, it.rec.Task+"/"+it.rec.ID)
	}
	p.log.Error().Str("reason", reason).Int("records", len(items)).Strs("runs", ids).
		Msg("run store: dropped run records that it could not take")
}

// retry writes the head record until the buffer is empty, waiting longer
// after each failure.
func (p *pending) retry(done chan struct{}) {
	defer close(done)
	delay := pendingFirstRetry
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(delay):
		}
		if p.flush(context.Background()) {
			return
		}
		delay = min(2*delay, pendingLastRetry)
	}
}

// flush writes records from the head until one fails (false) or none is
// left (true, and the retrier is marked stopped). ctx bounds the flush;
// each write also gets StoreTimeout.
func (p *pending) flush(ctx context.Context) bool {
	for {
		p.mu.Lock()
		if len(p.items) == 0 {
			p.retrying = false
			p.mu.Unlock()
			return true
		}
		head := p.items[0]
		p.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, StoreTimeout)
		err := writeRecord(wctx, p.store, head.rec, head.inserted)
		cancel()
		if err != nil && !errors.Is(err, ErrDuplicateRun) {
			return false
		}
		p.mu.Lock()
		if len(p.items) > 0 && p.items[0].rec == head.rec {
			p.items = p.items[1:]
			p.bytes -= head.size()
		}
		p.mu.Unlock()
		if err != nil {
			p.log.Error().Str("run_id", head.rec.ID).Str("task", head.rec.Task).
				Msg("run store: a run with this id was recorded meanwhile; this run's record is dropped")
		} else {
			p.log.Info().Str("run_id", head.rec.ID).Str("task", head.rec.Task).Msg("run store: saved a record that had waited")
		}
	}
}

// close stops the retrier, tries once more within ctx, and drops what is
// left.
func (p *pending) close(ctx context.Context) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
	if ctx.Err() == nil {
		p.flush(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop("shutdown", p.items)
	p.items, p.bytes = nil, 0
}
