package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// hostileConcurrent is how many nested-values batches arrive at once in
// the second measurement.
const hostileConcurrent = 12

// uploadMemory is the upload task's default UPLOAD_MEMORY for the bench's
// body_limit (16 times it): what 12 batches at once must stay within.
const uploadMemory = 16 * (5 << 20)

// nestedBatch is one operation whose data holds millions of empty
// objects: about size bytes that cost 25 to 40 times their size as Go
// values, the hostile shape of the HTTP edge issue.
func nestedBatch(size int) []byte {
	b := make([]byte, 0, size+64)
	b = append(b, `{"batch":[{"op":"PUT","table":"bench_nested","id":"n1","data":{"v":[{}`...)
	for len(b) < size-8 {
		b = append(b, ",{}"...)
	}
	return append(b, "]}}]}"...)
}

// measureHostileBatches measures what a nested-values batch adds to a
// fresh runtime's peak memory, alone and 12 at once, in a fresh runtime
// each (VmHWM only grows).
func (b *bench) measureHostileBatches(ctx context.Context) error {
	body := nestedBatch(bigBatchBytes)
	b.logf("memory: a %s batch of nested values, alone and %d at once", mb(int64(len(body))), hostileConcurrent)
	for _, n := range []int{1, hostileConcurrent} {
		extra, answers, err := b.hostilePeak(body, n)
		if err != nil {
			return err
		}
		mul := float64(extra) / float64(len(body))
		m := Metric{Note: fmt.Sprintf("VmHWM minus idle VmRSS; answers: %s", answers)}
		if n == 1 {
			m.Name = "nested-values batch: extra peak memory"
			m.Value = fmt.Sprintf("%s (%.2fx the batch)", mb(extra), mul)
			m.Target = fmt.Sprintf("< %dx its size", targetBigBatchMul)
			m.Verdict = verdict(mul < targetBigBatchMul)
		} else {
			m.Name = fmt.Sprintf("%d nested-values batches at once: extra peak memory", n)
			m.Value = fmt.Sprintf("%s (%.2fx one batch, %.2fx all %d)", mb(extra), mul, mul/float64(n), n)
			m.Target = fmt.Sprintf("< UPLOAD_MEMORY (%s) and < %dx all %d", mb(uploadMemory), targetBigBatchMul, n)
			m.Verdict = verdict(extra < uploadMemory && mul/float64(n) < targetBigBatchMul)
		}
		b.metrics = append(b.metrics, m)
	}
	return nil
}

// hostilePeak starts a runtime, lets it settle, posts n copies of body at
// once and returns its extra peak memory and a count of the answers.
func (b *bench) hostilePeak(body []byte, n int) (int64, string, error) {
	p, err := b.deploy("RS256")
	if err != nil {
		return 0, "", err
	}
	defer b.stopRuntime(p)
	c := newClient(n)
	defer c.CloseIdleConnections()
	tok, err := getToken(c, p.addr, "bench-hostile")
	if err != nil {
		return 0, "", err
	}
	if err := b.post(c, p.addr, tok, appendJSON(nil, newMix(10, 0).batch(1<<20, 0, 10))); err != nil {
		return 0, "", err
	}
	time.Sleep(time.Second)
	idle, err := readMem(p.pid())
	if err != nil {
		return 0, "", err
	}
	var (
		mu      sync.Mutex
		counts  = map[string]int{}
		wg      sync.WaitGroup
		failure error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, p.addr+"/upload", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			_, err := do(c, req, false)
			key := "200"
			var se *statusError
			switch {
			case errors.As(err, &se):
				key = fmt.Sprint(se.status)
			case err != nil:
				mu.Lock()
				failure = err
				mu.Unlock()
				return
			}
			mu.Lock()
			counts[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if failure != nil {
		return 0, "", fmt.Errorf("posting a nested-values batch: %w", failure)
	}
	after, err := readMem(p.pid())
	if err != nil {
		return 0, "", err
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s x%d", k, counts[k]))
	}
	return after.HWM - idle.RSS, strings.Join(parts, ", "), nil
}
