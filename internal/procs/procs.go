// Package procs sizes Go's scheduler for serving: a FIFO gate of Cores
// slots for CPU-bound work, and, while that work queues, one P more for
// the network.
//
// Go polls the network for ready connections only when a P runs out of
// work (and from sysmon, every 10 ms). With every P busy signing tokens,
// requests that have arrived wait unseen while the connections just served
// are served again: on 2 cores at 16 connections, GET /token with EdDSA
// had a median of 241 µs against a mean of 1.38 ms (connections / rate)
// and a p99 60 times its median. A P without CPU-bound work sleeps in the
// poller instead: it takes each request as it arrives, reads it and queues
// it at the gate, which lets the CPU-bound part run in arrival order on
// Cores Ps (cmd/bench, README "Performance"). That P's wake-ups cost the
// paths that are not CPU-bound (GET /jwks about 6%), so it is there only
// while CPU-bound work waits for a core.
package procs

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// Cores is how many goroutines may run CPU-bound work at once: GOMAXPROCS
// as the process started, which is Go's default (the CPUs the process may
// use, cgroup limits included) or the GOMAXPROCS variable.
var Cores = runtime.GOMAXPROCS(0)

var waits atomic.Uint64 // entries that found a Gate full

// Gate lets at most n goroutines at a time into a CPU-bound section and
// the others in in the order they arrived. With more runnable CPU-bound
// goroutines than Ps, Go's scheduler (per-P run queues, runnext, work
// stealing) serves them in no fair order, so under load some wait several
// turns longer than others. Waiters here are parked on a channel, whose
// senders are woken first come, first served. A full gate is what Adapt
// watches for.
type Gate struct{ slots chan struct{} }

// NewGate returns a gate of n slots (at least 1); CPU-bound work takes
// Cores.
func NewGate(n int) *Gate {
	return &Gate{slots: make(chan struct{}, max(n, 1))}
}

// Enter waits for a slot.
func (g *Gate) Enter() {
	select {
	case g.slots <- struct{}{}:
	default:
		waits.Add(1) // every slot is busy: the spare P is worth its cost
		g.slots <- struct{}{}
	}
}

// Leave gives the slot back.
func (g *Gate) Leave() { <-g.slots }

// Adapt runs until ctx is done, or returns at once when the GOMAXPROCS
// variable is set (an operator chose). Within a tenth of a second of work
// waiting at a Gate it sets GOMAXPROCS to Cores+1; after a second without
// any, back to Cores. Setting GOMAXPROCS stops Go from following a later
// change of the CPU limit; a restart picks that up.
func Adapt(ctx context.Context) { adapt(ctx, 100*time.Millisecond, time.Second, nil) }

// adapt is Adapt with its periods, reporting each change to changed (nil:
// none).
func adapt(ctx context.Context, tick, idle time.Duration, changed func(int)) {
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	defer runtime.GOMAXPROCS(Cores)
	var (
		seen  = waits.Load()
		spare bool
		quiet time.Duration
	)
	set := func(on bool) {
		spare = on
		n := Cores
		if on {
			n++
		}
		runtime.GOMAXPROCS(n)
		if changed != nil {
			changed(n)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w := waits.Load()
		switch {
		case w != seen:
			seen, quiet = w, 0
			if !spare {
				set(true)
			}
		case spare:
			if quiet += tick; quiet >= idle {
				set(false)
			}
		}
	}
}
