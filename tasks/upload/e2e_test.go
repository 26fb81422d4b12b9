package upload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEndToEnd serves the task over real HTTP on a loopback port, as
// `runtime deploy` does, uploads batches with a token of the deployment's
// keys, and reads the documents back with the driver.
func TestEndToEnd(t *testing.T) {
	vars, set := testKeys(t)
	delete(vars, "UPLOAD_ALLOW")
	h := newHost(t, nil, vars)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	url := "http://" + ln.Addr().String() + "/upload"
	token := sign(t, set, "user-e2e", testAudience, time.Now(), time.Now().Add(5*time.Minute))
	client := &http.Client{Timeout: 10 * time.Second}
	send := func(body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
		return resp.StatusCode, m
	}
	// A client's queue: a list and its todos, an edit, a deletion, in three
	// batches as the SDK's CrudEntry.toJSON() writes them.
	var b strings.Builder
	b.WriteString(`{"batch":[{"op_id":1,"op":"PUT","type":"lists","id":"l1","tx_id":1,"data":{"name":"Groceries","owner_id":"user-e2e"}}`)
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, `,{"op_id":%d,"op":"PUT","type":"todos","id":"t%d","tx_id":1,"data":{"list_id":"l1","description":"item %d","completed":0}}`, i+2, i, i)
	}
	b.WriteString(`]}`)
	batches := []string{
		b.String(),
		`{"batch":[{"op_id":52,"op":"PATCH","type":"todos","id":"t3","tx_id":2,"data":{"completed":1,"completed_by":"user-e2e"}}]}`,
		`{"batch":[{"op_id":53,"op":"DELETE","type":"todos","id":"t4","tx_id":3}]}`,
	}
	for i, body := range batches {
		status, m := send(body)
		if status != http.StatusOK {
			t.Fatalf("batch %d: %d %v", i, status, m)
		}
	}
	todos := docs(t, h.db, "todos")
	if len(todos) != 49 {
		t.Errorf("%d todos, want 49", len(todos))
	}
	if d := todos["t3"]; d["completed"] != int32(1) || d["completed_by"] != "user-e2e" || d["description"] != "item 3" {
		t.Errorf("t3 = %v", d)
	}
	if _, ok := todos["t4"]; ok {
		t.Error("t4 was not deleted")
	}
	if l := docs(t, h.db, "lists")["l1"]; l["name"] != "Groceries" {
		t.Errorf("l1 = %v", l)
	}
	// Without the token: 401 over the wire too.
	resp, err := client.Post(url, "application/json", strings.NewReader(batches[1]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d", resp.StatusCode)
	}
}
