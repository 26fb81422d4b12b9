package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"golang.org/x/sync/semaphore"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Deployment variables of the task (MONGO_URI, MONGO_DATABASE and the key
// variables are read by internal/store and internal/keys).
const (
	VarAudience       = "POWERSYNC_URL"
	VarAuth           = "UPLOAD_AUTH"
	VarIDMode         = "UPLOAD_ID_MODE"
	VarTransactions   = "UPLOAD_TRANSACTIONS"
	VarWriteConcern   = "UPLOAD_WRITE_CONCERN"
	VarAllow          = "UPLOAD_ALLOW"
	VarRefused        = "UPLOAD_REFUSED"
	VarRefusedColl    = "UPLOAD_REFUSED_COLLECTION"
	VarMaxOps         = "UPLOAD_MAX_OPS"
	VarMemory         = "UPLOAD_MEMORY"
	DefaultRefusedCol = "_powersync_refused"
)

// maxParallel bounds the collections of a batch written at once (the
// store's WriteLimits may say fewer).
const maxParallel = 8

// Hook is the shape of Customise.
type Hook func(ctx context.Context, req *Request, op *Op) error

// Task is the upload task, customised by Customise (customise.go).
func Task() runtime.Task { return New(Customise) }

// New returns the upload task with hook as its customisation point (nil:
// none).
func New(hook Hook) runtime.Task { return newTask(&task{hook: hook}) }

// newTask builds the task around t.
func newTask(t *task) runtime.Task {
	vars := []runtime.Var{
		{Name: VarAudience, Optional: true, Help: "the PowerSync service URL: the audience tokens must name (required unless UPLOAD_AUTH=off)"},
		{Name: VarAuth, Optional: true, Help: "on (default): callers need a token from /token; off: anyone may write (development only)", Default: "on"},
		{Name: VarIDMode, Optional: true, Help: "string (default): ids are stored as strings; objectid: 24-hex ids are stored as ObjectIds", Default: "string"},
		{Name: VarTransactions, Optional: true, Help: "true: apply each batch in one transaction (needs a replica set or sharded cluster); default false", Default: "false"},
		{Name: VarWriteConcern, Optional: true, Help: "majority, or a number of members; default: the connection string's, else the server's", Default: "(the connection string's, else the server's)"},
		{Name: VarAllow, Optional: true, Help: "comma-separated collections clients may write; empty: any (other operations are refused)", Default: "(any collection)"},
		{Name: VarRefused, Optional: true, Help: "deadletter (default): refused operations are reported in a 200 and stored; strict: the batch fails with 422", Default: "deadletter"},
		{Name: VarRefusedColl, Optional: true, Help: "collection of the refused operations (default " + DefaultRefusedCol + ")", Default: DefaultRefusedCol},
		{Name: VarMaxOps, Optional: true, Help: fmt.Sprintf("most operations in one batch (default %d)", DefaultMaxOps), Default: strconv.Itoa(DefaultMaxOps)},
		{Name: VarMemory, Optional: true, Help: fmt.Sprintf("memory the batches in flight may take together, each counted at %dx its size (more wait, then get 503); at least %d times body_limit", memFactor, memFactor), Default: fmt.Sprintf("(%d x body_limit)", memFactor*memBatches)},
	}
	vars = append(vars, store.Vars...)
	vars = append(vars, keys.Vars...)
	vars = append(vars, runtime.Var{Name: keys.IssuerVar, Optional: true,
		Help: "the issuer (iss) of this deployment's tokens; when set, upload refuses tokens that do not name it"})
	return runtime.Task{
		Name:        "upload",
		Description: "PowerSync uploadData(): applies a client's batch of PUT/PATCH/DELETE operations to MongoDB",
		HTTP:        map[string]runtime.HTTPFunc{http.MethodPost: t.serve},
		Access:      runtime.Authenticated(t.authenticate),
		Vars:        vars,
		Init:        t.init,
		Describe:    describeRules,
	}
}

// task holds what Init parsed; requests only read it.
type task struct {
	hook Hook

	store     *store.Store
	db        *mongo.Database
	collOpts  *options.CollectionOptionsBuilder
	wc        *writeconcern.WriteConcern
	objectIDs bool
	txn       bool
	strict    bool
	allow     map[string]bool // nil: any
	rules     *rules          // nil: none (development only)
	// locks serialize the checks and writes of guarded collections on a
	// server with IDOnlyFilters (checkByID); filtersAlways puts the
	// conditions in the filters there too (tests of both ways).
	locks         collLocks
	filtersAlways bool
	// decimalText: the server is FerretDB, which has no Decimal128 (see
	// convertTypes); asked at start and, if it could not tell then, per batch.
	decimalText bool
	refused     string
	maxOps      int
	mem         *admission
	auth        bool
	audience    string
	issuer      string // "": tokens need not name one
	keys        *keys.Set
	counter     *runtime.Counter
	dbErrors    *runtime.Counter
}

func (t *task) init(ctx context.Context, s *runtime.Setup) error {
	dep := s.Deployment
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch v := strings.ToLower(dep.Get(VarAuth)); v {
	case "", "on", "true":
		t.auth = true
	case "off", "false":
		if dep.Production {
			bad("%s=off is refused in a production deployment: uploads must be authenticated", VarAuth)
		}
	default:
		bad("%s must be on or off, got %q", VarAuth, v)
	}
	switch v := strings.ToLower(dep.Get(VarIDMode)); v {
	case "", "string":
	case "objectid":
		t.objectIDs = true
	default:
		bad("%s must be string or objectid, got %q", VarIDMode, v)
	}
	switch v := strings.ToLower(dep.Get(VarTransactions)); v {
	case "", "false", "off", "no":
	case "true", "on", "yes":
		t.txn = true
	default:
		bad("%s must be true or false, got %q", VarTransactions, v)
	}
	switch v := strings.ToLower(dep.Get(VarRefused)); v {
	case "", "deadletter":
	case "strict":
		t.strict = true
	default:
		bad("%s must be deadletter or strict, got %q", VarRefused, v)
	}
	t.collOpts = options.Collection()
	if v := dep.Get(VarWriteConcern); v != "" {
		if strings.EqualFold(v, "majority") {
			t.wc = writeconcern.Majority()
		} else if n, err := strconv.Atoi(v); err == nil && n >= 1 {
			t.wc = &writeconcern.WriteConcern{W: n}
		} else {
			bad("%s must be majority or a number of members of at least 1 (a write must be acknowledged), got %q", VarWriteConcern, v)
		}
		if t.wc != nil && !t.txn {
			t.collOpts.SetWriteConcern(t.wc)
		}
	}
	t.refused = DefaultRefusedCol
	if v := dep.Get(VarRefusedColl); v != "" {
		if strings.HasPrefix(v, "system.") || strings.HasPrefix(v, "_runtime_") || strings.ContainsAny(v, "$\x00") || len(v) > MaxCollectionLen {
			bad("%s: invalid collection name %q", VarRefusedColl, v)
		}
		t.refused = v
	}
	if v := dep.Get(VarAllow); strings.TrimSpace(v) != "" {
		t.allow = map[string]bool{}
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if err := checkCollection(name); err != nil {
				bad("%s: %v", VarAllow, err)
			}
			t.allow[name] = true
		}
	}
	t.maxOps = DefaultMaxOps
	if v := dep.Get(VarMaxOps); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			bad("%s must be a number from 1 to 1000000, got %q", VarMaxOps, v)
		}
		t.maxOps = n
	}
	t.mem = &admission{limit: memFactor * memBatches * dep.BodyLimit, bodyLimit: dep.BodyLimit}
	if v := dep.Get(VarMemory); v != "" {
		n, err := deployment.ParseSize(v)
		if err != nil || n < memFactor*dep.BodyLimit {
			bad("%s must be a size of at least %d times body_limit (%d bytes), such as 100MB; got %q", VarMemory, memFactor, memFactor*dep.BodyLimit, v)
		}
		t.mem.limit = n
	}
	t.mem.sem = semaphore.NewWeighted(t.mem.limit)
	rs, err := loadRules(dep, t.refused)
	if err != nil {
		errs = append(errs, err)
	}
	t.rules = rs
	if err == nil {
		errs = append(errs, t.checkRules(dep)...)
	}
	if t.auth {
		t.audience = dep.Get(VarAudience)
		if t.audience == "" {
			bad("%s is unset: it is the audience that upload tokens must name (or set %s=off in development)", VarAudience, VarAuth)
		}
		t.issuer = strings.TrimSpace(dep.Get(keys.IssuerVar))
		k, err := keys.Load(s)
		if err != nil {
			bad("%w", err)
		}
		t.keys = k
	}
	if err := store.Check(dep); err != nil {
		bad("%w", err) // reported with the settings' problems
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	st, err := store.Open(s)
	if err != nil {
		return err
	}
	t.store, t.db = st, st.Database()
	if st.Unacknowledged() && t.wc == nil {
		return fmt.Errorf("MONGO_URI asks for unacknowledged writes (w=0), but upload must only answer once its writes are acknowledged: remove w=0 or set %s", VarWriteConcern)
	}
	if t.txn {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ok, err := st.SupportsTransactions(cctx)
		if err != nil {
			return fmt.Errorf("%s=true, and the server's transaction support cannot be checked: %w", VarTransactions, err)
		}
		if !ok {
			what := "the server"
			if st.Embedded() {
				what = "the development store (FerretDB)"
			}
			return fmt.Errorf("%s=true, but %s does not support transactions (they need a replica set or a sharded cluster)", VarTransactions, what)
		}
	}
	if t.rules != nil && len(t.rules.decimals) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t.decimalText = st.WriteLimits(cctx).NoDecimal128
		cancel()
	}
	t.counter = s.Counter("upload_operations_total",
		"Operations received by upload, by outcome: applied, refused (dead-lettered or strict), unavailable (answered 503; the client sends them again).", "outcome")
	t.dbErrors = s.Counter("upload_database_errors_total",
		"Failed database writes of upload, by kind: unavailable (temporary: unreachable, timeout, election) or other.", "kind")
	t.mem.busy = s.Counter("upload_busy_total",
		"Batches answered 503 before they were read, by reason: memory (the batches in flight held UPLOAD_MEMORY; the client sends them again).", "reason")

	ev := s.Log.Info()
	if !t.auth {
		ev = s.Log.Warn()
		s.Log.Warn().Msgf("UPLOAD AUTHENTICATION IS OFF (%s=off): anyone who can reach /upload can write to the database. Development only.", VarAuth)
	}
	idMode := "string"
	if t.objectIDs {
		idMode = "objectid"
	}
	refusedMode := "deadletter"
	if t.strict {
		refusedMode = "strict"
	}
	t.announceRules(s)
	ev.Bool("auth", t.auth).Str("id_mode", idMode).Bool("transactions", t.txn).
		Str("refused", refusedMode).Str("refused_collection", t.refused).Int("allow", len(t.allow)).
		Int("max_ops", t.maxOps).Msg("upload ready")
	return nil
}

