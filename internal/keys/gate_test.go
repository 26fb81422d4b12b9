package keys

import (
	"bytes"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/procs"
)

// parkedSenders counts the goroutines parked sending on a channel (those
// waiting at a gate's enter).
func parkedSenders() int {
	buf := make([]byte, 1<<20)
	return bytes.Count(buf[:runtime.Stack(buf, true)], []byte("[chan send"))
}

func waitParked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for parkedSenders() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines parked at the gate, want %d", parkedSenders(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFIFOGateServesInArrivalOrder(t *testing.T) {
	g := newFIFOGate(1)
	g.enter() // held, so that every goroutine below waits
	const n = 8
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	base := parkedSenders()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.enter()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			g.leave()
		}()
		waitParked(t, base+i+1) // i is parked before i+1 starts
	}
	g.leave()
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("served in order %v, want arrival order 0..%d", order, n-1)
		}
	}
}

func TestFIFOGateLimitsConcurrency(t *testing.T) {
	const slots = 2
	g := newFIFOGate(slots)
	var in, most atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.enter()
			v := in.Add(1)
			for {
				m := most.Load()
				if v <= m || most.CompareAndSwap(m, v) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			in.Add(-1)
			g.leave()
		}()
	}
	wg.Wait()
	if m := most.Load(); m < 1 || m > slots {
		t.Fatalf("at most %d goroutines were inside at once, want 1..%d", m, slots)
	}
	if newFIFOGate(0).slots == nil || cap(newFIFOGate(0).slots) != 1 {
		t.Fatal("a gate of 0 slots must have 1")
	}
}

// BenchmarkSignTail signs on 16 goroutines in a closed loop (as GET /token
// under 16 connections, without HTTP) and reports the p50 and p99 latency
// of a signature, through the FIFO gate ("gate") and without it ("none": a
// gate with room for every goroutine): the difference is the scheduling
// order of CPU-bound goroutines outnumbering the Ps.
func BenchmarkSignTail(b *testing.B) {
	const workers = 16
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		p := genPair(b, alg, 0)
		for _, mode := range []string{"gate", "none"} {
			b.Run(mode+"/"+alg, func(b *testing.B) {
				s := mustNew(b, p.priv, p.pub)
				if mode == "none" {
					s.signer.gate = newFIFOGate(workers)
				}
				c := claimsAt(time.Now(), "user")
				lat := make([][]time.Duration, workers)
				var next atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							t0 := time.Now()
							if _, err := s.Sign(c); err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				slices.Sort(all)
				if len(all) < 100 {
					return
				}
				p50, p99 := all[len(all)/2], all[len(all)*99/100]
				b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(p99)/float64(p50), "p99/p50")
			})
		}
	}
}

// A full gate tells package procs that work waits for a core (which gives
// a serving process its spare P); one with room does not.
func TestFIFOGateReportsWaits(t *testing.T) {
	g := newFIFOGate(2)
	before := procs.Waits()
	g.enter()
	g.enter()
	if n := procs.Waits() - before; n != 0 {
		t.Fatalf("%d waits reported while the gate had room", n)
	}
	entered := make(chan struct{})
	go func() {
		g.enter()
		close(entered)
	}()
	for deadline := time.Now().Add(10 * time.Second); procs.Waits() == before; {
		if time.Now().After(deadline) {
			t.Fatal("no wait reported by an enter at a full gate")
		}
		time.Sleep(time.Millisecond)
	}
	g.leave()
	<-entered
	g.leave()
	g.leave()
}
