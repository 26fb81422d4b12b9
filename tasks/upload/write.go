package upload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
)

// docWrite is the one write a batch makes to one document: the batch's
// operations on that document folded, in batch order, into their result.
//
//	PUT a, PATCH b        -> PUT a+b    (the PATCH applies to a known document)
//	PATCH a, PATCH b      -> PATCH a+b  (later fields win)
//	anything, DELETE      -> DELETE
//	DELETE, PATCH         -> DELETE     (a PATCH does not create documents)
//	anything, PUT a       -> PUT a
//
// Each folded write is idempotent, and the writes of a batch touch distinct
// documents, so their order does not matter and a batch retried after a
// partial failure converges to the same data.
type docWrite struct {
	coll  string
	id    any // string, or bson.ObjectID in objectid mode
	kind  Kind
	data  bson.D
	index map[string]int // field -> position in data, once data is large
	ops   []int          // indices of the batch's operations folded in

	// With rules (guard.go): the conditions of the write, whether a DELETE
	// of the batch came before its PUT (the PUT then creates the document
	// anew), and the operations folded in, to fold them again without one.
	guard *guard
	fresh bool
	src   []*Op
	// plain: the conditions were checked by reading the document
	// (checkByID); the write goes by _id alone.
	plain bool
}

// newDocWrite starts the write of a document with its first operation.
func newDocWrite(op *Op, id any, g *guard) *docWrite {
	w := &docWrite{coll: op.Collection, id: id, kind: op.Kind, guard: g, ops: []int{op.Index}}
	if op.Kind != Delete {
		w.data = op.Data
	}
	if g != nil {
		w.src = []*Op{op}
	}
	return w
}

// fold applies op (on the same document) after the writes already folded.
func (w *docWrite) fold(op *Op) {
	w.ops = append(w.ops, op.Index)
	if w.guard != nil {
		w.src = append(w.src, op)
	}
	switch op.Kind {
	case Delete:
		w.kind, w.data, w.index = Delete, nil, nil
	case Put:
		w.fresh = w.fresh || w.kind == Delete
		w.kind, w.data, w.index = Put, op.Data, nil
	case Patch:
		if w.kind == Delete {
			return // the document is gone; PATCH does not upsert
		}
		for _, e := range op.Data {
			w.set(e)
		}
	}
}

func (w *docWrite) set(e bson.E) {
	if len(w.data) > 32 && w.index == nil {
		w.index = make(map[string]int, len(w.data)*2)
		for i, f := range w.data {
			w.index[f.Key] = i
		}
	}
	if w.index != nil {
		if i, ok := w.index[e.Key]; ok {
			w.data[i].Value = e.Value
			return
		}
		w.index[e.Key] = len(w.data)
		w.data = append(w.data, e)
		return
	}
	for i := range w.data {
		if w.data[i].Key == e.Key {
			w.data[i].Value = e.Value
			return
		}
	}
	w.data = append(w.data, e)
}

// model is the driver's write model of w, nil when w changes nothing (a
// PATCH without fields). The document is marshalled here, once, into a
// buffer of its exact size: given a bson.D the driver marshals into a
// growing buffer of its own and then copies it, which for a large batch
// is most of the request's garbage.
func (w *docWrite) model() (mongo.WriteModel, error) {
	filter := bson.D{{Key: "_id", Value: w.id}}
	g := w.guard
	cond := g != nil && !w.plain
	if cond && g.owner != "" {
		filter = append(filter, bson.E{Key: g.owner, Value: g.value})
	}
	switch w.kind {
	case Put:
		if g != nil && !w.fresh {
			if cond {
				filter = g.immutableConds(filter, w.data)
			}
			if g.r.writable != nil {
				raw, err := bson.Marshal(g.partialPut(w.data))
				if err != nil {
					return nil, err
				}
				return mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(bson.Raw(raw)).SetUpsert(true), nil
			}
		}
		raw, err := w.document()
		if err != nil {
			return nil, err
		}
		return mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(raw).SetUpsert(true), nil
	case Patch:
		if len(w.data) == 0 {
			return nil, nil
		}
		raw, err := bson.Marshal(bson.D{{Key: "$set", Value: w.data}})
		if err != nil {
			return nil, err
		}
		return mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(bson.Raw(raw)), nil
	default:
		return mongo.NewDeleteOneModel().SetFilter(filter), nil
	}
}

// insertModel inserts a PUT's document, whatever the rules: a new
// document breaks none (see insertNew).
func (w *docWrite) insertModel() (mongo.WriteModel, error) {
	raw, err := w.document()
	if err != nil {
		return nil, err
	}
	return mongo.NewInsertOneModel().SetDocument(raw), nil
}

