package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/queue"
	"github.com/taskrun/taskrun/tasks"
)

// Queue: one instance of a deployment runs backlogs of no-op jobs
// (generate_keys EdDSA, through the executor: each attempt a run record),
// alternately with a direct loop of the same claims and finishes on the
// store (as many workers, in this process, on another database). Then how
// late a job starts after it is due: enqueued in the process that runs it
// (the wake-up path) and in another one (the instance polls); and what an
// idle instance costs.
const (
	queueDep     = "bench-queue"
	queueWorkers = 8
	queueJobs    = 400 // per round
	queueRounds  = 2
)

var noopJob = runtime.Job{Task: "generate_keys", Params: json.RawMessage(`{"alg":"EdDSA"}`)}

func (b *bench) measureQueue(ctx context.Context) error {
	b.logf("queue: %d rounds of %d no-op jobs, 1 instance of %d workers, beside a direct loop", queueRounds, queueJobs, queueWorkers)
	if err := b.writeQueueDeployment(); err != nil {
		return err
	}
	reg, err := runtime.NewRegistry(tasks.All()...)
	if err != nil {
		return err
	}
	direct := b.mongo.Database(b.dbName + "_qdirect")
	local := b.mongo.Database(b.dbName + "_qlocal")
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = direct.Drop(dctx)
		_ = local.Drop(dctx)
	}()
	// The store's own idle CPU, with no instance, for comparison.
	window := max(10*time.Second, 5*b.cfg.duration)
	var storeIdle float64
	if b.storeProc != nil {
		s0, t0 := b.storeProc.cpu(), time.Now()
		time.Sleep(window)
		storeIdle = float64(b.storeProc.cpu()-s0) / float64(time.Since(t0))
	}
	p, err := b.deployNamed(b.bin, queueDep)
	if err != nil {
		return err
	}
	defer b.stopRuntime(p)
	jobs := mongostore.NewJobs(b.db)
	enq, err := queue.New(queue.Options{Store: jobs, Registry: reg, Log: zerolog.Nop()})
	if err != nil {
		return err
	}

	if err := b.queueIdle(p, window, storeIdle); err != nil {
		return err
	}
	if err := b.queueRemoteDelay(ctx, enq, jobs); err != nil {
		return err
	}
	var rt, lim, bare []float64
	var sample *runtime.Record
	for r := range queueRounds {
		rate, err := b.queueInstanceRound(ctx, enq, jobs)
		if err != nil {
			return fmt.Errorf("round %d, the instance: %w", r+1, err)
		}
		rt = append(rt, rate)
		if sample == nil {
			// The direct loop writes records like the executor's.
			recs, err := mongostore.NewRuns(b.db, queueDep).ListRuns(ctx, runtime.RunFilter{Trigger: runtime.TriggerQueue, Limit: 1})
			if err != nil || len(recs) == 0 {
				return fmt.Errorf("reading a run record of the instance: %v (%d)", err, len(recs))
			}
			sample = recs[0]
		}
		if rate, err = queueDirectRound(ctx, reg, direct, sample); err != nil {
			return fmt.Errorf("round %d, the direct loop: %w", r+1, err)
		}
		lim = append(lim, rate)
		if rate, err = queueDirectRound(ctx, reg, direct, nil); err != nil {
			return fmt.Errorf("round %d, the direct loop without run records: %w", r+1, err)
		}
		bare = append(bare, rate)
	}
	b.rows = append(b.rows, Row{
		Path: "queue: no-op jobs, 1 instance", Rate: median(rt), Unit: "jobs/s",
		Limit: median(lim), LimitName: fmt.Sprintf("the same store writes per job, direct (%d workers)", queueWorkers), MinRatio: 0.8,
		Note: fmt.Sprintf("medians of %d rounds of %d jobs of generate_keys EdDSA through the executor (runtime %s jobs/s); the direct loop claims, inserts a run record like the executor's, replaces it finished, and finishes the job (%s jobs/s); without the run records %s jobs/s, %s of that",
			queueRounds, queueJobs, rates(rt), rates(lim), rates(bare), ratioText(median(rt)/median(bare))),
	})
	return b.queueLocalDelay(ctx, reg, local)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rates(v []float64) string {
	var out []string
	for _, r := range v {
		out = append(out, human(r))
	}
	return strings.Join(out, ", ")
}

