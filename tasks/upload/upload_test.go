package upload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestSemantics applies batches in order and compares the collections with
// what the contract says, then replays the last batch and requires the
// same data.
func TestSemantics(t *testing.T) {
	oid := "61d1a2b3c4d5e6f708192a3b"
	tests := []struct {
		name    string
		vars    map[string]string
		batches []string
		// want: collection -> _id (printed by idString) -> document as
		// canonical JSON (see canon), without _id.
		want map[string]map[string]string
		// applied is the "applied" count of the last batch.
		applied int
	}{
		{
			name:    "PUT inserts",
			batches: []string{`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"name":"A","n":1}}]}`},
			want:    map[string]map[string]string{"lists": {"a": `{"n":1,"name":"A"}`}},
			applied: 1,
		},
		{
			name: "PUT replaces the whole document",
			batches: []string{
				`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"name":"A","x":1}}]}`,
				`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"name":"B"}}]}`,
			},
			want:    map[string]map[string]string{"lists": {"a": `{"name":"B"}`}},
			applied: 1,
		},
		{
			name: "PATCH sets the given fields, null sets null",
			batches: []string{
				`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"name":"A","x":1,"y":2}}]}`,
				`{"batch":[{"op":"PATCH","table":"lists","id":"a","data":{"name":"B","y":null,"z":[1,{"k":"v"}]}}]}`,
			},
			want:    map[string]map[string]string{"lists": {"a": `{"name":"B","x":1,"y":null,"z":[1,{"k":"v"}]}`}},
			applied: 1,
		},
		{
			name:    "PATCH of a missing document changes nothing",
			batches: []string{`{"batch":[{"op":"PATCH","table":"lists","id":"ghost","data":{"name":"G"}}]}`},
			want:    map[string]map[string]string{},
			applied: 1,
		},
		{
			name: "DELETE removes, and a missing document is fine",
			batches: []string{
				`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}},{"op":"PUT","table":"lists","id":"b","data":{}}]}`,
				`{"batch":[{"op":"DELETE","table":"lists","id":"a"},{"op":"DELETE","table":"lists","id":"never"}]}`,
			},
			want:    map[string]map[string]string{"lists": {"b": `{}`}},
			applied: 2,
		},
		{
			name: "type and opData spellings, SDK members ignored",
			batches: []string{`{"batch":[{"op_id":1,"op":"PUT","type":"todos","id":"t1","tx_id":7,` +
				`"opData":{"description":"x"},"old":{"description":"w"},"metadata":"m"}]}`},
			want:    map[string]map[string]string{"todos": {"t1": `{"description":"x"}`}},
			applied: 1,
		},
		{
			name: "table and type, data and opData, both given and equal",
			batches: []string{`{"batch":[{"op":"PUT","table":"todos","type":"todos","id":"t1",` +
				`"data":{"d":1},"opData": {"d":1}}]}`},
			want:    map[string]map[string]string{"todos": {"t1": `{"d":1}`}},
			applied: 1,
		},
		{
			name: "repeated ids in one batch end in batch order",
			batches: []string{
				`{"batch":[{"op":"PUT","table":"lists","id":"c","data":{"old":true}}]}`,
				`{"batch":[` +
					`{"op":"PUT","table":"lists","id":"a","data":{"v":1,"keep":"k"}},` +
					`{"op":"PATCH","table":"lists","id":"a","data":{"v":2,"w":3}},` +
					`{"op":"DELETE","table":"lists","id":"b"},` +
					`{"op":"PUT","table":"lists","id":"b","data":{"v":"b"}},` +
					`{"op":"PATCH","table":"lists","id":"ghost","data":{"v":0}},` +
					`{"op":"PATCH","table":"lists","id":"c","data":{"n":1}},` +
					`{"op":"PATCH","table":"lists","id":"c","data":{"n":2,"m":1}},` +
					`{"op":"PUT","table":"lists","id":"d","data":{"v":"d"}},` +
					`{"op":"DELETE","table":"lists","id":"d"},` +
					`{"op":"DELETE","table":"lists","id":"e"},` +
					`{"op":"PATCH","table":"lists","id":"e","data":{"v":"e"}},` +
					`{"op":"PATCH","table":"lists","id":"a","data":{"v":4}}` +
					`]}`,
			},
			want: map[string]map[string]string{"lists": {
				"a": `{"keep":"k","v":4,"w":3}`,
				"b": `{"v":"b"}`,
				"c": `{"m":1,"n":2,"old":true}`,
			}},
			applied: 12,
		},
		{
			name: "mixed collections with the same ids are independent",
			batches: []string{`{"batch":[` +
				`{"op":"PUT","table":"lists","id":"x","data":{"c":"lists"}},` +
				`{"op":"PUT","table":"todos","id":"x","data":{"c":"todos"}},` +
				`{"op":"PUT","table":"notes","id":"x","data":{"c":"notes"}},` +
				`{"op":"DELETE","table":"todos","id":"x"},` +
				`{"op":"PATCH","table":"lists","id":"x","data":{"p":1}},` +
				`{"op":"PUT","table":"todos","id":"y","data":{"list":"x"}},` +
				`{"op":"PATCH","table":"notes","id":"x","data":{"c":"notes2"}}` +
				`]}`},
			want: map[string]map[string]string{
				"lists": {"x": `{"c":"lists","p":1}`},
				"todos": {"y": `{"list":"x"}`},
				"notes": {"x": `{"c":"notes2"}`},
			},
			applied: 7,
		},
		{
			name: "values: integers, big integers, doubles, strings with escapes, nesting",
			batches: []string{`{"batch":[{"op":"PUT","table":"v","id":"1","data":{` +
				`"i":42,"neg":-7,"big":9007199254740993,"huge":123456789012345678901234,"f":1.5,"e":1e3,` +
				`"s":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n","raw":"日本","t":true,"n":null,"o":{"a":{"b":[1,{"c":[]},{}]}}}}]}`},
			want: map[string]map[string]string{"v": {"1": `{"big":9007199254740993,"e":1000.0,"f":1.5,"huge":1.2345678901234569E+23,` +
				`"i":42,"n":null,"neg":-7,"o":{"a":{"b":[1,{"c":[]},{}]}},"raw":"日本","s":"café 😀 \"q\" \\ / \n","t":true}`}},
			applied: 1,
		},
		{
			name:    "_id in data that agrees with id is accepted and not duplicated",
			batches: []string{`{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"_id":"a","name":"A"}}]}`},
			want:    map[string]map[string]string{"lists": {"a": `{"name":"A"}`}},
			applied: 1,
		},
		{
			name:    "PUT with null data, PATCH without fields",
			batches: []string{`{"batch":[{"op":"PUT","table":"lists","id":"a","data":null},{"op":"PATCH","table":"lists","id":"a","data":{}},{"op":"PATCH","table":"lists","id":"a"}]}`},
			want:    map[string]map[string]string{"lists": {"a": `{}`}},
			applied: 3,
		},
		{
			name:    "empty batch",
			batches: []string{`{"batch":[]}`},
			want:    map[string]map[string]string{},
			applied: 0,
		},
		{
			name:    "a PowerSync-sized id and a 120-byte collection name",
			batches: []string{`{"batch":[{"op":"PUT","table":"` + strings.Repeat("t", 120) + `","id":"` + strings.Repeat("i", 1024) + `","data":{"a":1}}]}`},
			want:    map[string]map[string]string{strings.Repeat("t", 120): {strings.Repeat("i", 1024): `{"a":1}`}},
			applied: 1,
		},
		{
			name: "objectid mode: 24-hex ids become ObjectIds, others stay strings",
			vars: map[string]string{"UPLOAD_ID_MODE": "objectid"},
			batches: []string{
				`{"batch":[{"op":"PUT","table":"lists","id":"` + oid + `","data":{"_id":"` + oid + `","n":1}},` +
					`{"op":"PUT","table":"lists","id":"uuid-1","data":{"n":2}},` +
					`{"op":"PATCH","table":"lists","id":"` + strings.ToUpper(oid) + `","data":{"m":3}}]}`,
			},
			want: map[string]map[string]string{"lists": {
				"oid:" + oid: `{"m":3,"n":1}`,
				"uuid-1":     `{"n":2}`,
			}},
			applied: 3,
		},
		{
			name:    "string mode (default): 24-hex ids stay strings",
			batches: []string{`{"batch":[{"op":"PUT","table":"lists","id":"` + oid + `","data":{"n":1}}]}`},
			want:    map[string]map[string]string{"lists": {oid: `{"n":1}`}},
			applied: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, nil, tc.vars)
			var last map[string]any
			for i, b := range tc.batches {
				status, m, _ := h.post(t, b)
				if status != http.StatusOK {
					t.Fatalf("batch %d: status %d: %v", i, status, m)
				}
				last = m
			}
			if got := last["applied"]; got != float64(tc.applied) {
				t.Errorf("applied = %v, want %d (%v)", got, tc.applied, last)
			}
			if r, ok := last["refused"].([]any); !ok || len(r) != 0 {
				t.Errorf("refused = %v, want []", last["refused"])
			}
			check := func(when string) {
				got := map[string]map[string]string{}
				names, err := h.db.ListCollectionNames(context.Background(), bson.D{})
				if err != nil {
					t.Fatal(err)
				}
				for _, coll := range names {
					for id, d := range docs(t, h.db, coll) {
						if got[coll] == nil {
							got[coll] = map[string]string{}
						}
						delete(d, "_id")
						got[coll][id] = canon(t, d)
					}
				}
				want := map[string]map[string]string{}
				for coll, byID := range tc.want {
					want[coll] = map[string]string{}
					for id, d := range byID {
						want[coll][id] = `{"v":` + d + `}`
					}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s:\n got %v\nwant %v", when, got, want)
				}
			}
			check("after the batches")
			before := dump(t, h.db)
			status, m, _ := h.post(t, tc.batches[len(tc.batches)-1])
			if status != http.StatusOK {
				t.Fatalf("replay: status %d: %v", status, m)
			}
			if after := dump(t, h.db); !reflect.DeepEqual(before, after) {
				t.Errorf("replaying the last batch changed the data:\nbefore %v\n after %v", before, after)
			}
			check("after replaying the last batch")
		})
	}
}

