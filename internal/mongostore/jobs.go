package mongostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/queue"
)

// Collections of the job store.
const (
	JobsCollection      = "_runtime_jobs"       // unfinished jobs
	JobsDoneCollection  = "_runtime_jobs_done"  // finished jobs, until retention
	JobLeasesCollection = "_runtime_job_leases" // one per attempt, and cancel requests
	JobParamsCollection = "_runtime_job_params" // params over InlineParams
)

// InlineParams is the size up to which a job's params are kept in its
// document; larger ones (up to 5 MB) live in their own document, so that
// the documents a claim reads stay small.
const InlineParams = 4 << 10

// Claim tuning: a claim reads up to ClaimRead due jobs more than it takes,
// and tries those it did not take on its next claims for SpareTTL.
const (
	ClaimRead = 32
	SpareTTL  = 500 * time.Millisecond
)

// LeaseRetention is how long a lease of a job that never finished (its
// process died while moving it) is kept.
const LeaseRetention = time.Hour

// Jobs is the queue.Store of a deployment's database:
//
//	_runtime_jobs:       {_id, task, params | params_ref, queue, seq, qseq, key, idem_key,
//	                      lock, head, state: pending, run_at, attempt, max_attempts,
//	                      failures, lost, last_error, last_run, created, rev}
//	_runtime_jobs_done:  the same, finished (state, finished), until retention
//	_runtime_job_leases: {_id: "<job>/<attempt>", job, attempt, lost, worker, started, until}
//	                     and {_id: "cancel/<job>/<attempt>", job}
//	_runtime_job_params: {_id: job id, params}
//
// Every decision two instances may race on is an insert against a unique
// index, the one write that the embedded FerretDB applies atomically:
// FerretDB 1.x runs findAndModify and update as a read and then an
// unconditional write of the whole document, so two instances that both
// "conditionally" update a job both succeed (measured: 16 workers
// claiming 200 jobs with findOneAndUpdate made 857 claims), and its updates
// are several times slower than its inserts.
//
// Claim: a job is claimed for attempt k by inserting its lease
// "<job>/<k>", k one more than the attempts the job records; one insert
// wins however many instances try. The job document is not written: the
// worker holds the lease, which it renews (until), and it alone writes the
// job when the attempt ends (a retry: the job's attempt, failures, run_at;
// finished: the job moves to _runtime_jobs_done). A lease that expired is
// taken over the same way, with lease k+1 (lost + 1), and its old worker
// learns it lost the job when it renews or finishes (lease k+1 exists).
// A lease is removed when its attempt ends.
// A claim reads the leases (a small collection: running jobs) and the due
// jobs; on FerretDB, which answers any query but one by _id by scanning
// the collection, the due jobs it read and did not take are tried by the
// next claims of the process (see Claim); each claim reads its job again
// by _id after winning its lease, so a job that finished meanwhile is not
// run again.
//
// Idempotency: key (task/key) has a unique, sparse index, and leaves with
// the job's move to the finished jobs.
//
// Named queues: of a queue's unfinished jobs only the head may be
// claimed: head true, with lock set to the queue's name, and lock is
// unique and sparse, so there is one head per queue however writers race.
// Jobs without a queue are heads from the start, and so is a queue's job
// enqueued while the queue has no other. When a queue's head finishes,
// the lowest seq of its unfinished jobs becomes head (advance); cancel
// and Sweep advance too, and an enqueue that finds the job ahead of it
// finished meanwhile; so a process that died between finishing a job and
// advancing its queue delays the queue until the next sweep. seq is max(enqueue time in ns, the queue's highest seq + 1),
// unique per queue (qseq), so jobs start in enqueue order even when the
// instances' clocks disagree. A failed job waiting for its retry stays
// head: it keeps its queue's order.
//
// rev counts the writes of a job; when a process died between the two
// writes of a move, the copy with the higher rev is the job.
type Jobs struct {
	active, done, leases, params *mongo.Collection

	mu      sync.Mutex
	spare   []jobDoc // due jobs a claim read and did not take (see Claim)
	spareAt time.Time
	readMu  sync.Mutex // one read of due jobs at a time
	running int        // leases the last claim saw

	indexMu sync.Mutex
	indexed bool
}

// OpenJobs is the queue.Opener of cmd/runtime: the job store of the
// deployment's database (the embedded development store when MONGO_URI is
// unset), so that jobs run in development as in production.
func OpenJobs(ctx context.Context, s *runtime.Setup) (queue.Store, error) {
	db, err := store.Database(s)
	if err != nil {
		return nil, err
	}
	return NewJobs(db), nil
}

// NewJobs returns the job store of db. Its indexes are created before its
// first use (EnsureIndexes), so that opening it needs no server.
func NewJobs(db *mongo.Database) *Jobs {
	return &Jobs{
		active: db.Collection(JobsCollection),
		done:   db.Collection(JobsDoneCollection),
		leases: db.Collection(JobLeasesCollection),
		params: db.Collection(JobParamsCollection),
	}
}

