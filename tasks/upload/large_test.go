package upload

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestLargeBatchesOfExistingDocuments replaces hundreds of existing documents
// in one batch, from several clients at once, twice. FerretDB (the
// development store) holds one SQLite connection per matching statement of
// a command, from a pool of 100: a command of 100 such statements used to
// wait for itself forever and wedge the store.
func TestLargeBatchesOfExistingDocuments(t *testing.T) {
	h := newHost(t, nil, nil)
	batch := func(client, round int) string {
		ops := make([]string, 0, 300)
		for i := 0; i < 150; i++ {
			for _, coll := range []string{"lists", "todos"} {
				ops = append(ops, fmt.Sprintf(`{"op":"PUT","table":%q,"id":"c%d-%d","data":{"round":%d}}`, coll, client, i, round))
			}
		}
		return `{"batch":[` + strings.Join(ops, ",") + `]}`
	}
	for round := 1; round <= 2; round++ {
		var wg sync.WaitGroup
		for client := 0; client < 3; client++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.mustApply(t, batch(client, round))
			}()
		}
		wg.Wait()
	}
	for _, coll := range []string{"lists", "todos"} {
		got := docs(t, h.db, coll)
		if len(got) != 450 {
			t.Fatalf("%s has %d documents, want 450", coll, len(got))
		}
		for id, d := range got {
			if fmt.Sprint(d["round"]) != "2" {
				t.Fatalf("%s %s = %v, want round 2", coll, id, d)
			}
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
