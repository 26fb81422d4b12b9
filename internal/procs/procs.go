// Package procs sizes Go's scheduler for serving: a FIFO gate of Cores
// slots for CPU-bound work, and one P more than that for the network.
//
// Go polls the network for ready connections only when a P runs out of
// work (and from sysmon, every 10 ms). With every P busy signing tokens,
// requests that have arrived wait unseen while the connections just served
// are served again: on 2 cores at 16 connections, GET /token with EdDSA
// had a median of 203 µs against a mean of 1.37 ms (connections / rate)
// and a p99 70 times its median. A P without CPU-bound work sleeps in the
// poller instead: it takes each request as it arrives, reads it and queues
// it at the gate, which lets the CPU-bound part run in arrival order on
// Cores Ps (cmd/bench, README "Performance").
package procs

import (
	"os"
	"runtime"
)

// Cores is how many goroutines may run CPU-bound work at once: GOMAXPROCS
// as the process started, which is Go's default (the CPUs the process may
// use, cgroup limits included) or the GOMAXPROCS variable.
var Cores = runtime.GOMAXPROCS(0)

// SpareForNetwork sets GOMAXPROCS to Cores+1 for a serving process and
// returns it, unless the GOMAXPROCS variable is set: then an operator chose
// and it is left alone. Setting it stops Go from following a later change
// of the CPU limit; a restart picks that up.
func SpareForNetwork() int {
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return runtime.GOMAXPROCS(0)
	}
	runtime.GOMAXPROCS(Cores + 1)
	return Cores + 1
}
