package runtime_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

func TestBufferedWriter(t *testing.T) {
	var out runtimetest.Buffer
	bw := runtime.NewBufferedWriter(&out, 1<<10, 20*time.Millisecond)
	bw.Write([]byte("one\n"))
	if out.String() != "" {
		t.Fatalf("written through at once: %q", out.String())
	}
	deadline := time.Now().Add(2 * time.Second)
	for out.String() != "one\n" {
		if time.Now().After(deadline) {
			t.Fatalf("not flushed after the interval: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	big := strings.Repeat("x", 2<<10) // over the buffer: written at once, by the flusher
	bw.Write([]byte(big))
	for deadline := time.Now().Add(2 * time.Second); !strings.Contains(out.String(), big); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a write larger than the buffer was held back")
		}
	}
	bw.Write([]byte("last\n"))
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "last\n") {
		t.Errorf("Close did not flush: %q", out.String()[len(out.String())-10:])
	}
}

// blockingWriter holds every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
	mu      sync.Mutex
	out     strings.Builder
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

// A slow output does not hold back the writers (below 4 batches pending),
// and the lines still go out in order.
func TestBufferedWriterSlowOutput(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{}), entered: make(chan struct{})}
	bw := runtime.NewBufferedWriter(w, 1<<10, time.Millisecond)
	bw.Write([]byte("line 0\n"))
	<-w.entered // the flusher is stuck writing line 0
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 1; i < 300; i++ { // about 2.5 KiB: over one batch, under 4
			fmt.Fprintf(bw, "line %d\n", i)
		}
	}()
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("writers waited for a stuck output")
	}
	close(w.release)
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range 300 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if w.out.String() != want.String() {
		t.Errorf("lines out of order or lost: %d bytes, want %d", len(w.out.String()), want.Len())
	}
}
