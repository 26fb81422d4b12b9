package upload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// seeds are bodies for the fuzzer to start from: valid batches in every
// spelling, and the shapes of the bad-request corpus.
var seeds = []string{
	`{"batch":[]}`,
	`{"batch":[{"op":"PUT","table":"lists","id":"61d1","data":{"name":"Name","owner_id":"8ea4"}}]}`,
	`{"batch":[{"op_id":1,"op":"PUT","type":"lists","id":"a","tx_id":7,"data":{"n":1},"old":{"n":0},"metadata":"m"}]}`,
	`{"batch":[{"op":"PATCH","table":"t","id":"a","opData":{"x":null,"y":[1,2.5,-3e2,{"z":"\u00e9\ud83d\ude00"}]}}]}`,
	`{"batch":[{"op":"DELETE","table":"t","id":"a"},{"op":"PUT","table":"t","type":"t","id":"b","data":{"_id":"b"},"opData":{"_id":"b"}}]}`,
	` { "batch" : [ { "op" : "PUT" , "table" : "t" , "id" : "\"q\"" , "data" : { "a" : { "b" : [ true , false , null ] } } } ] , "extra" : {} } `,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"$set":{"x":1}}}]}`,
	`{"batch":[{"op":"PUT","table":"system.users","id":"a","data":{}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":{"$ne":null},"data":{}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a.b":1}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"_id":"b"}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"n":"\ud800"}}]}`,
	"{\"batch\":[{\"op\":\"PUT\",\"table\":\"t\",\"id\":\"a\",\"data\":{\"n\":\"\xff\"}}]}",
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"n":1e999,"m":-0,"k":9223372036854775808}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"n":1,"n":2}}]}`,
	`{"batch":[{"op":"UPSERT","table":"t","id":"a"}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":` + strings.Repeat(`{"a":`, 101) + `1` + strings.Repeat(`}`, 101) + `}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"x":` + strings.Repeat(`[`, 99) + strings.Repeat(`]`, 99) + `}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a\u0000b":1,"s":"\u0000"}}]}`,
	`{"batch":[1,"x",null,[]]}`,
	`{"batch":null}`,
	`[]`,
	``,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"s":"\/\b\f\n\r\t\\\"\u0041\uD834\uDD1E"}}]}`,
	// Rows after the first reuse its names by position: the same columns,
	// a name repeated where the last row had another, a repeat after a
	// different first name, an operator or a path where a plain name was.
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"b":2,"c":3}},{"op":"PUT","table":"t","id":"b","data":{"a":4,"b":5,"c":6}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"b":2,"c":3}},{"op":"PUT","table":"t","id":"b","data":{"a":4,"b":5,"a":6}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"b":2}},{"op":"PUT","table":"t","id":"b","data":{"b":4,"b":5}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"b":2}},{"op":"PUT","table":"t","id":"b","data":{"a":1,"$b":2}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"b":{"c":1}}},{"op":"PATCH","table":"t","id":"b","data":{"a":1,"c.d":2}}]}`,
	`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"a":1,"_id":"a","b":2}},{"op":"PUT","table":"t","id":"b","data":{"_id":"b","a":1,"b":2,"a":3}}]}`,
}

// TestDecodeMatchesStdlib runs the fuzz checks on the seeds, so that plain
// `go test` runs them too.
func TestDecodeMatchesStdlib(t *testing.T) {
	for _, s := range seeds {
		checkDecode(t, []byte(s))
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecode(t, body)
	})
}

