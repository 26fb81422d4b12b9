package runtime_test

import (
	"strings"
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
	big := strings.Repeat("x", 2<<10) // over the buffer: written through
	bw.Write([]byte(big))
	if !strings.Contains(out.String(), big) {
		t.Error("a write larger than the buffer was held back")
	}
	bw.Write([]byte("last\n"))
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "last\n") {
		t.Errorf("Close did not flush: %q", out.String()[len(out.String())-10:])
	}
}