// EnsureIndexes creates the unique indexes the store's correctness rests
// on and, on MongoDB, the indexes of its queries (FerretDB 1.x answers
// queries by scanning, so there they would only slow writes down).
func (s *Jobs) EnsureIndexes(ctx context.Context) error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	if s.indexed {
		return nil
	}
	if err := s.createIndexes(ctx); err != nil {
		return err
	}
	s.indexed = true
	return nil
}

func (s *Jobs) createIndexes(ctx context.Context) error {
	ferret, err := isFerretDB(ctx, s.active.Database())
	if err != nil {
		return err
	}
	type index struct {
		coll   *mongo.Collection
		name   string
		keys   bson.D
		unique bool
	}
	want := []index{
		{s.active, "key_unique", bson.D{{Key: "key", Value: 1}}, true},
		{s.active, "lock_unique", bson.D{{Key: "lock", Value: 1}}, true},
		{s.active, "qseq_unique", bson.D{{Key: "qseq", Value: 1}}, true},
	}
	if !ferret {
		want = append(want,
			index{s.active, "claim", bson.D{{Key: "head", Value: 1}, {Key: "run_at", Value: 1}}, false},
			index{s.active, "queue_seq", bson.D{{Key: "queue", Value: 1}, {Key: "seq", Value: 1}}, false},
			index{s.active, "created", bson.D{{Key: "created", Value: -1}}, false},
			index{s.done, "finished", bson.D{{Key: "finished", Value: 1}}, false},
			index{s.done, "created", bson.D{{Key: "created", Value: -1}}, false},
			index{s.leases, "job", bson.D{{Key: "job", Value: 1}}, false},
		)
	}
	have := map[string]bool{}
	for _, c := range []*mongo.Collection{s.active, s.done, s.leases} {
		names, err := c.Indexes().ListSpecifications(ctx)
		if err != nil {
			return fmt.Errorf("listing the indexes of %s: %w", c.Name(), err)
		}
		for _, n := range names {
			have[c.Name()+"."+n.Name] = true
		}
	}
	for _, ix := range want {
		if have[ix.coll.Name()+"."+ix.name] {
			continue
		}
		o := options.Index().SetName(ix.name)
		if ix.unique {
			// FerretDB 1.x ignores sparse (its SQLite unique indexes let
			// any number of documents lack the field), and creating an
			// index it has again with sparse crashes its connection.
			o.SetUnique(true).SetSparse(!ferret)
		}
		if _, err := ix.coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.keys, Options: o}); err != nil {
			return fmt.Errorf("creating the index %s of %s: %w", ix.name, ix.coll.Name(), err)
		}
	}
	return nil
}

func isFerretDB(ctx context.Context, db *mongo.Database) (bool, error) {
	var info bson.M
	if err := db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return false, fmt.Errorf("asking the server what it is: %w", err)
	}
	_, ok := info["ferretdbVersion"]
	return ok, nil
}

// jobEpoch stands for "no time": dates compare with $lt and $lte.
var jobEpoch = time.Unix(0, 0).UTC()

type jobDoc struct {
	ID          string    `bson:"_id"`
	Task        string    `bson:"task"`
	Params      string    `bson:"params,omitempty"`
	ParamsRef   bool      `bson:"params_ref,omitempty"`
	Queue       string    `bson:"queue,omitempty"`
	Seq         int64     `bson:"seq,omitempty"`
	QSeq        string    `bson:"qseq,omitempty"`
	Key         string    `bson:"key,omitempty"`
	IdemKey     string    `bson:"idem_key,omitempty"`
	Lock        string    `bson:"lock,omitempty"`
	Head        bool      `bson:"head"`
	State       string    `bson:"state"`
	RunAt       time.Time `bson:"run_at"`
	Attempt     int       `bson:"attempt"`
	MaxAttempts int       `bson:"max_attempts"`
	Failures    int       `bson:"failures"`
	Lost        int       `bson:"lost"`
	LastError   string    `bson:"last_error,omitempty"`
	LastRun     string    `bson:"last_run,omitempty"`
	Created     time.Time `bson:"created"`
	Started     time.Time `bson:"started"`
	Finished    time.Time `bson:"finished"`
	Worker      string    `bson:"worker,omitempty"` // finished: the last attempt's
	Rev         int64     `bson:"rev"`
}

type leaseDoc struct {
	ID      string    `bson:"_id"`
	Job     string    `bson:"job"`
	Attempt int       `bson:"attempt"`
	Lost    int       `bson:"lost"`
	Worker  string    `bson:"worker,omitempty"`
	Started time.Time `bson:"started"`
	Until   time.Time `bson:"until"`
	Cancel  bool      `bson:"cancel,omitempty"` // a cancel request, not a lease
}

func leaseID(job string, attempt int) string  { return fmt.Sprintf("%s/%d", job, attempt) }
func cancelID(job string, attempt int) string { return fmt.Sprintf("cancel/%s/%d", job, attempt) }

