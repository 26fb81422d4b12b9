package load

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Stats counts results by kind and status, and keeps their latencies. Use
// Add as a Client's Observe. Safe for concurrent use.
type Stats struct {
	mu       sync.Mutex
	counts   map[string]int64 // "upload 200", "token refused"
	hist     map[string]*Histogram
	ops      int64 // operations in acknowledged batches
	retries  int64 // batches sent again
	requests int64
}

// NewStats returns empty stats.
func NewStats() *Stats {
	return &Stats{counts: map[string]int64{}, hist: map[string]*Histogram{}}
}

// Add records one result.
func (s *Stats) Add(r Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.counts[r.Kind+" "+Outcome(r)]++
	h := s.hist[r.Kind]
	if h == nil {
		h = &Histogram{}
		s.hist[r.Kind] = h
	}
	h.Add(r.Dur)
	if r.Kind == KindUpload {
		if r.Attempt > 1 {
			s.retries++
		}
		if r.Status/100 == 2 {
			s.ops += int64(r.Ops)
		}
	}
}

// Outcome is a result's status code, or the class of its transport error.
func Outcome(r Result) string {
	if r.Status != 0 {
		return fmt.Sprint(r.Status)
	}
	return ErrClass(r.Err)
}

// Snapshot is a copy of the stats at one time.
type Snapshot struct {
	At       time.Time
	Requests int64
	Ops      int64
	Retries  int64
	Counts   map[string]int64
	Hist     map[string]Histogram
}

// Snapshot copies the stats.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := Snapshot{At: time.Now(), Requests: s.requests, Ops: s.ops, Retries: s.retries,
		Counts: make(map[string]int64, len(s.counts)), Hist: make(map[string]Histogram, len(s.hist))}
	for k, v := range s.counts {
		sn.Counts[k] = v
	}
	for k, h := range s.hist {
		sn.Hist[k] = *h
	}
	return sn
}

// Count is the number of results of a kind ("" for any) whose outcome
// satisfies match.
func (sn Snapshot) Count(kind string, match func(outcome string) bool) int64 {
	var n int64
	for k, v := range sn.Counts {
		kk, outcome, _ := strings.Cut(k, " ")
		if (kind == "" || kk == kind) && match(outcome) {
			n += v
		}
	}
	return n
}

// Sub returns the difference sn - old, for one interval.
func (sn Snapshot) Sub(old Snapshot) Snapshot {
	d := Snapshot{At: sn.At, Requests: sn.Requests - old.Requests, Ops: sn.Ops - old.Ops, Retries: sn.Retries - old.Retries,
		Counts: map[string]int64{}, Hist: map[string]Histogram{}}
	for k, v := range sn.Counts {
		if n := v - old.Counts[k]; n != 0 {
			d.Counts[k] = n
		}
	}
	for k, h := range sn.Hist {
		o := old.Hist[k]
		d.Hist[k] = h.Sub(o)
	}
	return d
}

// CountsString lists the counts as "upload 200=10 upload 503=2 ...", sorted.
func (sn Snapshot) CountsString() string {
	keys := slices.Sorted(maps.Keys(sn.Counts))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.ReplaceAll(k, " ", ":"), sn.Counts[k]))
	}
	return strings.Join(parts, " ")
}

// Histogram counts durations in logarithmic buckets, 5% wide, from 10 µs
// to about 100 s.
type Histogram struct {
	N       int64
	Max     time.Duration
	Buckets [histBuckets]int64
}

const (
	histMin     = 10 * time.Microsecond
	histGrowth  = 1.05
	histBuckets = 330
)

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histMin))/math.Log(histGrowth)) + 1
	return min(i, histBuckets-1)
}

// Add adds one duration.
func (h *Histogram) Add(d time.Duration) {
	h.N++
	h.Max = max(h.Max, d)
	h.Buckets[bucketOf(d)]++
}

// Sub is the histogram of the durations added since old (Max is kept).
func (h Histogram) Sub(old Histogram) Histogram {
	out := Histogram{N: h.N - old.N, Max: h.Max}
	for i := range h.Buckets {
		out.Buckets[i] = h.Buckets[i] - old.Buckets[i]
	}
	return out
}

// Merge adds o's durations.
func (h *Histogram) Merge(o Histogram) {
	h.N += o.N
	h.Max = max(h.Max, o.Max)
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
}

// Quantile returns the q-quantile (0 < q <= 1), as the upper bound of its
// bucket, at most Max.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.N)))
	var cum int64
	for i, n := range h.Buckets {
		cum += n
		if cum >= rank {
			upper := time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
			return min(upper, h.Max)
		}
	}
	return h.Max
}
