// Package store opens the deployment's MongoDB: one pooled client per
// process, shared by every task and by the runtime's own stores (Open,
// Database: runtime.Shared under SharedKey, opened by whoever asks first).
//
// Which database:
//
//   - MONGO_URI set: that server. The database is the one named in the URI's
//     path (mongodb+srv://user:pass@host/<database>), else MONGO_DATABASE; one
//     of them must say.
//   - MONGO_URI unset in a development deployment: the embedded development
//     store (internal/devstore: FerretDB with SQLite files under
//     <state dir>/devstore/<deployment>/), announced in the log with a
//     line to paste into mongosh. One process runs it; the deployment's
//     other processes connect to it (dev.go). The database is
//     MONGO_DATABASE, else "powersync". FerretDB has no transactions and
//     no change streams, so it is for trying things out, not for running a
//     PowerSync service against.
//   - MONGO_URI unset in a production deployment: refused.
//
// Writers ask the Store how to write (WriteLimits, WriteSlot,
// SupportsTransactions) rather than knowing which server it is.
//
// URIs are only ever logged redacted (no password, no options; Redact).
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"

	"github.com/taskrun/taskrun/internal/devstore"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Variables Open reads. Tasks that use the store list them in their Vars.
const (
	VarURI      = "MONGO_URI"
	VarDatabase = "MONGO_DATABASE"
)

// DevDatabase is the database of the development store when MONGO_DATABASE
// is unset.
const DevDatabase = "powersync"

// DefaultServerSelectionTimeout bounds how long an operation waits for a
// usable server when the URI does not say (the driver's own default is 30 s,
// as long as a whole request): a database that is down then turns into a 503
// well before the request's deadline.
const DefaultServerSelectionTimeout = 5 * time.Second

// DefaultConnectTimeout bounds opening one connection when the URI does not
// say (the driver's default is 30 s): connections opened while the network
// to the database dropped packets otherwise hold the pool's connecting slots
// for that long after it heals (seen in the reliability tests).
const DefaultConnectTimeout = 10 * time.Second

// Vars are the deployment variables Open reads, for a task's Vars.
var Vars = []runtime.Var{
	{Name: VarURI, Optional: true, Secret: true,
		Help:    "MongoDB connection string, mongodb://user:pass@host/<database> or mongodb+srv://...; unset in development: an embedded store",
		Default: "(development: an embedded store)"},
	{Name: VarDatabase, Optional: true,
		Help:    "database name when MONGO_URI names none (development store: default " + DevDatabase + ")",
		Default: "(MONGO_URI's; development: " + DevDatabase + ")"},
	{Name: VarDevListen, Optional: true,
		Help:    "the development store's address without MONGO_URI, 127.0.0.1:PORT (default: a port from 27100 to 27999 picked from the deployment's name)",
		Default: "(development: 127.0.0.1:27100-27999, from the deployment's name)"},
}

// Store is the process-wide MongoDB client and the deployment's database.
type Store struct {
	client   *mongo.Client
	db       *mongo.Database
	redacted string
	dev      *devStore // the embedded development store; nil when MONGO_URI is used
	unacked  bool      // the connection string asks for unacknowledged writes (w=0)
	flavor   atomic.Int32
	slots    chan struct{} // FerretDB's write slots
}

// Server flavors, as learnt from buildInfo.
const (
	flavorUnknown int32 = iota
	flavorMongoDB
	flavorFerretDB
)

// Client returns the pooled client.
func (st *Store) Client() *mongo.Client { return st.client }

// Database returns the deployment's database.
func (st *Store) Database() *mongo.Database { return st.db }

// URI returns the connection string with its credentials and options
// removed, fit for logs.
func (st *Store) URI() string { return st.redacted }

// Unacknowledged reports whether the connection string asks for
// unacknowledged writes (w=0), which a task that must only answer once its
// writes are acknowledged has to override or refuse.
func (st *Store) Unacknowledged() bool { return st.unacked }

// ferretDB reports whether the server is FerretDB (the development store,
// or one that MONGO_URI names). It asks the server once; while the server
// cannot be reached it answers false.
func (st *Store) ferretDB(ctx context.Context) bool {
	switch st.flavor.Load() {
	case flavorMongoDB:
		return false
	case flavorFerretDB:
		return true
	}
	var info bson.M
	if err := st.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return false
	}
	f := flavorMongoDB
	if _, ok := info["ferretdbVersion"]; ok {
		f = flavorFerretDB
	}
	st.flavor.Store(f)
	return f == flavorFerretDB
}

