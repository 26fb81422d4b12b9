package procs

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	g := NewGate(1)
	g.Enter() // held, so that every goroutine below waits
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
			g.Enter()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			g.Leave()
		}()
		waitParked(t, base+i+1) // i is parked before i+1 starts
	}
	g.Leave()
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("served in order %v, want arrival order 0..%d", order, n-1)
		}
	}
}

func TestFIFOGateLimitsConcurrency(t *testing.T) {
	const slots = 2
	g := NewGate(slots)
	var in, most atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.Enter()
			v := in.Add(1)
			for {
				m := most.Load()
				if v <= m || most.CompareAndSwap(m, v) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			in.Add(-1)
			g.Leave()
		}()
	}
	wg.Wait()
	if m := most.Load(); m < 1 || m > slots {
		t.Fatalf("at most %d goroutines were inside at once, want 1..%d", m, slots)
	}
	if cap(NewGate(0).slots) != 1 {
		t.Fatal("a gate of 0 slots must have 1")
	}
}

// A full gate counts a wait (what gives a serving process its spare P);
// one with room does not.
func TestFIFOGateReportsWaits(t *testing.T) {
	g := NewGate(2)
	before := waits.Load()
	g.Enter()
	g.Enter()
	if n := waits.Load() - before; n != 0 {
		t.Fatalf("%d waits reported while the gate had room", n)
	}
	entered := make(chan struct{})
	go func() {
		g.Enter()
		close(entered)
	}()
	for deadline := time.Now().Add(10 * time.Second); waits.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatal("no wait reported by an enter at a full gate")
		}
		time.Sleep(time.Millisecond)
	}
	g.Leave()
	<-entered
	g.Leave()
	g.Leave()
}
