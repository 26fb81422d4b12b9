package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Reasons of the refusals that rules make.
const (
	ReasonForbidden = "forbidden" // a rule refuses the caller this write
	ReasonType      = "type"      // a value does not convert to its field's type
)

func ruleRefusal(op *Op, reason, rule, format string, args ...any) *refusedOp {
	return &refusedOp{Index: op.Index, Reason: reason, Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// check applies the rules to one operation before anything is written:
// what can be decided from the operation and the caller alone. It converts
// the operation's typed fields in place. What depends on the stored
// document (whose it is, what its immutable fields hold) is part of the
// write itself: see guard.
func (rs *rules) check(user string, op *Op, decimalText bool) *refusedOp {
	r := rs.colls[op.Collection]
	if r == nil {
		if rs.allow {
			return nil
		}
		return ruleRefusal(op, ReasonForbidden, rs.defaultName(), "table %s has no rule, and %s is deny", quoteShort(op.Collection), rs.defaultName())
	}
	switch {
	case r.closed:
		return ruleRefusal(op, ReasonForbidden, r.name(), "table %s is closed to clients", quoteShort(op.Collection))
	case r.open:
		return nil
	}
	if r.writable != nil && op.Kind != Delete {
		for _, e := range op.Data {
			if !r.isWritable(e.Key) {
				return ruleRefusal(op, ReasonForbidden, r.name("writable"), "field %s is not writable (writable: %s)", quoteShort(e.Key), strings.Join(r.writable, ", "))
			}
		}
	}
	if len(r.types) > 0 && op.Kind != Delete {
		if path, err := r.convertTypes(op.Data, decimalText); err != nil {
			return ruleRefusal(op, ReasonType, r.name("types", path), "%v", err)
		}
	}
	switch r.owner {
	case "":
	case "_id":
		if op.ID != user {
			return ruleRefusal(op, ReasonForbidden, r.name("owner"), "a document of %s is its user's: its id must be the caller's user id", quoteShort(op.Collection))
		}
	default:
		want, err := r.ownerValue(user)
		if err != nil {
			return ruleRefusal(op, ReasonForbidden, r.name("owner"), "the caller's user id is not a valid %s for %s", r.ownerType, r.owner)
		}
		v, has := op.Get(r.owner)
		switch op.Kind {
		case Put:
			if !has || !sameOwner(v, want) {
				return ruleRefusal(op, ReasonForbidden, r.name("owner"), "%s must be the caller's user id", r.owner)
			}
		case Patch:
			if has && !sameOwner(v, want) {
				return ruleRefusal(op, ReasonForbidden, r.name("owner"), "%s cannot change to another user", r.owner)
			}
		}
	}
	if op.Kind == Patch {
		for _, f := range r.immutable {
			if f != r.owner && op.Has(f) {
				return ruleRefusal(op, ReasonForbidden, r.name("immutable"), "%s is immutable: it is set when the document is created, never changed", f)
			}
		}
	}
	return nil
}

// ownerValue is the caller's user id as the owner field holds it.
func (r *rule) ownerValue(user string) (any, error) {
	if r.ownerType == 0 {
		return user, nil
	}
	return convert(user, r.ownerType, 2)
}

// sameOwner compares an owner field's value with the caller's (both
// converted alike).
func sameOwner(v, want any) bool {
	switch v.(type) {
	case string, bson.ObjectID, int32, int64:
		return v == want
	}
	return false
}

// guard is what a rule adds to the writes of one collection in one
// request, so that a check and its write are one atomic operation:
//
//   - PATCH and DELETE: {_id, owner: caller} is the filter: another user's
//     document does not match, and is not changed.
//   - PUT: the same filter with an upsert: another user's document does not
//     match, so the upsert inserts a second _id and the database refuses
//     it with a duplicate key; nothing changes. Immutable fields join the
//     filter with the values the PUT gives them (unless a DELETE of the
//     batch came first: then the PUT creates the document anew).
//   - writable: a PUT sets the writable fields it gives and unsets the
//     others, and leaves the fields clients may not set as they are.
//
// What matched nothing is then told apart from a missing document by a
// read, only when a write changed less than it should have.
type guard struct {
	r     *rule
	owner string // field of the owner condition ("" none, also for owner _id)
	value any    // the caller's id as that field holds it
}

// guardOf returns the guards of a request's writes, by collection; nil
// for collections whose writes need no condition.
func (rs *rules) guardOf(user string) func(coll string) *guard {
	cache := map[string]*guard{}
	return func(coll string) *guard {
		if g, ok := cache[coll]; ok {
			return g
		}
		var g *guard
		if r := rs.colls[coll]; r != nil && !r.closed && !r.open && r.guarded() {
			g = &guard{r: r}
			if r.owner != "" && r.owner != "_id" {
				g.owner = r.owner
				v, err := r.ownerValue(user)
				if err != nil {
					v = user // never equal to a stored value of the other type
				}
				g.value = v
			}
		}
		cache[coll] = g
		return g
	}
}

// immutableConds adds to filter, for each immutable field, that the stored
// value is the PUT's (null: null or missing). A value that is not an array
// must not match an array that holds it.
func (g *guard) immutableConds(filter, data bson.D) bson.D {
	for _, f := range g.r.immutable {
		if f == g.owner {
			continue // in the filter already, with the caller's id
		}
		var v any
		for _, e := range data {
			if e.Key == f {
				v = e.Value
				break
			}
		}
		cond := bson.D{{Key: "$eq", Value: v}}
		if _, arr := v.(bson.A); !arr {
			cond = append(cond, bson.E{Key: "$not", Value: bson.D{{Key: "$type", Value: "array"}}})
		}
		filter = append(filter, bson.E{Key: f, Value: cond})
	}
	return filter
}

func (g *guard) hasImmutable() bool {
	for _, f := range g.r.immutable {
		if f != g.owner {
			return true
		}
	}
	return false
}

// partialPut is a PUT under writable: the writable fields it gives are set,
// the writable fields it leaves out are unset, the others stay.
func (g *guard) partialPut(data bson.D) bson.D {
	var unset bson.D
	for _, f := range g.r.writable {
		found := false
		for _, e := range data {
			if e.Key == f {
				found = true
				break
			}
		}
		if !found {
			unset = append(unset, bson.E{Key: f, Value: ""})
		}
	}
	update := bson.D{}
	if len(data) > 0 {
		update = append(update, bson.E{Key: "$set", Value: data})
	}
	if len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	return update
}

// foreign returns the ids of the writes' documents that exist and are not
// the caller's: the database's own matching, the complement of the
// writes' owner condition.
func foreign(ctx context.Context, coll *mongo.Collection, g *guard, ws []*docWrite) (map[any]bool, error) {
	ids := make(bson.A, len(ws))
	for i, w := range ws {
		ids[i] = w.id
	}
	cur, err := coll.Find(ctx, bson.D{
		{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}},
		{Key: g.owner, Value: bson.D{{Key: "$ne", Value: g.value}}},
	}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var found []struct {
		ID any `bson:"_id"`
	}
	if err := cur.All(ctx, &found); err != nil {
		return nil, err
	}
	out := make(map[any]bool, len(found))
	for _, f := range found {
		out[f.ID] = true
	}
	return out, nil
}

func ownerRefusal(w *docWrite) dbRefusal {
	return dbRefusal{w: w, reason: ReasonForbidden, rule: w.guard.r.name("owner"),
		message: "the document is not the caller's"}
}

// settleMisses finds, when the PATCHes and DELETEs of a bulk write matched
// fewer documents than they name, those that matched nothing because the
// document is another user's (a missing document is fine: a PATCH of it
// changes nothing and a DELETE of it succeeds).
func settleMisses(ctx context.Context, coll *mongo.Collection, writes []*docWrite, res *mongo.BulkWriteResult) ([]dbRefusal, error) {
	var upd, del int64
	var guarded []*docWrite
	for _, w := range writes {
		if w.kind == Delete {
			del++
		} else {
			upd++
		}
		if w.kind != Put && w.guard != nil && w.guard.owner != "" && !w.plain {
			guarded = append(guarded, w)
		}
	}
	if len(guarded) == 0 || res.MatchedCount+res.UpsertedCount >= upd && res.DeletedCount >= del {
		return nil, nil
	}
	theirs, err := foreign(ctx, coll, guarded[0].guard, guarded)
	if err != nil {
		return nil, err
	}
	var out []dbRefusal
	for _, w := range guarded {
		if theirs[w.id] {
			out = append(out, ownerRefusal(w))
		}
	}
	return out, nil
}

// settleDup tells why a guarded PUT hit a duplicate _id: the document is
// another user's (every operation of the write is refused), or its
// immutable fields hold other values (the PUT that set them is refused,
// and the write's other operations are folded again without it), or
// neither (another unique index: the database's refusal). rewrite is the
// write to make in its place, if any.
func settleDup(ctx context.Context, coll *mongo.Collection, w *docWrite, msg string) (refused []dbRefusal, rewrite *docWrite, err error) {
	g := w.guard
	if g.owner != "" {
		theirs, err := foreign(ctx, coll, g, []*docWrite{w})
		if err != nil {
			return nil, nil, err
		}
		if theirs[w.id] {
			return []dbRefusal{ownerRefusal(w)}, nil, nil
		}
	}
	if !w.fresh && g.hasImmutable() {
		n, err := coll.CountDocuments(ctx, g.immutableConds(bson.D{{Key: "_id", Value: w.id}}, w.data))
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			put := w.lastPut()
			return []dbRefusal{immutableRefusal(g, put)}, w.without(put), nil
		}
	}
	return []dbRefusal{{w: w, reason: "the database refused the write: " + msg}}, nil, nil
}

// collLocks serialize, per guarded collection, the checks and writes of
// checkByID in this process.
type collLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex // only collections with a rule: bounded by the file
}