func stamp(t time.Time) time.Time {
	if t.IsZero() {
		return jobEpoch
	}
	return t.UTC().Truncate(time.Millisecond)
}

func unstamp(t time.Time) time.Time {
	if !t.After(jobEpoch) {
		return time.Time{}
	}
	return t.UTC()
}

func uniqueKey(task, key string) string {
	if key == "" {
		return ""
	}
	return task + "/" + key
}

func qseq(q string, seq int64) string { return fmt.Sprintf("%s/%d", q, seq) }

// toDoc is the document of j, without its params when they are over
// InlineParams (params_ref).
func toDoc(j *queue.Job) *jobDoc {
	d := &jobDoc{
		ID: j.ID, Task: j.Task, Queue: j.Queue, Seq: j.Seq, IdemKey: j.Key,
		State: string(j.State), RunAt: stamp(j.RunAt), Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
		Failures: j.Failures, Lost: j.Lost, LastError: j.LastError, LastRun: j.LastRun,
		Created: stamp(j.Created), Started: stamp(j.Started), Finished: stamp(j.Finished),
		Worker: j.Worker, Rev: j.Rev,
	}
	if len(j.Params) > InlineParams {
		d.ParamsRef = true
	} else {
		d.Params = string(j.Params)
	}
	return d
}

// job is d as a queue.Job; l, if not nil, is its current lease.
func (d *jobDoc) job(l *leaseDoc) *queue.Job {
	j := &queue.Job{
		ID: d.ID, Task: d.Task, Queue: d.Queue, Seq: d.Seq, Key: d.IdemKey,
		State: queue.State(d.State), RunAt: unstamp(d.RunAt), Attempt: d.Attempt, MaxAttempts: d.MaxAttempts,
		Failures: d.Failures, Lost: d.Lost, LastError: d.LastError, LastRun: d.LastRun,
		Created: unstamp(d.Created), Started: unstamp(d.Started), Finished: unstamp(d.Finished),
		Worker: d.Worker, Rev: d.Rev,
	}
	if d.Params != "" {
		j.Params = json.RawMessage(d.Params)
	}
	if l != nil {
		j.State, j.Attempt, j.Lost = queue.Running, l.Attempt, l.Lost
		j.Worker, j.Started, j.LeaseUntil = l.Worker, unstamp(l.Started), unstamp(l.Until)
	}
	return j
}

// isDup reports a unique index refusing a write: E11000 from MongoDB (and
// from FerretDB's inserts); FerretDB 1.x reports an update that breaks a
// unique index as an internal error quoting SQLite.
func isDup(err error) bool {
	return err != nil && (mongo.IsDuplicateKeyError(err) || strings.Contains(err.Error(), "UNIQUE constraint failed"))
}

func byID(id string) bson.D { return bson.D{{Key: "_id", Value: id}} }

// currentLeases returns the newest lease of every job that has one (a
// lease newer than the job's recorded attempts: its attempt is running,
// or its worker died), and the cancel requests.
func (s *Jobs) currentLeases(ctx context.Context, filter bson.D) (map[string]*leaseDoc, map[string]bool, error) {
	cur, err := s.leases.Find(ctx, filter)
	if err != nil {
		return nil, nil, err
	}
	var all []leaseDoc
	if err := cur.All(ctx, &all); err != nil {
		return nil, nil, err
	}
	out, cancels := map[string]*leaseDoc{}, map[string]bool{}
	for i := range all {
		l := &all[i]
		if l.Cancel {
			cancels[l.ID] = true
			continue
		}
		if o := out[l.Job]; o == nil || l.Attempt > o.Attempt {
			out[l.Job] = l
		}
	}
	return out, cancels, nil
}

// running returns j's lease when it is newer than j's recorded attempts.
func running(d *jobDoc, leases map[string]*leaseDoc) *leaseDoc {
	if l := leases[d.ID]; l != nil && l.Attempt > d.Attempt && d.State == string(queue.Pending) {
		return l
	}
	return nil
}

// Enqueue implements queue.Store.
func (s *Jobs) Enqueue(ctx context.Context, j *queue.Job) (*queue.Job, bool, error) {
	if err := s.EnsureIndexes(ctx); err != nil {
		return nil, false, err
	}
	j.Rev = 1
	d := toDoc(j)
	d.Key = uniqueKey(j.Task, j.Key)
	d.Head = j.Queue == "" // a queue's job: see insert
	if d.ParamsRef {
		if _, err := s.params.InsertOne(ctx, bson.D{{Key: "_id", Value: j.ID}, {Key: "params", Value: string(j.Params)}}); err != nil {
			return nil, false, fmt.Errorf("storing the params of job %s: %w", j.ID, err)
		}
	}
	existing, err := s.insert(ctx, d, j.Created)
	if err != nil || existing != nil {
		if d.ParamsRef {
			_, _ = s.params.DeleteOne(context.WithoutCancel(ctx), byID(j.ID))
		}
		if existing != nil {
			return existing.job(nil), true, nil
		}
		return nil, false, err
	}
	j.Seq = d.Seq
	return j, false, nil
}

