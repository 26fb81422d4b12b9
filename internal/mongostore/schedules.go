package mongostore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/schedule"
)

// Collections of the schedule store.
const (
	SchedulesCollection = "_runtime_schedules"      // one document per schedule
	FiresCollection     = "_runtime_schedule_fires" // one document per fire time claimed
)

// Schedules is the schedule.Store of a deployment's database:
//
//	_runtime_schedules:      {_id: name, known_since, last_fire}
//	_runtime_schedule_fires: {_id: run id, schedule, fire, by, claimed, until,
//	                          state, holder, outcome, finished}
//
// A fire time is claimed by inserting its fire document: its _id is the
// run id, derived from the schedule and the fire time, so one insert
// succeeds however many instances try. Before it, a conditional
// findOneAndUpdate advances last_fire ({_id, last_fire: {$lt: t}}), which
// on MongoDB turns the other instances away at once and keeps older fire
// times from being claimed. FerretDB 1.x applies an update as a read, then
// a write of the whole document: two instances can both see the condition
// hold, and a field another update changed meanwhile can be written back
// as it was. So there the insert alone decides, and nothing but last_fire
// (whose exact value only counts missed fire times) lives in the
// schedule's document: a fire's outcome is in its own document, written
// by the instance that ran it, and the last run is the latest finished
// fire. "None" times are stored as the Unix epoch, so that $lt compares
// them.
type Schedules struct {
	schedules *mongo.Collection
	fires     *mongo.Collection
}

// OpenSchedules opens the schedule store of the deployment's database
// (the embedded development store when MONGO_URI is unset): schedules run
// there in development as in production.
func OpenSchedules(ctx context.Context, s *runtime.Setup) (schedule.Store, error) {
	db, err := store.Database(s)
	if err != nil {
		return nil, err
	}
	return NewSchedules(db), nil
}

// NewSchedules returns the schedule store of db.
func NewSchedules(db *mongo.Database) *Schedules {
	return &Schedules{schedules: db.Collection(SchedulesCollection), fires: db.Collection(FiresCollection)}
}

var epoch = time.Unix(0, 0).UTC()

type scheduleDoc struct {
	Name       string    `bson:"_id"`
	KnownSince time.Time `bson:"known_since"`
	LastFire   time.Time `bson:"last_fire"`
	Paused     bool      `bson:"paused,omitempty"`
}

type fireDoc struct {
	RunID    string    `bson:"_id"`
	Schedule string    `bson:"schedule"`
	Fire     time.Time `bson:"fire"`
	By       string    `bson:"by"`
	Claimed  time.Time `bson:"claimed"`
	Until    time.Time `bson:"until"`
	State    string    `bson:"state"`
	Holder   string    `bson:"holder"`
	Outcome  string    `bson:"outcome"`
	Finished time.Time `bson:"finished"`
}

func none(t time.Time) time.Time {
	if !t.After(epoch) {
		return time.Time{}
	}
	return t.UTC()
}

func orEpoch(t time.Time) time.Time {
	if t.IsZero() {
		return epoch
	}
	return t.UTC()
}

func (d *scheduleDoc) state() schedule.State {
	return schedule.State{Name: d.Name, KnownSince: none(d.KnownSince), LastFire: none(d.LastFire), Paused: d.Paused}
}

func (d *fireDoc) fire() schedule.Fire {
	return schedule.Fire{Schedule: d.Schedule, RunID: d.RunID, Time: d.Fire.UTC(), By: d.By, Claimed: d.Claimed.UTC(),
		Until: none(d.Until), State: d.State, Holder: d.Holder, Outcome: d.Outcome, Finished: none(d.Finished)}
}

func toFireDoc(f schedule.Fire) fireDoc {
	return fireDoc{RunID: f.RunID, Schedule: f.Schedule, Fire: f.Time.UTC(), By: f.By, Claimed: orEpoch(f.Claimed),
		Until: orEpoch(f.Until), State: f.State, Holder: f.Holder, Outcome: f.Outcome, Finished: orEpoch(f.Finished)}
}

// Register creates the schedule's document if it is missing, and the
// fires' index.
func (s *Schedules) Register(ctx context.Context, name string, now time.Time) (schedule.State, error) {
	if _, err := s.fires.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "schedule", Value: 1}, {Key: "state", Value: 1}, {Key: "fire", Value: 1}}}); err != nil {
		return schedule.State{}, fmt.Errorf("indexing %s: %w", FiresCollection, err)
	}
	var d scheduleDoc
	var err error
	for range 2 { // two instances inserting at once: one gets a duplicate key, then finds it
		err = s.schedules.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: name}},
			bson.D{{Key: "$setOnInsert", Value: bson.D{
				{Key: "known_since", Value: now.UTC()},
				{Key: "last_fire", Value: epoch},
			}}},
			options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&d)
		if !mongo.IsDuplicateKeyError(err) {
			break
		}
	}
	if err != nil {
		return schedule.State{}, fmt.Errorf("registering schedule %s: %w", name, err)
	}
	return d.state(), nil
}