// TestFoldMatchesSequential applies random batches through the task and,
// one operation at a time, straight through the driver (the reference
// semantics), and requires the same documents.
func TestFoldMatchesSequential(t *testing.T) {
	h := newHost(t, nil, nil)
	ref := h.db.Client().Database(h.db.Name() + "_ref")
	t.Cleanup(func() { _ = ref.Drop(context.Background()) })
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	colls := []string{"lists", "todos"}
	ids := []string{"a", "b", "c", "d"}
	fields := []string{"x", "y", "z"}
	for round := 0; round < 12; round++ {
		var parts []string
		for i := 0; i < 25; i++ {
			coll, id := colls[rng.IntN(len(colls))], ids[rng.IntN(len(ids))]
			data := map[string]any{}
			for _, f := range fields {
				if rng.IntN(2) == 0 {
					data[f] = rng.IntN(5)
				}
			}
			if rng.IntN(6) == 0 {
				data["x"] = nil
			}
			kind := []Kind{Put, Patch, Patch, Delete}[rng.IntN(4)]
			// Reference write, one at a time.
			filter := bson.D{{Key: "_id", Value: id}}
			var err error
			switch kind {
			case Put:
				doc := bson.D{{Key: "_id", Value: id}}
				for _, f := range fields {
					if v, ok := data[f]; ok {
						doc = append(doc, bson.E{Key: f, Value: toInt32(v)})
					}
				}
				_, err = ref.Collection(coll).ReplaceOne(ctx, filter, doc, options.Replace().SetUpsert(true))
			case Patch:
				set := bson.D{}
				for _, f := range fields {
					if v, ok := data[f]; ok {
						set = append(set, bson.E{Key: f, Value: toInt32(v)})
					}
				}
				if len(set) > 0 {
					_, err = ref.Collection(coll).UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: set}})
				}
			case Delete:
				_, err = ref.Collection(coll).DeleteOne(ctx, filter)
			}
			if err != nil {
				t.Fatal(err)
			}
			var js []string
			for _, f := range fields {
				if v, ok := data[f]; ok {
					if v == nil {
						js = append(js, fmt.Sprintf("%q:null", f))
					} else {
						js = append(js, fmt.Sprintf("%q:%d", f, v))
					}
				}
			}
			parts = append(parts, fmt.Sprintf(`{"op":%q,"table":%q,"id":%q,"data":{%s}}`, kind, coll, id, strings.Join(js, ",")))
		}
		h.mustApply(t, `{"batch":[`+strings.Join(parts, ",")+`]}`)
		for _, coll := range colls {
			got, want := docs(t, h.db, coll), docs(t, ref, coll)
			if canon(t, got) != canon(t, want) {
				t.Fatalf("round %d, %s:\n got %s\nwant %s\nbatch %s", round, coll, canon(t, got), canon(t, want), strings.Join(parts, "\n"))
			}
		}
	}
}