var errStored = errors.New("a job with this id is stored already")

// insert stores d in the unfinished jobs, giving a queued job the next seq
// of its queue: the head of its queue when the queue has no other
// unfinished job (its unique lock settles a race with another enqueue),
// else behind the last one, which lets it start when it finishes (or, if
// it finished meanwhile, insert does). existing: the unfinished job that
// holds d.Key.
func (s *Jobs) insert(ctx context.Context, d *jobDoc, now time.Time) (existing *jobDoc, err error) {
	for range 50 {
		var last jobDoc
		if d.Queue != "" {
			err := s.active.FindOne(ctx, bson.D{{Key: "queue", Value: d.Queue}},
				options.FindOne().SetSort(bson.D{{Key: "seq", Value: -1}}).SetProjection(bson.D{{Key: "seq", Value: 1}})).Decode(&last)
			if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
				return nil, err
			}
			d.Seq = max(now.UnixNano(), last.Seq+1)
			d.QSeq = qseq(d.Queue, d.Seq)
			d.Head, d.Lock = last.ID == "", ""
			if d.Head {
				d.Lock = d.Queue
			}
		}
		_, err := s.active.InsertOne(ctx, d)
		if err == nil {
			if last.ID != "" {
				// The job ahead finished before this one was stored: its
				// advance did not see this one.
				if err := s.active.FindOne(ctx, byID(last.ID)).Err(); errors.Is(err, mongo.ErrNoDocuments) {
					_, _ = s.advance(ctx, d.Queue)
				}
			}
			return nil, nil
		}
		if !isDup(err) {
			return nil, err
		}
		if d.Key != "" {
			var e jobDoc
			err := s.active.FindOne(ctx, bson.D{{Key: "key", Value: d.Key}}).Decode(&e)
			if err == nil {
				return &e, nil
			}
			if !errors.Is(err, mongo.ErrNoDocuments) {
				return nil, err
			}
			// It finished meanwhile, or the conflict was the queue's.
		}
		if err := s.active.FindOne(ctx, byID(d.ID)).Err(); err == nil {
			return nil, fmt.Errorf("job %s: %w", d.ID, errStored)
		}
		// Another job took this seq, or the head, of the queue: read the
		// last one again.
	}
	return nil, fmt.Errorf("could not store job %s: too many conflicts with other writers", d.ID)
}

