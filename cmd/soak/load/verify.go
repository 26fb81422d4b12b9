package load

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Report compares the database with the models.
type Report struct {
	Expected  int // documents the models say must exist
	Found     int // of those, present and equal
	Missing   int // expected, absent: lost writes
	Corrupted int // present with other content
	Extra     int // present, but deleted (or never written) per the models
	// Examples describe up to ten differences.
	Examples []string
	// Diffs are the first differences, for a closer look.
	Diffs []Diff
}

// Diff is one document that is not as the models say.
type Diff struct {
	Table, ID string
	Kind      string         // missing, corrupted or unexpected
	Got, Want map[string]any // nil when absent
}

// OK reports whether the database matches exactly.
func (r Report) OK() bool { return r.Missing == 0 && r.Corrupted == 0 && r.Extra == 0 }

func (r Report) String() string {
	s := fmt.Sprintf("expected %d documents: %d equal, %d missing, %d corrupted, %d unexpected", r.Expected, r.Found, r.Missing, r.Corrupted, r.Extra)
	if len(r.Examples) > 0 {
		s += "\n  " + strings.Join(r.Examples, "\n  ")
	}
	return s
}

func (r *Report) diff(d Diff) {
	if len(r.Diffs) >= 10 {
		return
	}
	r.Diffs = append(r.Diffs, d)
	switch d.Kind {
	case "missing":
		r.Examples = append(r.Examples, fmt.Sprintf("%s/%s missing, want %v", d.Table, d.ID, d.Want))
	case "corrupted":
		r.Examples = append(r.Examples, fmt.Sprintf("%s/%s is %v, want %v", d.Table, d.ID, d.Got, d.Want))
	default:
		r.Examples = append(r.Examples, fmt.Sprintf("%s/%s present, want absent: %v", d.Table, d.ID, d.Got))
	}
}

// Verify reads the generated tables of db and compares the rows whose id
// starts with one of prefixes (the generators' prefixes) with the models.
func Verify(ctx context.Context, db *mongo.Database, prefixes []string, models ...*Model) (Report, error) {
	var rep Report
	ours := func(id string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(id, p+"-") {
				return true
			}
		}
		return false
	}
	for _, table := range Tables {
		want := map[string]map[string]any{}
		for _, m := range models {
			for id, d := range m.Docs(table) {
				want[id] = d
			}
		}
		rep.Expected += len(want)
		got, err := ReadTable(ctx, db.Collection(table), ours)
		if err != nil {
			return rep, fmt.Errorf("reading %s: %w", table, err)
		}
		for _, id := range slices.Sorted(maps.Keys(want)) {
			g, ok := got[id]
			switch {
			case !ok:
				rep.Missing++
				rep.diff(Diff{table, id, "missing", nil, want[id]})
			case !reflect.DeepEqual(g, want[id]):
				rep.Corrupted++
				rep.diff(Diff{table, id, "corrupted", g, want[id]})
			default:
				rep.Found++
			}
		}
		for _, id := range slices.Sorted(maps.Keys(got)) {
			if _, ok := want[id]; !ok {
				rep.Extra++
				rep.diff(Diff{table, id, "unexpected", got[id], nil})
			}
		}
	}
	return rep, nil
}

// ReadTable reads the documents of a collection whose string _id satisfies
// keep, as JSON-shaped maps without _id (see normalize).
func ReadTable(ctx context.Context, coll *mongo.Collection, keep func(id string) bool) (map[string]map[string]any, error) {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	out := map[string]map[string]any{}
	for cur.Next(ctx) {
		idv, err := cur.Current.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("a document without _id: %s", cur.Current)
		}
		id, ok := idv.StringValueOK()
		if !ok {
			if keep == nil {
				return nil, fmt.Errorf("a document whose _id is not a string: %s", idv)
			}
			continue
		}
		if keep != nil && !keep(id) {
			continue
		}
		// Relaxed extended JSON: numbers print as plain JSON numbers.
		b, err := bson.MarshalExtJSON(cur.Current, false, false)
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, err
		}
		delete(doc, "_id")
		out[id] = doc
	}
	return out, cur.Err()
}
