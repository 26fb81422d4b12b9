package upload

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestLargeBatchesOfExistingDocuments replaces over a hundred existing
// documents in one batch, from two clients at once, twice. FerretDB (the
// development store) holds one SQLite connection per matching statement of
// a command, from a pool of 100: a command of 100 such statements used to
// wait for itself forever and wedge the store.
func TestLargeBatchesOfExistingDocuments(t *testing.T) {
	h := newHost(t, nil, nil)
	batch := func(client, round int) string {
		ops := make([]string, 0, 110)
		for i := 0; i < 110; i++ {
			ops = append(ops, fmt.Sprintf(`{"op":"PUT","table":"lists","id":"c%d-%d","data":{"round":%d}}`, client, i, round))
		}
		return `{"batch":[` + strings.Join(ops, ",") + `]}`
	}
	for round := 1; round <= 2; round++ {
		var wg sync.WaitGroup
		for client := 0; client < 2; client++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.mustApply(t, batch(client, round))
			}()
		}
		wg.Wait()
	}
	got := docs(t, h.db, "lists")
	if len(got) != 220 {
		t.Fatalf("lists has %d documents, want 220", len(got))
	}
	for id, d := range got {
		if fmt.Sprint(d["round"]) != "2" {
			t.Fatalf("lists %s = %v, want round 2", id, d)
		}
	}
}

// TestBatchOverOneCommand: documents over maxChunkBytes in all go in several
// write commands, every one written.
func TestBatchOverOneCommand(t *testing.T) {
	h := newHost(t, nil, nil)
	big := strings.Repeat("x", 600<<10)
	var ops []string
	for i := 0; i < 5; i++ {
		ops = append(ops, fmt.Sprintf(`{"op":"PUT","table":"files","id":"f%d","data":{"body":%q,"n":%d}}`, i, big, i))
	}
	h.mustApply(t, `{"batch":[`+strings.Join(ops, ",")+`]}`)
	got := docs(t, h.db, "files")
	if len(got) != 5 {
		t.Fatalf("%d documents, want 5", len(got))
	}
	for id, d := range got {
		if d["body"] != big {
			t.Errorf("%s: body of %d bytes, want %d", id, len(fmt.Sprint(d["body"])), len(big))
		}
	}
	if approxSize(bson.D{{Key: "body", Value: big}}) < len(big) {
		t.Error("approxSize underestimates a string")
	}
}
