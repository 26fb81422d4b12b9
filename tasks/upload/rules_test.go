package upload

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// corpusRules are the rules of the cross-user corpus: the example.
const corpusRules = `
upload:
  default: deny
  rules:
    lists:
      owner: owner_id
      immutable: [owner_id, created_at]
    todos:
      owner: created_by
    profiles:
      owner: _id
      writable: [display_name, avatar]
    audit_log: deny
    events:
      owner: user_id
      types: {starts_at: date, list_id: objectid, amount: decimal}
`

// rulesHost serves upload with authentication and the rules of yamlText
// against a fresh database.
type rulesHost struct {
	*testHost
	set *keys.Set
}

func newRulesHost(t testing.TB, yamlText string, vars map[string]string) *rulesHost {
	t.Helper()
	return newRulesHostFilters(t, yamlText, vars, false)
}

// newRulesHostFilters is newRulesHost that, with filters, puts the rules'
// conditions in the writes' filters even on FerretDB (as on MongoDB),
// rather than checking them by _id (checkByID).
func newRulesHostFilters(t testing.TB, yamlText string, vars map[string]string, filters bool) *rulesHost {
	t.Helper()
	kv, set := testKeys(t)
	delete(kv, "UPLOAD_ALLOW")
	name := storetest.DatabaseName(t)
	all := map[string]string{"MONGO_URI": storetest.URI(t), "MONGO_DATABASE": name}
	for k, v := range kv {
		all[k] = v
	}
	for k, v := range vars {
		all[k] = v
	}
	dep := deployment.New("testing", false, all)
	if err := dep.SetSections("deployments/testing.yaml", []byte(yamlText)); err != nil {
		t.Fatal(err)
	}
	h := runtimetest.New(t, dep, newTask(&task{filtersAlways: filters}))
	return &rulesHost{testHost: &testHost{Host: h, db: storetest.Client(t).Database(name)}, set: set}
}

// as posts a batch with a token for user.
func (h *rulesHost) as(t testing.TB, user, body string) (int, map[string]any) {
	t.Helper()
	now := time.Now()
	tok := sign(t, h.set, user, testAudience, now, now.Add(5*time.Minute))
	status, m, _ := h.post(t, body, "Content-Type", "application/json", "Authorization", "Bearer "+tok)
	return status, m
}

func (h *rulesHost) mustApplyAs(t testing.TB, user, body string) {
	t.Helper()
	status, m := h.as(t, user, body)
	if status != 200 {
		t.Fatalf("status %d: %v\n%s", status, m, h.Logs)
	}
	if r := refusedList(t, m); len(r) != 0 {
		t.Fatalf("refused %v", r)
	}
}

func batchOf(ops ...string) string { return `{"batch":[` + strings.Join(ops, ",") + `]}` }