func (l *collLocks) lock(coll string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*sync.Mutex{}
	}
	mu := l.m[coll]
	if mu == nil {
		mu = &sync.Mutex{}
		l.m[coll] = mu
	}
	l.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// checkByID is the rules' conditions for a server that finds a document
// quickly only by {_id} alone (FerretDB v1, the development store: any
// other filter reads the whole collection, for each statement). Each
// guarded write's document is read by _id and the conditions checked
// here, with MongoDB's equality; the writes then go by _id alone, while
// the caller holds the collection's lock, so that no other batch of this
// process comes between a check and its write. (Several processes writing
// the same documents of one development store at once could.) It returns
// the refusals and the writes to make: a PATCH or DELETE of a missing
// document has nothing to do.
func checkByID(ctx context.Context, coll *mongo.Collection, writes []*docWrite) ([]dbRefusal, []*docWrite, error) {
	var refused []dbRefusal
	out := make([]*docWrite, 0, len(writes))
	for _, w := range writes {
		g := w.guard
		needOwner := g != nil && g.owner != ""
		if !w.needsCheck() {
			w.plain = true
			out = append(out, w)
			continue
		}
		proj := bson.D{}
		if needOwner {
			proj = append(proj, bson.E{Key: g.owner, Value: 1})
		}
		for _, f := range g.r.immutable {
			if f != g.owner {
				proj = append(proj, bson.E{Key: f, Value: 1})
			}
		}
		var doc bson.Raw
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: w.id}}, options.FindOne().SetProjection(proj)).Decode(&doc)
		missing := errors.Is(err, mongo.ErrNoDocuments)
		if err != nil && !missing {
			return nil, nil, err
		}
		for w != nil {
			if missing {
				if w.kind == Put {
					w.plain = true
					out = append(out, w)
				}
				break
			}
			if needOwner && !ownerHolds(lookup(doc, g.owner), g.value) {
				refused = append(refused, ownerRefusal(w))
				break
			}
			if w.kind == Put && !w.fresh && !g.immutableHolds(doc, w.data) {
				put := w.lastPut()
				refused = append(refused, immutableRefusal(g, put))
				w = w.without(put)
				continue
			}
			w.plain = true
			out = append(out, w)
			break
		}
	}
	return refused, out, nil
}