// WriteLimits returns how to cut and pace writes for this server, and what
// it lacks: on FerretDB (the development store, or one that MONGO_URI
// names) commands of a few statements and few collections at a time, no
// transactions, no Decimal128 (devstore.Limits); on MongoDB the zero
// value, no limit of ours. It asks the server once; while the server
// cannot be reached it answers the zero value.
func (st *Store) WriteLimits(ctx context.Context) devstore.Limits {
	if st.ferretDB(ctx) {
		return devstore.FerretDBLimits()
	}
	return devstore.Limits{}
}

// WriteSlot waits for one of the process's write slots, for a batch of
// writes, and returns its release. MongoDB needs none (release is a
// no-op); FerretDB has Limits.Slots. It fails when ctx ends first.
func (st *Store) WriteSlot(ctx context.Context) (release func(), err error) {
	if !st.ferretDB(ctx) {
		return func() {}, nil
	}
	select {
	case st.slots <- struct{}{}:
		return func() { <-st.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Embedded reports whether this is the embedded development store (run by
// this process or by another of the deployment's).
func (st *Store) Embedded() bool { return st.dev != nil }

// Dir is the development store's folder ("" for a real server).
func (st *Store) Dir() string {
	if st.dev == nil {
		return ""
	}
	return st.dev.dir
}

// Ping checks that the server answers; it is the "mongo" readiness check.
func (st *Store) Ping(ctx context.Context) error {
	return st.client.Ping(ctx, readpref.Primary())
}

// Close disconnects the client, then stops the development store if this
// process runs it.
func (st *Store) Close(ctx context.Context) error {
	err := st.client.Disconnect(ctx)
	if st.dev != nil {
		st.dev.close()
	}
	return err
}

// SharedKey is the runtime.Shared key of the process's Store: one MongoDB
// client and at most one development store per process, whoever asks first.
const SharedKey = "mongo"

// Open returns the deployment's store, connecting the first time anything
// in the process asks for it, and registers the "mongo" readiness check.
// The client is disconnected (and the development store stopped) at
// shutdown.
func Open(s *runtime.Setup) (*Store, error) {
	st, err := runtime.Shared(s, SharedKey, open)
	if err != nil {
		return nil, err
	}
	// Check takes the lock that Shared holds while opening: register here.
	s.Check("mongo", st.Ping)
	return st, nil
}

// Database returns the deployment's database: the one upload writes, for
// the runtime's own stores (runs, schedules, jobs: collections named
// _runtime_*) and any other task. It is Open(s).Database(): the same
// client and the same development store as every other user in the
// process, opened lazily by whoever asks first (a process that never asks,
// such as `runtime test generate_keys`, starts no store), and closed with
// the host. Call it from an Init or a store constructor, not per request.
//
// Whether that database is the embedded development store is known
// without opening anything: Development(s.Deployment).
func Database(s *runtime.Setup) (*mongo.Database, error) {
	st, err := Open(s)
	if err != nil {
		return nil, err
	}
	return st.Database(), nil
}

// Development reports whether dep's database is the embedded development
// store (a development deployment without MONGO_URI), without starting
// it. A production deployment without MONGO_URI is not: Open refuses it.
func Development(dep *deployment.Deployment) bool {
	_, haveURI := dep.Lookup(VarURI)
	return !haveURI && !dep.Production
}

// Check reports what Open would refuse in dep's settings, without
// connecting or starting anything (so that a task can report it with its
// other problems): a production deployment without MONGO_URI, a
// connection string that does not parse, a development store address
// that is not on loopback.
func Check(dep *deployment.Deployment) error {
	uri, haveURI := dep.Lookup(VarURI)
	switch {
	case !haveURI && dep.Production:
		return errNoURI
	case haveURI:
		if _, err := connstring.ParseAndValidate(uri); err != nil {
			return errBadURI // the parser's message may quote the URI
		}
	default:
		if _, _, err := devAddr(dep); err != nil {
			return err
		}
	}
	return nil
}

var (
	errNoURI  = fmt.Errorf("%s is unset: a production deployment needs a MongoDB server (the embedded development store is for development deployments only)", VarURI)
	errBadURI = fmt.Errorf("%s is not a valid MongoDB connection string (want mongodb://user:pass@host/<database> or mongodb+srv://...)", VarURI)
)

func open(ctx context.Context, s *runtime.Setup) (*Store, func(context.Context) error, error) {
	dep := s.Deployment
	uri, haveURI := dep.Lookup(VarURI)
	dbName, _ := dep.Lookup(VarDatabase)
	st := &Store{}
	if haveURI {
		cs, err := connstring.ParseAndValidate(uri)
		if err != nil {
			// The parser's message may quote the URI: never pass it on.
			return nil, nil, errBadURI
		}
		st.redacted = Redact(uri)
		st.unacked = cs.WNumberSet && cs.WNumber == 0
		if cs.Database != "" {
			if dbName != "" && dbName != cs.Database {
				s.Log.Warn().Str("uri_database", cs.Database).Str(VarDatabase, dbName).
					Msgf("%s names a database: %s is ignored", VarURI, VarDatabase)
			}
			dbName = cs.Database
		}
		if dbName == "" {
			return nil, nil, fmt.Errorf("no database: %s (%s) names none in its path and %s is unset", VarURI, st.redacted, VarDatabase)
		}
		opts := options.Client().ApplyURI(uri).SetAppName("taskrun")
		if !cs.ServerSelectionTimeoutSet {
			opts.SetServerSelectionTimeout(DefaultServerSelectionTimeout)
		}
		if !cs.ConnectTimeoutSet {
			opts.SetConnectTimeout(DefaultConnectTimeout)
		}
		if err := ValidDatabaseName(dbName); err != nil {
			return nil, nil, err
		}
		c, err := mongo.Connect(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("connecting to %s: %s", st.redacted, scrub(err, uri))
		}
		st.client = c
	} else {
		var err error
		if dbName, err = devDatabase(dep, dbName); err != nil {
			return nil, nil, err
		}
		if err := openDevelopment(ctx, s, st, dbName); err != nil {
			return nil, nil, err
		}
		st.flavor.Store(flavorFerretDB)
	}
	st.slots = make(chan struct{}, devstore.FerretDBLimits().Slots)
	st.db = st.client.Database(dbName)
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		// Not fatal: the server may come up later. /readyz reports it and
		// requests get 503 until it does.
		s.Log.Warn().Str("uri", st.redacted).Str("database", dbName).Err(errors.New(scrub(err, uri))).
			Msg("MongoDB does not answer yet")
	} else {
		s.Log.Info().Str("uri", st.redacted).Str("database", dbName).Msg("connected to MongoDB")
	}
	return st, st.Close, nil
}

// ValidDatabaseName checks a database name against MongoDB's rules.
func ValidDatabaseName(name string) error {
	if name == "" || len(name) > 63 || strings.ContainsAny(name, "/\\. \"$*<>:|?\x00") {
		return fmt.Errorf("invalid database name %q: want 1 to 63 characters, none of /\\. \"$*<>:|? or NUL", name)
	}
	return nil
}

// SupportsTransactions reports whether the server can run multi-document
// transactions: a replica set or a sharded cluster that commits a trial
// transaction. FerretDB accepts and ignores the transaction fields of
// writes, so the trial commit is what tells them apart.
func (st *Store) SupportsTransactions(ctx context.Context) (bool, error) {
	var hello bson.M
	if err := st.db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return false, err
	}
	_, replSet := hello["setName"]
	if msg, _ := hello["msg"].(string); !replSet && msg != "isdbgrid" {
		return false, nil
	}
	if _, ok := hello["logicalSessionTimeoutMinutes"]; !ok {
		return false, nil
	}
	sess, err := st.client.StartSession()
	if err != nil {
		return false, nil
	}
	defer sess.EndSession(ctx)
	_, err = sess.WithTransaction(ctx, func(tctx context.Context) (any, error) {
		err := st.db.Collection("_powersync_probe").FindOne(tctx, bson.D{{Key: "_id", Value: "probe"}}).Err()
		if errors.Is(err, mongo.ErrNoDocuments) {
			err = nil
		}
		return nil, err
	})
	return err == nil, nil
}