// advance lets the lowest seq of a queue's unfinished jobs start, unless
// it is the head already, and returns it when it did.
func (s *Jobs) advance(ctx context.Context, q string) (*jobDoc, error) {
	var d jobDoc
	err := s.active.FindOne(ctx, bson.D{{Key: "queue", Value: q}},
		options.FindOne().SetSort(bson.D{{Key: "seq", Value: 1}}).SetProjection(bson.D{{Key: "params", Value: 0}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) || err == nil && d.Head {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Only advancers write a job that is not a head, and they all write
	// the same: the unique lock settles a race with a lower seq drawn by a
	// concurrent enqueue.
	_, err = s.active.UpdateOne(ctx, byID(d.ID), bson.D{{Key: "$set", Value: bson.D{
		{Key: "head", Value: true}, {Key: "lock", Value: q}, {Key: "rev", Value: d.Rev + 1}}}})
	if isDup(err) {
		return nil, nil // another job of the queue is its head
	}
	if err != nil {
		return nil, err
	}
	d.Head, d.Lock, d.Rev = true, q, d.Rev+1
	return &d, nil
}

// Claim implements queue.Store.
//
// On FerretDB the read of due jobs scans the collection: one read fetches
// up to ClaimRead more than asked, and the claims of this process try
// those for SpareTTL before reading again, one read at a time.
func (s *Jobs) Claim(ctx context.Context, worker string, n int, now time.Time, lease func(task string) time.Duration) ([]*queue.Job, error) {
	if n <= 0 {
		return nil, nil
	}
	if err := s.EnsureIndexes(ctx); err != nil {
		return nil, err
	}
	now = stamp(now)
	var (
		out    []*queue.Job
		leases map[string]*leaseDoc // read once there are candidates: an idle poll is one read
	)
	for read := false; ; {
		cands := s.takeSpare(n-len(out), now)
		if len(cands) == 0 {
			if read {
				return out, nil
			}
			// Running jobs are due too: read past as many as last time.
			s.mu.Lock()
			running := s.running
			s.mu.Unlock()
			if err := s.readDue(ctx, n-len(out)+running, now); err != nil {
				return out, err
			}
			read = true
			continue
		}
		if leases == nil {
			var err error
			if leases, _, err = s.currentLeases(ctx, bson.D{}); err != nil {
				return out, err
			}
			s.mu.Lock()
			s.running = len(leases)
			s.mu.Unlock()
		}
		more, err := s.claim(ctx, cands, leases, worker, now, lease)
		out = append(out, more...)
		if err != nil || len(out) == n {
			return out, err
		}
	}
}

// ClaimJob implements queue.Store.
func (s *Jobs) ClaimJob(ctx context.Context, j *queue.Job, worker string, now time.Time, lease time.Duration) (*queue.Job, error) {
	if err := s.EnsureIndexes(ctx); err != nil {
		return nil, err
	}
	c := []jobDoc{{ID: j.ID, Task: j.Task, Attempt: j.Attempt, Lost: j.Lost, Rev: j.Rev, State: string(queue.Pending), Head: true}}
	got, err := s.claim(ctx, c, nil, worker, stamp(now), func(string) time.Duration { return lease })
	if err != nil || len(got) == 0 {
		return nil, err
	}
	return got[0], nil
}

// takeSpare returns up to n of the due jobs read less than SpareTTL ago.
func (s *Jobs) takeSpare(n int, now time.Time) []jobDoc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.spareAt) >= SpareTTL {
		s.spare = nil
	}
	n = min(n, len(s.spare))
	out := s.spare[:n:n]
	s.spare = s.spare[n:]
	return out
}

// readDue reads the due jobs into the spares, unless another claim of
// this process did while this one waited for it.
func (s *Jobs) readDue(ctx context.Context, n int, now time.Time) error {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.mu.Lock()
	fresh := len(s.spare) > 0 && now.Sub(s.spareAt) < SpareTTL
	s.mu.Unlock()
	if fresh {
		return nil
	}
	at := stamp(time.Now())
	cur, err := s.active.Find(ctx, bson.D{{Key: "head", Value: true}, {Key: "run_at", Value: bson.D{{Key: "$lte", Value: at}}}},
		options.Find().SetSort(bson.D{{Key: "run_at", Value: 1}}).SetLimit(int64(n+ClaimRead)).
			SetProjection(bson.D{{Key: "params", Value: 0}}))
	if err != nil {
		return err
	}
	var due []jobDoc
	if err := cur.All(ctx, &due); err != nil {
		return err
	}
	s.mu.Lock()
	s.spare, s.spareAt = due, at
	s.mu.Unlock()
	return nil
}

// claim tries to take each of cands.
func (s *Jobs) claim(ctx context.Context, cands []jobDoc, leases map[string]*leaseDoc, worker string, now time.Time, lease func(task string) time.Duration) (out []*queue.Job, err error) {
	for i := range cands {
		c := &cands[i]
		l := &leaseDoc{Job: c.ID, Attempt: c.Attempt + 1, Lost: c.Lost, Worker: worker, Started: now}
		if cur := running(c, leases); cur != nil {
			if !cur.Until.Before(now) {
				continue // running
			}
			l.Attempt, l.Lost = cur.Attempt+1, cur.Lost+1 // its worker died or stopped renewing
		}
		l.ID, l.Until = leaseID(c.ID, l.Attempt), stamp(now.Add(lease(c.Task)))
		if _, err := s.leases.InsertOne(ctx, l); err != nil {
			if isDup(err) {
				continue // another worker was first
			}
			return out, err
		}
		// Read the job again: it may have finished, or moved to a later
		// attempt, since cands were read.
		var d jobDoc
		err := s.active.FindOne(ctx, byID(c.ID)).Decode(&d)
		if err == nil && d.Attempt == c.Attempt && d.Head {
			j := d.job(l)
			if d.ParamsRef {
				if j.Params, err = s.loadParams(ctx, d.ID); err != nil {
					return out, err
				}
			}
			out = append(out, j)
			continue
		}
		_, _ = s.leases.DeleteOne(context.WithoutCancel(ctx), byID(l.ID))
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return out, err
		}
	}
	return out, nil
}

func (s *Jobs) loadParams(ctx context.Context, id string) (json.RawMessage, error) {
	var p struct {
		Params string `bson:"params"`
	}
	if err := s.params.FindOne(ctx, byID(id)).Decode(&p); err != nil {
		return nil, fmt.Errorf("loading the params of job %s: %w", id, err)
	}
	return json.RawMessage(p.Params), nil
}

// taken reports whether j's lease was taken over.
func (s *Jobs) taken(ctx context.Context, j *queue.Job) (bool, error) {
	err := s.leases.FindOne(ctx, byID(leaseID(j.ID, j.Attempt+1))).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	return err == nil, err
}

// Renew implements queue.Store.
func (s *Jobs) Renew(ctx context.Context, j *queue.Job, until time.Time) error {
	if lost, err := s.taken(ctx, j); err != nil || lost {
		if lost {
			return queue.ErrLost
		}
		return err
	}
	res, err := s.leases.UpdateOne(ctx, byID(leaseID(j.ID, j.Attempt)), bson.D{{Key: "$set", Value: bson.D{{Key: "until", Value: stamp(until)}}}})
	if err != nil {
		return err
	}
	if res.MatchedCount == 0 {
		return queue.ErrLost
	}
	j.LeaseUntil = stamp(until)
	return nil
}