// needsCheck reports whether a write's conditions depend on the stored
// document.
func (w *docWrite) needsCheck() bool {
	g := w.guard
	return g != nil && (g.owner != "" || w.kind == Put && !w.fresh && g.hasImmutable())
}

// insertNew inserts, before checkByID, the documents of the PUTs that
// need a check, in commands of at most maxBatch when maxBatch > 0: a new
// document breaks no rule, and most PUTs of a PowerSync client create one,
// so most need no read. Where a command fails (a document exists: a
// duplicate _id), all of its PUTs are checked and written as usual; the
// ones it did insert are then the caller's own, with the same values, and
// writing them again changes nothing. It returns the writes left to make.
func insertNew(ctx context.Context, coll *mongo.Collection, writes []*docWrite, maxBatch int) ([]*docWrite, error) {
	left := make([]*docWrite, 0, len(writes))
	var puts []*docWrite
	for _, w := range writes {
		if w.kind == Put && w.needsCheck() {
			puts = append(puts, w)
		} else {
			left = append(left, w)
		}
	}
	for len(puts) > 0 {
		n := len(puts)
		if maxBatch > 0 && n > maxBatch {
			n = maxBatch
		}
		ms := make([]mongo.WriteModel, n)
		for i, w := range puts[:n] {
			m, err := w.insertModel()
			if err != nil {
				return nil, err
			}
			ms[i] = m
		}
		_, err := coll.BulkWrite(ctx, ms, options.BulkWrite().SetOrdered(false))
		if _, ok := writeErrors(err); ok {
			left = append(left, puts[:n]...)
		} else if err != nil {
			return nil, err
		}
		puts = puts[n:]
	}
	return left, nil
}

