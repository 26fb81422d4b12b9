package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/taskrun/taskrun/internal/mongotest"
)

// TestDeployTesting serves the committed testing deployment as the README
// says (no MONGO_URI: the embedded development store; no keys: a generated
// development pair), and drives every built-in task over HTTP.
func TestDeployTesting(t *testing.T) {
	root := project(t)
	s := deploy(t, root, "testing")
	logs := s.logs.String()
	for _, want := range []string{"DEVELOPMENT STORE", "DEVELOPMENT KEYS", "TOKEN_AUTH=open"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log should announce %q:\n%s", want, logs)
		}
	}
	local, err := os.ReadFile(filepath.Join(root, "deployments", "testing.local.env"))
	if err != nil || !bytes.Contains(local, []byte("POWERSYNC_PRIVATE_KEY=")) {
		t.Fatalf("development keys were not saved to testing.local.env: %v", err)
	}
	priv := strings.TrimSpace(strings.SplitN(strings.SplitN(string(local), "POWERSYNC_PRIVATE_KEY=", 2)[1], "\n", 2)[0])

	var jwks struct{ Keys []map[string]any }
	if resp := getJSON(t, s.url+"/jwks", &jwks); resp.StatusCode != 200 || len(jwks.Keys) == 0 {
		t.Fatalf("jwks: %d %v", resp.StatusCode, jwks)
	}
	var tok struct {
		Token        string `json:"token"`
		PowersyncURL string `json:"powersync_url"`
	}
	var tokRaw map[string]any
	resp := getJSON(t, s.url+"/token?user_id=alice", &tokRaw)
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d %v", resp.StatusCode, tokRaw)
	}
	b, _ := json.Marshal(tokRaw)
	json.Unmarshal(b, &tok)
	if tok.Token == "" || tok.PowersyncURL != "http://localhost:8080" {
		t.Fatalf("token body: %s", b)
	}

	batch := `{"batch":[{"op":"PUT","table":"lists","id":"l1","data":{"name":"groceries"}},{"op":"PATCH","type":"lists","id":"l1","opData":{"done":true}}]}`
	code, body := post(t, s.url+"/upload", tok.Token, batch)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body := post(t, s.url+"/upload", "", batch); code != 401 {
		t.Errorf("upload without a token: %d %s, want 401", code, body)
	}
	if code, _ := post(t, s.url+"/upload", tok.Token, `{"batch":[{"op":"PUT","table":"$cmd","id":"x","data":{}}]}`); code != 400 {
		t.Errorf("hostile collection name: %d, want 400", code)
	}

	var e map[string]any
	if resp := getJSON(t, s.url+"/", &e); resp.StatusCode != 404 || e["error"] == nil || e["request_id"] == nil {
		t.Errorf("GET /: %d %v", resp.StatusCode, e)
	}
	req, _ := http.NewRequest(http.MethodDelete, s.url+"/jwks", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 || resp.Header.Get("Allow") == "" {
		t.Errorf("DELETE /jwks: %v %v, want 405 with Allow", resp.StatusCode, err)
	}
	if resp := getJSON(t, s.url+"/readyz", nil); resp.StatusCode != 200 {
		t.Errorf("readyz: %d", resp.StatusCode)
	}
	if code := s.stop(t); code != 0 {
		t.Errorf("exit code after SIGTERM: %d", code)
	}
	if strings.Contains(s.logs.String(), priv) {
		t.Error("the private key appears in the log")
	}
}