// Finish implements queue.Store.
func (s *Jobs) Finish(ctx context.Context, j *queue.Job) (*queue.Job, error) {
	if lost, err := s.taken(ctx, j); err != nil || lost {
		if lost {
			return nil, queue.ErrLost
		}
		return nil, err
	}
	if !j.State.Finished() {
		res, err := s.active.UpdateOne(ctx, byID(j.ID), bson.D{{Key: "$set", Value: bson.D{
			{Key: "run_at", Value: stamp(j.RunAt)}, {Key: "attempt", Value: j.Attempt}, {Key: "failures", Value: j.Failures},
			{Key: "lost", Value: j.Lost}, {Key: "last_error", Value: j.LastError}, {Key: "last_run", Value: j.LastRun},
			{Key: "started", Value: stamp(j.Started)}, {Key: "worker", Value: j.Worker}, {Key: "rev", Value: j.Rev + 1},
		}}})
		if err != nil {
			return nil, err
		}
		if res.MatchedCount == 0 {
			return nil, queue.ErrLost
		}
		j.Rev++
		j.LeaseUntil = time.Time{}
		s.forgetLeases(ctx, j)
		return nil, nil
	}
	var d jobDoc
	err := s.active.FindOne(ctx, byID(j.ID), options.FindOne().SetProjection(bson.D{{Key: "attempt", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) || err == nil && d.Attempt >= j.Attempt {
		return nil, queue.ErrLost // finished, or this attempt's end written, already
	}
	if err != nil {
		return nil, err
	}
	if j.Finished.IsZero() {
		j.Finished = time.Now()
	}
	return s.moveDone(ctx, j, true)
}

// moveDone moves j, finished, to the finished jobs, forgets its leases and
// lets its queue move on: next is the job that may start now.
//
// held: j is an attempt a worker holds; its lease must not have been taken
// over (checked once more just before the job leaves the unfinished jobs,
// the narrowest window a store without transactions leaves).
func (s *Jobs) moveDone(ctx context.Context, j *queue.Job, held bool) (next *queue.Job, err error) {
	fin := *j
	fin.Rev, fin.LeaseUntil = j.Rev+1, time.Time{}
	d := toDoc(&fin) // without key and lock: they hold no one back
	_, err = s.done.InsertOne(ctx, d)
	if isDup(err) {
		// An older copy (a retry by hand that did not remove it).
		_, err = s.done.ReplaceOne(ctx, bson.D{{Key: "_id", Value: j.ID}, {Key: "rev", Value: bson.D{{Key: "$lt", Value: fin.Rev}}}}, d)
	}
	if err != nil {
		return nil, err
	}
	if held {
		if lost, err := s.taken(ctx, j); err != nil || lost {
			_, _ = s.done.DeleteOne(context.WithoutCancel(ctx), bson.D{{Key: "_id", Value: j.ID}, {Key: "rev", Value: fin.Rev}})
			if lost {
				return nil, queue.ErrLost
			}
			return nil, err
		}
	}
	*j = fin
	if _, err := s.active.DeleteOne(ctx, byID(j.ID)); err != nil {
		return nil, err // finished: a claim that finds both copies ends the move
	}
	// What fails from here on is repaired by Sweep.
	s.forgetLeases(ctx, j)
	if j.Queue != "" {
		if d, _ := s.advance(ctx, j.Queue); d != nil {
			next = d.job(nil)
		}
	}
	return next, nil
}

// forgetLeases removes the lease of attempt j.Attempt, which has ended,
// and those of the attempts before it that were lost. A claim that read
// the job before this attempt may win that lease again: it reads the job
// again, sees its attempts moved on, and lets it go.
func (s *Jobs) forgetLeases(ctx context.Context, j *queue.Job) {
	ctx = context.WithoutCancel(ctx)
	if j.Lost > 0 {
		_, _ = s.leases.DeleteMany(ctx, bson.D{{Key: "job", Value: j.ID}, {Key: "attempt", Value: bson.D{{Key: "$lte", Value: j.Attempt}}}})
		return
	}
	_, _ = s.leases.DeleteOne(ctx, byID(leaseID(j.ID, j.Attempt)))
}

// CancelRequested implements queue.Store.
func (s *Jobs) CancelRequested(ctx context.Context, j *queue.Job) (bool, error) {
	err := s.leases.FindOne(ctx, byID(cancelID(j.ID, j.Attempt))).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	return err == nil, err
}

// find returns the newest copy of a job and its current lease.
func (s *Jobs) find(ctx context.Context, id string) (*jobDoc, *leaseDoc, error) {
	var a, f jobDoc
	errA := s.active.FindOne(ctx, byID(id)).Decode(&a)
	if errA != nil && !errors.Is(errA, mongo.ErrNoDocuments) {
		return nil, nil, errA
	}
	errF := s.done.FindOne(ctx, byID(id)).Decode(&f)
	if errF != nil && !errors.Is(errF, mongo.ErrNoDocuments) {
		return nil, nil, errF
	}
	switch {
	case errA == nil && (errF != nil || a.Rev > f.Rev):
		leases, _, err := s.currentLeases(ctx, bson.D{{Key: "job", Value: id}})
		if err != nil {
			return nil, nil, err
		}
		return &a, running(&a, leases), nil
	case errF == nil:
		return &f, nil, nil
	}
	return nil, nil, queue.ErrNotFound
}

// Get implements queue.Store.
func (s *Jobs) Get(ctx context.Context, id string) (*queue.Job, error) {
	d, l, err := s.find(ctx, id)
	if err != nil {
		return nil, err
	}
	j := d.job(l)
	if d.ParamsRef {
		if j.Params, err = s.loadParams(ctx, id); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// List implements queue.Store.
func (s *Jobs) List(ctx context.Context, f queue.Filter) ([]*queue.Job, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = queue.DefaultListLimit
	}
	filter := bson.D{}
	if f.State.Finished() {
		filter = append(filter, bson.E{Key: "state", Value: string(f.State)})
	}
	if f.Queue != "" {
		filter = append(filter, bson.E{Key: "queue", Value: f.Queue})
	}
	if f.Task != "" {
		filter = append(filter, bson.E{Key: "task", Value: f.Task})
	}
	leases, _, err := s.currentLeases(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	byID := map[string]*queue.Job{}
	for _, c := range []*mongo.Collection{s.active, s.done} {
		if f.State != "" && f.State.Finished() != (c == s.done) {
			continue
		}
		n := limit
		if c == s.active {
			n += len(leases) // the state filter applies after the leases are joined
		}
		cur, err := c.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "created", Value: -1}, {Key: "_id", Value: -1}}).
			SetProjection(bson.D{{Key: "params", Value: 0}}).SetLimit(int64(n)))
		if err != nil {
			return nil, err
		}
		var docs []jobDoc
		if err := cur.All(ctx, &docs); err != nil {
			return nil, err
		}
		for i := range docs {
			d := &docs[i]
			j := d.job(running(d, leases))
			if f.State != "" && j.State != f.State {
				continue
			}
			if old, ok := byID[d.ID]; !ok || d.Rev > old.Rev {
				byID[d.ID] = j
			}
		}
	}
	out := make([]*queue.Job, 0, len(byID))
	for _, j := range byID {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *queue.Job) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Cancel implements queue.Store.
func (s *Jobs) Cancel(ctx context.Context, id string, now time.Time) (*queue.Job, bool, error) {
	d, l, err := s.find(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if queue.State(d.State).Finished() {
		return nil, false, queue.Invalidf("job %s is %s already: only a pending or running job can be cancelled", id, d.State)
	}
	request := func(attempt int) (*queue.Job, bool, error) {
		_, err := s.leases.InsertOne(ctx, leaseDoc{ID: cancelID(id, attempt), Job: id, Attempt: attempt, Cancel: true, Until: stamp(now)})
		if err != nil && !isDup(err) {
			return nil, false, err
		}
		return d.job(l), true, nil
	}
	next := d.Attempt + 1
	if l != nil {
		if !l.Until.Before(now) {
			return request(l.Attempt)
		}
		next = l.Attempt + 1
	}
	// Take the next attempt's lease, so that no worker starts it.
	if _, err := s.leases.InsertOne(ctx, leaseDoc{ID: leaseID(id, next), Job: id, Attempt: next, Worker: "cancel", Started: stamp(now), Until: stamp(now)}); err != nil {
		if isDup(err) {
			return request(next) // a worker claimed it just now
		}
		return nil, false, err
	}
	j := d.job(nil)
	if d.ParamsRef {
		if j.Params, err = s.loadParams(ctx, id); err != nil {
			return nil, false, err
		}
	}
	j.State, j.Finished, j.LastError = queue.Cancelled, now, "cancelled"
	if _, err := s.moveDone(ctx, j, false); err != nil {
		return nil, false, err
	}
	_, _ = s.leases.DeleteOne(context.WithoutCancel(ctx), byID(leaseID(id, next)))
	return j, false, nil
}

// Retry implements queue.Store.
func (s *Jobs) Retry(ctx context.Context, id string, now time.Time) (*queue.Job, error) {
	d, l, err := s.find(ctx, id)
	if err != nil {
		return nil, err
	}
	now = stamp(now)
	switch {
	case l != nil:
		return nil, queue.Invalidf("job %s is running: cancel it first to run it again", id)
	case d.State == string(queue.Succeeded):
		return nil, queue.Invalidf("job %s succeeded: enqueue it again to run it again", id)
	case d.State == string(queue.Pending):
		res, err := s.active.UpdateOne(ctx, byID(id), bson.D{{Key: "$set", Value: bson.D{{Key: "run_at", Value: now}, {Key: "rev", Value: d.Rev + 1}}}})
		if err != nil {
			return nil, err
		}
		if res.MatchedCount == 0 {
			return nil, fmt.Errorf("job %s finished while it was being retried", id)
		}
		d.RunAt = now
		return d.job(nil), nil
	}
	r := *d
	r.State, r.RunAt, r.Failures, r.Lost, r.Finished = string(queue.Pending), now, 0, 0, jobEpoch
	r.Rev, r.Head, r.Lock, r.Seq, r.QSeq = d.Rev+1, d.Queue == "", "", 0, ""
	r.Key = uniqueKey(d.Task, d.IdemKey)
	existing, err := s.insert(ctx, &r, now)
	if err != nil {
		if errors.Is(err, errStored) {
			return nil, fmt.Errorf("job %s was retried already", id)
		}
		return nil, err
	}
	if existing != nil {
		return nil, fmt.Errorf("job %s cannot be retried while job %s, with the same key %q, is unfinished", id, existing.ID, d.IdemKey)
	}
	_, _ = s.done.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "rev", Value: d.Rev}})
	return r.job(nil), nil
}