// document is a PUT's whole document {_id, ...data}.
func (w *docWrite) document() (bson.Raw, error) {
	doc := make(bson.D, 0, len(w.data)+1)
	doc = append(doc, bson.E{Key: "_id", Value: w.id})
	doc = append(doc, w.data...)
	return bson.Marshal(doc)
}

// collWrites are the writes of one collection: replacements and updates
// first, then deletions, each in batch order, so that the driver sends at
// most two commands.
type collWrites struct {
	name   string
	writes []*docWrite
	guard  *guard // the rules' conditions of its writes, if any
}

type docKey struct {
	coll string
	id   string
	oid  bool
}

// lastPut is the PUT whose data the write replaces the document with.
func (w *docWrite) lastPut() *Op {
	for i := len(w.src) - 1; i >= 0; i-- {
		if w.src[i].Kind == Put {
			return w.src[i]
		}
	}
	return nil
}

// without folds the write's operations again, leaving out one (nil when
// none is left).
func (w *docWrite) without(left *Op) *docWrite {
	var nw *docWrite
	for _, op := range w.src {
		switch {
		case op == left:
		case nw == nil:
			nw = newDocWrite(op, w.id, w.guard)
			nw.data = slices.Clone(nw.data)
		default:
			nw.fold(op)
		}
	}
	return nw
}

// plan folds accepted operations into one write per document, grouped by
// collection in order of first appearance. guardOf, if set, gives the
// conditions of a collection's writes (guard.go).
func plan(ops []Op, objectIDs bool, guardOf func(coll string) *guard) []*collWrites {
	byDoc := make(map[docKey]*docWrite, len(ops))
	var order []*docWrite
	for i := range ops {
		op := &ops[i]
		var id any = op.ID
		key := docKey{coll: op.Collection, id: op.ID}
		if objectIDs && len(op.ID) == 24 {
			if oid, err := bson.ObjectIDFromHex(op.ID); err == nil {
				id, key.id, key.oid = oid, oid.Hex(), true
			}
		}
		w := byDoc[key]
		if w == nil {
			var g *guard
			if guardOf != nil {
				g = guardOf(op.Collection)
			}
			w = newDocWrite(op, id, g)
			byDoc[key] = w
			order = append(order, w)
			continue
		}
		w.fold(op)
	}
	var colls []*collWrites
	idx := map[string]*collWrites{}
	for _, w := range order {
		c := idx[w.coll]
		if c == nil {
			c = &collWrites{name: w.coll, guard: w.guard}
			idx[w.coll] = c
			colls = append(colls, c)
		}
		if w.kind != Delete {
			c.writes = append(c.writes, w)
		}
	}
	for _, w := range order {
		if w.kind == Delete {
			idx[w.coll].writes = append(idx[w.coll].writes, w)
		}
	}
	return colls
}

// dbRefusal is a document that the database refused to write for a reason
// of the data (a duplicate key in a unique index, a schema validator, a
// document too large): retrying would not help.
type dbRefusal struct {
	w      *docWrite
	reason string
	// A rule's refusal found at write time (guard.go): the rule and the
	// message; reason is then ReasonForbidden.
	rule, message string
}

// transient reports whether err is a temporary failure that a retry can
// cure: the database unreachable, a timeout, an election.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, mongo.ErrClientDisconnected) || mongo.IsTimeout(err) || mongo.IsNetworkError(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	if errors.As(err, new(topology.ServerSelectionError)) {
		return true
	}
	var le mongo.LabeledError
	if errors.As(err, &le) {
		for _, l := range []string{"RetryableWriteError", "TransientTransactionError", "NetworkError",
			"SystemOverloadedError", "RetryableError", "UnknownTransactionCommitResult"} {
			if le.HasErrorLabel(l) {
				return true
			}
		}
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, c := range transientCodes {
			if se.HasErrorCode(c) {
				return true
			}
		}
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError != nil {
		return true // written, but not acknowledged as asked: retrying converges
	}
	var we mongo.WriteException
	if errors.As(err, &we) && we.WriteConcernError != nil {
		return true
	}
	return false
}

// transientCodes are server error codes of temporary conditions.
var transientCodes = []int{
	1,     // InternalError: FerretDB's answer when it stops in the middle of a command
	6,     // HostUnreachable
	7,     // HostNotFound
	24,    // LockTimeout
	46,    // LockBusy
	50,    // MaxTimeMSExpired
	64,    // WriteConcernFailed
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	112,   // WriteConflict
	117,   // ConflictingOperationInProgress
	133,   // FailedToSatisfyReadPreference
	134,   // ReadConcernMajorityNotAvailableYet
	189,   // PrimarySteppedDown
	251,   // NoSuchTransaction
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11602, // InterruptedDueToReplStateChange
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
	462,   // IngressRequestRateLimitExceeded
}

