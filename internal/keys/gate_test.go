package keys

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/procs"
)

// BenchmarkSignTail signs on 16 goroutines in a closed loop (as GET /token
// under 16 connections, without HTTP) and reports the p50 and p99 latency
// of a signature, through the FIFO gate ("gate") and without it ("none": a
// gate with room for every goroutine): the difference is the scheduling
// order of CPU-bound goroutines outnumbering the Ps.
func BenchmarkSignTail(b *testing.B) {
	const workers = 16
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		p := genPair(b, alg, 0)
		for _, mode := range []string{"gate", "none"} {
			b.Run(mode+"/"+alg, func(b *testing.B) {
				s := mustNew(b, p.priv, p.pub)
				if mode == "none" {
					s.signer.gate = procs.NewGate(workers)
				}
				c := claimsAt(time.Now(), "user")
				lat := make([][]time.Duration, workers)
				var next atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							t0 := time.Now()
							if _, err := s.Sign(c); err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				slices.Sort(all)
				if len(all) < 100 {
					return
				}
				p50, p99 := all[len(all)/2], all[len(all)*99/100]
				b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(p99)/float64(p50), "p99/p50")
			})
		}
	}
}
