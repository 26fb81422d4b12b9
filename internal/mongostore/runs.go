package mongostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime"
)

// RunsCollection holds the run records of every deployment that uses the
// database.
const RunsCollection = "_runtime_runs"

// OpenRuns is the runtime.RunStoreOpener of cmd/runtime: a deployment that
// names a database (MONGO_URI) keeps its runs in that database's
// _runtime_runs, shared by every instance; one on the embedded development
// store keeps them in files under the state folder (starting no store).
func OpenRuns(ctx context.Context, s *runtime.Setup) (runtime.RunStore, error) {
	if _, ok := s.Deployment.Lookup(store.VarURI); !ok && s.Deployment.Production {
		return nil, fmt.Errorf("%w: a production deployment keeps its runs in its database, and %s is unset", runtime.ErrNoRunStore, store.VarURI)
	}
	if store.Development(s.Deployment) {
		if s.StateDir == "" {
			return nil, errors.New("no state folder for the run records")
		}
		return runtime.NewFileRunStore(s.StateDir, s.Deployment.Name), nil
	}
	db, err := store.Database(s)
	if err != nil {
		return nil, err
	}
	return NewRuns(db, s.Deployment.Name), nil
}

// Runs is the runtime.RunStore of one deployment in a database. Its
// indexes are created on the first write (so that opening it needs no
// server: a run still happens while the database is down).
type Runs struct {
	coll *mongo.Collection
	dep  string

	mu      sync.Mutex
	indexed bool
}

// NewRuns returns the run store of deployment dep in db.
func NewRuns(db *mongo.Database, dep string) *Runs {
	return &Runs{coll: db.Collection(RunsCollection), dep: dep}
}

// runDoc is a record as stored. _id is "<deployment>/<run id>": run ids
// are unique within a deployment, and deployments may share a database.
type runDoc struct {
	Key        string     `bson:"_id"`
	ID         string     `bson:"id"`
	Deployment string     `bson:"deployment"`
	Task       string     `bson:"task"`
	Trigger    string     `bson:"trigger"`
	Schedule   string     `bson:"schedule,omitempty"`
	FireTime   *time.Time `bson:"fire_time,omitempty"`
	JobID      string     `bson:"job_id,omitempty"`
	Attempt    int        `bson:"attempt,omitempty"`
	Instance   string     `bson:"instance"`
	Start      time.Time  `bson:"start"`
	DurationNS int64      `bson:"duration_ns"`
	Outcome    string     `bson:"outcome"`
	Error      string     `bson:"error,omitempty"`
	Params     string     `bson:"params,omitempty"` // the JSON text
	Logs       string     `bson:"logs,omitempty"`
	Dropped    int        `bson:"dropped_log_bytes,omitempty"`
}

// Collection is the store's collection.
func (s *Runs) Collection() *mongo.Collection { return s.coll }

func (s *Runs) key(id string) string { return s.dep + "/" + id }

func (s *Runs) doc(r *runtime.Record) runDoc {
	d := runDoc{Key: s.key(r.ID), ID: r.ID, Deployment: s.dep, Task: r.Task, Trigger: string(r.Trigger),
		Schedule: r.Schedule, JobID: r.JobID, Attempt: r.Attempt, Instance: r.Instance, Start: r.Start.UTC(),
		DurationNS: int64(r.Duration), Outcome: r.Outcome, Error: r.Error, Params: string(r.Params),
		Logs: r.Logs, Dropped: r.Dropped}
	if !r.FireTime.IsZero() {
		ft := r.FireTime.UTC()
		d.FireTime = &ft
	}
	return d
}

func (d runDoc) record() *runtime.Record {
	r := &runtime.Record{ID: d.ID, Task: d.Task, Deployment: d.Deployment, Trigger: runtime.Trigger(d.Trigger),
		Schedule: d.Schedule, JobID: d.JobID, Attempt: d.Attempt, Instance: d.Instance, Start: d.Start.UTC(),
		Duration: time.Duration(d.DurationNS), Outcome: d.Outcome, Error: d.Error, Logs: d.Logs, Dropped: d.Dropped}
	if d.Params != "" {
		r.Params = json.RawMessage(d.Params)
	}
	if d.FireTime != nil {
		r.FireTime = d.FireTime.UTC()
	}
	return r
}

