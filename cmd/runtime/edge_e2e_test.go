package main

// The HTTP edge under hostile clients, against the built binary on
// loopback: bounded metrics, body deadlines, answers of the HTTP layer as
// JSON, a 413 that a client still writing its body reads.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/mongotest"
)

// edgeServer serves the testing deployment on the shared test store, with
// settings added to its file.
func edgeServer(t *testing.T, settings string) *server {
	t.Helper()
	uri := mongotest.URI(t)
	root := project(t)
	path := filepath.Join(root, "deployments", "testing.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, line := range strings.Split(settings, "\n") {
		key, _, _ := strings.Cut(line, ":")
		if re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:.*$`); key != "" && re.MatchString(text) {
			text = re.ReplaceAllLiteralString(text, line)
		} else {
			text += "\n" + line + "\n"
		}
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return deploy(t, root, "testing", "MONGO_URI="+uri, fmt.Sprintf("MONGO_DATABASE=e2e_edge_%d", time.Now().UnixNano()))
}

func (s *server) addr() string { return strings.TrimPrefix(s.url, "http://") }

func (s *server) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// gauge reads one sample of the metrics text.
func gauge(t *testing.T, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s in the metrics", series)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// readAnswer reads one response from conn and then expects the server to
// close the connection; it returns the status and the decoded JSON body.
func readAnswer(t *testing.T, conn net.Conn, within time.Duration) (int, map[string]any) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%d answer is not JSON: %q", resp.StatusCode, b)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after a %d the connection is not closed: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, body
}

func TestEdgeMetricsStayFlat(t *testing.T) {
	s := edgeServer(t, "")
	c := &http.Client{}
	r := rand.New(rand.NewPCG(3, 4))
	send := func(n int) {
		for i := 0; i < n; i++ {
			m := make([]byte, 10+r.IntN(100))
			for j := range m {
				m[j] = byte('A' + r.IntN(26))
			}
			path := "/jwks"
			if i%2 == 1 {
				path = fmt.Sprintf("/%x", r.Uint64())
			}
			req, _ := http.NewRequest(string(m), s.url+path, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send(10)
	s.metrics(t)
	before := s.metrics(t)
	send(1000)
	after := s.metrics(t)
	series := func(text string) int {
		n := 0
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "runtime_") {
				n++
			}
		}
		return n
	}
	if series(after) != series(before) {
		t.Errorf("runtime_ series grew from %d to %d after 1,000 requests with random methods", series(before), series(after))
	}
	if len(after) > len(before)+len(before)/10 {
		t.Errorf("/metrics grew from %d to %d bytes", len(before), len(after))
	}
	if got := gauge(t, after, `runtime_requests_total{deployment="testing",method="OTHER",status="405",task="-"}`); got != 505 {
		t.Errorf("OTHER 405s counted %v, want 505", got)
	}
	if regexp.MustCompile(`"method":"[A-Z]{10,}"`).MatchString(s.logs.String()) {
		t.Error("an invented method reached the access log")
	}
}

// TestEdgeBodyDeadline: a request that declares a body and never sends it
// gets a 408 (a handler that reads it) or its answer at once (one that
// does not), is counted in flight meanwhile, and the connection closes.
func TestEdgeBodyDeadline(t *testing.T) {
	s := edgeServer(t, "body_read_timeout: 1s")
	tok := token(t, s.url, "slow")
	dial := func(head string) net.Conn {
		conn, err := net.Dial("tcp", s.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	upload := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", tok)
	start := time.Now()
	held := dial(upload)
	time.Sleep(300 * time.Millisecond)
	if n := gauge(t, s.metrics(t), `runtime_inflight_requests{deployment="testing"}`); n != 2 { // it and the scrape
		t.Errorf("in flight while a body is awaited: %v, want 2", n)
	}
	code, body := readAnswer(t, held, 3*time.Second)
	if took := time.Since(start); code != 408 || took < time.Second || took > 2500*time.Millisecond {
		t.Errorf("never-sent upload body: %d after %s, want 408 after 1s: %v", code, took, body)
	}
	if body["request_id"] == nil || !strings.Contains(fmt.Sprint(body["error"]), "did not arrive within 1s") {
		t.Errorf("408 body %v", body)
	}
	// Half a body, then nothing.
	half := dial(upload + `{"batch":[`)
	if code, _ := readAnswer(t, half, 3*time.Second); code != 408 {
		t.Errorf("half-sent body: %d, want 408", code)
	}
	// A handler that does not read the body answers at once and closes.
	start = time.Now()
	jwks := dial("GET /jwks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	if code, _ := readAnswer(t, jwks, 3*time.Second); code != 200 || time.Since(start) > 500*time.Millisecond {
		t.Errorf("jwks with a never-sent body: %d after %s, want 200 at once", code, time.Since(start))
	}
	unauth := dial("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	if code, _ := readAnswer(t, unauth, 3*time.Second); code != 401 {
		t.Errorf("upload without a token and a never-sent body: %d, want 401", code)
	}
	if !regexp.MustCompile(`"path":"/upload","status":408`).MatchString(s.logs.String()) {
		t.Errorf("the access log does not show the 408:\n%s", s.logs.String())
	}
	// A body that arrives in time is served.
	for i := 0; i < 2; i++ {
		code, out := post(t, s.url+"/upload", tok, `{"batch":[{"op":"PUT","table":"lists","id":"ok","data":{"n":1}}]}`)
		if code != 200 {
			t.Fatalf("upload: %d %s", code, out)
		}
	}
}

// TestEdgeManyHeldConnections: 2,000 connections that never send their
// declared body are all answered and closed within the deadline, and
// SIGTERM with a thousand more held exits at once.
func TestEdgeManyHeldConnections(t *testing.T) {
	s := edgeServer(t, "body_read_timeout: 2s")
	tok := token(t, s.url, "held")
	heads := []string{
		fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", tok),
		"GET /jwks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
		"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
	}
	open := func(n int) []net.Conn {
		conns := make([]net.Conn, n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		for w := 0; w < 50; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < n; i += 50 {
					c, err := net.Dial("tcp", s.addr())
					if err == nil {
						_, err = io.WriteString(c, heads[i%len(heads)])
					}
					if err != nil {
						mu.Lock()
						first = err
						mu.Unlock()
						return
					}
					conns[i] = c
				}
			}(w)
		}
		wg.Wait()
		if first != nil {
			t.Fatalf("opening connections: %v", first)
		}
		t.Cleanup(func() {
			for _, c := range conns {
				c.Close()
			}
		})
		return conns
	}
	start := time.Now()
	conns := open(2000)
	opened := time.Since(start)
	// Every one is answered, then closed by the server, within the deadline.
	statuses := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(conns); i += 50 {
				c := conns[i]
				c.SetReadDeadline(start.Add(opened + 2*time.Second + 1500*time.Millisecond))
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %v", i, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				if !json.Valid(b) {
					errs <- fmt.Errorf("connection %d: %d answer not JSON: %q", i, resp.StatusCode, b)
				}
				if _, err := br.ReadByte(); err != io.EOF {
					errs <- fmt.Errorf("connection %d: not closed after its %d: %v", i, resp.StatusCode, err)
				}
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	took := time.Since(start)
	t.Logf("2,000 held connections: opened in %s, all answered and closed after %s: %v", opened, took, statuses)
	if statuses[408] != 667 || statuses[200] != 667 || statuses[404] != 666 {
		t.Errorf("statuses %v, want 667 408s (upload), 667 200s (jwks), 666 404s", statuses)
	}
	m := s.metrics(t)
	if v := gauge(t, m, `runtime_inflight_requests{deployment="testing"}`); v != 1 {
		t.Errorf("in flight after the deadline: %v", v)
	}
	if v := gauge(t, m, `runtime_requests_total{deployment="testing",method="POST",status="408",task="upload"}`); v != 667 {
		t.Errorf("408s counted: %v", v)
	}

	// SIGTERM while a thousand more wait for their bodies: not in-flight
	// work, so the runtime exits at once.
	held := open(1000)
	deadline := time.Now().Add(5 * time.Second)
	for gauge(t, s.metrics(t), `runtime_inflight_requests{deployment="testing"}`) < 300 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopAt := time.Now()
	if code := s.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if took := time.Since(stopAt); took > 1500*time.Millisecond {
		t.Errorf("SIGTERM with 1,000 held bodies took %s to exit", took)
	} else {
		t.Logf("SIGTERM with 1,000 held connections: exited after %s", took)
	}
	_ = held
}

// TestEdgeHTTPLayerAnswersJSON: what net/http answers itself (headers too
// large, a malformed request) comes as JSON too.
func TestEdgeHTTPLayerAnswersJSON(t *testing.T) {
	s := edgeServer(t, "")
	for _, tt := range []struct {
		name, req string
		code      int
		msg       string
	}{
		{"headers over 64 KiB", "GET /jwks HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 431, "request header fields too large"},
		{"no Host", "GET /jwks HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
		{"bad transfer encoding", "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not implemented"},
		{"an unknown expectation", "GET /jwks HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417, "expectation failed"},
	} {
		conn, err := net.Dial("tcp", s.addr())
		if err != nil {
			t.Fatal(err)
		}
		go io.WriteString(conn, tt.req)
		code, body := readAnswer(t, conn, 3*time.Second)
		conn.Close()
		if code != tt.code || !strings.Contains(fmt.Sprint(body["error"]), tt.msg) || body["request_id"] == nil {
			t.Errorf("%s: %d %v, want %d with %q", tt.name, code, body, tt.code, tt.msg)
		}
	}
	if !strings.Contains(s.logs.String(), `"status":431`) {
		t.Error("the 431 is not in the access log")
	}
}

// TestEdgeTooLargeIsRead: a client that writes its whole body, far over
// body_limit, before it reads gets the 413, not a reset.
func TestEdgeTooLargeIsRead(t *testing.T) {
	s := edgeServer(t, "body_limit: 1MB")
	tok := token(t, s.url, "big")
	big := bytes.Repeat([]byte("x"), 48<<20)
	for _, mode := range []string{"content-length", "chunked"} {
		conn, err := net.Dial("tcp", s.addr())
		if err != nil {
			t.Fatal(err)
		}
		var head string
		switch mode {
		case "content-length":
			head = fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", tok, len(big))
		case "chunked":
			head = fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n", tok)
		}
		// Write everything first, as a naive client does, then read.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		written := make(chan error, 1)
		go func() {
			w := bufio.NewWriterSize(conn, 1<<20)
			w.WriteString(head)
			if mode == "content-length" {
				w.Write(big)
			} else {
				for off := 0; off < len(big); off += 1 << 20 {
					fmt.Fprintf(w, "%x\r\n", 1<<20)
					w.Write(big[off : off+1<<20])
					w.WriteString("\r\n")
				}
				w.WriteString("0\r\n\r\n")
			}
			written <- w.Flush()
		}()
		var werr error
		select {
		case werr = <-written:
		case <-ctx.Done():
			werr = ctx.Err()
		}
		cancel()
		if werr != nil {
			t.Errorf("%s: writing the body failed (%v): the client could not read its answer", mode, werr)
			conn.Close()
			continue
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: reading the answer: %v", mode, err)
			conn.Close()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 413 || !bytes.Contains(b, []byte(`"error":"request body is larger than the limit of 1048576 bytes"`)) {
			t.Errorf("%s: %d %s", mode, resp.StatusCode, b)
		}
	}
	// Go's own client, too.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/upload", bytes.NewReader(big))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Go client: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("Go client: %d", resp.StatusCode)
	}
}

// TestDeployBindsFirst: a port in use or an invalid address fails at once,
// naming --listen, before any Init starts a development store.
func TestDeployBindsFirst(t *testing.T) {
	root := project(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	start := time.Now()
	r := run(t, root, nil, "deploy", "testing", "--listen", busy.Addr().String()).must(t, 1)
	if !strings.Contains(r.stderr, "(--listen)") || !strings.Contains(r.stderr, "another instance") {
		t.Errorf("port in use: %s", r.stderr)
	}
	r = run(t, root, nil, "deploy", "testing", "--listen", "127.0.0.1:99999").must(t, 1)
	if !strings.Contains(r.stderr, `cannot listen on "127.0.0.1:99999" (--listen)`) {
		t.Errorf("invalid address: %s", r.stderr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusals took %s", took)
	}
	for _, p := range []string{filepath.Join(root, ".runtime", "devstore"), filepath.Join(root, "deployments", "testing.local.env")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists: Init ran before the address was bound", p)
		}
	}
}