// queueIdle measures the CPU an idle instance spends (its polling, and the
// store's answers to it).
func (b *bench) queueIdle(p *proc, window time.Duration, storeIdle float64) error {
	time.Sleep(2 * time.Second) // start-up settles
	c0, s0, t0 := p.cpu(), time.Duration(0), time.Now()
	if b.storeProc != nil {
		s0 = b.storeProc.cpu()
	}
	time.Sleep(window)
	elapsed := time.Since(t0)
	inst := float64(p.cpu()-c0) / float64(elapsed)
	total, value := inst, fmt.Sprintf("%.2f%% of a core", 100*inst)
	note := fmt.Sprintf("CPU time of the idle instance over %s (a look for due jobs every %s, for stuck queues every %s)", window, queue.DefaultPoll, queue.RepairInterval)
	if b.storeProc != nil {
		store := float64(b.storeProc.cpu()-s0)/float64(elapsed) - storeIdle
		total += max(store, 0)
		value = fmt.Sprintf("%.2f%% + store %.2f%%", 100*inst, 100*store)
		note += fmt.Sprintf(", plus what the store spent answering it: its CPU meanwhile minus its own idle CPU (%.2f%%, with no instance)", 100*storeIdle)
	}
	b.metrics = append(b.metrics, Metric{Name: "queue: idle instance CPU", Value: value,
		Target: "< 1% of a core", Verdict: verdict(total < 0.01), Note: note})
	return nil
}