func toInt32(v any) any {
	if i, ok := v.(int); ok {
		return int32(i)
	}
	return v
}

// TestObjectIDFilterUsesObjectID checks that objectid mode updates a
// document that was created with an ObjectId key by another writer.
func TestObjectIDFilterUsesObjectID(t *testing.T) {
	h := newHost(t, nil, map[string]string{"UPLOAD_ID_MODE": "objectid"})
	oid := bson.NewObjectID()
	if _, err := h.db.Collection("lists").InsertOne(context.Background(), bson.D{{Key: "_id", Value: oid}, {Key: "name", Value: "server"}}); err != nil {
		t.Fatal(err)
	}
	h.mustApply(t, `{"batch":[{"op":"PATCH","table":"lists","id":"`+oid.Hex()+`","data":{"name":"client"}}]}`)
	var got bson.M
	if err := h.db.Collection("lists").FindOne(context.Background(), bson.D{{Key: "_id", Value: oid}}).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "client" {
		t.Errorf("name = %v, want client", got["name"])
	}
	if n, _ := h.db.Collection("lists").CountDocuments(context.Background(), bson.D{}); n != 1 {
		t.Errorf("%d documents, want 1 (a string _id would make a second one)", n)
	}
}

// TestValueTypes checks the BSON types that JSON numbers become.
func TestValueTypes(t *testing.T) {
	h := newHost(t, nil, nil)
	h.mustApply(t, `{"batch":[{"op":"PUT","table":"v","id":"1","data":{"i32":2147483647,"i64":2147483648,"neg64":-2147483649,"f":1.0,"e":1e2,"beyond":9223372036854775808}}]}`)
	var got bson.D
	if err := h.db.Collection("v").FindOne(context.Background(), bson.D{}).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"i32": int32(2147483647), "i64": int64(2147483648), "neg64": int64(-2147483649),
		"f": float64(1), "e": float64(100), "beyond": float64(9223372036854775808)}
	for _, e := range got {
		if e.Key == "_id" {
			continue
		}
		if w, ok := want[e.Key]; !ok || !reflect.DeepEqual(e.Value, w) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", e.Key, e.Value, e.Value, w, w)
		}
	}
}