// writeErrors returns the per-document errors of a bulk write when that is
// all that went wrong (no write concern error, nothing transient).
func writeErrors(err error) ([]mongo.BulkWriteError, bool) {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 || transient(err) {
		return nil, false
	}
	return bwe.WriteErrors, true
}

// writeCollection makes a collection's writes in bulk writes of at most
// about maxChunkBytes of documents (one update and one delete command each),
// and of at most maxBatch writes when maxBatch > 0. When the server refuses some documents, each
// write of that bulk write is made again alone to learn which: servers
// differ in how they report the index of a failed statement (FerretDB stops
// at the first and reports index 0), and every write is idempotent.
func writeCollection(ctx context.Context, coll *mongo.Collection, cw *collWrites, maxBatch int, locks *collLocks) ([]dbRefusal, error) {
	var refused []dbRefusal
	writes := cw.writes
	if locks != nil && cw.guard != nil {
		defer locks.lock(cw.name)()
		var err error
		if writes, err = insertNew(ctx, coll, writes, maxBatch); err != nil {
			return nil, err
		}
		if refused, writes, err = checkByID(ctx, coll, writes); err != nil {
			return nil, err
		}
	}
	for len(writes) > 0 {
		n := len(writes)
		if maxBatch > 0 && n > maxBatch {
			n = maxBatch
		}
		// At most about maxChunkBytes of documents per command, so that the
		// driver's buffers for a large batch stay small.
		size := 0
		for i := 0; i < n; i++ {
			size += approxSize(writes[i].data)
			if size > maxChunkBytes && i > 0 {
				n = i
				break
			}
		}
		r, err := writeChunk(ctx, coll, writes[:n])
		if err != nil {
			return nil, err
		}
		refused = append(refused, r...)
		writes = writes[n:]
	}
	return refused, nil
}

// models returns the write models of the writes that change something,
// and those writes, index for index, leaving out the ones skip reports.
func models(writes []*docWrite, skip func(*docWrite) bool) ([]mongo.WriteModel, []*docWrite, error) {
	ms := make([]mongo.WriteModel, 0, len(writes))
	modeled := make([]*docWrite, 0, len(writes))
	for _, w := range writes {
		if skip != nil && skip(w) {
			continue
		}
		m, err := w.model()
		if err != nil {
			return nil, nil, err
		}
		if m != nil {
			ms, modeled = append(ms, m), append(modeled, w)
		}
	}
	return ms, modeled, nil
}

func writeChunk(ctx context.Context, coll *mongo.Collection, writes []*docWrite) ([]dbRefusal, error) {
	ms, modeled, err := models(writes, nil)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, nil
	}
	res, err := coll.BulkWrite(ctx, ms, options.BulkWrite().SetOrdered(false))
	if err == nil {
		return settleMisses(ctx, coll, modeled, res)
	}
	if _, ok := writeErrors(err); !ok {
		return nil, err
	}
	var refused []dbRefusal
	for i, m := range ms {
		r, err := writeOne(ctx, coll, modeled[i], m)
		if err != nil {
			return nil, err
		}
		refused = append(refused, r...)
	}
	return refused, nil
}

// writeOne makes one write alone, and learns why it was refused.
func writeOne(ctx context.Context, coll *mongo.Collection, w *docWrite, m mongo.WriteModel) ([]dbRefusal, error) {
	res, err := coll.BulkWrite(ctx, []mongo.WriteModel{m})
	if err == nil {
		return settleMisses(ctx, coll, []*docWrite{w}, res)
	}
	wes, ok := writeErrors(err)
	if !ok {
		return nil, err
	}
	if !(wes[0].HasErrorCode(11000) && w.kind == Put && w.guard != nil && !w.plain) {
		return []dbRefusal{{w: w, reason: "the database refused the write: " + wes[0].Message}}, nil
	}
	refused, rewrite, err := settleDup(ctx, coll, w, wes[0].Message)
	if err != nil || rewrite == nil {
		return refused, err
	}
	m, err = rewrite.model()
	if err != nil || m == nil {
		return refused, err
	}
	more, err := writeOne(ctx, coll, rewrite, m)
	return append(refused, more...), err
}

