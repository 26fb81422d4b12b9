package runtime_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// BenchmarkScrapeCost serves a small fixed body through the host, with and
// without a scraper reading /metrics every millisecond (Prometheus scrapes
// every 15 s or so: this is thousands of times more often). Compare the two
// ns/op: scraping must not slow the hot path measurably.
//
//	go test -run '^$' -bench ScrapeCost ./runtime/
func BenchmarkScrapeCost(b *testing.B) {
	body := []byte(`{"keys":[]}`)
	task := runtime.Task{Name: "fixed", Access: runtime.Public,
		HTTP: map[string]runtime.HTTPFunc{http.MethodGet: func(c echo.Context, env *runtime.Env) error {
			return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
		}}}
	for _, scrape := range []bool{false, true} {
		name := "plain"
		if scrape {
			name = "scraped_every_1ms"
		}
		b.Run(name, func(b *testing.B) {
			h := runtimetest.New(b, deployment.New("bench", false, nil), task)
			handler := h.Handler()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if scrape {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/metrics", nil))
						}
					}
				}()
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rec := httptest.NewRecorder()
					handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/fixed", nil))
					if rec.Code != http.StatusOK {
						b.Fatalf("status %d", rec.Code)
					}
				}
			})
			close(stop)
			wg.Wait()
		})
	}
}
