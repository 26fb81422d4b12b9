package upload

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/taskrun/taskrun/runtime"
)

// A batch is counted at memFactor times its size while it is read,
// decoded and written: its body, its decoded data (at most decodeFactor
// times the body, see decode.go) and the write's buffers. UPLOAD_MEMORY
// bounds what the batches in flight in the process may hold together; a
// batch that does not fit waits up to admitWait, then gets a 503 with
// Retry-After, which the client retries.
const (
	memFactor      = 4
	memBatches     = 4 // default UPLOAD_MEMORY: this many of the largest batches
	admitWait      = 5 * time.Second
	admitRetrySecs = 2
)

// admission is the process's memory budget for batches.
type admission struct {
	sem       *semaphore.Weighted
	limit     int64 // bytes
	bodyLimit int64
	busy      *runtime.Counter
}

// ticket is one batch's share of the budget.
type ticket struct {
	a *admission
	n int64
}

// admit reserves what r's batch may take, from its declared length (the
// body limit when it declares none).
func (a *admission) admit(ctx context.Context, r *http.Request) (*ticket, error) {
	size := r.ContentLength
	if size < 0 || size > a.bodyLimit {
		size = a.bodyLimit
	}
	n := memFactor * max(size, 1)
	wait := admitWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := a.sem.Acquire(wctx, n); err != nil {
		a.busy.Add("memory", 1)
		return nil, runtime.Unavailable(admitRetrySecs, err, "too many batches are being processed at once (%s): retry the batch", VarMemory)
	}
	return &ticket{a: a, n: n}, nil
}

// fit gives back what the batch, now read, does not need.
func (t *ticket) fit(size int) {
	if n := memFactor * max(int64(size), 1); n < t.n {
		t.a.sem.Release(t.n - n)
		t.n = n
	}
}

func (t *ticket) release() { t.a.sem.Release(t.n) }