// snapshot returns the given documents as canonical Extended JSON (every
// byte of every field, types included), by collection/id.
func snapshot(t testing.TB, db *mongo.Database, ids map[string][]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for coll, list := range ids {
		for _, id := range list {
			var raw bson.Raw
			err := db.Collection(coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&raw)
			if err == mongo.ErrNoDocuments {
				out[coll+"/"+id] = "<missing>"
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := bson.MarshalExtJSON(raw, true, false)
			if err != nil {
				t.Fatal(err)
			}
			out[coll+"/"+id] = string(b)
		}
	}
	return out
}

// attack is one operation of user B that the rules must refuse.
type attack struct {
	name   string
	op     string
	reason string // ReasonForbidden unless set
	rule   string
}

// legit is one operation of B that must be applied.
type legit struct {
	name string
	op   string
}

// The corpus. A is "alice", B is "bob".
var (
	aliceIDs = map[string][]string{
		"lists":    {"la1", "la2", "orphan"},
		"todos":    {"ta1"},
		"profiles": {"alice"},
		"events":   {"ea1"},
	}
	aliceSeed = batchOf(
		`{"op":"PUT","table":"lists","id":"la1","data":{"name":"Groceries","owner_id":"alice","created_at":"2024-05-01T10:00:00Z","n":1}}`,
		`{"op":"PUT","table":"lists","id":"la2","data":{"name":"Work","owner_id":"alice","created_at":"2024-05-02T10:00:00Z"}}`,
		`{"op":"PUT","table":"todos","id":"ta1","data":{"text":"milk","created_by":"alice","done":0}}`,
		`{"op":"PUT","table":"profiles","id":"alice","data":{"display_name":"Alice"}}`,
		`{"op":"PUT","table":"events","id":"ea1","data":{"user_id":"alice","starts_at":"2024-06-01T09:00:00Z","amount":"12.50"}}`,
	)
	attacks = []attack{
		{"PUT over A's list, owned by B", `{"op":"PUT","table":"lists","id":"la1","data":{"name":"mine","owner_id":"bob","created_at":"2024-05-01T10:00:00Z"}}`, "", "upload.rules.lists.owner"},
		{"PUT over A's list, claiming A", `{"op":"PUT","table":"lists","id":"la1","data":{"name":"mine","owner_id":"alice","created_at":"2024-05-01T10:00:00Z"}}`, "", "upload.rules.lists.owner"},
		{"PUT over A's list without an owner", `{"op":"PUT","table":"lists","id":"la2","data":{"name":"x"}}`, "", "upload.rules.lists.owner"},
		{"PATCH A's list", `{"op":"PATCH","table":"lists","id":"la1","data":{"name":"pwned"}}`, "", "upload.rules.lists.owner"},
		{"re-own A's list to B", `{"op":"PATCH","table":"lists","id":"la2","data":{"owner_id":"bob"}}`, "", "upload.rules.lists.owner"},
		{"DELETE A's list", `{"op":"DELETE","table":"lists","id":"la2"}`, "", "upload.rules.lists.owner"},
		{"PATCH a list that no user owns", `{"op":"PATCH","table":"lists","id":"orphan","data":{"name":"mine"}}`, "", "upload.rules.lists.owner"},
		{"DELETE a list that no user owns", `{"op":"DELETE","table":"lists","id":"orphan"}`, "", "upload.rules.lists.owner"},
		{"insert a list owned by A", `{"op":"PUT","table":"lists","id":"lnew","data":{"name":"spam","owner_id":"alice"}}`, "", "upload.rules.lists.owner"},
		{"insert a list owned by nobody", `{"op":"PUT","table":"lists","id":"lnew2","data":{"name":"spam"}}`, "", "upload.rules.lists.owner"},
		{"owner of another type", `{"op":"PUT","table":"lists","id":"lnew3","data":{"name":"spam","owner_id":["bob","alice"]}}`, "", "upload.rules.lists.owner"},
		{"PATCH A's todo", `{"op":"PATCH","table":"todos","id":"ta1","data":{"done":1}}`, "", "upload.rules.todos.owner"},
		{"PUT over A's todo", `{"op":"PUT","table":"todos","id":"ta1","data":{"text":"x","created_by":"bob"}}`, "", "upload.rules.todos.owner"},
		{"DELETE A's todo", `{"op":"DELETE","table":"todos","id":"ta1"}`, "", "upload.rules.todos.owner"},
		{"PUT A's profile", `{"op":"PUT","table":"profiles","id":"alice","data":{"display_name":"Mallory"}}`, "", "upload.rules.profiles.owner"},
		{"PATCH A's profile", `{"op":"PATCH","table":"profiles","id":"alice","data":{"avatar":"x.png"}}`, "", "upload.rules.profiles.owner"},
		{"DELETE A's profile", `{"op":"DELETE","table":"profiles","id":"alice"}`, "", "upload.rules.profiles.owner"},
		{"make oneself admin by PUT", `{"op":"PUT","table":"profiles","id":"bob","data":{"display_name":"Bob","role":"admin"}}`, "", "upload.rules.profiles.writable"},
		{"make oneself admin by PATCH", `{"op":"PATCH","table":"profiles","id":"bob","data":{"role":"admin"}}`, "", "upload.rules.profiles.writable"},
		{"create users/admin", `{"op":"PUT","table":"users","id":"admin","data":{"role":"admin"}}`, "", "upload.default"},
		{"write the audit log", `{"op":"PUT","table":"audit_log","id":"x","data":{"what":"nothing happened"}}`, "", "upload.rules.audit_log"},
		{"delete from the audit log", `{"op":"DELETE","table":"audit_log","id":"log1"}`, "", "upload.rules.audit_log"},
		{"PATCH an immutable field of B's own list", `{"op":"PATCH","table":"lists","id":"lb1","data":{"created_at":"2000-01-01T00:00:00Z"}}`, "", "upload.rules.lists.immutable"},
		{"PUT changing an immutable field of B's own list", `{"op":"PUT","table":"lists","id":"lb1","data":{"name":"B1","owner_id":"bob","created_at":"2000-01-01T00:00:00Z"}}`, "", "upload.rules.lists.immutable"},
		{"PUT dropping an immutable field of B's own list", `{"op":"PUT","table":"lists","id":"lb1","data":{"name":"B1","owner_id":"bob"}}`, "", "upload.rules.lists.immutable"},
		{"an event owned by A", `{"op":"PUT","table":"events","id":"ea2","data":{"user_id":"alice","starts_at":"2024-06-01T09:00:00Z"}}`, "", "upload.rules.events.owner"},
		{"PATCH A's event", `{"op":"PATCH","table":"events","id":"ea1","data":{"amount":"0"}}`, "", "upload.rules.events.owner"},
		{"an event whose date is not a date", `{"op":"PUT","table":"events","id":"eb9","data":{"user_id":"bob","starts_at":"next tuesday"}}`, ReasonType, "upload.rules.events.types.starts_at"},
	}
	// B's own documents, made before the attacks.
	bobSeed = batchOf(
		`{"op":"PUT","table":"lists","id":"lb1","data":{"name":"B1","owner_id":"bob","created_at":"2024-05-03T10:00:00Z"}}`,
		`{"op":"PUT","table":"todos","id":"tb2","data":{"text":"gone soon","created_by":"bob"}}`,
	)
	legits = []legit{
		{"insert B's list", `{"op":"PUT","table":"lists","id":"lb2","data":{"name":"B2","owner_id":"bob","created_at":"2024-05-04T10:00:00Z"}}`},
		{"PATCH B's list", `{"op":"PATCH","table":"lists","id":"lb1","data":{"name":"B1 renamed"}}`},
		{"PATCH B's list's owner to B (no change)", `{"op":"PATCH","table":"lists","id":"lb1","data":{"owner_id":"bob","n":2}}`},
		{"PUT B's list again, immutable fields kept", `{"op":"PUT","table":"lists","id":"lb2","data":{"name":"B2 again","owner_id":"bob","created_at":"2024-05-04T10:00:00Z"}}`},
		{"insert B's todo", `{"op":"PUT","table":"todos","id":"tb1","data":{"text":"eggs","created_by":"bob"}}`},
		{"DELETE B's todo", `{"op":"DELETE","table":"todos","id":"tb2"}`},
		{"DELETE a todo that does not exist", `{"op":"DELETE","table":"todos","id":"nothing-here"}`},
		{"PATCH a todo that does not exist", `{"op":"PATCH","table":"todos","id":"nothing-either","data":{"done":1}}`},
		{"B's profile", `{"op":"PUT","table":"profiles","id":"bob","data":{"display_name":"Bob"}}`},
		{"PATCH B's profile", `{"op":"PATCH","table":"profiles","id":"bob","data":{"avatar":"b.png"}}`},
		{"B's event, typed", `{"op":"PUT","table":"events","id":"eb1","data":{"user_id":"bob","starts_at":"2024-06-02T09:30:00.250Z","list_id":"65f1a2b3c4d5e6f708091a2b","amount":19.99}}`},
	}
)

// seedCorpus writes A's and B's documents through upload, and documents
// that the backend wrote directly: a list without an owner, a field that
// only the backend sets (A's role), an audit log entry.
func seedCorpus(t *testing.T, h *rulesHost) {
	t.Helper()
	h.mustApplyAs(t, "alice", aliceSeed)
	h.mustApplyAs(t, "bob", bobSeed)
	ctx := context.Background()
	if _, err := h.db.Collection("lists").InsertOne(ctx, bson.D{{Key: "_id", Value: "orphan"}, {Key: "name", Value: "shared"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.Collection("profiles").UpdateOne(ctx, bson.D{{Key: "_id", Value: "alice"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "role", Value: "admin"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.Collection("profiles").InsertOne(ctx, bson.D{{Key: "_id", Value: "bob"}, {Key: "role", Value: "member"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.Collection("audit_log").InsertOne(ctx, bson.D{{Key: "_id", Value: "log1"}, {Key: "what", Value: "seeded"}}); err != nil {
		t.Fatal(err)
	}
}

// protected are the documents no attack may change: A's, the backend's,
// and B's list lb1 (its immutable fields), before B's legitimate ops.
var protected = map[string][]string{
	"lists": {"la1", "la2", "orphan", "lnew", "lnew2", "lnew3"}, "todos": {"ta1"}, "profiles": {"alice"},
	"events": {"ea1", "ea2", "eb9"}, "audit_log": {"log1", "x"}, "users": {"admin"},
}

// checkBobApplied checks the result of B's legitimate operations.
func checkBobApplied(t *testing.T, db *mongo.Database) {
	t.Helper()
	lists := docs(t, db, "lists")
	if d := lists["lb1"]; d["name"] != "B1 renamed" || d["owner_id"] != "bob" || d["n"] != int32(2) || d["created_at"] != "2024-05-03T10:00:00Z" {
		t.Errorf("lb1 = %v", d)
	}
	if d := lists["lb2"]; d["name"] != "B2 again" || d["owner_id"] != "bob" {
		t.Errorf("lb2 = %v", d)
	}
	todos := docs(t, db, "todos")
	if d := todos["tb1"]; d["created_by"] != "bob" || d["text"] != "eggs" {
		t.Errorf("tb1 = %v", d)
	}
	if _, ok := todos["tb2"]; ok {
		t.Error("tb2 was not deleted")
	}
	for _, id := range []string{"nothing-here", "nothing-either"} {
		if _, ok := todos[id]; ok {
			t.Errorf("todo %s exists", id)
		}
	}
	// writable: B's display_name and avatar are set, the backend's role stays.
	if d := docs(t, db, "profiles")["bob"]; d["display_name"] != "Bob" || d["avatar"] != "b.png" || d["role"] != "member" {
		t.Errorf("profile bob = %v", d)
	}
	ev := docs(t, db, "events")["eb1"]
	if dt, ok := ev["starts_at"].(bson.DateTime); !ok || !dt.Time().Equal(time.Date(2024, 6, 2, 9, 30, 0, 250e6, time.UTC)) {
		t.Errorf("starts_at = %#v", ev["starts_at"])
	}
	if oid, ok := ev["list_id"].(bson.ObjectID); !ok || oid.Hex() != "65f1a2b3c4d5e6f708091a2b" {
		t.Errorf("list_id = %#v", ev["list_id"])
	}
	if storetest.Real() {
		if dec, ok := ev["amount"].(bson.Decimal128); !ok || dec.String() != "19.99" {
			t.Errorf("amount = %#v, want Decimal128 19.99", ev["amount"])
		}
	} else if ev["amount"] != "19.99" { // FerretDB has no Decimal128: its text
		t.Errorf("amount = %#v, want the text 19.99 on FerretDB", ev["amount"])
	}
}

// TestRulesCrossUserCorpus runs B's attacks on A's data, each alone and
// then all mixed into one batch with B's legitimate operations: every
// attack is refused, per operation, with reason and rule; A's documents
// stay byte for byte as they were; B's operations are applied.
func TestRulesCrossUserCorpus(t *testing.T) {
	for _, filters := range []bool{false, true} {
		t.Run(writeWay(filters), func(t *testing.T) { testCorpus(t, filters) })
	}
}

// writeWay names the two ways of checking the rules' conditions: in the
// filters (MongoDB), by _id (FerretDB: the default where the tests run on it).
func writeWay(filters bool) string {
	if filters || storetest.Real() {
		return "filters"
	}
	return "by_id"
}

func testCorpus(t *testing.T, filters bool) {
	t.Run("alone", func(t *testing.T) {
		h := newRulesHostFilters(t, corpusRules, nil, filters)
		seedCorpus(t, h)
		before := snapshot(t, h.db, protected)
		lb1 := snapshot(t, h.db, map[string][]string{"lists": {"lb1"}})
		for _, a := range attacks {
			status, m := h.as(t, "bob", batchOf(a.op))
			if status != 200 {
				t.Fatalf("%s: status %d: %v\n%s", a.name, status, m, h.Logs)
			}
			got := refusedList(t, m)
			want := a.reason
			if want == "" {
				want = ReasonForbidden
			}
			if len(got) != 1 || got[0].Reason != want || got[0].Rule != a.rule || got[0].Message == "" {
				t.Errorf("%s: refused %+v, want reason %s by %s", a.name, got, want, a.rule)
			}
			if m["applied"] != float64(0) {
				t.Errorf("%s: applied %v", a.name, m["applied"])
			}
			if after := snapshot(t, h.db, protected); !reflect.DeepEqual(after, before) {
				t.Fatalf("%s changed protected data:\nbefore %v\nafter  %v", a.name, before, after)
			}
			if after := snapshot(t, h.db, map[string][]string{"lists": {"lb1"}}); !reflect.DeepEqual(after, lb1) {
				t.Fatalf("%s changed B's list: %v", a.name, after)
			}
		}
		recs := deadLetterDocs(t, h.db, DefaultRefusedCol)
		if len(recs) != len(attacks) {
			t.Fatalf("%d dead-letter records, want %d", len(recs), len(attacks))
		}
		rules := map[string]bool{}
		for _, r := range recs {
			if r["user"] != "bob" || r["rule"] == nil || r["message"] == nil {
				t.Errorf("dead-letter record %v", r)
			}
			rules[r["rule"].(string)] = true
		}
		for _, a := range attacks {
			if !rules[a.rule] {
				t.Errorf("no dead-letter record of rule %s", a.rule)
			}
		}
	})

	t.Run("mixed", func(t *testing.T) {
		h := newRulesHostFilters(t, corpusRules, nil, filters)
		seedCorpus(t, h)
		before := snapshot(t, h.db, protected)
		// Interleave: legit, attack, legit, attack, ... Attacks on the
		// documents B writes legitimately (lb1) sit between B's own
		// operations on them, so that folding is tested too.
		var ops []string
		wantRefused := map[int]attack{}
		for i := 0; i < max(len(attacks), len(legits)); i++ {
			if i < len(legits) {
				ops = append(ops, legits[i].op)
			}
			if i < len(attacks) {
				wantRefused[len(ops)] = attacks[i]
				ops = append(ops, attacks[i].op)
			}
		}
		body := batchOf(ops...)
		for attempt := 1; attempt <= 2; attempt++ { // a retried batch converges
			status, m := h.as(t, "bob", body)
			if status != 200 {
				t.Fatalf("status %d: %v", status, m)
			}
			got := refusedList(t, m)
			if len(got) != len(attacks) {
				t.Errorf("attempt %d: %d refused, want %d: %+v", attempt, len(got), len(attacks), got)
			}
			for _, r := range got {
				a, ok := wantRefused[r.Index]
				if !ok {
					t.Errorf("attempt %d: op %d (%s) refused: %+v", attempt, r.Index, ops[r.Index], r)
					continue
				}
				if r.Rule != a.rule {
					t.Errorf("attempt %d: %s refused by %s, want %s", attempt, a.name, r.Rule, a.rule)
				}
			}
			if m["applied"] != float64(len(legits)) {
				t.Errorf("attempt %d: applied %v, want %d", attempt, m["applied"], len(legits))
			}
			if after := snapshot(t, h.db, protected); !reflect.DeepEqual(after, before) {
				t.Fatalf("attempt %d changed protected data:\nbefore %v\nafter  %v", attempt, before, after)
			}
			checkBobApplied(t, h.db)
		}
		recs := deadLetterDocs(t, h.db, DefaultRefusedCol)
		if len(recs) != len(attacks) {
			t.Errorf("%d dead-letter records, want %d", len(recs), len(attacks))
		}
		for _, r := range recs {
			if r["attempts"] != int32(2) {
				t.Errorf("record %v: want 2 attempts", r)
			}
		}
	})
}

// TestRulesFolding checks that an operation a rule refuses is not folded
// into the effect of the others on the same document, whether the rule
// refuses it before the write or at the write.
func TestRulesFolding(t *testing.T) {
	for _, filters := range []bool{false, true} {
		t.Run(writeWay(filters), func(t *testing.T) { testFolding(t, filters) })
	}
}

func testFolding(t *testing.T, filters bool) {
	h := newRulesHostFilters(t, corpusRules, nil, filters)
	seedCorpus(t, h)
	h.mustApplyAs(t, "bob", batchOf(`{"op":"PUT","table":"lists","id":"lb2","data":{"name":"old","owner_id":"bob","created_at":"2020-01-01T00:00:00Z"}}`))
	before := snapshot(t, h.db, protected)
	status, m := h.as(t, "bob", batchOf(
		// lb1 exists, created_at 2024-05-03.
		`{"op":"PATCH","table":"lists","id":"lb1","data":{"name":"one"}}`,                                                         // 0 applied
		`{"op":"PATCH","table":"lists","id":"lb1","data":{"created_at":"1999-01-01T00:00:00Z","name":"bad"}}`,                     // 1 refused before the write
		`{"op":"PATCH","table":"lists","id":"lb1","data":{"done":true}}`,                                                          // 2 applied
		`{"op":"PUT","table":"lists","id":"lb1","data":{"name":"replaced","owner_id":"bob","created_at":"1999-01-01T00:00:00Z"}}`, // 3 refused at the write
		`{"op":"PATCH","table":"lists","id":"lb1","data":{"n":7}}`,                                                                // 4 applied, after 2
		// A's la1: every operation of B on it is refused, whatever the fold.
		`{"op":"DELETE","table":"lists","id":"la1"}`, // 5
		`{"op":"PUT","table":"lists","id":"la1","data":{"name":"B's now","owner_id":"bob","created_at":"2024-05-01T10:00:00Z"}}`, // 6
		`{"op":"PATCH","table":"lists","id":"la1","data":{"name":"B's"}}`,                                                        // 7
		// B deletes and re-creates lb2 in one batch: a new document, whose
		// immutable fields may differ from the old one's.
		`{"op":"PUT","table":"lists","id":"lb2","data":{"name":"old","owner_id":"bob","created_at":"2020-01-01T00:00:00Z"}}`, // 8
		`{"op":"DELETE","table":"lists","id":"lb2"}`, // 9
		`{"op":"PUT","table":"lists","id":"lb2","data":{"name":"new","owner_id":"bob","created_at":"2021-01-01T00:00:00Z"}}`, // 10
	))
	if status != 200 {
		t.Fatalf("status %d: %v", status, m)
	}
	var idx []string
	for _, r := range refusedList(t, m) {
		idx = append(idx, fmt.Sprintf("%d:%s", r.Index, r.Rule))
	}
	sort.Strings(idx)
	want := []string{"1:upload.rules.lists.immutable", "3:upload.rules.lists.immutable",
		"5:upload.rules.lists.owner", "6:upload.rules.lists.owner", "7:upload.rules.lists.owner"}
	if !reflect.DeepEqual(idx, want) {
		t.Errorf("refused %v, want %v", idx, want)
	}
	d := docs(t, h.db, "lists")
	if lb1 := d["lb1"]; lb1["name"] != "one" || lb1["done"] != true || lb1["n"] != int32(7) || lb1["created_at"] != "2024-05-03T10:00:00Z" {
		t.Errorf("lb1 = %v, want the effect of ops 0, 2 and 4 only", lb1)
	}
	if lb2 := d["lb2"]; lb2["name"] != "new" || lb2["created_at"] != "2021-01-01T00:00:00Z" {
		t.Errorf("lb2 = %v", lb2)
	}
	if after := snapshot(t, h.db, protected); !reflect.DeepEqual(after, before) {
		t.Errorf("protected data changed:\nbefore %v\nafter  %v", before, after)
	}
}
