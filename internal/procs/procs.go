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

var waits atomic.Uint64

// Waited records that CPU-bound work waited for a core (a gate of Cores
// slots was full).
func Waited() { waits.Add(1) }

// Waits is how many times Waited was called.
func Waits() uint64 { return waits.Load() }

// Adapt runs until ctx is done, or returns at once when the GOMAXPROCS
// variable is set (an operator chose). Within a tenth of a second of work
// waiting at a gate it sets GOMAXPROCS to Cores+1; after a second without
// any, back to Cores. It reports each change to changed (nil: none).
// Setting GOMAXPROCS stops Go from following a later change of the CPU
// limit; a restart picks that up.
func Adapt(ctx context.Context, changed func(procs int)) {
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return
	}
	adapt(ctx, 100*time.Millisecond, time.Second, changed)
}

func adapt(ctx context.Context, tick, idle time.Duration, changed func(int)) {
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