// writeAll makes every collection's writes, up to parallel collections at
// a time, in commands of at most maxBatch writes when maxBatch > 0; with
// locks, the rules' conditions are checked by reading (checkByID)
// (the store's WriteLimits).
func writeAll(ctx context.Context, db *mongo.Database, collOpts *options.CollectionOptionsBuilder, colls []*collWrites, maxBatch, parallel int, locks *collLocks) ([]dbRefusal, error) {
	if len(colls) == 1 || parallel <= 1 {
		var refused []dbRefusal
		for _, cw := range colls {
			r, err := writeCollection(ctx, db.Collection(cw.name, collOpts), cw, maxBatch, locks)
			refused = append(refused, r...)
			if err != nil {
				return refused, fmt.Errorf("collection %s: %w", cw.name, err)
			}
		}
		return refused, nil
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []dbRefusal
		errs    []error
	)
	sem := make(chan struct{}, parallel)
	for _, cw := range colls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, err := writeCollection(ctx, db.Collection(cw.name, collOpts), cw, maxBatch, locks)
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, r...)
			if err != nil {
				errs = append(errs, fmt.Errorf("collection %s: %w", cw.name, err))
			}
		}()
	}
	wg.Wait()
	return refused, errors.Join(errs...)
}

// refusedOp is an operation that was not applied, as reported to the
// client.
type refusedOp struct {
	Index  int    `json:"op_index"`
	Reason string `json:"reason"`
	// Refusals of the write rules: reason is ReasonForbidden or
	// ReasonType, rule names the rule (upload.rules.lists.owner), and
	// message says what is wrong.
	Rule    string `json:"rule,omitempty"`
	Message string `json:"message,omitempty"`
}

// text is the refusal in one line.
func (r refusedOp) text() string {
	if r.Rule == "" {
		return r.Reason
	}
	return fmt.Sprintf("%s by %s: %s", r.Reason, r.Rule, r.Message)
}

// deadLetters stores the refused operations, one record each, keyed by the
// request body, the user and the operation's index, so that a retried batch
// updates its records rather than adding more; in commands of at most
// maxBatch records when maxBatch > 0 (the store's WriteLimits).
func deadLetters(ctx context.Context, coll *mongo.Collection, refused []refusedOp, ops []Op, bodyKey, user, requestID string, now time.Time, maxBatch int) error {
	if len(refused) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, 0, len(refused))
	for _, r := range refused {
		op := &ops[r.Index]
		rec := bson.D{
			{Key: "op", Value: string(op.Kind)},
			{Key: "table", Value: op.Collection},
			{Key: "id", Value: op.ID},
			{Key: "op_index", Value: r.Index},
			{Key: "reason", Value: r.Reason},
			{Key: "user", Value: user},
			{Key: "time", Value: now},
			{Key: "request_id", Value: requestID},
			// The operation exactly as received: data may hold names that
			// cannot be stored as fields everywhere (nested dots).
			{Key: "raw", Value: string(op.raw)},
		}
		if r.Rule != "" {
			rec = append(rec, bson.E{Key: "rule", Value: r.Rule}, bson.E{Key: "message", Value: r.Message})
		}
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: fmt.Sprintf("%s-%d", bodyKey, r.Index)}}).
			SetUpdate(bson.D{
				{Key: "$setOnInsert", Value: rec},
				{Key: "$set", Value: bson.D{{Key: "last_seen", Value: now}}},
				{Key: "$inc", Value: bson.D{{Key: "attempts", Value: 1}}},
			}).SetUpsert(true))
	}
	for len(models) > 0 {
		n := len(models)
		if maxBatch > 0 && n > maxBatch {
			n = maxBatch
		}
		if _, err := coll.BulkWrite(ctx, models[:n], options.BulkWrite().SetOrdered(false)); err != nil {
			return err
		}
		models = models[n:]
	}
	return nil
}

// maxChunkBytes bounds the documents of one write command. The driver
// holds about three copies of a command's documents while it sends it
// (statements, batch, wire message), all garbage a moment later; small
// commands keep a large batch's peak near its body's size (the 5 MB row of
// cmd/bench: 4.4x its size with 256 KiB, 4.1x with 128 KiB, 3.6x with
// 64 KiB), and 128 KiB still holds a typical 1,000-operation batch in one
// or two commands.
const maxChunkBytes = 128 << 10

// approxSize estimates the BSON size of a value.
func approxSize(v any) int {
	switch x := v.(type) {
	case string:
		return len(x) + 8
	case bson.D:
		n := 5
		for _, e := range x {
			n += len(e.Key) + 2 + approxSize(e.Value)
		}
		return n
	case bson.A:
		n := 5
		for _, e := range x {
			n += 4 + approxSize(e)
		}
		return n
	case []byte:
		return len(x) + 8
	}
	return 8
}