// Sweep implements queue.Store.
func (s *Jobs) Sweep(ctx context.Context, now time.Time, retention time.Duration) error {
	now = stamp(now)
	var errs []error
	// Leases of jobs that finished without forgetting them.
	if _, err := s.leases.DeleteMany(ctx, bson.D{{Key: "until", Value: bson.D{{Key: "$lt", Value: now.Add(-LeaseRetention)}}}}); err != nil {
		errs = append(errs, fmt.Errorf("pruning job leases: %w", err))
	}
	if err := s.Repair(ctx); err != nil {
		errs = append(errs, err)
	}
	if retention > 0 {
		old := bson.D{{Key: "finished", Value: bson.D{{Key: "$lt", Value: now.Add(-retention)}}}}
		cur, err := s.done.Find(ctx, append(old, bson.E{Key: "params_ref", Value: true}), options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
		var refs []jobDoc
		if err == nil {
			err = cur.All(ctx, &refs)
		}
		if err == nil {
			_, err = s.done.DeleteMany(ctx, old)
		}
		for i := 0; err == nil && i < len(refs); i++ {
			_, err = s.params.DeleteOne(ctx, byID(refs[i].ID))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing finished jobs older than %s: %w", retention, err))
		}
	}
	return errors.Join(errs...)
}

// Repair implements queue.Store: the queues with waiting jobs and no head
// (a process died between finishing a job and advancing its queue) move
// on. Two reads of names when nothing is stuck.
func (s *Jobs) Repair(ctx context.Context) error {
	waiting, err := s.distinct(ctx, "queue", bson.D{{Key: "head", Value: false}})
	if err != nil || len(waiting) == 0 {
		return err
	}
	heads, err := s.distinct(ctx, "lock", bson.D{{Key: "head", Value: true}})
	if err != nil {
		return err
	}
	for _, q := range waiting {
		if slices.Contains(heads, q) {
			continue
		}
		if _, err := s.advance(ctx, q); err != nil {
			return fmt.Errorf("advancing queue %s: %w", q, err)
		}
	}
	return nil
}

// distinct returns the sorted values of a string field. FerretDB refuses
// the maxTimeMS the driver derives from a deadline: ctx bounds it by
// cancelling instead.
func (s *Jobs) distinct(ctx context.Context, field string, filter bson.D) ([]string, error) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	var out []string
	if err := s.active.Distinct(dctx, field, filter).Decode(&out); err != nil {
		return nil, fmt.Errorf("listing the %s values of the unfinished jobs: %w", field, err)
	}
	slices.Sort(out)
	return out, nil
}

// Counts implements queue.Store.
func (s *Jobs) Counts(ctx context.Context, now time.Time) (queue.Counts, error) {
	c := queue.Counts{ByTask: map[string]map[queue.State]int{}}
	leases, _, err := s.currentLeases(ctx, bson.D{})
	if err != nil {
		return c, err
	}
	cur, err := s.active.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{
		{Key: "task", Value: 1}, {Key: "state", Value: 1}, {Key: "head", Value: 1}, {Key: "run_at", Value: 1}, {Key: "attempt", Value: 1}}))
	if err != nil {
		return c, err
	}
	var docs []jobDoc
	if err := cur.All(ctx, &docs); err != nil {
		return c, err
	}
	for i := range docs {
		d := &docs[i]
		st := queue.Pending
		if running(d, leases) != nil {
			st = queue.Running
		} else if d.Head && !unstamp(d.RunAt).After(now) {
			c.Due++
		}
		if c.ByTask[d.Task] == nil {
			c.ByTask[d.Task] = map[queue.State]int{}
		}
		c.ByTask[d.Task][st]++
	}
	return c, nil
}

var _ queue.Store = (*Jobs)(nil)
