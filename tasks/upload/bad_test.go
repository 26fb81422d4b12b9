package upload

import (
	"reflect"
	"strings"
	"testing"
)

// put is a valid operation, for the batches of the bad-request corpus.
const put = `{"op":"PUT","table":"lists","id":"new","data":{"name":"N"}}`

// TestBadRequests is the corpus of requests that no SDK sends: each gets
// its status and an error naming the problem (and the operation), and the
// database does not change at all.
func TestBadRequests(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 101) + `1` + strings.Repeat(`}`, 101) // data nested 101 levels
	tests := []struct {
		name    string
		body    string
		header  []string
		status  int
		errHas  string
		opIndex int // -1: no op_index in the body
	}{
		{"not JSON", `hello`, nil, 400, "invalid JSON at byte 0", -1},
		{"truncated JSON", `{"batch":[{"op":"PUT","table":"li`, nil, 400, "invalid JSON", 0},
		{"truncated after an operation", `{"batch":[` + put, nil, 400, "unexpected end of input", -1},
		{"empty body", ``, nil, 400, "empty body", -1},
		{"trailing data", `{"batch":[]} x`, nil, 400, "unexpected data after", -1},
		{"wrong content type", `{"batch":[]}`, []string{"Content-Type", "text/plain"}, 415, "want application/json", -1},
		{"form content type", `batch=1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "want application/json", -1},
		{"no content type", `{"batch":[]}`, []string{"X-Nothing", "1"}, 415, "missing Content-Type", -1},
		{"latin-1 charset", `{"batch":[]}`, []string{"Content-Type", "application/json; charset=iso-8859-1"}, 415, "charset", -1},
		{"gzip encoding", `{"batch":[]}`, []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, 415, "Content-Encoding", -1},
		{"body is an array", `[` + put + `]`, nil, 400, "must be a JSON object", -1},
		{"no batch", `{"ops":[` + put + `]}`, nil, 400, "missing batch", -1},
		{"batch null", `{"batch":null}`, nil, 400, "batch must be an array, got null", -1},
		{"batch an object", `{"batch":{"op":"PUT"}}`, nil, 400, "batch must be an array, got an object", -1},
		{"batch twice", `{"batch":[],"batch":[]}`, nil, 400, "batch is given twice", -1},
		{"operation a number", `{"batch":[` + put + `,1]}`, nil, 400, "operation must be an object, got a number", 1},
		{"unknown op", `{"batch":[{"op":"UPSERT","table":"lists","id":"a","data":{}}]}`, nil, 400, `op must be PUT, PATCH or DELETE, got "UPSERT"`, 0},
		{"lower-case op", `{"batch":[{"op":"put","table":"lists","id":"a","data":{}}]}`, nil, 400, "op must be PUT, PATCH or DELETE", 0},
		{"op a number", `{"batch":[{"op":1,"table":"lists","id":"a"}]}`, nil, 400, "op must be a string, got a number", 0},
		{"op twice", `{"batch":[{"op":"PUT","op":"DELETE","table":"lists","id":"a"}]}`, nil, 400, "op is given twice", 0},
		{"missing op", `{"batch":[{"table":"lists","id":"a","data":{}}]}`, nil, 400, "missing op", 0},
		{"missing table", `{"batch":[` + put + `,{"op":"PUT","id":"a","data":{}}]}`, nil, 400, "missing table (or type)", 1},
		{"missing id", `{"batch":[{"op":"DELETE","table":"lists"}]}`, nil, 400, "missing id", 0},
		{"id a number", `{"batch":[{"op":"PUT","table":"lists","id":12,"data":{}}]}`, nil, 400, "id must be a string, got a number", 0},
		{"id an operator object", `{"batch":[{"op":"DELETE","table":"lists","id":{"$ne":null}}]}`, nil, 400, "id must be a string, got an object", 0},
		{"id null", `{"batch":[{"op":"DELETE","table":"lists","id":null}]}`, nil, 400, "id must be a string, got null", 0},
		{"id empty", `{"batch":[{"op":"DELETE","table":"lists","id":""}]}`, nil, 400, "id must not be empty", 0},
		{"id too long", `{"batch":[{"op":"DELETE","table":"lists","id":"` + strings.Repeat("x", 1025) + `"}]}`, nil, 400, "longer than 1024 bytes", 0},
		{"table empty", `{"batch":[{"op":"PUT","table":"","id":"a","data":{}}]}`, nil, 400, "table must not be empty", 0},
		{"table system.", `{"batch":[{"op":"PUT","table":"system.users","id":"a","data":{}}]}`, nil, 400, "system. collections are reserved", 0},
		{"table $cmd", `{"batch":[{"op":"PUT","table":"$cmd","id":"a","data":{}}]}`, nil, 400, "must not contain $", 0},
		{"table with a dot", `{"batch":[{"op":"PUT","table":"a.b","id":"a","data":{}}]}`, nil, 400, "must not contain $, . or NUL", 0},
		{"table with NUL", `{"batch":[{"op":"PUT","table":"a\u0000b","id":"a","data":{}}]}`, nil, 400, "must not contain $, . or NUL", 0},
		{"table too long", `{"batch":[{"op":"PUT","table":"` + strings.Repeat("t", 121) + `","id":"a","data":{}}]}`, nil, 400, "longer than 120 bytes", 0},
		{"table the runtime's runs", `{"batch":[{"op":"PUT","table":"_runtime_runs","id":"a","data":{}}]}`, nil, 400, "_runtime_ collections are the runtime's own", 0},
		{"table a runtime collection", `{"batch":[{"op":"DELETE","table":"_runtime_jobs","id":"a"}]}`, nil, 400, "_runtime_ collections are the runtime's own", 0},
		{"table the dead-letter collection", `{"batch":[{"op":"PUT","table":"_powersync_refused","id":"a","data":{}}]}`, nil, 400, "_powersync collections are reserved", 0},
		{"table a number", `{"batch":[{"op":"PUT","table":7,"id":"a","data":{}}]}`, nil, 400, "table must be a string", 0},
		{"table and type differ", `{"batch":[{"op":"PUT","table":"lists","type":"todos","id":"a","data":{}}]}`, nil, 400, `table "lists" and type "todos" differ`, 0},
		{"operator field", `{"batch":[{"op":"PATCH","table":"lists","id":"a","data":{"$set":{"admin":true}}}]}`, nil, 400, `field name "$set" must not start with $`, 0},
		{"nested operator field", `{"batch":[` + put + `,` + put + `,{"op":"PUT","table":"lists","id":"a","data":{"q":[{"x":{"$where":"1"}}]}}]}`, nil, 400, `field name "$where" must not start with $`, 2},
		{"_id as an operator", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"_id":{"$oid":"61d1a2b3c4d5e6f708192a3b"}}}]}`, nil, 400, "must not start with $", 0},
		{"dotted top-level field", `{"batch":[{"op":"PATCH","table":"lists","id":"a","data":{"owner.admin":true}}]}`, nil, 400, "must not contain . at the top level", 0},
		{"empty field name", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"":1}}]}`, nil, 400, "field name must not be empty", 0},
		{"NUL in a field name", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"o":{"a\u0000b":1}}}]}`, nil, 400, "must not contain NUL", 0},
		{"_id disagrees", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"_id":"b","name":"x"}}]}`, nil, 400, `_id in data disagrees with id "a"`, 0},
		{"_id a number", `{"batch":[{"op":"PUT","table":"lists","id":"1","data":{"_id":1}}]}`, nil, 400, "_id in data disagrees", 0},
		{"duplicate field", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":1,"n":2}}]}`, nil, 400, `duplicate field "n"`, 0},
		{"duplicate nested field", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"o":{"n":1,"n":2}}}]}`, nil, 400, `duplicate field "n"`, 0},
		{"too deep", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":` + deep + `}]}`, nil, 400, "nested deeper than 100 levels", 0},
		{"too deep in an ignored member", `{"batch":[{"op":"PUT","table":"lists","id":"a","old":` + deep + `}]}`, nil, 400, "nested deeper than 100 levels", 0},
		{"data an array", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":[1]}]}`, nil, 400, "data must be an object or null, got an array", 0},
		{"opData a string", `{"batch":[{"op":"PUT","table":"lists","id":"a","opData":"x"}]}`, nil, 400, "opData must be an object or null, got a string", 0},
		{"data and opData differ", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":1},"opData":{"n":2}}]}`, nil, 400, "data and opData are both given and differ", 0},
		{"invalid UTF-8", "{\"batch\":[{\"op\":\"PUT\",\"table\":\"lists\",\"id\":\"a\",\"data\":{\"n\":\"\xff\xfe\"}}]}", nil, 400, "invalid UTF-8", 0},
		{"invalid UTF-8 in an id", "{\"batch\":[{\"op\":\"DELETE\",\"table\":\"lists\",\"id\":\"\xc3\x28\"}]}", nil, 400, "invalid UTF-8", 0},
		{"lone surrogate", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":"\ud800"}}]}`, nil, 400, "lone UTF-16 surrogate", 0},
		{"control character", "{\"batch\":[{\"op\":\"PUT\",\"table\":\"lists\",\"id\":\"a\",\"data\":{\"n\":\"a\nb\"}}]}", nil, 400, "control character", 0},
		{"bad escape", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":"\x41"}}]}`, nil, 400, `invalid escape \x`, 0},
		{"number out of range", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":1e999}}]}`, nil, 400, "out of range", 0},
		{"leading zero", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":012}}]}`, nil, 400, "invalid JSON", 0},
		{"NaN", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":NaN}}]}`, nil, 400, "invalid JSON", 0},
		{"too many operations", `{"batch":[` + put + `,` + put + `,` + put + `,` + put + `]}`, nil, 413, "more than 3 operations", 3},
		{"body over the limit", `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"n":"` + strings.Repeat("x", 5000) + `"}}]}`, nil, 413, "larger than the limit", -1},
	}
	h := newHostLimit(t, nil, map[string]string{"UPLOAD_MAX_OPS": "3"}, 4096)
	h.mustApply(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"name":"A"}}]}`)
	before := dump(t, h.db)
	if len(tests) < 30 {
		t.Fatalf("the corpus has %d requests, want at least 30", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, m, _ := h.post(t, tc.body, tc.header...)
			if status != tc.status {
				t.Errorf("status %d, want %d: %v", status, tc.status, m)
			}
			msg, _ := m["error"].(string)
			if !strings.Contains(msg, tc.errHas) {
				t.Errorf("error %q does not contain %q", msg, tc.errHas)
			}
			if _, ok := m["request_id"].(string); !ok {
				t.Errorf("no request_id in %v", m)
			}
			got, has := m["op_index"]
			switch {
			case tc.opIndex < 0 && has:
				t.Errorf("op_index = %v, want none", got)
			case tc.opIndex >= 0 && got != float64(tc.opIndex):
				t.Errorf("op_index = %v, want %d", got, tc.opIndex)
			}
			if after := dump(t, h.db); !reflect.DeepEqual(before, after) {
				t.Errorf("the database changed:\nbefore %v\n after %v", before, after)
			}
		})
	}
}

// TestDepthLimitIsExact accepts data nested exactly 100 levels deep.
func TestDepthLimitIsExact(t *testing.T) {
	data := strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100)
	ops, err := decode([]byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":`+data+`}]}`), 10)
	if err != nil {
		t.Fatalf("depth 100 refused: %v", err)
	}
	if len(ops) != 1 {
		t.Fatalf("%d ops", len(ops))
	}
	arr := strings.Repeat(`[`, 99) + strings.Repeat(`]`, 99)
	if _, err := decode([]byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"x":`+arr+`}}]}`), 10); err != nil {
		t.Fatalf("arrays to depth 100 refused: %v", err)
	}
	if _, err := decode([]byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":{"x":[`+arr+`]}}]}`), 10); err == nil {
		t.Fatal("arrays to depth 101 accepted")
	}
	data = strings.Repeat(`{"a":`, 101) + `1` + strings.Repeat(`}`, 101)
	if _, err := decode([]byte(`{"batch":[{"op":"PUT","table":"t","id":"a","data":`+data+`}]}`), 10); err == nil {
		t.Fatal("objects to depth 101 accepted")
	}
}
