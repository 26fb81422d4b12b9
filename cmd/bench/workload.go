package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The upload workload. Each worker writes its own documents, numbered in
// the order it PUTs them. Operations come in rounds of max(size, 10): a
// round PUTs new documents, PATCHes some of those the previous round PUT
// and DELETEs others, 60/30/10 by default, so that a batch touches each
// document once and every PATCH and DELETE finds its document (except in
// the first round, where they find nothing, for the runtime and the limit
// alike). Batches of one take their operations from a round of ten in turn.
// Documents alternate between two collections. The same (worker, batch)
// always gives the same operations.

// Collections of the workload.
var collections = [2]string{"bench_lists", "bench_todos"}

// Operation kinds.
const (
	opPut = iota
	opPatch
	opDelete
)

var opNames = [...]string{"PUT", "PATCH", "DELETE"}

type benchOp struct {
	kind int
	coll int    // index into collections
	id   string // a UUID-shaped string id
	n    int    // the document's number (negative: never PUT)
}

// docID is a UUID-shaped id unique to (worker, document).
func docID(worker, n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", worker, n+1<<30)
}

// mix is the number of each kind of operation in a round.
type mix struct{ round, put, patch, del int }

// newMix returns the mix of batches of size; maxPatch > 0 caps the PATCHes
// of a round (see embeddedMaxPatch).
func newMix(size, maxPatch int) mix {
	m := mix{round: max(size, 10)}
	m.patch = (m.round*3 + 5) / 10
	if maxPatch > 0 {
		m.patch = min(m.patch, maxPatch)
	}
	m.del = (m.round + 5) / 10
	m.put = m.round - m.patch - m.del
	return m
}

func (m mix) String() string {
	return fmt.Sprintf("%.0f%% PUT, %.0f%% PATCH, %.0f%% DELETE",
		100*float64(m.put)/float64(m.round), 100*float64(m.patch)/float64(m.round), 100*float64(m.del)/float64(m.round))
}

// batch returns batch b of worker w, of size operations (1 or a multiple
// of 10).
func (m mix) batch(w, b, size int) []benchOp {
	ops := make([]benchOp, size)
	for i := range ops {
		j := b*size + i // this worker's operation number
		r, k := j/m.round, j%m.round
		var kind, n int
		switch {
		case k < m.put:
			kind, n = opPut, r*m.put+k
		case k < m.put+m.patch:
			kind, n = opPatch, (r-1)*m.put+k-m.put
		default:
			kind, n = opDelete, (r-1)*m.put+k-m.put // after the PATCHed ones
		}
		ops[i] = benchOp{kind: kind, coll: n & 1, id: docID(w, n), n: n}
	}
	return ops
}

// live is how many documents a worker leaves once n of its operations were
// applied, in order.
func (m mix) live(n int64) int64 {
	rounds, k := n/int64(m.round), n%int64(m.round)
	put, patch := int64(m.put), int64(m.patch)
	live := rounds*put + min(k, put)
	deleted := max(0, rounds-1) * int64(m.del) // round 0 deletes nothing
	if rounds >= 1 && k > put+patch {
		deleted += k - put - patch
	}
	return live - deleted
}

const ownerID = "8ea4b2b4-1b6c-4d6e-9e0a-3c2f6f0d9a11"

// appendJSON appends the batch as an upload request body.
func appendJSON(b []byte, ops []benchOp) []byte {
	b = append(b, `{"batch":[`...)
	for i, op := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"op":"`...)
		b = append(b, opNames[op.kind]...)
		b = append(b, `","table":"`...)
		b = append(b, collections[op.coll]...)
		b = append(b, `","id":"`...)
		b = append(b, op.id...)
		b = append(b, '"')
		switch op.kind {
		case opPut:
			b = append(b, `,"data":{"name":"item `...)
			b = strconv.AppendInt(b, int64(op.n), 10)
			b = append(b, `","owner_id":"`+ownerID+`","done":false,"n":`...)
			b = strconv.AppendInt(b, int64(op.n), 10)
			b = append(b, `,"tags":["a","b"],"created_at":"2024-05-01T12:00:00.000Z"}`...)
		case opPatch:
			b = append(b, `,"data":{"done":true,"n":`...)
			b = strconv.AppendInt(b, int64(op.n+1), 10)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// putDoc is the document a PUT writes: what the upload task stores for the
// JSON above (numbers that are integers become int64, strings stay strings).
func putDoc(op benchOp) bson.D {
	return bson.D{
		{Key: "_id", Value: op.id},
		{Key: "name", Value: "item " + strconv.Itoa(op.n)},
		{Key: "owner_id", Value: ownerID},
		{Key: "done", Value: false},
		{Key: "n", Value: int64(op.n)},
		{Key: "tags", Value: bson.A{"a", "b"}},
		{Key: "created_at", Value: "2024-05-01T12:00:00.000Z"},
	}
}

// models returns the batch as write models per collection: replacements
// and updates in batch order, then deletions in batch order. Reordering is
// sound because a batch touches each document once; it lets the driver send
// one update and one delete command per collection.
func models(ops []benchOp) [2][]mongo.WriteModel {
	var out [2][]mongo.WriteModel
	for _, deletes := range []bool{false, true} {
		for _, op := range ops {
			if (op.kind == opDelete) != deletes {
				continue
			}
			filter := bson.D{{Key: "_id", Value: op.id}}
			var m mongo.WriteModel
			switch op.kind {
			case opPut:
				m = mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(putDoc(op)).SetUpsert(true)
			case opPatch:
				m = mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(bson.D{{Key: "$set", Value: bson.D{
					{Key: "done", Value: true}, {Key: "n", Value: int64(op.n + 1)},
				}}})
			case opDelete:
				m = mongo.NewDeleteOneModel().SetFilter(filter)
			}
			out[op.coll] = append(out[op.coll], m)
		}
	}
	return out
}

// directWrite applies a batch the way the limit does: one ordered bulk
// write per collection, the collections concurrently (as the upload task
// does).
func directWrite(ctx context.Context, db *mongo.Database, ops []benchOp) error {
	ms := models(ops)
	var errs [2]error
	var wg sync.WaitGroup
	for c, m := range ms {
		if len(m) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[c] = db.Collection(collections[c]).BulkWrite(ctx, m, options.BulkWrite().SetOrdered(true))
		}()
	}
	wg.Wait()
	return errors.Join(errs[:]...)
}

// bigBatch returns a batch of PUTs of new documents (round r) whose JSON is
// about size bytes, with opBytes of payload per operation, for the memory
// measurement.
func bigBatch(r, size, opBytes int) []byte {
	pad := make([]byte, opBytes)
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	b := make([]byte, 0, size+1024)
	b = append(b, `{"batch":[`...)
	for i := 0; ; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"op":"PUT","table":"bench_big","id":"`...)
		b = append(b, docID(1<<20+r, i)...)
		b = append(b, `","data":{"i":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"text":"`...)
		b = append(b, pad...)
		b = append(b, `"}}`...)
		if len(b)+opBytes+120 > size {
			break
		}
	}
	return append(b, "]}"...)
}
