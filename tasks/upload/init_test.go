package upload

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// TestInitRefuses checks the configurations that must stop a deployment,
// each with a message naming the problem.
func TestInitRefuses(t *testing.T) {
	keyVars, _ := testKeys(t)
	uri := storetest.URI(t)
	base := func(prod bool, extra map[string]string) map[string]string {
		m := map[string]string{"MONGO_URI": uri, "MONGO_DATABASE": "init_refuses"}
		for k, v := range keyVars {
			m[k] = v
		}
		delete(m, "UPLOAD_ALLOW")
		for k, v := range extra {
			if v == "<unset>" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	type initCase struct {
		name   string
		prod   bool
		vars   map[string]string
		errHas string
	}
	tests := []initCase{
		{"auth off in production", true, map[string]string{"UPLOAD_AUTH": "off"}, "UPLOAD_AUTH=off is refused in a production deployment"},
		{"no MONGO_URI in production", true, map[string]string{"MONGO_URI": "<unset>"}, "a production deployment needs a MongoDB server"},
		{"auth without POWERSYNC_URL", false, map[string]string{"POWERSYNC_URL": "<unset>"}, "POWERSYNC_URL is unset"},
		{"auth neither on nor off", false, map[string]string{"UPLOAD_AUTH": "maybe"}, "UPLOAD_AUTH must be on or off"},
		{"unknown id mode", false, map[string]string{"UPLOAD_ID_MODE": "uuid"}, "UPLOAD_ID_MODE must be string or objectid"},
		{"unacknowledged write concern", false, map[string]string{"UPLOAD_WRITE_CONCERN": "0"}, "UPLOAD_WRITE_CONCERN must be majority or a number"},
		{"unknown write concern", false, map[string]string{"UPLOAD_WRITE_CONCERN": "all"}, "UPLOAD_WRITE_CONCERN must be majority or a number"},
		{"unknown refused mode", false, map[string]string{"UPLOAD_REFUSED": "drop"}, "UPLOAD_REFUSED must be deadletter or strict"},
		{"hostile allow-list", false, map[string]string{"UPLOAD_ALLOW": "lists,system.users"}, "UPLOAD_ALLOW: table \"system.users\" is not allowed"},
		{"dead letters into the runtime's runs", false, map[string]string{"UPLOAD_REFUSED_COLLECTION": "_runtime_runs"}, `UPLOAD_REFUSED_COLLECTION: invalid collection name "_runtime_runs"`},
		{"hostile allow-list of a runtime collection", false, map[string]string{"UPLOAD_ALLOW": "lists,_runtime_runs"}, "_runtime_ collections are the runtime's own"},
		{"zero max ops", false, map[string]string{"UPLOAD_MAX_OPS": "0"}, "UPLOAD_MAX_OPS must be a number"},
		{"memory for less than one batch", false, map[string]string{"UPLOAD_MEMORY": "1MB"}, "UPLOAD_MEMORY must be a size of at least 4 times body_limit"},
		{"memory not a size", false, map[string]string{"UPLOAD_MEMORY": "lots"}, "UPLOAD_MEMORY must be a size"},
		{"transactions flag", false, map[string]string{"UPLOAD_TRANSACTIONS": "sometimes"}, "UPLOAD_TRANSACTIONS must be true or false"},
		{"URI without a database", false, map[string]string{"MONGO_DATABASE": "<unset>"}, "names none in its path and MONGO_DATABASE is unset"},
		{"unacknowledged writes in the URI", false, map[string]string{"MONGO_URI": uri + "?w=0"}, "asks for unacknowledged writes (w=0)"},
		{"invalid URI", false, map[string]string{"MONGO_URI": "mysql://u:hunter22@db/x"}, "MONGO_URI is not a valid MongoDB connection string"},
	}
	if !storetest.Real() {
		tests = append(tests, initCase{"transactions on FerretDB", false, map[string]string{"UPLOAD_TRANSACTIONS": "true"}, "does not support transactions"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dep := deployment.New("testing", tc.prod, base(tc.prod, tc.vars))
			if tc.prod { // past the refusal of production without write rules
				if err := dep.SetSections("production.yaml", []byte("upload: {default: allow}\n")); err != nil {
					t.Fatal(err)
				}
			}
			_, err := runtimetest.Start(t, dep, Task())
			if err == nil {
				t.Fatal("the deployment started")
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not contain %q", err, tc.errHas)
			}
			if strings.Contains(err.Error(), "hunter22") {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

// TestAuthOffIsAnnounced checks the loud warning of UPLOAD_AUTH=off and the
// accepted write concerns.
func TestAuthOffIsAnnounced(t *testing.T) {
	h := newHost(t, nil, map[string]string{"UPLOAD_WRITE_CONCERN": "majority"})
	if !strings.Contains(h.Logs.String(), "UPLOAD AUTHENTICATION IS OFF") {
		t.Errorf("no warning in the log:\n%s", h.Logs)
	}
	h.mustApply(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}}]}`)
	h1 := newHost(t, nil, map[string]string{"UPLOAD_WRITE_CONCERN": "1"})
	h1.mustApply(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}}]}`)
}

// proxy forwards loopback connections to a target and can be cut and
// restored, to take the database away from a running host.
type proxy struct {
	t      testing.TB
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.up("127.0.0.1:0")
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatalf("proxy: %v", err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
}

// down closes the listener and every connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// TestUnavailable checks that a database that cannot be reached gives 503
// with Retry-After, never a 2xx, and that the client's retry converges once
// it is back.
func TestUnavailable(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		h := newHost(t, nil, map[string]string{"MONGO_URI": "mongodb://user:hunter22@" + addr + "/db?serverSelectionTimeoutMS=300&connectTimeoutMS=300"})
		status, m, hdr := h.post(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{}}]}`)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "5" {
			t.Fatalf("status %d, Retry-After %q: %v; want 503 and 5", status, hdr.Get("Retry-After"), m)
		}
		if msg, _ := m["error"].(string); !strings.Contains(msg, "database is unavailable") {
			t.Errorf("error %q", msg)
		}
		resp := h.Do(http.MethodGet, "/readyz", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz: %d, want 503", resp.StatusCode)
		}
		if strings.Contains(h.Logs.String(), "hunter22") {
			t.Errorf("the password is in the logs:\n%s", h.Logs)
		}
	})
	t.Run("database goes away and comes back", func(t *testing.T) {
		target := strings.TrimSuffix(strings.TrimPrefix(storetest.URI(t), "mongodb://"), "/")
		p := newProxy(t, target)
		name := storetest.DatabaseName(t)
		h := newHost(t, nil, map[string]string{
			"MONGO_URI":      "mongodb://" + p.addr + "/" + name + "?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
			"MONGO_DATABASE": "",
		})
		db := storetest.Client(t).Database(name)
		batch := `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"v":1}},{"op":"PATCH","table":"lists","id":"a","data":{"w":2}}]}`
		h.mustApply(t, `{"batch":[{"op":"PUT","table":"lists","id":"a","data":{"old":true}}]}`)
		addr := p.addr
		p.down()
		start := time.Now()
		status, m, hdr := h.post(t, batch)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Fatalf("with the database away: status %d: %v; want 503 with Retry-After", status, m)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the 503 took %s", d)
		}
		p.up(addr)
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, m, _ = h.post(t, batch)
			if status == http.StatusOK || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if status != http.StatusOK {
			t.Fatalf("after the database came back: %d %v", status, m)
		}
		got := docs(t, db, "lists")["a"]
		if canon(t, got) != canon(t, map[string]any{"_id": "a", "v": int32(1), "w": int32(2)}) {
			t.Errorf("document %v", got)
		}
	})
}