// authenticate accepts "Authorization: Bearer <jwt>" or "Token <jwt>" with
// a token of this deployment's keys and audience (and issuer, when
// TOKEN_ISSUER is set), checked as the PowerSync service checks it, and
// returns its subject.
func (t *task) authenticate(c echo.Context, env *runtime.Env) (any, error) {
	if !t.auth {
		return "", nil
	}
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, token, _ := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	if token == "" || !(strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "Token")) {
		return nil, runtime.Unauthorized("missing token: send Authorization: Bearer <token from /token>").
			WithHeader("WWW-Authenticate", `Bearer realm="upload"`)
	}
	claims, err := t.keys.VerifyWith(token, keys.VerifyOptions{Audience: t.audience, Issuer: t.issuer, MaxLifetime: keys.MaxLifetime})
	if err != nil {
		env.Log.Info().Err(err).Msg("token refused")
		msg := "invalid token"
		var te *keys.TokenError
		if errors.As(err, &te) {
			msg = te.Error()
		}
		return nil, runtime.Unauthorized("%s", msg).
			WithHeader("WWW-Authenticate", `Bearer realm="upload", error="invalid_token"`)
	}
	return claims.Subject, nil
}

// response is the body of a 2xx: how many operations were applied, and
// each refused one with its reason.
type response struct {
	Applied int         `json:"applied"`
	Refused []refusedOp `json:"refused"`
}