func post(t testing.TB, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func token(t testing.TB, url, user string) string {
	t.Helper()
	var tok struct{ Token string }
	if resp := getJSON(t, url+"/token?user_id="+user, &tok); resp.StatusCode != 200 {
		t.Fatalf("token: %d", resp.StatusCode)
	}
	return tok.Token
}

// TestUploadReadBack uploads over HTTP to a deployment whose MONGO_URI names
// a real wire-protocol server, then reads the documents back with the driver.
func TestUploadReadBack(t *testing.T) {
	uri := mongotest.URI(t)
	db := fmt.Sprintf("e2e_%d", time.Now().UnixNano())
	root := project(t)
	s := deploy(t, root, "testing", "MONGO_URI="+uri, "MONGO_DATABASE="+db)
	tok := token(t, s.url, "bob")
	code, body := post(t, s.url+"/upload", tok, `{"batch":[
		{"op":"PUT","table":"todos","id":"t1","data":{"title":"a","n":1}},
		{"op":"PUT","table":"todos","id":"t2","data":{"title":"b"}},
		{"op":"PATCH","table":"todos","id":"t1","data":{"title":"a2","extra":null}},
		{"op":"DELETE","table":"todos","id":"t2"},
		{"op":"PUT","table":"lists","id":"l1","data":{"name":"x"}}]}`)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer c.Disconnect(ctx)
	defer c.Database(db).Drop(ctx)
	var t1 bson.M
	if err := c.Database(db).Collection("todos").FindOne(ctx, bson.M{"_id": "t1"}).Decode(&t1); err != nil {
		t.Fatal(err)
	}
	if t1["title"] != "a2" || t1["extra"] != nil || fmt.Sprint(t1["n"]) != "1" {
		t.Errorf("t1 = %v", t1)
	}
	if n, _ := c.Database(db).Collection("todos").CountDocuments(ctx, bson.M{"_id": "t2"}); n != 0 {
		t.Errorf("t2 was not deleted")
	}
	if n, _ := c.Database(db).Collection("lists").CountDocuments(ctx, bson.M{}); n != 1 {
		t.Errorf("lists has %d documents, want 1", n)
	}
	if code := s.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestShutdownInFlight sends SIGTERM while an upload's body is still
// arriving: the request must complete with 200 and the server exit 0.
func TestShutdownInFlight(t *testing.T) {
	uri := mongotest.URI(t)
	root := project(t)
	s := deploy(t, root, "testing", "MONGO_URI="+uri, fmt.Sprintf("MONGO_DATABASE=e2e_sd_%d", time.Now().UnixNano()))
	tok := token(t, s.url, "carol")
	body := []byte(`{"batch":[{"op":"PUT","table":"lists","id":"slow","data":{"name":"in flight"}}]}`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", tok, len(body))
	conn.Write(body[:10])
	time.Sleep(200 * time.Millisecond) // the request is in flight
	stopped := make(chan int, 1)
	go func() { stopped <- s.stop(t) }()
	time.Sleep(300 * time.Millisecond)
	if _, err := http.Get(s.url + "/healthz"); err == nil {
		t.Error("new connections are still accepted after SIGTERM")
	}
	conn.Write(body[10:])
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request failed: %v\n%s", err, s.logs.String())
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Errorf("in-flight request: %d %s", resp.StatusCode, b)
	}
	if code := <-stopped; code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestProductionRefusesDevelopmentDefaults: the committed production
// deployment has no secrets, and must say which ones it needs.
func TestProductionRefusesDevelopmentDefaults(t *testing.T) {
	root := project(t)
	r := run(t, root, nil, "deploy", "production", "--listen", "127.0.0.1:0").must(t, 1)
	if !strings.Contains(r.stderr, "POWERSYNC_PRIVATE_KEY") || strings.Count(r.stderr, "POWERSYNC_PRIVATE_KEY nor") != 1 {
		t.Errorf("production refusal should name the missing keys, once:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "deployments", "production.local.env")); err == nil {
		t.Error("production generated keys")
	}
	// With keys, it still refuses: no MONGO_URI, and no open token endpoint.
	gen := run(t, root, nil, "test", "generate_keys", "--deployment", "production", "--params", `{"save":"production"}`).must(t, 0)
	if strings.Contains(gen.stdout+gen.stderr, "POWERSYNC_PRIVATE_KEY=") || !strings.HasPrefix(gen.stdout, "POWERSYNC_PUBLIC_KEY=") {
		t.Errorf("save printed the private key, or not the public one:\n%s", gen.stdout)
	}
	r = run(t, root, []string{"TOKEN_AUTH=open"}, "deploy", "production", "--listen", "127.0.0.1:0").must(t, 1)
	for _, want := range []string{"MONGO_URI", "TOKEN_AUTH"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("production refusal should name %s:\n%s", want, r.stderr)
		}
	}
	os.Remove(filepath.Join(root, "deployments", "production.local.env"))
	if _, err := os.Stat(filepath.Join(root, ".runtime", "devstore", "production")); err == nil {
		t.Error("production started a development store")
	}
}
