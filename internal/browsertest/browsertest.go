// Package browsertest runs a real headless Chromium for the tests of web
// pages (the dashboard, CORS from a browser app), driven with chromedp.
// It records every response body and server-sent event the page received,
// so a test can assert that no secret reached the browser in any form.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Path finds the browser: $CHROMIUM, else chromium or google-chrome on PATH.
func Path() (string, bool) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, true
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// Browser is one headless browser with one tab.
type Browser struct {
	Ctx context.Context

	fetching  sync.WaitGroup
	mu        sync.Mutex
	bodies    map[network.RequestID]string // URL of each finished response
	events    []string                     // server-sent event payloads
	responses []Response
}

// Response is one response the page received.
type Response struct {
	URL    string
	Status int64
	Body   string
}

// New starts a browser for the test (closed at its end). It fails the test
// when no browser is installed: CI installs Debian's chromium package.
func New(t testing.TB) *Browser {
	t.Helper()
	path, ok := Path()
	if !ok {
		t.Fatal("no Chromium found: install it (apt-get install chromium) or set CHROMIUM to its path")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	b := &Browser{Ctx: ctx, bodies: map[network.RequestID]string{}}
	status := map[network.RequestID]int64{}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *network.EventResponseReceived:
			b.mu.Lock()
			b.bodies[e.RequestID] = e.Response.URL
			status[e.RequestID] = e.Response.Status
			b.mu.Unlock()
		case *network.EventEventSourceMessageReceived:
			b.mu.Lock()
			b.events = append(b.events, e.Data)
			b.mu.Unlock()
		case *network.EventLoadingFinished:
			b.mu.Lock()
			url, st := b.bodies[e.RequestID], status[e.RequestID]
			b.mu.Unlock()
			b.fetching.Add(1)
			go func() {
				defer b.fetching.Done()
				res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: e.RequestID})
				if err == nil {
					b.mu.Lock()
					b.responses = append(b.responses, Response{URL: url, Status: st, Body: string(res.Body)})
					b.mu.Unlock()
				}
			}()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("enabling the network domain: %v", err)
	}
	return b
}

// Do runs chromedp actions in the tab, failing the test on an error.
func (b *Browser) Do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// Text returns the text of the first element matching a CSS selector,
// waiting for it to be visible.
func (b *Browser) Text(t testing.TB, css string) string {
	t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("text of %s: %v", css, err)
	}
	return s
}

// HTML returns the document's whole HTML as the browser has it now.
func (b *Browser) HTML(t testing.TB) string {
	t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Received returns every response body and server-sent event payload the
// page received so far.
func (b *Browser) Received() (responses []Response, events []string) {
	b.fetching.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Response(nil), b.responses...), append([]string(nil), b.events...)
}