// Claim inserts the fire's document (running, or skipped when the claim
// is exclusive and another fire of the schedule is running within its
// lease), then advances last_fire. The insert under the fire's unique id is
// the claim; last_fire only turns later claimants away before they try.
// In this order an instance that dies between the two steps loses nothing:
// the fire is claimed, and the others' inserts of it fail as duplicates
// (advancing last_fire first lost a fire time for good when its instance
// died right after: the schedules e2e test caught one). A paused schedule's
// fire time is skipped by the one instance that advances last_fire past
// it, with no fire document.
func (s *Schedules) Claim(ctx context.Context, c schedule.Claim) (schedule.ClaimResult, error) {
	f := c.Fire
	at, now := f.Time.UTC(), f.Claimed.UTC()
	var d scheduleDoc
	if err := s.schedules.FindOne(ctx, bson.D{{Key: "_id", Value: f.Schedule}}).Decode(&d); errors.Is(err, mongo.ErrNoDocuments) {
		return schedule.ClaimResult{}, fmt.Errorf("schedule %s: %w", f.Schedule, schedule.ErrNotRegistered)
	} else if err != nil {
		return schedule.ClaimResult{}, fmt.Errorf("reading schedule %s: %w", f.Schedule, err)
	}
	if !d.LastFire.Before(at) {
		return schedule.ClaimResult{Outcome: schedule.Taken}, nil
	}
	res := schedule.ClaimResult{Prev: none(d.LastFire)}
	if d.Paused {
		advanced, err := s.advance(ctx, f.Schedule, at)
		if err != nil {
			return schedule.ClaimResult{}, err
		}
		if !advanced {
			return schedule.ClaimResult{Outcome: schedule.Taken}, nil
		}
		// The fire time is this instance's to skip: no other instance can
		// claim it now that last_fire has passed it.
		return schedule.ClaimResult{Outcome: schedule.Paused}, nil
	}

	running, err := s.running(ctx, f.Schedule)
	if err != nil {
		return schedule.ClaimResult{}, err
	}
	for _, r := range running {
		switch {
		case r.RunID == f.RunID:
		case r.Until.Before(now):
			res.Expired = append(res.Expired, r)
		case c.Exclusive && res.Holder == "":
			res.Holder = r.RunID
		}
	}
	f.State, f.Holder = schedule.FireRunning, res.Holder
	res.Outcome = schedule.Claimed
	if res.Holder != "" {
		f.State, f.Until, res.Outcome = schedule.FireSkipped, time.Time{}, schedule.Held
	}
	doc := toFireDoc(f)
	_, err = s.fires.InsertOne(ctx, doc)
	if mongo.IsDuplicateKeyError(err) {
		// Someone else's, or ours when an earlier attempt's answer was lost.
		var old fireDoc
		if gerr := s.fires.FindOne(ctx, bson.D{{Key: "_id", Value: f.RunID}}).Decode(&old); gerr != nil ||
			old.By != doc.By || !old.Claimed.Equal(doc.Claimed) {
			return schedule.ClaimResult{Outcome: schedule.Taken}, nil
		}
	} else if err != nil {
		return schedule.ClaimResult{}, fmt.Errorf("claiming %s of schedule %s: %w", at.Format(time.RFC3339), f.Schedule, err)
	}
	// The fire is ours whether or not last_fire moves: a last_fire that
	// lags only lets later claimants try the insert and fail it.
	_, _ = s.advance(ctx, f.Schedule, at)
	return res, nil
}

// advance sets the schedule's last_fire to at if it is earlier, and
// reports whether it did.
func (s *Schedules) advance(ctx context.Context, name string, at time.Time) (bool, error) {
	r, err := s.schedules.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: name}, {Key: "last_fire", Value: bson.D{{Key: "$lt", Value: at}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "last_fire", Value: at}}}})
	if err != nil {
		return false, fmt.Errorf("advancing schedule %s to %s: %w", name, at.Format(time.RFC3339), err)
	}
	return r.ModifiedCount > 0, nil
}

// running returns a schedule's running fires, oldest first.
func (s *Schedules) running(ctx context.Context, name string) ([]schedule.Fire, error) {
	filter := bson.D{{Key: "state", Value: schedule.FireRunning}}
	if name != "" {
		filter = append(bson.D{{Key: "schedule", Value: name}}, filter...)
	}
	return s.find(ctx, filter, 10_000)
}

func (s *Schedules) find(ctx context.Context, filter bson.D, limit int) ([]schedule.Fire, error) {
	cur, err := s.fires.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "fire", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", FiresCollection, err)
	}
	var docs []fireDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("reading %s: %w", FiresCollection, err)
	}
	out := make([]schedule.Fire, len(docs))
	for i := range docs {
		out[i] = docs[i].fire()
	}
	return out, nil
}

