// Package load drives a runtime the way PowerSync clients do, and checks
// that nothing they were told was written got lost. The soak program
// (cmd/soak) and the reliability tests (cmd/runtime) share it.
//
//   - Gen makes a client's CRUD operations (PUT, PATCH, DELETE) over its own
//     rows, and Model keeps what the database must hold once they are
//     acknowledged.
//   - Client uploads batches with the SDK's retry behaviour: any non-2xx
//     answer or network error, and the whole batch is sent again after a
//     delay, until it is acknowledged.
//   - Verify reads the collections back with the driver and compares them
//     with the models: missing, corrupted and unexpected documents.
//   - Store is an embedded MongoDB-wire store (FerretDB on SQLite) that can
//     be stopped and started again on the same address and files.
package load

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
)

// Op is one CRUD operation as a PowerSync client uploads it.
type Op struct {
	Op    string         `json:"op"`
	Table string         `json:"table"`
	ID    string         `json:"id"`
	Data  map[string]any `json:"data,omitempty"`
}

// Tables are the collections the generated operations write to.
var Tables = []string{"lists", "todos"}

// Gen makes the operations of one client. Its rows have ids that start with
// its prefix, so that clients never write the same row and each client's
// Model is exact whatever the interleaving of clients.
type Gen struct {
	prefix string
	rows   int
	rng    *rand.Rand
	seq    int
	live   map[[2]string]bool
}

// NewGen returns a generator over rows ids "<prefix>-<n>" (n < rows) in each
// table, seeded for repeatable runs.
func NewGen(prefix string, rows int, seed uint64) *Gen {
	return &Gen{prefix: prefix, rows: rows, rng: rand.New(rand.NewPCG(seed, 0x5eed)), live: map[[2]string]bool{}}
}

// Prefix is the prefix of the ids of this generator's rows.
func (g *Gen) Prefix() string { return g.prefix }

// Next returns n operations: PUTs, PATCHes of rows that exist by then, and
// DELETEs (sometimes of rows that do not exist, which must succeed). The
// same row may appear several times in one batch, so that the order of
// application matters.
func (g *Gen) Next(n int) []Op {
	ops := make([]Op, 0, n)
	for range n {
		g.seq++
		table := Tables[g.rng.IntN(len(Tables))]
		id := fmt.Sprintf("%s-%d", g.prefix, g.rng.IntN(g.rows))
		k := [2]string{table, id}
		var op Op
		switch r := g.rng.IntN(10); {
		case r < 5:
			op = Op{Op: "PUT", Table: table, ID: id, Data: g.putData()}
			g.live[k] = true
		case r < 8 && g.live[k]:
			op = Op{Op: "PATCH", Table: table, ID: id, Data: g.patchData()}
		case r < 8:
			op = Op{Op: "PUT", Table: table, ID: id, Data: g.putData()}
			g.live[k] = true
		default:
			op = Op{Op: "DELETE", Table: table, ID: id}
			delete(g.live, k)
		}
		ops = append(ops, op)
	}
	return ops
}

func (g *Gen) putData() map[string]any {
	d := map[string]any{
		"name":       fmt.Sprintf("item %d of %s — naïve ✓", g.seq, g.prefix),
		"owner_id":   g.prefix,
		"seq":        g.seq,
		"done":       g.rng.IntN(2) == 0,
		"ratio":      float64(g.seq) / 8,
		"big":        int64(3_000_000_000) + int64(g.seq),
		"meta":       map[string]any{"n": g.seq, "tags": []any{"a", fmt.Sprint(g.seq % 7)}, "deep": map[string]any{"x": "y"}},
		"created_at": fmt.Sprintf("2025-01-02T03:04:%02d.000Z", g.seq%60),
	}
	if g.rng.IntN(4) == 0 {
		d["note"] = nil
	}
	return d
}

func (g *Gen) patchData() map[string]any {
	d := map[string]any{"seq": g.seq, "done": g.rng.IntN(2) == 0}
	switch g.rng.IntN(3) {
	case 0:
		d["name"] = fmt.Sprintf("patched %d", g.seq)
	case 1:
		d["note"] = nil
	default:
		d["meta"] = map[string]any{"patched": g.seq}
	}
	return d
}

// Model is the state the database must hold after the acknowledged
// operations of one or more clients: table -> id -> document without _id.
type Model struct {
	mu    sync.Mutex
	docs  map[string]map[string]map[string]any
	ops   int64
	batch int64
}

// NewModel returns an empty model.
func NewModel() *Model { return &Model{docs: map[string]map[string]map[string]any{}} }

// Apply records an acknowledged batch, applying its operations in order
// with the upload contract's semantics.
func (m *Model) Apply(ops []Op) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batch++
	for _, op := range ops {
		m.ops++
		t := m.docs[op.Table]
		if t == nil {
			t = map[string]map[string]any{}
			m.docs[op.Table] = t
		}
		switch op.Op {
		case "PUT":
			t[op.ID] = normalize(op.Data)
		case "PATCH":
			doc := t[op.ID]
			if doc == nil {
				// The generator never patches a missing row.
				panic(fmt.Sprintf("PATCH of missing row %s/%s", op.Table, op.ID))
			}
			for k, v := range normalize(op.Data) {
				doc[k] = v
			}
		case "DELETE":
			delete(t, op.ID)
		}
	}
}

// Ops is the number of acknowledged operations.
func (m *Model) Ops() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// Batches is the number of acknowledged batches.
func (m *Model) Batches() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.batch
}

// Docs returns a copy of the expected documents of a table.
func (m *Model) Docs(table string) map[string]map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]map[string]any, len(m.docs[table]))
	for id, d := range m.docs[table] {
		out[id] = d
	}
	return out
}

// normalize makes a JSON-shaped copy: numbers as float64, objects as
// map[string]any, so that it compares with what is read back.
func normalize(v map[string]any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	if out == nil {
		out = map[string]any{}
	}
	return out
}