func lookup(doc bson.Raw, key string) bson.RawValue {
	v, err := doc.LookupErr(key)
	if err != nil {
		return bson.RawValue{}
	}
	return v
}

// ownerHolds is {owner: want} of a stored value: equal, or an array that
// holds it.
func ownerHolds(v bson.RawValue, want any) bool {
	if rawEqual(v, want) {
		return true
	}
	if v.Type != bson.TypeArray {
		return false
	}
	vals, err := v.Array().Values()
	if err != nil {
		return false
	}
	for _, e := range vals {
		if rawEqual(e, want) {
			return true
		}
	}
	return false
}

// immutableHolds is immutableConds evaluated on a stored document.
func (g *guard) immutableHolds(doc bson.Raw, data bson.D) bool {
	for _, f := range g.r.immutable {
		if f == g.owner {
			continue
		}
		var v any
		for _, e := range data {
			if e.Key == f {
				v = e.Value
				break
			}
		}
		stored := lookup(doc, f)
		_, arr := v.(bson.A)
		switch {
		case stored.Type == bson.TypeArray && !arr:
			return false
		case v == nil:
			if stored.Type != 0 && stored.Type != bson.TypeNull {
				return false
			}
		case !rawEqual(stored, v):
			return false
		}
	}
	return true
}

// rawEqual compares a stored value with a value to write as MongoDB's
// equality does: the same BSON, or numbers of equal value.
func rawEqual(v bson.RawValue, want any) bool {
	if v.Type == 0 {
		return false
	}
	if want == nil {
		return v.Type == bson.TypeNull
	}
	t, b, err := bson.MarshalValue(want)
	if err != nil {
		return false
	}
	if v.Type == t && bytes.Equal(v.Value, b) {
		return true
	}
	w := bson.RawValue{Type: t, Value: b}
	if vi, ok := v.AsInt64OK(); ok {
		if wi, ok := w.AsInt64OK(); ok && isInt(v.Type) && isInt(t) {
			return vi == wi
		}
	}
	vf, ok1 := asFloat(v)
	wf, ok2 := asFloat(w)
	return ok1 && ok2 && vf == wf
}

func isInt(t bson.Type) bool { return t == bson.TypeInt32 || t == bson.TypeInt64 }

func asFloat(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bson.TypeDouble:
		return v.Double(), true
	case bson.TypeInt32:
		return float64(v.Int32()), true
	case bson.TypeInt64:
		return float64(v.Int64()), true
	}
	return 0, false
}

func immutableRefusal(g *guard, put *Op) dbRefusal {
	return dbRefusal{w: &docWrite{ops: []int{put.Index}}, reason: ReasonForbidden, rule: g.r.name("immutable"),
		message: fmt.Sprintf("the document exists, and the PUT would change an immutable field (%s)", strings.Join(g.r.immutable, ", "))}
}
