package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

func noop(ctx context.Context, env *runtime.Env) error { return nil }

func registry(t *testing.T, tasks ...runtime.Task) *runtime.Registry {
	t.Helper()
	base := []runtime.Task{
		{Name: "mail", Run: noop}, // a lease of 37.5s: no redelivery in these tests
		{Name: "page", HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(c echo.Context, env *runtime.Env) error { return nil }}, Access: runtime.Public},
	}
	reg, err := runtime.NewRegistry(append(base, tasks...)...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// newQueue is one instance's queue on the test's database; run, if not
// nil, runs its attempts.
func newQueue(t *testing.T, db string, reg *runtime.Registry, name string, run queue.Runner) *queue.Queue {
	t.Helper()
	s := mongostore.NewJobs(storetest.Client(t).Database(db))
	q, err := queue.New(queue.Options{Store: s, Registry: reg, Run: run, Workers: 4, Poll: 50 * time.Millisecond,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Instance: name, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	q.Start()
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	return q
}

// recorder is a Runner that counts attempts and fails the ones fail says.
type recorder struct {
	mu    sync.Mutex
	runs  map[string][]int // job id -> attempts run
	fail  func(j *queue.Job) error
	block chan struct{} // when set, runs wait for it (or their context)
}

func (r *recorder) run(ctx context.Context, j *queue.Job) (string, error) {
	r.mu.Lock()
	if r.runs == nil {
		r.runs = map[string][]int{}
	}
	r.runs[j.ID] = append(r.runs[j.ID], j.Attempt)
	r.mu.Unlock()
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if r.fail != nil {
		return "run-" + j.ID, r.fail(j)
	}
	return "run-" + j.ID, nil
}

func (r *recorder) attempts(id string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runs[id])
}

func waitState(t *testing.T, q *queue.Queue, id string, want queue.State, within time.Duration) *queue.Job {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		j, err := q.Store().Get(context.Background(), id)
		if err == nil && j.State == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: %+v (%v), want %s within %s", id, j, err, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnqueueBadInput(t *testing.T) {
	db := storetest.DatabaseName(t)
	q := newQueue(t, db, registry(t), "a", nil)
	ctx := context.Background()
	for _, c := range []struct {
		job  runtime.Job
		want string
	}{
		{runtime.Job{Task: "nope"}, "nope"},
		{runtime.Job{Task: "page"}, "has no Run"},
		{runtime.Job{Task: "mail", Params: json.RawMessage(`{"a":`)}, "not valid JSON"},
		{runtime.Job{Task: "mail", Params: json.RawMessage(`"` + strings.Repeat("x", runtime.MaxJobParams) + `"`)}, "over the limit"},
		{runtime.Job{Task: "mail", At: time.Now().Add(time.Hour), After: time.Minute}, "not both"},
		{runtime.Job{Task: "mail", After: -time.Second}, "negative"},
		{runtime.Job{Task: "mail", After: 2 * queue.MaxDelay}, "over the limit"},
		{runtime.Job{Task: "mail", Queue: "Bad Name"}, "invalid queue name"},
		{runtime.Job{Task: "mail", Queue: strings.Repeat("q", 65)}, "invalid queue name"},
		{runtime.Job{Task: "mail", Attempts: queue.MaxAttempts + 1}, "attempts"},
		{runtime.Job{Task: "mail", Key: strings.Repeat("k", queue.MaxKey+1)}, "key"},
	} {
		_, err := q.Enqueue(ctx, c.job)
		var inv *queue.InvalidError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("enqueue %+v: %v, want an InvalidError saying %q", c.job.Task, err, c.want)
		}
	}
	if jobs, err := q.Store().List(ctx, queue.Filter{}); err != nil || len(jobs) != 0 {
		t.Fatalf("bad input stored %d jobs (%v)", len(jobs), err)
	}
}

func TestWorkersRunEachJobOnce(t *testing.T) {
	db := storetest.DatabaseName(t)
	reg := registry(t)
	r := &recorder{}
	a := newQueue(t, db, reg, "a", r.run)
	newQueue(t, db, reg, "b", r.run)
	ctx := context.Background()
	var ids []string
	for i := range 30 {
		id, err := a.Enqueue(ctx, runtime.Job{Task: "mail", Params: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		j := waitState(t, a, id, queue.Succeeded, 10*time.Second)
		if got := r.attempts(id); !slices.Equal(got, []int{1}) || j.LastRun != "run-"+id || j.Attempt != 1 {
			t.Errorf("job %s: attempts %v, job %+v", id, got, j)
		}
	}
}

func TestRetriesThenDead(t *testing.T) {
	db := storetest.DatabaseName(t)
	r := &recorder{fail: func(j *queue.Job) error { return fmt.Errorf("attempt %d failed", j.Attempt) }}
	q := newQueue(t, db, registry(t), "a", r.run)
	ctx := context.Background()
	once, _ := q.Enqueue(ctx, runtime.Job{Task: "mail"})
	thrice, _ := q.Enqueue(ctx, runtime.Job{Task: "mail", Attempts: 3})
	j := waitState(t, q, once, queue.Dead, 5*time.Second)
	if got := r.attempts(once); !slices.Equal(got, []int{1}) || j.LastError != "attempt 1 failed" {
		t.Errorf("one attempt: ran %v, job %+v", got, j)
	}
	j = waitState(t, q, thrice, queue.Dead, 5*time.Second)
	if got := r.attempts(thrice); !slices.Equal(got, []int{1, 2, 3}) || j.LastError != "attempt 3 failed" || j.Failures != 3 {
		t.Errorf("three attempts: ran %v, job %+v", got, j)
	}
	// Retried by hand: attempts renewed, numbered on.
	r.mu.Lock()
	r.fail = nil
	r.mu.Unlock()
	if _, err := q.Store().Retry(ctx, thrice, time.Now()); err != nil {
		t.Fatal(err)
	}
	q.Enqueue(ctx, runtime.Job{Task: "mail"}) // wakes the dispatcher
	waitState(t, q, thrice, queue.Succeeded, 5*time.Second)
	if got := r.attempts(thrice); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Errorf("after the retry: ran %v", got)
	}
}

// TestLocalWakeUp: a job enqueued for now on an instance with a free
// worker starts at once (50 ms p50 is the target), though the instance
// polls every second.
func TestLocalWakeUp(t *testing.T) {
	db := storetest.DatabaseName(t)
	started := make(chan time.Time, 1)
	reg := registry(t)
	s := mongostore.NewJobs(storetest.Client(t).Database(db))
	q, err := queue.New(queue.Options{Store: s, Registry: reg, Workers: 2, Poll: time.Second, Instance: "a", Log: zerolog.Nop(),
		Run: func(ctx context.Context, j *queue.Job) (string, error) { started <- time.Now(); return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	q.Start()
	defer q.Stop(context.Background())
	time.Sleep(50 * time.Millisecond) // the first poll is over
	var lat []time.Duration
	for range 15 {
		t0 := time.Now()
		if _, err := q.Enqueue(context.Background(), runtime.Job{Task: "mail"}); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-started:
			lat = append(lat, s.Sub(t0))
		case <-time.After(3 * time.Second):
			t.Fatal("a job enqueued here did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(lat)
	t.Logf("enqueue to start: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	// 50 ms is the target (cmd/bench measures it); a loaded machine
	// running the whole suite under -race gets a looser bound, still far
	// below the poll interval: the job was woken, not polled.
	if p50 := lat[len(lat)/2]; p50 > 250*time.Millisecond {
		t.Errorf("enqueue to start p50 %v, want well under the 1s poll interval", p50)
	}
}

// TestGracefulStopGivesLeasesBack: on Stop, a job that finishes within
// the grace period is written; one that outlives it is cancelled and its
// lease given back, and another instance takes it at once, long before
// its lease would have expired.
func TestGracefulStopGivesLeasesBack(t *testing.T) {
	db := storetest.DatabaseName(t)
	reg := registry(t, runtime.Task{Name: "slow", Run: noop, Timeout: 20 * time.Second})
	run := func(ctx context.Context, j *queue.Job) (string, error) {
		if j.Task == "slow" {
			<-ctx.Done()
			return "", ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
		return "", nil
	}
	a := newQueue(t, db, reg, "a", run)
	ctx := context.Background()
	slow, _ := a.Enqueue(ctx, runtime.Job{Task: "slow"})
	waitState(t, a, slow, queue.Running, 3*time.Second)
	quick, _ := a.Enqueue(ctx, runtime.Job{Task: "mail"})
	waitState(t, a, quick, queue.Running, 3*time.Second)
	gctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	t0 := time.Now()
	if err := a.Stop(gctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if d := time.Since(t0); d > 1500*time.Millisecond+2*queue.StopWait {
		t.Errorf("stop took %v", d)
	}
	waitState(t, a, quick, queue.Succeeded, time.Second)
	j, _ := a.Store().Get(ctx, slow)
	if j.State != queue.Pending || j.Failures != 0 {
		t.Fatalf("slow job after stop: %+v, want pending, no failure counted", j)
	}
	// Another instance takes it well before its 25 s lease would expire.
	r2 := &recorder{}
	newQueue(t, db, reg, "b", r2.run)
	j = waitState(t, a, slow, queue.Succeeded, 3*time.Second)
	if got := r2.attempts(slow); !slices.Equal(got, []int{2}) || j.Worker != "b" {
		t.Errorf("second instance ran attempts %v of the given-back job: %+v", got, j)
	}
}

// TestCancelRunningJob: a cancel request stops a running job at its next
// check; it is kept as cancelled.
func TestCancelRunningJob(t *testing.T) {
	db := storetest.DatabaseName(t)
	r := &recorder{block: make(chan struct{})}
	q := newQueue(t, db, registry(t), "a", r.run)
	ctx := context.Background()
	id, _ := q.Enqueue(ctx, runtime.Job{Task: "mail", Attempts: 5})
	waitState(t, q, id, queue.Running, 3*time.Second)
	if _, requested, err := q.Store().Cancel(ctx, id, time.Now()); err != nil || !requested {
		t.Fatalf("cancel: %v %v", requested, err)
	}
	j := waitState(t, q, id, queue.Cancelled, queue.CancelCheck+2*time.Second)
	if got := r.attempts(id); len(got) != 1 || j.Failures != 0 {
		t.Errorf("cancelled job ran %v: %+v", got, j)
	}
}

// TestExecutorRunsAttempts: each attempt is a run of the executor, with
// trigger queue, the job's id and the attempt number, and Env.Enqueue
// works from inside a run.
func TestExecutorRunsAttempts(t *testing.T) {
	db := storetest.DatabaseName(t)
	var child string
	tasks := []runtime.Task{
		{Name: "parent", Run: func(ctx context.Context, env *runtime.Env) error {
			id, err := env.Enqueue(ctx, runtime.Job{Task: "child", Params: env.Params})
			child = id
			env.Log.Info().Str("child", id).Msg("enqueued")
			return err
		}},
		{Name: "child", Run: func(ctx context.Context, env *runtime.Env) error {
			return errors.New("child fails once")
		}},
	}
	reg, err := runtime.NewRegistry(tasks...)
	if err != nil {
		t.Fatal(err)
	}
	dep := deployment.New("testing", false, nil)
	dep.Dir = t.TempDir()
	logs := &runtimetest.Buffer{}
	core, err := runtime.NewCore(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(logs, nil), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close(context.Background())
	q, err := queue.New(queue.Options{Store: mongostore.NewJobs(storetest.Client(t).Database(db)), Registry: reg,
		Run: queue.ExecutorRunner(core.Executor()), Workers: 2, Poll: 50 * time.Millisecond, BackoffBase: 10 * time.Millisecond,
		Instance: "a", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	core.SetEnqueuer(q)
	q.Start()
	defer q.Stop(context.Background())
	ctx := context.Background()
	id, err := q.Enqueue(ctx, runtime.Job{Task: "parent", Params: json.RawMessage(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	p := waitState(t, q, id, queue.Succeeded, 5*time.Second)
	rec, err := core.Executor().Store().GetRun(ctx, p.LastRun)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Trigger != runtime.TriggerQueue || rec.JobID != id || rec.Attempt != 1 || rec.Task != "parent" {
		t.Errorf("run record %+v: want trigger queue, job %s, attempt 1", rec, id)
	}
	c := waitState(t, q, child, queue.Dead, 5*time.Second)
	if c.LastError != "child fails once" || string(mustGet(t, q, child).Params) != `{"x":1}` {
		t.Errorf("child job: %+v", c)
	}
	crec, err := core.Executor().Store().GetRun(ctx, c.LastRun)
	if err != nil || crec.Outcome != runtime.Failed || crec.JobID != child {
		t.Errorf("child's run: %+v %v", crec, err)
	}
}

func mustGet(t *testing.T, q *queue.Queue, id string) *queue.Job {
	t.Helper()
	j, err := q.Store().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}
