package load

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/mongotest"
)

// apply writes ops with the upload contract's semantics, one at a time.
func apply(t *testing.T, db *mongo.Database, ops []Op) {
	t.Helper()
	ctx := context.Background()
	for _, op := range ops {
		c := db.Collection(op.Table)
		var err error
		switch op.Op {
		case "PUT":
			_, err = c.ReplaceOne(ctx, bson.M{"_id": op.ID}, op.Data, options.Replace().SetUpsert(true))
		case "PATCH":
			_, err = c.UpdateOne(ctx, bson.M{"_id": op.ID}, bson.M{"$set": op.Data})
		case "DELETE":
			_, err = c.DeleteOne(ctx, bson.M{"_id": op.ID})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyAndRestart checks the verifier against a real store, both ways,
// and that a store stopped and started again keeps its address and data.
func TestVerifyAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := mongotest.StartStore("127.0.0.1:0", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	client, err := mongo.Connect(options.Client().ApplyURI(st.URI("verify")))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	db := client.Database("verify")

	g, m := NewGen("c0", 6, 1), NewModel()
	other := NewGen("c1", 6, 2) // another client's rows: not ours
	for range 20 {
		ops := g.Next(7)
		apply(t, db, ops)
		m.Apply(ops)
		apply(t, db, other.Next(3))
	}
	if m.Ops() != 140 || m.Batches() != 20 {
		t.Fatalf("model counts %d ops in %d batches", m.Ops(), m.Batches())
	}
	rep, err := Verify(ctx, db, []string{"c0"}, m)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Expected == 0 || rep.Found != rep.Expected {
		t.Fatalf("verify after exact writes: %s", rep)
	}

	// Stop and start in place: same address, same files.
	addr := st.Addr
	st.Stop()
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	if st.Addr != addr {
		t.Fatalf("restarted on %s, want %s", st.Addr, addr)
	}
	if rep, err = Verify(ctx, db, []string{"c0"}, m); err != nil || !rep.OK() {
		t.Fatalf("verify after a restart: %v %s", err, rep)
	}

	// Break it three ways: each is found.
	var ids []string
	for id := range m.Docs("lists") {
		ids = append(ids, id)
	}
	if len(ids) < 2 {
		t.Fatalf("too few rows to break: %v", ids)
	}
	lists := db.Collection("lists")
	if _, err := lists.UpdateOne(ctx, bson.M{"_id": ids[0]}, bson.M{"$set": bson.M{"seq": -1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lists.DeleteOne(ctx, bson.M{"_id": ids[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := lists.InsertOne(ctx, bson.M{"_id": "c0-999", "name": "ghost"}); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(ctx, db, []string{"c0"}, m)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Corrupted != 1 || rep.Missing != 1 || rep.Extra != 1 || rep.OK() {
		t.Fatalf("verify after breaking three rows: %s", rep)
	}
}

func TestGenPatchesOnlyLiveRows(t *testing.T) {
	g, m := NewGen("x", 3, 7), NewModel()
	for range 500 {
		m.Apply(g.Next(4)) // panics on a PATCH of a missing row
	}
}

func TestHistogramQuantile(t *testing.T) {
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		q    float64
		want time.Duration // within 5%
	}{
		{"one", []time.Duration{3 * time.Millisecond}, 0.99, 3 * time.Millisecond},
		{"p50 of 1..100ms", ramp(100), 0.5, 50 * time.Millisecond},
		{"p99 of 1..100ms", ramp(100), 0.99, 99 * time.Millisecond},
		{"max", ramp(100), 1, 100 * time.Millisecond},
		{"empty", nil, 0.99, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, d := range tc.ds {
				h.Add(d)
			}
			got := h.Quantile(tc.q)
			if got < tc.want*95/100 || got > tc.want*105/100 {
				t.Errorf("q%.2f = %s, want about %s", tc.q, got, tc.want)
			}
		})
	}
}

func ramp(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}
