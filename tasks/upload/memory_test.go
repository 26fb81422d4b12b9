package upload

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// hostile are batches of tiny nested values, the shapes that cost many
// times their size as Go values.
func hostile(size int) map[string][]byte {
	wrap := func(data string) []byte {
		return []byte(`{"batch":[{"op":"PUT","table":"t","id":"x","data":{"v":` + data + `}}]}`)
	}
	rep := func(item string, n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]"
	}
	var dense strings.Builder
	dense.WriteString(`{"batch":[{"op":"PUT","table":"t","id":"x","data":{`)
	for i := 0; dense.Len() < size; i++ {
		if i > 0 {
			dense.WriteString(",")
		}
		fmt.Fprintf(&dense, `"%x":%d`, i, i%10)
	}
	dense.WriteString("}}]}")
	return map[string][]byte{
		"empty objects": wrap(rep("{}", size/3)),
		"empty arrays":  wrap(rep("[]", size/3)),
		"small numbers": wrap(rep("1", size/2)),
		"nested":        wrap(rep(`[{"a":[1]}]`, size/12)),
		"short strings": wrap(rep(`"a"`, size/4)),
		"dense fields":  []byte(dense.String()),
	}
}

// TestDecodeMemoryBound: a batch of any shape takes at most decodeFactor
// times its size (plus the allowance) while it is decoded; the hostile
// ones are refused with 413 when they reach it, and a realistic batch is
// well within it.
func TestDecodeMemoryBound(t *testing.T) {
	const size = 3 << 20
	measure := func(body []byte) (float64, error) {
		runtime.GC()
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		ops, err := decode(body, 1_000_000)
		runtime.ReadMemStats(&b)
		runtime.KeepAlive(ops)
		return float64(b.TotalAlloc-a.TotalAlloc) / float64(len(body)), err
	}
	limit := float64(decodeFactor) + float64(decodeAllowance)/size + 0.1
	for name, body := range hostile(size) {
		mul, err := measure(body)
		var de *decodeError
		if !errors.As(err, &de) || de.status != http.StatusRequestEntityTooLarge || !strings.Contains(de.msg, "times its size in memory") {
			t.Errorf("%s: %v, want a 413 for its memory", name, err)
		}
		if mul > limit {
			t.Errorf("%s: decoding allocated %.2fx the batch, want at most %.2fx", name, mul, limit)
		}
	}
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"op":"PUT","type":"todos","id":"%08d-1111-2222-3333-444455556666","data":{"description":"Buy milk","completed":0,"list_id":"61d1aaaa-1111-2222-3333-444455556666","created_at":"2024-05-01T10:00:00.000Z","n":3.5,"tags":["a","b"]}}`, i)
	}
	b.WriteString("]}")
	// A realistic batch stays well inside the budget (2x + 1 MiB): about
	// 2.0-2.3x allocated since field names are copies (94ad38f).
	mul, err := measure([]byte(b.String()))
	if err != nil || mul > 2.5 {
		t.Errorf("a realistic batch: %.2fx, %v", mul, err)
	}
	t.Logf("a realistic batch of %d bytes decodes in %.2fx its size", b.Len(), mul)
}

// TestAdmission: batches in flight hold UPLOAD_MEMORY; one that does not
// fit waits, then gets 503 with Retry-After, and fits once the first is
// done.
func TestAdmission(t *testing.T) {
	const limit = 64 << 10
	name := storetest.DatabaseName(t)
	dep := deployment.New("testing", false, map[string]string{"MONGO_URI": storetest.URI(t), "MONGO_DATABASE": name,
		"UPLOAD_AUTH": "off", VarMemory: fmt.Sprint(memFactor * limit)})
	dep.BodyLimit, dep.RequestTimeout = limit, 2*time.Second
	h := &testHost{Host: runtimetest.New(t, dep, New(nil)), db: storetest.Client(t).Database(name)}
	pr, pw := io.Pipe()
	first := make(chan int, 1)
	go func() { // length unknown: it holds the whole budget while it is read
		resp := h.Do(http.MethodPost, "/upload", pr, "Content-Type", "application/json")
		first <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	status, m, hdr := h.post(t, `{"batch":[]}`)
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "2" || !strings.Contains(fmt.Sprint(m["error"]), VarMemory) {
		t.Errorf("a batch beside one holding the memory: %d %v %v", status, m, hdr)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond || waited > 1800*time.Millisecond {
		t.Errorf("it waited %s, want about half the request timeout", waited)
	}
	io.WriteString(pw, `{"batch":[{"op":"PUT","table":"a","id":"1","data":{"x":1}}]}`)
	pw.Close()
	if s := <-first; s != http.StatusOK {
		t.Errorf("the first batch: %d", s)
	}
	if status, m, _ := h.post(t, `{"batch":[]}`); status != http.StatusOK {
		t.Errorf("after the first: %d %v", status, m)
	}
	if !strings.Contains(scrapeText(t, h), `upload_busy_total{deployment="testing",reason="memory"} 1`) {
		t.Error("the 503 is not counted")
	}
}

func scrapeText(t *testing.T, h *testHost) string {
	t.Helper()
	resp := h.Do(http.MethodGet, "/metrics", nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