// Renew extends a running fire's lease.
func (s *Schedules) Renew(ctx context.Context, f schedule.Fire) error {
	res, err := s.fires.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: f.RunID}, {Key: "state", Value: schedule.FireRunning}, {Key: "by", Value: f.By}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "until", Value: f.Until.UTC()}}}})
	if err != nil {
		return fmt.Errorf("renewing the lease of run %s: %w", f.RunID, err)
	}
	if res.MatchedCount == 0 {
		return schedule.ErrLost
	}
	return nil
}

// Finish records the outcome on the fire's document.
func (s *Schedules) Finish(ctx context.Context, f schedule.Fire) error {
	if _, err := s.fires.UpdateOne(ctx, bson.D{{Key: "_id", Value: f.RunID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: schedule.FireDone}, {Key: "outcome", Value: f.Outcome}, {Key: "finished", Value: orEpoch(f.Finished)}}}}); err != nil {
		return fmt.Errorf("finishing run %s: %w", f.RunID, err)
	}
	return nil
}

var finished = bson.D{{Key: "$in", Value: bson.A{schedule.FireDone, schedule.FireAbandoned}}}

// lastRun is the schedule's latest finished fire (zero RunID: none).
func (s *Schedules) lastRun(ctx context.Context, name string) (schedule.Fire, error) {
	var d fireDoc
	err := s.fires.FindOne(ctx, bson.D{{Key: "schedule", Value: name}, {Key: "state", Value: finished}},
		options.FindOne().SetSort(bson.D{{Key: "fire", Value: -1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return schedule.Fire{}, nil
	}
	if err != nil {
		return schedule.Fire{}, fmt.Errorf("reading the last run of schedule %s: %w", name, err)
	}
	return d.fire(), nil
}

// Reap marks a running fire whose lease ended as abandoned.
func (s *Schedules) Reap(ctx context.Context, f schedule.Fire, now time.Time) (bool, error) {
	res, err := s.fires.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: f.RunID}, {Key: "state", Value: schedule.FireRunning}, {Key: "until", Value: bson.D{{Key: "$lt", Value: now.UTC()}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: schedule.FireAbandoned}, {Key: "finished", Value: now.UTC()}}}})
	if err != nil {
		return false, fmt.Errorf("reaping run %s: %w", f.RunID, err)
	}
	return res.MatchedCount == 1, nil
}

// Prune removes a schedule's finished, skipped and abandoned fires before
// before, but its last run.
func (s *Schedules) Prune(ctx context.Context, name string, before time.Time) (int, error) {
	last, err := s.lastRun(ctx, name)
	if err != nil {
		return 0, err
	}
	if last.RunID != "" && last.Time.Before(before) {
		before = last.Time
	}
	res, err := s.fires.DeleteMany(ctx, bson.D{{Key: "schedule", Value: name},
		{Key: "state", Value: bson.D{{Key: "$ne", Value: schedule.FireRunning}}},
		{Key: "fire", Value: bson.D{{Key: "$lt", Value: before.UTC()}}}})
	if err != nil {
		return 0, fmt.Errorf("pruning the fires of schedule %s: %w", name, err)
	}
	return int(res.DeletedCount), nil
}

// States returns every schedule's document with its running fires.
func (s *Schedules) States(ctx context.Context) ([]schedule.State, error) {
	cur, err := s.schedules.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(10_000))
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	var docs []scheduleDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	running, err := s.running(ctx, "")
	if err != nil {
		return nil, err
	}
	byName := map[string][]schedule.Fire{}
	for _, r := range running {
		byName[r.Schedule] = append(byName[r.Schedule], r)
	}
	out := make([]schedule.State, len(docs))
	for i := range docs {
		out[i] = docs[i].state()
		out[i].Running = byName[docs[i].Name]
		if out[i].LastRun, err = s.lastRun(ctx, docs[i].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SetPaused pauses or resumes a schedule. On the development store a
// claim racing with it may write the schedule's record back as it read
// it (FerretDB updates read, then write), undoing the change: press again.
func (s *Schedules) SetPaused(ctx context.Context, name string, paused bool) error {
	res, err := s.schedules.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "paused", Value: paused}}}})
	if err != nil {
		return fmt.Errorf("pausing schedule %s: %w", name, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("schedule %s: %w", name, schedule.ErrNotRegistered)
	}
	return nil
}

// Fires returns a schedule's fires from since on, oldest first.
func (s *Schedules) Fires(ctx context.Context, name string, since time.Time, limit int) ([]schedule.Fire, error) {
	return s.find(ctx, bson.D{{Key: "schedule", Value: name}, {Key: "fire", Value: bson.D{{Key: "$gte", Value: since.UTC()}}}}, limit)
}

var _ schedule.Store = (*Schedules)(nil)
