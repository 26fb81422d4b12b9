package mongostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/queue"
)

func newJobs(t *testing.T) (*Jobs, string) {
	t.Helper()
	name := storetest.DatabaseName(t)
	s := NewJobs(storetest.Client(t).Database(name))
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, name
}

// otherClient is a second connection pool, as a second instance has.
func otherClient(t *testing.T, db string) *Jobs {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(storetest.URI(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return NewJobs(c.Database(db))
}

func job(task, q, key string) *queue.Job {
	now := time.Now()
	return &queue.Job{ID: queue.NewID(now), Task: task, Queue: q, Key: key, State: queue.Pending,
		RunAt: now, MaxAttempts: 1, Created: now}
}

func enqueue(t *testing.T, s *Jobs, j *queue.Job) *queue.Job {
	t.Helper()
	got, existing, err := s.Enqueue(context.Background(), j)
	if err != nil || existing {
		t.Fatalf("enqueue: %v (existing %v)", err, existing)
	}
	return got
}

func lease(string) time.Duration { return time.Minute }

func claim(t *testing.T, s *Jobs, worker string, n int) []*queue.Job {
	t.Helper()
	got, err := s.Claim(context.Background(), worker, n, time.Now(), lease)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func finish(t *testing.T, s *Jobs, j *queue.Job, st queue.State) {
	t.Helper()
	j.State = st
	if _, err := s.Finish(context.Background(), j); err != nil {
		t.Fatalf("finish %s: %v", j.ID, err)
	}
}

func TestJobsClaimAndLease(t *testing.T) {
	s, _ := newJobs(t)
	ctx := context.Background()
	a := enqueue(t, s, job("mail", "", ""))
	later := job("mail", "", "")
	later.RunAt = time.Now().Add(time.Hour)
	enqueue(t, s, later)
	params := json.RawMessage(`{"big":"` + strings.Repeat("x", InlineParams) + `"}`)
	b := job("mail", "", "")
	b.Params = params
	enqueue(t, s, b)

	got := claim(t, s, "w1", 5)
	if len(got) != 2 {
		t.Fatalf("claimed %d jobs, want the 2 that are due", len(got))
	}
	for _, j := range got {
		if j.State != queue.Running || j.Worker != "w1" || j.Attempt != 1 || time.Until(j.LeaseUntil) < 50*time.Second {
			t.Errorf("claimed job %+v: want running, held by w1 for a minute, attempt 1", j)
		}
		if j.ID == b.ID && string(j.Params) != string(params) {
			t.Errorf("params of %d bytes came back as %d bytes", len(params), len(j.Params))
		}
	}
	if again := claim(t, s, "w2", 5); len(again) != 0 {
		t.Fatalf("a second worker claimed %d held jobs", len(again))
	}
	if err := s.Renew(ctx, got[0], time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	g, err := s.Get(ctx, got[0].ID)
	if err != nil || time.Until(g.LeaseUntil) < 110*time.Second {
		t.Fatalf("renewed lease: %v %v", g, err)
	}
	finish(t, s, got[0], queue.Succeeded)
	g, err = s.Get(ctx, got[0].ID)
	if err != nil || g.State != queue.Succeeded || g.Finished.IsZero() || g.Worker != "w1" {
		t.Fatalf("finished job: %+v %v", g, err)
	}
	if _, err := s.Finish(ctx, got[0]); !errors.Is(err, queue.ErrLost) {
		t.Fatalf("finishing twice: %v, want ErrLost", err)
	}
	_ = a
}

// TestJobsConcurrentClaims: two connection pools of four workers each
// claim the same jobs; each job is claimed once (FerretDB's findAndModify
// alone claims most of them several times).
func TestJobsConcurrentClaims(t *testing.T) {
	s, db := newJobs(t)
	s2 := otherClient(t, db)
	const n = 60
	for range n {
		enqueue(t, s, job("mail", "", ""))
	}
	var (
		mu    sync.Mutex
		count = map[string]int{}
		wg    sync.WaitGroup
	)
	for w := range 8 {
		st := s
		if w%2 == 1 {
			st = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idle := 0; idle < 3; {
				got, err := st.Claim(context.Background(), fmt.Sprint("w", w), 2, time.Now(), lease)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					idle++
					continue
				}
				for _, j := range got {
					mu.Lock()
					count[j.ID]++
					mu.Unlock()
					j.State = queue.Succeeded
					if _, err := st.Finish(context.Background(), j); err != nil {
						t.Errorf("finish: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(count) != n {
		t.Errorf("%d jobs were claimed, want %d", len(count), n)
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("job %s was claimed %d times", id, c)
		}
	}
	done, err := s.List(context.Background(), queue.Filter{State: queue.Succeeded, Limit: 1000})
	if err != nil || len(done) != n {
		t.Fatalf("%d succeeded jobs listed (%v), want %d", len(done), err, n)
	}
}

func TestJobsRedeliveryAfterLeaseExpires(t *testing.T) {
	s, _ := newJobs(t)
	ctx := context.Background()
	j := enqueue(t, s, job("mail", "", ""))
	short := func(string) time.Duration { return 300 * time.Millisecond }
	got, err := s.Claim(ctx, "dies", 1, time.Now(), short)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	if again := claim(t, s, "other", 1); len(again) != 0 {
		t.Fatal("claimed before the lease expired")
	}
	time.Sleep(400 * time.Millisecond)
	re := claim(t, s, "other", 1)
	if len(re) != 1 || re[0].ID != j.ID || re[0].Attempt != 2 || re[0].Lost != 1 || re[0].Worker != "other" {
		t.Fatalf("redelivered: %+v, want job %s, attempt 2, lost 1, held by other", re, j.ID)
	}
	if err := s.Renew(ctx, got[0], time.Now().Add(time.Minute)); !errors.Is(err, queue.ErrLost) {
		t.Errorf("the first worker renewed a lost lease: %v", err)
	}
	got[0].State = queue.Succeeded
	if _, err := s.Finish(ctx, got[0]); !errors.Is(err, queue.ErrLost) {
		t.Errorf("the first worker finished a lost job: %v", err)
	}
	finish(t, s, re[0], queue.Succeeded)
	if g, _ := s.Get(ctx, j.ID); g.State != queue.Succeeded || g.Attempt != 2 {
		t.Errorf("job after redelivery: %+v", g)
	}
}

func TestJobsRetriesAndDead(t *testing.T) {
	s, _ := newJobs(t)
	ctx := context.Background()
	j := job("mail", "", "")
	j.MaxAttempts = 2
	enqueue(t, s, j)
	got := claim(t, s, "w", 1)[0]
	got.State, got.Failures, got.LastError, got.RunAt = queue.Pending, 1, "boom", time.Now().Add(300*time.Millisecond)
	if _, err := s.Finish(ctx, got); err != nil {
		t.Fatal(err)
	}
	if c := claim(t, s, "w", 1); len(c) != 0 {
		t.Fatal("a job waiting for its retry was claimed early")
	}
	time.Sleep(350 * time.Millisecond)
	again := claim(t, s, "w", 1)
	if len(again) != 1 || again[0].Attempt != 2 || again[0].Failures != 1 || again[0].LastError != "boom" {
		t.Fatalf("retry: %+v", again)
	}
	again[0].Failures, again[0].LastError = 2, "boom again"
	finish(t, s, again[0], queue.Dead)
	g, err := s.Get(ctx, j.ID)
	if err != nil || g.State != queue.Dead || g.LastError != "boom again" || g.Failures != 2 {
		t.Fatalf("dead job: %+v %v", g, err)
	}
	dead, _ := s.List(ctx, queue.Filter{State: queue.Dead})
	if len(dead) != 1 || dead[0].ID != j.ID {
		t.Fatalf("dead listing: %+v", dead)
	}
	// retry by hand: pending again, attempts renewed, numbered on.
	r, err := s.Retry(ctx, j.ID, time.Now())
	if err != nil || r.State != queue.Pending || r.Failures != 0 {
		t.Fatalf("retry: %+v %v", r, err)
	}
	if _, err := s.Retry(ctx, j.ID, time.Now()); err != nil {
		t.Fatalf("retrying a pending job (run now): %v", err)
	}
	c := claim(t, s, "w", 1)
	if len(c) != 1 || c[0].Attempt != 3 {
		t.Fatalf("claim after retry: %+v", c)
	}
	var inv *queue.InvalidError
	if _, err := s.Retry(ctx, j.ID, time.Now()); !errors.As(err, &inv) {
		t.Errorf("retrying a running job: %v, want an InvalidError", err)
	}
	finish(t, s, c[0], queue.Succeeded)
	if _, err := s.Retry(ctx, j.ID, time.Now()); !errors.As(err, &inv) {
		t.Errorf("retrying a succeeded job: %v, want an InvalidError", err)
	}
	if _, err := s.Retry(ctx, "nope", time.Now()); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("retrying no job: %v", err)
	}
}

func TestJobsIdempotencyKey(t *testing.T) {
	s, db := newJobs(t)
	s2 := otherClient(t, db)
	ctx := context.Background()
	// Sixteen enqueues of one key at once, over two pools: one job.
	ids := make([]string, 16)
	var wg sync.WaitGroup
	for i := range ids {
		st := s
		if i%2 == 1 {
			st = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, _, err := st.Enqueue(ctx, job("mail", "", "order-1"))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = got.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one key gave jobs %v", ids)
		}
	}
	other, existing, err := s.Enqueue(ctx, job("sms", "", "order-1"))
	if err != nil || existing || other.ID == ids[0] {
		t.Fatalf("the same key of another task: %v %v %v", other, existing, err)
	}
	c := claim(t, s, "w", 5)
	if len(c) != 2 {
		t.Fatalf("claimed %d, want 2 jobs", len(c))
	}
	// Still running: the key returns it.
	if got, existing, _ := s.Enqueue(ctx, job("mail", "", "order-1")); !existing || got.ID != ids[0] {
		t.Fatalf("key of a running job gave %v (existing %v)", got.ID, existing)
	}
	for _, j := range c {
		finish(t, s, j, queue.Succeeded)
	}
	// Finished: the key is free again.
	got, existing, err := s.Enqueue(ctx, job("mail", "", "order-1"))
	if err != nil || existing || got.ID == ids[0] {
		t.Fatalf("key of a finished job: %v %v %v", got, existing, err)
	}
}

// TestJobsSerialQueues: many workers on two pools claim and finish the
// jobs of three queues; no two jobs of a queue run at once and each queue
// runs in enqueue order; jobs without a queue run beside them.
func TestJobsSerialQueues(t *testing.T) {
	s, db := newJobs(t)
	s2 := otherClient(t, db)
	ctx := context.Background()
	var order = map[string][]string{}
	for i := range 10 {
		for _, q := range []string{"a", "b", "c"} {
			j := enqueue(t, s, job("mail", q, ""))
			order[q] = append(order[q], j.ID)
		}
		if i%4 == 0 {
			enqueue(t, s2, job("mail", "", ""))
		}
	}
	// Only the heads, and the jobs of no queue, are claimable.
	first := claim(t, s, "w", 20)
	if len(first) != 3+3 {
		t.Fatalf("claimed %d jobs, want 3 heads and 3 jobs of no queue", len(first))
	}
	for _, j := range first {
		if j.Queue != "" && j.ID != order[j.Queue][0] {
			t.Errorf("queue %s started %s before its first job", j.Queue, j.ID)
		}
		finish(t, s, j, queue.Succeeded)
	}
	var (
		mu      sync.Mutex
		running = map[string]string{}
		started = map[string][]string{}
		wg      sync.WaitGroup
	)
	for w := range 8 {
		st := s
		if w%2 == 1 {
			st = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idle := 0; idle < 5; {
				got, err := st.Claim(ctx, fmt.Sprint("w", w), 1, time.Now(), lease)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					idle++
					time.Sleep(10 * time.Millisecond)
					continue
				}
				j := got[0]
				mu.Lock()
				if other, busy := running[j.Queue]; busy {
					t.Errorf("queue %s: %s started while %s runs", j.Queue, j.ID, other)
				}
				running[j.Queue] = j.ID
				started[j.Queue] = append(started[j.Queue], j.ID)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				delete(running, j.Queue)
				third := j.Queue == "b" && len(started["b"]) == 3
				mu.Unlock()
				j.State = queue.Succeeded
				if third {
					j.State = queue.Dead // a dead job lets its queue move on
				}
				if _, err := st.Finish(ctx, j); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, q := range []string{"a", "b", "c"} {
		if strings.Join(started[q], " ") != strings.Join(order[q][1:], " ") {
			t.Errorf("queue %s started\n%v\nwant\n%v", q, started[q], order[q][1:])
		}
	}
}

func TestJobsCancel(t *testing.T) {
	s, _ := newJobs(t)
	ctx := context.Background()
	a := enqueue(t, s, job("mail", "q", ""))
	b := enqueue(t, s, job("mail", "q", ""))
	c := enqueue(t, s, job("mail", "q", ""))
	// Cancelling a waiting job, then the head: the third starts.
	if got, requested, err := s.Cancel(ctx, b.ID, time.Now()); err != nil || requested || got.State != queue.Cancelled {
		t.Fatalf("cancel waiting: %v %v %v", got, requested, err)
	}
	if _, _, err := s.Cancel(ctx, a.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, "w", 5)
	if len(got) != 1 || got[0].ID != c.ID {
		t.Fatalf("after cancelling two: claimed %+v, want %s", got, c.ID)
	}
	// A running job: the cancel is a request its worker sees.
	if ok, _ := s.CancelRequested(ctx, got[0]); ok {
		t.Fatal("cancel requested before anyone asked")
	}
	if _, requested, err := s.Cancel(ctx, c.ID, time.Now()); err != nil || !requested {
		t.Fatalf("cancel running: %v %v", requested, err)
	}
	if ok, err := s.CancelRequested(ctx, got[0]); !ok || err != nil {
		t.Fatalf("cancel request not seen: %v", err)
	}
	finish(t, s, got[0], queue.Cancelled)
	var inv *queue.InvalidError
	if _, _, err := s.Cancel(ctx, c.ID, time.Now()); !errors.As(err, &inv) {
		t.Errorf("cancelling a finished job: %v", err)
	}
	if cancelled, _ := s.List(ctx, queue.Filter{State: queue.Cancelled, Queue: "q"}); len(cancelled) != 3 {
		t.Errorf("%d cancelled jobs listed, want 3", len(cancelled))
	}
}

// TestJobsSweep: retention removes old finished jobs only, and a queue
// whose next job was not let start (its advancer died) moves on.
func TestJobsSweep(t *testing.T) {
	s, _ := newJobs(t)
	ctx := context.Background()
	old := enqueue(t, s, job("mail", "", ""))
	big := job("mail", "", "")
	big.Params = json.RawMessage(`"` + strings.Repeat("y", 2*InlineParams) + `"`)
	enqueue(t, s, big)
	for _, j := range claim(t, s, "w", 2) {
		finish(t, s, j, queue.Succeeded)
	}
	time.Sleep(20 * time.Millisecond)
	fresh := enqueue(t, s, job("mail", "", ""))
	finish(t, s, claim(t, s, "w", 1)[0], queue.Succeeded)

	a := enqueue(t, s, job("mail", "q", ""))
	next := enqueue(t, s, job("mail", "q", ""))
	h := claim(t, s, "w", 1)[0]
	if h.ID != a.ID {
		t.Fatalf("claimed %s, want the queue's head %s", h.ID, a.ID)
	}
	// Finish a's move by hand without advancing the queue: what a process
	// that dies between the two leaves.
	finishWithoutAdvance(t, s, h)
	if c := claim(t, s, "w", 1); len(c) != 0 {
		t.Fatalf("claimed %v before the queue was advanced", c)
	}
	if err := s.Sweep(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if c := claim(t, s, "w", 1); len(c) != 1 || c[0].ID != next.ID {
		t.Fatalf("after the sweep: claimed %v, want %s", c, next.ID)
	}
	// Retention: the first two are older than 15 ms, the third is not.
	time.Sleep(5 * time.Millisecond)
	cut := time.Since(unstamp(mustGet(t, s, fresh.ID).Finished)) + 10*time.Millisecond
	if err := s.Sweep(ctx, time.Now(), cut); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{old.ID, big.ID} {
		if _, err := s.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("old job %s: %v, want removed", id, err)
		}
	}
	if _, err := s.Get(ctx, fresh.ID); err != nil {
		t.Errorf("recent job removed: %v", err)
	}
	if n, _ := s.params.CountDocuments(ctx, bson.D{}); n != 0 {
		t.Errorf("%d params documents left for removed jobs", n)
	}
	// Leases left by a process that died while moving a job go after
	// LeaseRetention.
	if n, _ := s.leases.CountDocuments(ctx, bson.D{}); n != 2 {
		t.Errorf("%d leases, want the one of the running job and the one left behind", n)
	}
	if err := s.Sweep(ctx, time.Now().Add(LeaseRetention+2*time.Minute), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.leases.CountDocuments(ctx, bson.D{}); n != 0 {
		t.Errorf("%d leases left after LeaseRetention", n)
	}
}

func mustGet(t *testing.T, s *Jobs, id string) *jobDoc {
	t.Helper()
	d, _, err := s.find(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func finishWithoutAdvance(t *testing.T, s *Jobs, j *queue.Job) {
	t.Helper()
	ctx := context.Background()
	fin := *j
	fin.State, fin.Rev, fin.Finished = queue.Succeeded, j.Rev+1, time.Now()
	if _, err := s.done.InsertOne(ctx, toDoc(&fin)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.active.DeleteOne(ctx, bson.D{{Key: "_id", Value: j.ID}}); err != nil {
		t.Fatal(err)
	}
}