func (t *task) serve(c echo.Context, env *runtime.Env) error {
	r := c.Request()
	if err := checkContentType(r.Header); err != nil {
		return err
	}
	tk, err := t.mem.admit(r.Context(), r)
	if err != nil {
		return err
	}
	defer tk.release()
	body, err := readBody(r)
	if err != nil {
		return err
	}
	tk.fit(len(body))
	ops, err := decode(body, t.maxOps)
	if err != nil {
		return clientError(err)
	}
	for i := range ops {
		if ops[i].Collection == t.refused {
			return runtime.BadRequest("batch[%d]: table %s is not allowed: it is the dead-letter collection", i, quoteShort(t.refused)).With("op_index", i)
		}
	}
	user, _ := env.Subject.(string)
	req := &Request{User: user, ID: env.ID, Log: env.Log, Deployment: env.Deployment, Env: env}
	ctx := r.Context()

	// The deployment's rules: the allow-list, the write rules, then
	// Customise.
	decimalText := t.decimalText || t.rules != nil && len(t.rules.decimals) > 0 && t.store.WriteLimits(ctx).NoDecimal128
	var refused []refusedOp
	accepted := make([]Op, 0, len(ops))
	for i := range ops {
		op := ops[i]
		if t.allow != nil && !t.allow[op.Collection] {
			refused = append(refused, refusedOp{Index: i, Reason: fmt.Sprintf("table %s is not in %s", quoteShort(op.Collection), VarAllow)})
			continue
		}
		if t.rules != nil {
			if rf := t.rules.check(user, &op, decimalText); rf != nil {
				refused = append(refused, *rf)
				continue
			}
		}
		if t.hook != nil {
			op.Data = append(op.Data[:0:0], op.Data...) // the hook's own copy
			if err := t.hook(ctx, req, &op); err != nil {
				if rf, ok := IsRefusal(err); ok {
					refused = append(refused, refusedOp{Index: i, Reason: rf.Reason})
					continue
				}
				if e, ok := runtime.AsError(err); ok {
					return e.With("op_index", i)
				}
				return fmt.Errorf("upload: Customise, batch[%d]: %w", i, err)
			}
			if err := t.checkHooked(&op, ops[i].Index); err != nil {
				return fmt.Errorf("upload: Customise, batch[%d]: %w", i, err)
			}
		}
		accepted = append(accepted, op)
	}
	if t.strict && len(refused) > 0 {
		return t.strictError(refused)
	}
	var guardOf func(string) *guard
	if t.rules != nil {
		guardOf = t.rules.guardOf(user)
	}
	colls := plan(accepted, t.objectIDs, guardOf)
	hash := sha256.New()
	hash.Write([]byte(user + "\x00"))
	hash.Write(body)
	bodyKey := hex.EncodeToString(hash.Sum(nil)[:16])

	var dbRefused []dbRefusal
	if t.txn {
		dbRefused, err = t.writeTxn(ctx, colls, refused, ops, bodyKey, req)
	} else {
		// The store says how to write to its server (FerretDB: small
		// commands, few at a time).
		release, serr := t.store.WriteSlot(ctx)
		if serr != nil {
			t.counter.Add("unavailable", int64(len(ops)))
			return runtime.Unavailable(5, serr, "the database is busy: retry the batch")
		}
		lim := t.store.WriteLimits(ctx)
		parallel := maxParallel
		if lim.Parallel > 0 {
			parallel = lim.Parallel
		}
		var locks *collLocks
		if lim.IDOnlyFilters && !t.filtersAlways {
			locks = &t.locks
		}
		dbRefused, err = writeAll(ctx, t.db, t.collOpts, colls, lim.MaxStatements, parallel, locks)
		if err == nil && !(t.strict && len(dbRefused) > 0) {
			all := slices.Concat(refused, refusalsOf(dbRefused))
			err = deadLetters(ctx, t.db.Collection(t.refused, t.collOpts), all, ops, bodyKey, user, env.ID, time.Now().UTC(), lim.MaxStatements)
		}
		release()
	}
	if err != nil {
		if errors.As(err, new(*runtime.Error)) {
			return err
		}
		if transient(err) {
			t.dbErrors.Add("unavailable", 1)
			t.counter.Add("unavailable", int64(len(ops)))
			return runtime.Unavailable(5, err, "the database is unavailable: retry the batch")
		}
		t.dbErrors.Add("other", 1)
		return err
	}
	refused = append(refused, refusalsOf(dbRefused)...)
	if t.strict && len(refused) > 0 {
		return t.strictError(refused)
	}
	sortRefused(refused)
	for _, rf := range refused {
		ev := env.Log.Warn().Int("op_index", rf.Index).Str("table", ops[rf.Index].Collection).Str("reason", rf.Reason)
		if rf.Rule != "" {
			ev = ev.Str("rule", rf.Rule).Str("message", rf.Message)
		}
		ev.Str("dead_letter", t.refused).Msg("operation refused")
	}
	t.counter.Add("applied", int64(len(ops)-len(refused)))
	if len(refused) > 0 {
		t.counter.Add("refused", int64(len(refused)))
	}
	if refused == nil {
		refused = []refusedOp{}
	}
	return c.JSON(http.StatusOK, response{Applied: len(ops) - len(refused), Refused: refused})
}

