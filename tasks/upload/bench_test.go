package upload

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/devstore"
	"github.com/taskrun/taskrun/internal/store/storetest"
)

// benchBatch is a batch of n PUTs shaped like a todo app's rows, and the
// same documents as the driver would be given them directly.
func benchBatch(n int) (string, []bson.D) {
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	docs := make([]bson.D, n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		id := fmt.Sprintf("0d9c6a1e-%04x-4f7a-9b1c-%012d", i%65536, i)
		fmt.Fprintf(&b, `{"op_id":%d,"op":"PUT","type":"todos","id":%q,"tx_id":1,"data":{"created_at":"2024-05-01 10:00:00Z","completed_at":null,"description":"Buy milk and bread, item %d","completed":0,"created_by":"8ea4a7f2-1c3d-4e5f-9a8b-7c6d5e4f3a2b","completed_by":null,"list_id":"61d1a2b3-c4d5-4e6f-8091-a2b3c4d5e6f7","photo_id":null}}`, i+1, id, i)
		docs[i] = bson.D{
			{Key: "_id", Value: id},
			{Key: "created_at", Value: "2024-05-01 10:00:00Z"},
			{Key: "completed_at", Value: nil},
			{Key: "description", Value: fmt.Sprintf("Buy milk and bread, item %d", i)},
			{Key: "completed", Value: int32(0)},
			{Key: "created_by", Value: "8ea4a7f2-1c3d-4e5f-9a8b-7c6d5e4f3a2b"},
			{Key: "completed_by", Value: nil},
			{Key: "list_id", Value: "61d1a2b3-c4d5-4e6f-8091-a2b3c4d5e6f7"},
			{Key: "photo_id", Value: nil},
		}
	}
	b.WriteString(`]}`)
	return b.String(), docs
}

func reportOps(b *testing.B, perOp int) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkDecode measures decoding and validating a batch, on one core:
// ops/s is per core.
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{100, 1000} {
		body, _ := benchBatch(n)
		b.Run(fmt.Sprintf("ops=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decode([]byte(body), DefaultMaxOps); err != nil {
					b.Fatal(err)
				}
			}
			reportOps(b, n)
		})
	}
}

// BenchmarkDecodeStdlib is encoding/json decoding the same batch into
// maps, without any of the checks, for comparison.
func BenchmarkDecodeStdlib(b *testing.B) {
	body, _ := benchBatch(1000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v struct {
			Batch []struct {
				Op, Type, ID string
				Data         map[string]any
			}
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b, 1000)
}

// BenchmarkUpload posts batches through the host's handler (no network,
// authentication off), the same documents each time (replacements).
func BenchmarkUpload(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			h := newHost(b, nil, nil)
			body, _ := benchBatch(n)
			handler := h.Handler()
			do := func() {
				req := httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s\n%s", rec.Code, rec.Body, h.Logs)
				}
			}
			do()
			for b.Loop() {
				do()
			}
			reportOps(b, n)
		})
	}
}

// BenchmarkDriverBulk is the baseline: the driver's ordered bulk write of
// the same replacements, documents already built, one round trip (on
// FerretDB, in commands of the store's MaxStatements like upload: one
// command of 1000 wedges it).
func BenchmarkDriverBulk(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			h := newHost(b, nil, nil)
			coll := h.db.Collection("todos")
			_, docs := benchBatch(n)
			ctx := context.Background()
			chunk := len(docs)
			if !storetest.Real() {
				chunk = devstore.FerretDBLimits().MaxStatements
			}
			do := func() {
				models := make([]mongo.WriteModel, len(docs))
				for i, d := range docs {
					models[i] = mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: d[0].Value}}).SetReplacement(d).SetUpsert(true)
				}
				for len(models) > 0 {
					n := min(chunk, len(models))
					if _, err := coll.BulkWrite(ctx, models[:n], options.BulkWrite().SetOrdered(true)); err != nil {
						b.Fatal(err)
					}
					models = models[n:]
				}
			}
			do()
			for b.Loop() {
				do()
			}
			reportOps(b, n)
		})
	}
}

// BenchmarkDriverOneByOne is what the seed template and PowerSync's Node.js
// demo do: one round trip per operation.
func BenchmarkDriverOneByOne(b *testing.B) {
	for _, n := range []int{100} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			h := newHost(b, nil, nil)
			coll := h.db.Collection("todos")
			_, docs := benchBatch(n)
			ctx := context.Background()
			for b.Loop() {
				for _, d := range docs {
					if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: d[0].Value}}, d, options.Replace().SetUpsert(true)); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportOps(b, n)
		})
	}
}