// checkDecode decodes body and, when it is accepted, checks every promise
// of the validator and compares the result with encoding/json's reading of
// the same bytes.
func checkDecode(t *testing.T, body []byte) {
	ops, err := decode(body, 50)
	if err != nil {
		var de *decodeError
		if !errors.As(err, &de) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if de.status != 400 && de.status != 413 {
			t.Fatalf("status %d", de.status)
		}
		if de.op >= 50 && de.status != 413 {
			t.Fatalf("op index %d out of range", de.op)
		}
		return
	}
	if !json.Valid(body) {
		t.Fatalf("accepted invalid JSON %q", body)
	}
	if !utf8.Valid(body) {
		t.Fatalf("accepted invalid UTF-8 %q", body)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(top["batch"], &batch); err != nil {
		t.Fatalf("encoding/json batch: %v", err)
	}
	if len(batch) != len(ops) {
		t.Fatalf("%d ops, encoding/json sees %d", len(ops), len(batch))
	}
	for i, op := range ops {
		if op.Index != i {
			t.Fatalf("op %d has index %d", i, op.Index)
		}
		if !bytes.Equal(op.raw, batch[i]) {
			t.Fatalf("op %d raw %q, encoding/json %q", i, op.raw, batch[i])
		}
		switch op.Kind {
		case Put, Patch, Delete:
		default:
			t.Fatalf("op %d kind %q", i, op.Kind)
		}
		if err := checkCollection(op.Collection); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		if err := checkID(op.ID); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(batch[i], &m); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		var id, table string
		_ = json.Unmarshal(m["id"], &id)
		if op.ID != id {
			t.Fatalf("op %d id %q, encoding/json %q", i, op.ID, id)
		}
		if json.Unmarshal(m["table"], &table) != nil || m["table"] == nil {
			_ = json.Unmarshal(m["type"], &table)
		}
		if op.Collection != table {
			t.Fatalf("op %d collection %q, encoding/json %q", i, op.Collection, table)
		}
		if op.Kind == Delete {
			if op.Data != nil {
				t.Fatalf("op %d: DELETE with data", i)
			}
			continue
		}
		checkFields(t, op.Data, 1, true)
		raw := m["data"]
		if raw == nil {
			raw = m["opData"]
		}
		var want any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if raw != nil {
			if err := dec.Decode(&want); err != nil {
				t.Fatalf("op %d data: %v", i, err)
			}
		}
		if wm, ok := want.(map[string]any); ok {
			delete(wm, "_id")
		}
		got := generic(op.Data)
		if op.Data == nil {
			got = nil
		}
		if !reflect.DeepEqual(got, numbers(want)) {
			t.Fatalf("op %d data\n got %#v\nwant %#v", i, got, numbers(want))
		}
		doc := append(bson.D{{Key: "_id", Value: op.ID}}, op.Data...)
		if _, err := bson.Marshal(doc); err != nil {
			t.Fatalf("op %d: BSON: %v", i, err)
		}
	}
}

// checkFields walks data and checks the name rules and the depth.
func checkFields(t *testing.T, v any, depth int, top bool) {
	if depth > MaxDepth {
		t.Fatalf("depth %d", depth)
	}
	switch x := v.(type) {
	case bson.D:
		for _, e := range x {
			if strings.HasPrefix(e.Key, "$") || strings.IndexByte(e.Key, 0) >= 0 || !utf8.ValidString(e.Key) ||
				top && (e.Key == "" || e.Key == "_id" || strings.Contains(e.Key, ".")) {
				t.Fatalf("field name %q accepted", e.Key)
			}
			checkFields(t, e.Value, depth+1, false)
		}
	case bson.A:
		for _, e := range x {
			checkFields(t, e, depth+1, false)
		}
	case string:
		if !utf8.ValidString(x) {
			t.Fatalf("invalid UTF-8 value %q", x)
		}
	case int32, int64, float64, bool, nil:
	default:
		t.Fatalf("value of type %T", v)
	}
}

// generic turns decoded data into encoding/json's shapes, numbers as
// float64.
func generic(v any) any {
	switch x := v.(type) {
	case bson.D:
		m := make(map[string]any, len(x))
		for _, e := range x {
			m[e.Key] = generic(e.Value)
		}
		return m
	case bson.A:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = generic(e)
		}
		return out
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	}
	return v
}

// numbers turns json.Numbers into float64.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		f, _ := strconv.ParseFloat(string(x), 64)
		return f
	}
	return v
}

// TestDecodeErrorsPointAtTheProblem checks offsets and op indices.
func TestDecodeErrorsPointAtTheProblem(t *testing.T) {
	tests := []struct {
		body   string
		op     int
		offset int
	}{
		{`{"batch":[{"op":"PUT",}]}`, 0, 22},
		{`{"batch":[{"op":"PUT","table":"t","id":"a"},{"op":"PUT","table":"t","id":"a","data":{"x":tru}}]}`, 1, 89},
		{`{"batch" []}`, -1, 9},
	}
	for _, tc := range tests {
		_, err := decode([]byte(tc.body), 10)
		var de *decodeError
		if !errors.As(err, &de) {
			t.Fatalf("%s: error %v", tc.body, err)
		}
		if de.op != tc.op || de.offset != tc.offset {
			t.Errorf("%s: op %d offset %d (%v), want op %d offset %d", tc.body, de.op, de.offset, de, tc.op, tc.offset)
		}
	}
}

