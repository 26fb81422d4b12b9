package upload

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// testHost is a host serving upload against a fresh database of the test
// server.
type testHost struct {
	*runtimetest.Host
	db *mongo.Database
}

// newHost serves the upload task with hook against a fresh database. vars
// override the defaults (authentication off).
func newHost(t testing.TB, hook Hook, vars map[string]string) *testHost {
	t.Helper()
	return newHostLimit(t, hook, vars, 0)
}

// newHostLimit is newHost with a body limit (0: the default).
func newHostLimit(t testing.TB, hook Hook, vars map[string]string, bodyLimit int64) *testHost {
	t.Helper()
	name := storetest.DatabaseName(t)
	all := map[string]string{
		"MONGO_URI":      storetest.URI(t),
		"MONGO_DATABASE": name,
		"UPLOAD_AUTH":    "off",
	}
	for k, v := range vars {
		all[k] = v
	}
	dep := deployment.New("testing", false, all)
	if bodyLimit > 0 {
		dep.BodyLimit = bodyLimit
	}
	h := runtimetest.New(t, dep, New(hook))
	return &testHost{Host: h, db: storetest.Client(t).Database(name)}
}

// post sends a body to /upload and returns the status and the decoded JSON
// body.
func (h *testHost) post(t testing.TB, body string, header ...string) (int, map[string]any, http.Header) {
	t.Helper()
	if len(header) == 0 {
		header = []string{"Content-Type", "application/json"}
	}
	resp := h.Do(http.MethodPost, "/upload", strings.NewReader(body), header...)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %d is not JSON (%v): %q", resp.StatusCode, err, b)
	}
	return resp.StatusCode, m, resp.Header
}

// mustApply posts a body and requires a 200 with nothing refused.
func (h *testHost) mustApply(t testing.TB, body string) {
	t.Helper()
	status, m, _ := h.post(t, body)
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200: %v", status, m)
	}
	if r, _ := m["refused"].([]any); len(r) != 0 {
		t.Fatalf("refused: %v", r)
	}
}

// dump returns every collection of db as canonical Extended JSON, one
// document per line, sorted: a snapshot to compare.
func dump(t testing.TB, db *mongo.Database) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatalf("listing collections: %v", err)
	}
	out := map[string][]string{}
	for _, n := range names {
		cur, err := db.Collection(n).Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatalf("reading %s: %v", n, err)
		}
		var docs []bson.Raw
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatalf("reading %s: %v", n, err)
		}
		lines := []string{}
		for _, d := range docs {
			b, err := bson.MarshalExtJSON(d, true, false)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, string(b))
		}
		sort.Strings(lines)
		out[n] = lines
	}
	return out
}

// docs returns a collection's documents as maps, by _id (printed).
func docs(t testing.TB, db *mongo.Database, coll string) map[string]bson.M {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := db.Collection(coll).Find(ctx, bson.D{})
	if err != nil {
		t.Fatalf("reading %s: %v", coll, err)
	}
	var all []bson.M
	if err := cur.All(ctx, &all); err != nil {
		t.Fatal(err)
	}
	out := map[string]bson.M{}
	for _, d := range all {
		out[idString(d["_id"])] = d
	}
	return out
}

func idString(v any) string {
	if oid, ok := v.(bson.ObjectID); ok {
		return "oid:" + oid.Hex()
	}
	s, _ := v.(string)
	return s
}

// canon prints a value as relaxed Extended JSON with the fields of every
// document sorted, to compare documents whatever their field order.
func canon(t testing.TB, v any) string {
	t.Helper()
	b, err := bson.MarshalExtJSON(bson.M{"v": v}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(x) // encoding/json sorts map keys
	return string(out)
}
