package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// exampleCustomise is the example of Customise's documentation, verbatim.
func exampleCustomise(ctx context.Context, req *Request, op *Op) error {
	if v, ok := op.Get("created_at"); ok {
		if s, ok := v.(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				op.Set("created_at", t)
			}
		}
	}
	if op.Collection == "lists" && op.Kind == Patch && op.Has("owner_id") {
		return Refuse("owner_id of a list cannot change")
	}
	return nil
}

// refusedList returns the "refused" member of a response.
func refusedList(t testing.TB, m map[string]any) []refusedOp {
	t.Helper()
	raw, ok := m["refused"].([]any)
	if !ok {
		t.Fatalf("no refused list in %v", m)
	}
	var out []refusedOp
	for _, r := range raw {
		o := r.(map[string]any)
		rule, _ := o["rule"].(string)
		msg, _ := o["message"].(string)
		out = append(out, refusedOp{Index: int(o["op_index"].(float64)), Reason: o["reason"].(string), Rule: rule, Message: msg})
	}
	return out
}

func deadLetterDocs(t testing.TB, db *mongo.Database, coll string) []bson.M {
	t.Helper()
	cur, err := db.Collection(coll).Find(context.Background(), bson.D{}, options.Find().SetSort(bson.D{{Key: "op_index", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var out []bson.M
	if err := cur.All(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRefused covers operations that a client could send and the
// deployment's rules refuse: by default the batch succeeds, the refusals
// are listed and kept in the dead-letter collection; in strict mode the
// batch fails with 422 and nothing is written.
func TestRefused(t *testing.T) {
	allowBatch := `{"batch":[` +
		`{"op":"PUT","table":"lists","id":"a","data":{"name":"A"}},` +
		`{"op":"PUT","table":"secrets","id":"x","data":{"k":"v"}},` +
		`{"op":"PATCH","table":"todos","id":"t","data":{"done":true}}]}`
	hookBatch := `{"batch":[` +
		`{"op":"PUT","table":"lists","id":"a","data":{"name":"A","owner_id":"u1","created_at":"2024-05-01T10:00:00.5Z"}},` +
		`{"op":"PATCH","table":"lists","id":"a","data":{"owner_id":"u2"}},` +
		`{"op":"PATCH","table":"lists","id":"a","data":{"name":"B"}}]}`
	type refusedCase struct {
		name     string
		vars     map[string]string
		hook     Hook
		setup    func(t *testing.T, db *mongo.Database)
		batch    string
		status   int
		refused  []refusedOp
		deadColl string // "": _powersync_refused
		errHas   string
		check    func(t *testing.T, db *mongo.Database)
	}
	tests := []refusedCase{
		{
			name:    "collection outside the allow-list",
			vars:    map[string]string{"UPLOAD_ALLOW": "lists, todos"},
			batch:   allowBatch,
			status:  200,
			refused: []refusedOp{{Index: 1, Reason: `table "secrets" is not in UPLOAD_ALLOW`}},
			check: func(t *testing.T, db *mongo.Database) {
				if n := len(docs(t, db, "lists")); n != 1 {
					t.Errorf("%d lists, want 1", n)
				}
				if n := len(docs(t, db, "secrets")); n != 0 {
					t.Errorf("%d secrets, want 0", n)
				}
			},
		},
		{
			name:     "a configured dead-letter collection",
			vars:     map[string]string{"UPLOAD_ALLOW": "lists,todos", "UPLOAD_REFUSED_COLLECTION": "rejects"},
			batch:    allowBatch,
			status:   200,
			refused:  []refusedOp{{Index: 1, Reason: `table "secrets" is not in UPLOAD_ALLOW`}},
			deadColl: "rejects",
		},
		{
			name:    "strict mode: 422, nothing written",
			vars:    map[string]string{"UPLOAD_ALLOW": "lists,todos", "UPLOAD_REFUSED": "strict"},
			batch:   allowBatch,
			status:  422,
			errHas:  `batch[1]: table "secrets" is not in UPLOAD_ALLOW`,
			refused: []refusedOp{{Index: 1, Reason: `table "secrets" is not in UPLOAD_ALLOW`}},
			check: func(t *testing.T, db *mongo.Database) {
				if d := dump(t, db); len(d["lists"])+len(d["_powersync_refused"]) != 0 {
					t.Errorf("strict mode wrote %v", d)
				}
			},
		},
		{
			name:    "Customise refuses one operation and converts dates",
			hook:    exampleCustomise,
			batch:   hookBatch,
			status:  200,
			refused: []refusedOp{{Index: 1, Reason: "owner_id of a list cannot change"}},
			check: func(t *testing.T, db *mongo.Database) {
				d := docs(t, db, "lists")["a"]
				if d["owner_id"] != "u1" || d["name"] != "B" {
					t.Errorf("document %v, want owner_id u1 and name B", d)
				}
				want := time.Date(2024, 5, 1, 10, 0, 0, 500e6, time.UTC)
				if got, ok := d["created_at"].(bson.DateTime); !ok || !got.Time().Equal(want) {
					t.Errorf("created_at = %#v, want the date %v", d["created_at"], want)
				}
			},
		},
		{
			name: "Customise fails the batch with a status",
			hook: func(ctx context.Context, req *Request, op *Op) error {
				if op.Collection == "todos" {
					return runtime.Errorf(http.StatusForbidden, "todos are read-only")
				}
				return nil
			},
			batch:  allowBatch,
			status: 403,
			errHas: "todos are read-only",
			check:  wroteNothing,
		},
		{
			name: "Customise failing otherwise is a 500, nothing written",
			hook: func(ctx context.Context, req *Request, op *Op) error {
				if op.Index == 2 {
					return errors.New("the rules engine is down")
				}
				return nil
			},
			batch:  allowBatch,
			status: 500,
			errHas: "internal error",
			check:  wroteNothing,
		},
		{
			name: "Customise producing a hostile operation is a 500",
			hook: func(ctx context.Context, req *Request, op *Op) error {
				op.Collection = "system.js"
				return nil
			},
			batch:  allowBatch,
			status: 500,
			errHas: "internal error",
			check:  wroteNothing,
		},
		{
			name: "Customise setting a value the driver cannot marshal is a 500, nothing written",
			hook: func(ctx context.Context, req *Request, op *Op) error {
				if op.Index == 2 {
					op.Set("nested", bson.D{{Key: "ch", Value: make(chan int)}})
				}
				return nil
			},
			batch:  allowBatch,
			status: 500,
			errHas: "internal error",
			check:  wroteNothing,
		},
		{
			name: "Customise may rewrite an operation",
			hook: func(ctx context.Context, req *Request, op *Op) error {
				if op.Collection == "secrets" {
					op.Collection, op.ID = "lists", "from-"+op.ID
					op.Remove("k")
					op.Set("moved", true)
				}
				return nil
			},
			batch:  allowBatch,
			status: 200,
			check: func(t *testing.T, db *mongo.Database) {
				d := docs(t, db, "lists")["from-x"]
				if d == nil || d["moved"] != true || d["k"] != nil {
					t.Errorf("rewritten document %v", d)
				}
			},
		},
		{
			name: "the database refuses a document (unique index)",
			setup: func(t *testing.T, db *mongo.Database) {
				_, err := db.Collection("lists").Indexes().CreateOne(context.Background(),
					mongo.IndexModel{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetUnique(true)})
				if err != nil {
					t.Fatal(err)
				}
			},
			batch: `{"batch":[` +
				`{"op":"PUT","table":"lists","id":"a","data":{"email":"e"}},` +
				`{"op":"PUT","table":"lists","id":"b","data":{"email":"e"}},` +
				`{"op":"PUT","table":"lists","id":"c","data":{"email":"f"}},` +
				`{"op":"PUT","table":"todos","id":"t","data":{"email":"e"}},` +
				`{"op":"DELETE","table":"lists","id":"z"}]}`,
			status:  200,
			refused: []refusedOp{{Index: 1, Reason: "the database refused the write: E11000 duplicate key"}},
			check: func(t *testing.T, db *mongo.Database) {
				got := docs(t, db, "lists")
				if got["a"] == nil || got["c"] == nil || got["b"] != nil {
					t.Errorf("lists = %v, want a and c", got)
				}
				if docs(t, db, "todos")["t"] == nil {
					t.Errorf("the other collection was not written")
				}
			},
		},
	}
	// A batch larger than one write command to FerretDB, with a refused
	// document in a later command.
	var big strings.Builder
	big.WriteString(`{"batch":[`)
	for i := 0; i < 250; i++ {
		if i > 0 {
			big.WriteString(",")
		}
		email := fmt.Sprintf("e%d", i)
		if i == 180 {
			email = "e10"
		}
		fmt.Fprintf(&big, `{"op":"PUT","table":"lists","id":"id%d","data":{"email":%q}}`, i, email)
	}
	big.WriteString(`]}`)
	tests = append(tests, refusedCase{
		name:    "a refused document in a batch of 250",
		setup:   tests[len(tests)-1].setup,
		batch:   big.String(),
		status:  200,
		refused: []refusedOp{{Index: 180, Reason: "the database refused the write: E11000 duplicate key"}},
		check: func(t *testing.T, db *mongo.Database) {
			got := docs(t, db, "lists")
			if len(got) != 249 || got["id180"] != nil || got["id249"]["email"] != "e249" {
				t.Errorf("%d lists, want 249 without id180", len(got))
			}
		},
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, tc.hook, tc.vars)
			if tc.setup != nil {
				tc.setup(t, h.db)
			}
			dead := tc.deadColl
			if dead == "" {
				dead = DefaultRefusedCol
			}
			for attempt := 1; attempt <= 2; attempt++ {
				status, m, _ := h.post(t, tc.batch)
				if status != tc.status {
					t.Fatalf("attempt %d: status %d, want %d: %v", attempt, status, tc.status, m)
				}
				if tc.errHas != "" {
					if msg, _ := m["error"].(string); !strings.Contains(msg, tc.errHas) {
						t.Errorf("error %q does not contain %q", msg, tc.errHas)
					}
				}
				if status >= 300 && status != 422 {
					break
				}
				got := refusedList(t, m)
				if len(got) != len(tc.refused) {
					t.Fatalf("refused %v, want %v", got, tc.refused)
				}
				for i := range got {
					if got[i].Index != tc.refused[i].Index || !strings.HasPrefix(got[i].Reason, tc.refused[i].Reason) {
						t.Errorf("refused[%d] = %v, want %v", i, got[i], tc.refused[i])
					}
				}
				if status == 200 {
					recs := deadLetterDocs(t, h.db, dead)
					if len(recs) != len(tc.refused) {
						t.Fatalf("attempt %d: %d dead-letter records, want %d: %v", attempt, len(recs), len(tc.refused), recs)
					}
					for i, r := range recs {
						want := tc.refused[i]
						if r["op_index"] != int32(want.Index) || !strings.HasPrefix(r["reason"].(string), want.Reason) ||
							r["attempts"] != int32(attempt) || r["user"] != "" {
							t.Errorf("dead-letter record %v, want index %d, reason %q, attempts %d", r, want.Index, want.Reason, attempt)
						}
						if _, ok := r["time"].(bson.DateTime); !ok {
							t.Errorf("record time %#v", r["time"])
						}
						if id, _ := r["request_id"].(string); id == "" {
							t.Errorf("record without request_id: %v", r)
						}
						raw, _ := r["raw"].(string)
						if !strings.Contains(tc.batch, raw) || !strings.HasPrefix(raw, "{") {
							t.Errorf("record raw %q is not the operation as sent", raw)
						}
					}
				}
			}
			if tc.check != nil {
				tc.check(t, h.db)
			}
		})
	}
}

// TestAppliedCount checks the applied count when some operations are
// refused.
func TestAppliedCount(t *testing.T) {
	h := newHost(t, nil, map[string]string{"UPLOAD_ALLOW": "lists"})
	status, m, _ := h.post(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}},{"op":"PUT","table":"x","id":"a","data":{}},{"op":"DELETE","table":"lists","id":"b"}]}`)
	if status != 200 || m["applied"] != float64(2) {
		t.Fatalf("status %d, body %v: want 200 with applied 2", status, m)
	}
	want := []refusedOp{{Index: 1, Reason: `table "x" is not in UPLOAD_ALLOW`}}
	if got := refusedList(t, m); !reflect.DeepEqual(got, want) {
		t.Errorf("refused %v, want %v", got, want)
	}
}

// TestTransactions runs a batch in one transaction, with a document the
// database refuses, on a server that supports transactions
// (TEST_MONGO_URI naming a replica set); skipped elsewhere.
func TestTransactions(t *testing.T) {
	if !storetest.Real() {
		t.Skip("needs a real MongoDB replica set: set TEST_MONGO_URI")
	}
	name := storetest.DatabaseName(t)
	db := storetest.Client(t).Database(name)
	if _, err := db.Collection("lists").Indexes().CreateOne(context.Background(),
		mongo.IndexModel{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
		t.Fatal(err)
	}
	h, err := runtimetest.Start(t, deployment.New("testing", false, map[string]string{
		"MONGO_URI": storetest.URI(t), "MONGO_DATABASE": name, "UPLOAD_AUTH": "off",
		"UPLOAD_TRANSACTIONS": "true", "UPLOAD_WRITE_CONCERN": "majority",
	}), Task())
	if err != nil {
		if strings.Contains(err.Error(), "does not support transactions") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	th := &testHost{Host: h, db: db}
	batch := `{"batch":[` +
		`{"op":"PUT","table":"lists","id":"a","data":{"email":"e"}},` +
		`{"op":"PUT","table":"lists","id":"b","data":{"email":"e"}},` +
		`{"op":"PUT","table":"todos","id":"t","data":{}},` +
		`{"op":"PATCH","table":"lists","id":"a","data":{"n":1}}]}`
	for attempt := 1; attempt <= 2; attempt++ {
		status, m, _ := th.post(t, batch)
		if status != 200 {
			t.Fatalf("status %d: %v", status, m)
		}
		if got := refusedList(t, m); len(got) != 1 || got[0].Index != 1 {
			t.Fatalf("refused %v, want op 1", got)
		}
	}
	if d := docs(t, db, "lists"); len(d) != 1 || d["a"]["n"] != int32(1) {
		t.Errorf("lists %v", d)
	}
	if recs := deadLetterDocs(t, db, DefaultRefusedCol); len(recs) != 1 || recs[0]["attempts"] != int32(2) {
		t.Errorf("dead letters %v", recs)
	}
}

// TestDeadLetterCollectionIsNotWritable refuses client writes to a
// configured dead-letter collection.
func TestDeadLetterCollectionIsNotWritable(t *testing.T) {
	h := newHost(t, nil, map[string]string{"UPLOAD_REFUSED_COLLECTION": "rejects"})
	status, m, _ := h.post(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}},{"op":"DELETE","table":"rejects","id":"x"}]}`)
	if status != 400 || m["op_index"] != float64(1) || !strings.Contains(m["error"].(string), "dead-letter collection") {
		t.Errorf("status %d: %v", status, m)
	}
	wroteNothing(t, h.db)
}

func wroteNothing(t *testing.T, db *mongo.Database) {
	t.Helper()
	if d := dump(t, db); len(d) != 0 {
		t.Errorf("wrote %v", d)
	}
}