// checkHooked re-checks what Customise may have broken.
func (t *task) checkHooked(op *Op, index int) error {
	op.Index = index
	if op.Collection == t.refused {
		return errors.New("writes to the dead-letter collection")
	}
	switch op.Kind {
	case Put, Patch, Delete:
	default:
		return fmt.Errorf("invalid op kind %q", op.Kind)
	}
	if err := checkCollection(op.Collection); err != nil {
		return err
	}
	if err := checkID(op.ID); err != nil {
		return err
	}
	for _, e := range op.Data {
		if e.Key == "_id" {
			return errors.New("data must not hold _id: set ID")
		}
		if err := checkField(e.Key, true); err != nil {
			return err
		}
		if err := checkValue(e.Value); err != nil {
			return fmt.Errorf("field %s: %w", quoteShort(e.Key), err)
		}
	}
	return nil
}

func refusalsOf(rs []dbRefusal) []refusedOp {
	var out []refusedOp
	for _, r := range rs {
		for _, i := range r.w.ops {
			out = append(out, refusedOp{Index: i, Reason: r.reason, Rule: r.rule, Message: r.message})
		}
	}
	return out
}

func sortRefused(rs []refusedOp) {
	// Insertion sort: refusals are few and nearly sorted.
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Index < rs[j-1].Index; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func (t *task) strictError(refused []refusedOp) error {
	sortRefused(refused)
	first := refused[0]
	return runtime.Errorf(http.StatusUnprocessableEntity, "batch[%d]: %s (%d operation(s) refused; %s=strict refuses the whole batch)",
		first.Index, first.text(), len(refused), VarRefused).
		With("op_index", first.Index).With("refused", refused)
}

// writeTxn applies the batch and its dead-letter records in one
// transaction. A document the database refuses aborts it; the transaction
// is then run again without that document (strict mode: the batch fails).
func (t *task) writeTxn(ctx context.Context, colls []*collWrites, pre []refusedOp, ops []Op, bodyKey string, req *Request) ([]dbRefusal, error) {
	sess, err := t.store.Client().StartSession()
	if err != nil {
		return nil, err
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	txnOpts := options.Transaction()
	if t.wc != nil {
		txnOpts.SetWriteConcern(t.wc)
	}
	excluded := map[*docWrite]string{}
	for {
		var found *dbRefusal
		_, err := sess.WithTransaction(ctx, func(tctx context.Context) (any, error) {
			found = nil
			for _, cw := range colls {
				ms, writes, err := models(cw.writes, func(w *docWrite) bool { _, ex := excluded[w]; return ex })
				if err != nil {
					return nil, err
				}
				if len(ms) == 0 {
					continue
				}
				_, err = t.db.Collection(cw.name).BulkWrite(tctx, ms, options.BulkWrite().SetOrdered(true))
				if wes, ok := writeErrors(err); ok && wes[0].Index < len(writes) {
					found = &dbRefusal{w: writes[wes[0].Index], reason: "the database refused the write: " + wes[0].Message}
					return nil, err
				}
				if err != nil {
					return nil, err
				}
			}
			var rs []dbRefusal
			for w, reason := range excluded {
				rs = append(rs, dbRefusal{w: w, reason: reason})
			}
			if t.strict && len(rs) > 0 {
				return nil, nil
			}
			all := append(append([]refusedOp(nil), pre...), refusalsOf(rs)...)
			return nil, deadLetters(tctx, t.db.Collection(t.refused), all, ops, bodyKey, req.User, req.ID, time.Now().UTC(), 0)
		}, txnOpts)
		if found != nil {
			excluded[found.w] = found.reason
			if t.strict {
				return []dbRefusal{*found}, nil
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		var rs []dbRefusal
		for w, reason := range excluded {
			rs = append(rs, dbRefusal{w: w, reason: reason})
		}
		return rs, nil
	}
}

// checkContentType requires JSON.
func checkContentType(h http.Header) error {
	ct := h.Get(echo.HeaderContentType)
	if ct == "" {
		return runtime.Errorf(http.StatusUnsupportedMediaType, "missing Content-Type: want application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return runtime.Errorf(http.StatusUnsupportedMediaType, "Content-Type %s is not supported: want application/json", quoteShort(ct))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return runtime.Errorf(http.StatusUnsupportedMediaType, "charset %s is not supported: want utf-8", quoteShort(cs))
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return runtime.Errorf(http.StatusUnsupportedMediaType, "Content-Encoding %s is not supported", quoteShort(ce))
	}
	return nil
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	size := r.ContentLength
	if size < 0 || size > 64<<20 { // the host refuses bodies over its limit
		size = 64 << 10
	}
	buf := make([]byte, 0, size+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err // the host answers 413
			}
			return nil, runtime.BadRequest("reading the body: %v", err).Wrap(err)
		}
	}
}

// clientError turns a decoding error into the client's 4xx.
func clientError(err error) error {
	var de *decodeError
	if !errors.As(err, &de) {
		return err
	}
	e := runtime.Errorf(de.status, "%s", de.Error())
	if de.op >= 0 {
		e = e.With("op_index", de.op)
	}
	if de.offset >= 0 {
		e = e.With("offset", de.offset)
	}
	return e
}