// ensureIndexes creates the listings' indexes once per process (creating
// an existing index is a no-op on the server).
func (s *Runs) ensureIndexes(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.indexed {
		return nil
	}
	// One createIndexes command per index: FerretDB v1.24 drops the
	// connection on a command that creates several indexes that all exist.
	for _, m := range []mongo.IndexModel{
		{Keys: bson.D{{Key: "deployment", Value: 1}, {Key: "start", Value: -1}, {Key: "_id", Value: -1}},
			Options: options.Index().SetName("deployment_start")},
		{Keys: bson.D{{Key: "deployment", Value: 1}, {Key: "task", Value: 1}, {Key: "start", Value: -1}, {Key: "_id", Value: -1}},
			Options: options.Index().SetName("deployment_task_start")},
	} {
		if _, err := s.coll.Indexes().CreateOne(ctx, m); err != nil {
			return fmt.Errorf("creating the indexes of %s: %w", RunsCollection, err)
		}
	}
	s.indexed = true
	return nil
}

// SaveRun inserts a record; ErrDuplicateRun when its id exists.
func (s *Runs) SaveRun(ctx context.Context, r *runtime.Record) error {
	if err := s.ensureIndexes(ctx); err != nil {
		return err
	}
	_, err := s.coll.InsertOne(ctx, s.doc(r))
	if mongo.IsDuplicateKeyError(err) {
		return runtime.ErrDuplicateRun
	}
	return err
}

// UpdateRun replaces a record; ErrRunNotFound when it does not exist.
func (s *Runs) UpdateRun(ctx context.Context, r *runtime.Record) error {
	res, err := s.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: s.key(r.ID)}}, s.doc(r))
	if err != nil {
		return err
	}
	if res.MatchedCount == 0 {
		return runtime.ErrRunNotFound
	}
	return nil
}

// GetRun returns one record with its logs.
func (s *Runs) GetRun(ctx context.Context, id string) (*runtime.Record, error) {
	var d runDoc
	err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: s.key(id)}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, runtime.ErrRunNotFound
	}
	if err != nil {
		return nil, err
	}
	return d.record(), nil
}

var newestFirst = bson.D{{Key: "start", Value: -1}, {Key: "_id", Value: -1}}

// ListRuns returns the matching records newest first, without their logs.
func (s *Runs) ListRuns(ctx context.Context, f runtime.RunFilter) ([]*runtime.Record, error) {
	filter := bson.D{{Key: "deployment", Value: s.dep}}
	if f.Task != "" {
		filter = append(filter, bson.E{Key: "task", Value: f.Task})
	}
	if f.Trigger != "" {
		filter = append(filter, bson.E{Key: "trigger", Value: string(f.Trigger)})
	}
	if f.Outcome != "" {
		filter = append(filter, bson.E{Key: "outcome", Value: f.Outcome})
	}
	if !f.Since.IsZero() {
		filter = append(filter, bson.E{Key: "start", Value: bson.D{{Key: "$gte", Value: f.Since.UTC()}}})
	}
	cur, err := s.coll.Find(ctx, filter, options.Find().SetSort(newestFirst).SetLimit(int64(f.Max())).
		SetProjection(bson.D{{Key: "logs", Value: 0}}))
	if err != nil {
		return nil, err
	}
	var docs []runDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	out := make([]*runtime.Record, len(docs))
	for i, d := range docs {
		out[i] = d.record()
	}
	return out, nil
}

// PruneRuns removes the deployment's records that started before before,
// then all but the newest keepPerTask of each task: one deleteMany for the
// age, and per task a query for the oldest record kept and a deleteMany of
// those after it.
func (s *Runs) PruneRuns(ctx context.Context, before time.Time, keepPerTask int) (int, error) {
	dep := bson.E{Key: "deployment", Value: s.dep}
	res, err := s.coll.DeleteMany(ctx, bson.D{dep, {Key: "start", Value: bson.D{{Key: "$lt", Value: before.UTC()}}}})
	if err != nil {
		return 0, err
	}
	n := int(res.DeletedCount)
	var tasks []string
	if err := s.coll.Distinct(ctx, "task", bson.D{dep}).Decode(&tasks); err != nil {
		return n, err
	}
	for _, task := range tasks {
		t := bson.E{Key: "task", Value: task}
		var last struct {
			Key   string    `bson:"_id"`
			Start time.Time `bson:"start"`
		}
		err := s.coll.FindOne(ctx, bson.D{dep, t}, options.FindOne().SetSort(newestFirst).SetSkip(int64(keepPerTask)).
			SetProjection(bson.D{{Key: "start", Value: 1}})).Decode(&last)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return n, err
		}
		res, err := s.coll.DeleteMany(ctx, bson.D{dep, t, {Key: "$or", Value: bson.A{
			bson.D{{Key: "start", Value: bson.D{{Key: "$lt", Value: last.Start}}}},
			bson.D{{Key: "start", Value: last.Start}, {Key: "_id", Value: bson.D{{Key: "$lte", Value: last.Key}}}},
		}}})
		if err != nil {
			return n, err
		}
		n += int(res.DeletedCount)
	}
	return n, nil
}
