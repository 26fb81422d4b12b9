package procs

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestCoresIsGOMAXPROCSAtStart(t *testing.T) {
	if Cores != runtime.GOMAXPROCS(0) {
		t.Fatalf("Cores %d, GOMAXPROCS %d", Cores, runtime.GOMAXPROCS(0))
	}
}

// Work waiting at a gate brings the spare P within a tick; a quiet spell
// takes it away; stopping leaves GOMAXPROCS at Cores.
func TestAdapt(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set in the test's environment")
	}
	var (
		mu      sync.Mutex
		changes []int
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		adapt(ctx, 10*time.Millisecond, 100*time.Millisecond, func(n int) {
			mu.Lock()
			changes = append(changes, n)
			mu.Unlock()
		})
	}()
	waitFor := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); runtime.GOMAXPROCS(0) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("GOMAXPROCS %d, want %d", runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := runtime.GOMAXPROCS(0); n != Cores {
		t.Fatalf("GOMAXPROCS %d before any work waited, want %d", n, Cores)
	}
	// Work that keeps waiting keeps the spare P.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				waits.Add(1)
			}
		}
	}()
	waitFor(Cores + 1)
	time.Sleep(300 * time.Millisecond)
	if n := runtime.GOMAXPROCS(0); n != Cores+1 {
		t.Errorf("GOMAXPROCS %d while work waits, want %d", n, Cores+1)
	}
	close(stop)
	waitFor(Cores)
	waits.Add(1)
	waitFor(Cores + 1)
	cancel()
	<-done
	if n := runtime.GOMAXPROCS(0); n != Cores {
		t.Errorf("GOMAXPROCS %d after Adapt stopped, want %d", n, Cores)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []int{Cores + 1, Cores, Cores + 1}
	if len(changes) != len(want) || changes[0] != want[0] || changes[1] != want[1] || changes[2] != want[2] {
		t.Errorf("changes %v, want %v", changes, want)
	}
}

func TestAdaptObeysTheVariable(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	before := runtime.GOMAXPROCS(0)
	waits.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	adapt(ctx, 10*time.Millisecond, 100*time.Millisecond, func(int) { t.Error("changed GOMAXPROCS though the variable is set") })
	if time.Since(start) > 500*time.Millisecond || runtime.GOMAXPROCS(0) != before {
		t.Errorf("Adapt with GOMAXPROCS set: ran %s, GOMAXPROCS %d (was %d)", time.Since(start), runtime.GOMAXPROCS(0), before)
	}
}