// TestLargeObjects checks duplicate detection past the linear-scan size,
// and that a huge object decodes in linear time.
func TestLargeObjects(t *testing.T) {
	value := "1"
	obj := func(n int, dupAt int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			k := i
			if i == dupAt {
				k = 1
			}
			b.WriteString(`"k` + strconv.Itoa(k) + `":` + value)
		}
		b.WriteString("}")
		return b.String()
	}
	for _, nested := range []bool{false, true} {
		wrap := func(o string) []byte {
			if nested {
				o = `{"n":` + o + `}`
			}
			return []byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":` + o + `}]}`)
		}
		if _, err := decode(wrap(obj(40, -1)), 10); err != nil {
			t.Errorf("nested=%t: 40 distinct keys refused: %v", nested, err)
		}
		if _, err := decode(wrap(obj(40, 39)), 10); err == nil || !strings.Contains(err.Error(), `duplicate field "k1"`) {
			t.Errorf("nested=%t: a duplicate at key 40: %v", nested, err)
		}
		if _, err := decode(wrap(obj(40, 20)), 10); err == nil || !strings.Contains(err.Error(), `duplicate field "k1"`) {
			t.Errorf("nested=%t: a duplicate at key 21: %v", nested, err)
		}
	}
	// Values of a realistic size; 200,000 keys of tiny numbers would take
	// more memory than a batch may (TestDecodeMemoryBound).
	value = `"` + strings.Repeat("v", 150) + `"`
	big := []byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":` + obj(200000, -1) + `}]}`)
	ops, err := decode(big, 10)
	if err != nil || len(ops[0].Data) != 200000 {
		t.Fatalf("200000 keys: %v", err)
	}
}

// TestOpsSizedFromTheFirst: the operations slice is sized from the first
// operation's length, so that a few large operations do not reserve room
// for thousands (a 5 MB batch of 100 held 10,000 slots), and many small ones
// are not copied as the slice grows.
func TestOpsSizedFromTheFirst(t *testing.T) {
	batch := func(n, pad int) []byte {
		var b strings.Builder
		b.WriteString(`{"batch":[`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"op":"PUT","table":"t","id":"%d","data":{"s":"%s"}}`, i, strings.Repeat("x", pad))
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}
	for _, tt := range []struct{ n, pad int }{{3, 50000}, {100, 1000}, {1000, 20}, {1, 0}} {
		ops, err := decode(batch(tt.n, tt.pad), DefaultMaxOps)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != tt.n || cap(ops) > tt.n+tt.n/4+1 {
			t.Errorf("%d operations of %d bytes: len %d, cap %d", tt.n, tt.pad, len(ops), cap(ops))
		}
	}
}

// Names equal to the last row's at their position skip the lookup, the
// checks and (while every name before matched too) the duplicate test:
// each of these must still be refused, and equal rows accepted whole.
func TestDecodeRowNames(t *testing.T) {
	row := func(data ...string) []byte {
		var b strings.Builder
		b.WriteString(`{"batch":[`)
		for i, d := range data {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"op":"PUT","table":"t","id":"r%d","data":%s}`, i, d)
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}
	for _, tt := range []struct {
		body []byte
		want string
	}{
		{row(`{"a":1,"b":2,"c":3}`, `{"a":4,"b":5,"a":6}`), `duplicate field "a"`},
		{row(`{"a":1,"b":2}`, `{"b":4,"b":5}`), `duplicate field "b"`},
		{row(`{"a":1,"b":2}`, `{"a":1,"a":2}`), `duplicate field "a"`},
		{row(`{"a":1,"b":2}`, `{"a":1,"$b":2}`), `$b`},
		{row(`{"a":1,"b":2}`, `{"a":1,"b.c":2}`), `b.c`},
		{row(`{"_id":"r0","a":1,"b":2}`, `{"a":1,"_id":"r1","b":2,"a":3}`), `duplicate field "a"`},
		{row(`{"a":1,"b":2}`, `{"a":1,"b":2}`, `{"b":1,"a":2,"b":3}`), `duplicate field "b"`},
	} {
		if _, err := decode(tt.body, 10); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error naming %s", tt.body, err, tt.want)
		}
	}
	ops, err := decode(row(`{"a":1,"b":"x"}`, `{"a":2,"b":"y"}`, `{"b":"z","a":3}`, `{"a":4}`, `{"a":5,"b":"w","c":true}`), 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []bson.D{
		{{Key: "a", Value: int32(1)}, {Key: "b", Value: "x"}},
		{{Key: "a", Value: int32(2)}, {Key: "b", Value: "y"}},
		{{Key: "b", Value: "z"}, {Key: "a", Value: int32(3)}},
		{{Key: "a", Value: int32(4)}},
		{{Key: "a", Value: int32(5)}, {Key: "b", Value: "w"}, {Key: "c", Value: true}},
	}
	for i, op := range ops {
		if !reflect.DeepEqual(op.Data, want[i]) {
			t.Errorf("row %d: %#v, want %#v", i, op.Data, want[i])
		}
	}
}