// waitDone waits until every job of ids has finished and returns them.
func waitDone(ctx context.Context, st queue.Store, ids []string, within time.Duration) ([]*queue.Job, error) {
	deadline := time.Now().Add(within)
	out := make([]*queue.Job, len(ids))
	for i := 0; i < len(ids); {
		j, err := st.Get(ctx, ids[i])
		if err != nil {
			return nil, err
		}
		if j.State.Finished() {
			if j.State != queue.Succeeded {
				return nil, fmt.Errorf("job %s is %s: %s", j.ID, j.State, j.LastError)
			}
			out[i] = j
			i++
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("job %s is still %s after %s", j.ID, j.State, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return out, nil
}

// spacedDelays enqueues n no-op jobs gap apart through enq and returns how
// late each started after it was due, sorted.
func spacedDelays(ctx context.Context, enq runtime.Enqueuer, st queue.Store, n int, gap time.Duration) ([]time.Duration, error) {
	var ids []string
	for range n {
		id, err := enq.Enqueue(ctx, noopJob)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		time.Sleep(gap)
	}
	done, err := waitDone(ctx, st, ids, time.Minute)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, j := range done {
		out = append(out, j.Started.Sub(j.RunAt))
	}
	slices.Sort(out)
	return out, nil
}

// queueRemoteDelay: jobs enqueued here, one at a time, start on the idle
// instance within its poll interval.
func (b *bench) queueRemoteDelay(ctx context.Context, enq *queue.Queue, st queue.Store) error {
	d, err := spacedDelays(ctx, enq, st, 20, 150*time.Millisecond)
	if err != nil {
		return err
	}
	p99 := percentile(d, 99)
	b.metrics = append(b.metrics, Metric{Name: "queue: due to start, enqueued by another process",
		Value: fmt.Sprintf("p50 %s, p99 %s", dur(percentile(d, 50)), dur(p99)), Target: "within the poll interval (1s)",
		Verdict: verdict(p99 <= queue.DefaultPoll+queue.DefaultPoll/10),
		Note:    fmt.Sprintf("%d jobs 150ms apart on an idle instance that polls every %s (±10%%)", len(d), queue.DefaultPoll)})
	return nil
}

// queueInstanceRound enqueues a backlog due together, and returns the rate
// at which the instance ran it: from its first start to its last finish.
func (b *bench) queueInstanceRound(ctx context.Context, enq *queue.Queue, st queue.Store) (float64, error) {
	due := time.Now().Add(time.Second + queueJobs*5*time.Millisecond)
	job := noopJob
	job.At = due
	var ids []string
	for range queueJobs {
		id, err := enq.Enqueue(ctx, job)
		if err != nil {
			return 0, err
		}
		ids = append(ids, id)
	}
	if late := time.Since(due); late > 0 {
		b.logf("queue: the backlog was enqueued %s after it was due", late.Round(time.Millisecond))
	}
	done, err := waitDone(ctx, st, ids, 5*time.Minute)
	if err != nil {
		return 0, err
	}
	first, last := done[0].Started, done[0].Finished
	for _, j := range done {
		if j.Started.Before(first) {
			first = j.Started
		}
		if j.Finished.After(last) {
			last = j.Finished
		}
	}
	return float64(len(done)) / last.Sub(first).Seconds(), nil
}

// queueDirectRound enqueues a backlog (untimed), then claims and finishes
// it with queueWorkers goroutines, each taking one job at a time; with a
// sample record, each job also writes a run record as the executor does
// (inserted running, replaced finished).
func queueDirectRound(ctx context.Context, reg *runtime.Registry, db *mongo.Database, sample *runtime.Record) (float64, error) {
	st := mongostore.NewJobs(db)
	runs := mongostore.NewRuns(db, queueDep)
	enq, err := queue.New(queue.Options{Store: st, Registry: reg, Log: zerolog.Nop()})
	if err != nil {
		return 0, err
	}
	for range queueJobs {
		if _, err := enq.Enqueue(ctx, noopJob); err != nil {
			return 0, err
		}
	}
	lease := func(string) time.Duration { return queue.LeaseFor(0, queue.DefaultMaxLease) }
	var (
		mu    sync.Mutex
		n     int
		first error
		wg    sync.WaitGroup
	)
	t0 := time.Now()
	for w := range queueWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := st.Claim(ctx, fmt.Sprintf("direct-%d", w), 1, time.Now(), lease)
				if err == nil && len(got) == 0 {
					return
				}
				if err == nil && sample != nil {
					rec := *sample
					rec.ID, rec.JobID, rec.Attempt, rec.Start, rec.Outcome = queue.NewID(time.Now()), got[0].ID, got[0].Attempt, time.Now().UTC().Truncate(time.Millisecond), runtime.Running
					logs := rec.Logs
					rec.Logs = ""
					if err = runs.SaveRun(ctx, &rec); err == nil {
						rec.Outcome, rec.Logs, rec.Duration = runtime.Succeeded, logs, time.Since(rec.Start)
						err = runs.UpdateRun(ctx, &rec)
					}
				}
				if err == nil {
					got[0].State, got[0].Finished = queue.Succeeded, time.Now()
					_, err = st.Finish(ctx, got[0])
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				n++
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if first != nil {
		return 0, first
	}
	if n != queueJobs {
		return 0, fmt.Errorf("claimed %d of %d jobs", n, queueJobs)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// queueLocalDelay: jobs enqueued in the process that runs them (as a task
// does with Env.Enqueue) start at once, not at the next poll: a queue with
// its executor in this process, polling every second.
func (b *bench) queueLocalDelay(ctx context.Context, reg *runtime.Registry, db *mongo.Database) error {
	only, err := reg.Only("generate_keys")
	if err != nil {
		return err
	}
	dep := deployment.New("bench-local", false, nil)
	dep.Dir = filepath.Join(b.tmp, "project", "deployments")
	core, err := runtime.NewCore(ctx, only, dep, runtime.Options{Log: zerolog.Nop(), StateDir: filepath.Join(b.tmp, "local-state")})
	if err != nil {
		return err
	}
	defer func() { _ = core.Close(context.Background()) }()
	st := mongostore.NewJobs(db)
	q, err := queue.New(queue.Options{Store: st, Registry: only, Run: queue.ExecutorRunner(core.Executor()), Workers: 4,
		Instance: "bench-local", Log: zerolog.Nop()})
	if err != nil {
		return err
	}
	q.Start()
	defer func() { _ = q.Stop(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	d, err := spacedDelays(ctx, q, st, 100, 20*time.Millisecond)
	if err != nil {
		return err
	}
	p50 := percentile(d, 50)
	b.metrics = append(b.metrics, Metric{Name: "queue: due to start, enqueued by the instance",
		Value: fmt.Sprintf("p50 %s, p99 %s", dur(p50), dur(percentile(d, 99))), Target: "p50 <= 50ms",
		Verdict: verdict(p50 <= 50*time.Millisecond),
		Note:    fmt.Sprintf("%d jobs 20ms apart, enqueued in the process of a queue that polls every %s (its executor in this process, the store the same)", len(d), queue.DefaultPoll)})
	return nil
}

// writeQueueDeployment writes the queue's deployment, on the same store as
// the others.
func (b *bench) writeQueueDeployment() error {
	dir := filepath.Join(b.tmp, "project", "deployments")
	priv, pub, _, err := keys.Generate("EdDSA")
	if err != nil {
		return err
	}
	yaml := fmt.Sprintf(`# Written by cmd/bench.
production: false
shutdown_grace: 5s
queue:
  workers: %d
vars:
  - name: POWERSYNC_URL
    value: %s
  - name: MONGO_URI
    masked: true
  - name: MONGO_DATABASE
    value: %s
`, queueWorkers, audience, b.dbName)
	if err := os.WriteFile(filepath.Join(dir, queueDep+".yaml"), []byte(yaml), 0o644); err != nil {
		return err
	}
	local := fmt.Sprintf("POWERSYNC_PRIVATE_KEY=%s\nPOWERSYNC_PUBLIC_KEY=%s\nMONGO_URI=%s\n", priv, pub, b.mongoURI)
	return os.WriteFile(filepath.Join(dir, queueDep+".local.env"), []byte(local), 0o600)
}
