package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The largest batches the API accepts (UPLOAD_MAX_OPS, 10,000 by
// default) must succeed on the development store too, within the
// request timeout: a client would otherwise send a refused batch again
// forever. -large-ops sets the largest batch (default 10,000).
const largeTimeout = 30 * time.Second // the upload task's timeout

// measureLargeBatches posts one batch of 10,000 new PUTs, then batches
// that the database refuses operation by operation (a unique index
// violated by 1,000, 2,000 and 10,000 PUTs: the time must grow linearly).
func (b *bench) measureLargeBatches(ctx context.Context) error {
	largeBatchOps, largeRefusedOps := b.cfg.largeOps, b.cfg.largeOps/5
	b.logf("large: %d PUTs in one batch, then %d and %d operations the database refuses", largeBatchOps, largeRefusedOps/2, largeRefusedOps)
	p, err := b.deploy("RS256")
	if err != nil {
		return err
	}
	defer b.stopRuntime(p)
	c := newClient(1)
	defer c.CloseIdleConnections()
	tok, err := getToken(c, p.addr, "bench-large")
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	coll := b.db.Collection("bench_large")
	_ = coll.Drop(dctx)
	defer coll.Drop(dctx)
	took, status, answer := b.postTimed(c, p.addr, tok, largeBatch("bench_large", largeBatchOps, 0, false))
	n, err := coll.CountDocuments(dctx, bson.D{})
	if err != nil {
		return err
	}
	b.metrics = append(b.metrics, Metric{
		Name:    fmt.Sprintf("upload of %d PUTs in one batch", largeBatchOps),
		Value:   fmt.Sprintf("%s, %d, %d written", dur(took), status, n),
		Target:  "200 within " + dur(largeTimeout),
		Verdict: verdict(status == http.StatusOK && n == int64(largeBatchOps) && took < largeTimeout),
		Note:    fmt.Sprintf("one POST of %d new documents of 300 B into an empty collection; %s", largeBatchOps, clipLine(answer)),
	})

	// A unique index that every PUT of the batch violates: each
	// operation is refused by the database and dead-lettered.
	uniq := b.db.Collection("bench_unique")
	dead := b.db.Collection("_powersync_refused")
	_ = uniq.Drop(dctx)
	_ = dead.Drop(dctx)
	defer uniq.Drop(dctx)
	defer dead.Drop(dctx)
	if _, err := uniq.Indexes().CreateOne(dctx, mongo.IndexModel{Keys: bson.D{{Key: "u", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
		return err
	}
	if _, err := uniq.InsertOne(dctx, bson.D{{Key: "_id", Value: "taken"}, {Key: "u", Value: "same"}}); err != nil {
		return err
	}
	var times []time.Duration
	for i, ops := range []int{largeRefusedOps / 2, largeRefusedOps, largeBatchOps} {
		took, status, answer := b.postTimed(c, p.addr, tok, largeBatch("bench_unique", ops, i, true))
		refused := 0
		var r struct{ Refused []json.RawMessage }
		if json.Unmarshal([]byte(answer), &r) == nil {
			refused = len(r.Refused)
		}
		times = append(times, took)
		m := Metric{
			Name:    fmt.Sprintf("upload of %d operations the database refuses", ops),
			Value:   fmt.Sprintf("%s, %d, %d refused", dur(took), status, refused),
			Target:  "200 within " + dur(largeTimeout),
			Verdict: verdict(status == http.StatusOK && refused == ops && took < largeTimeout),
			Note:    fmt.Sprintf("one POST of %d PUTs that a unique index refuses, each dead-lettered", ops),
		}
		if i > 0 {
			m.Note += fmt.Sprintf("; %.2fx the time of %d (%.0fx: linear)", float64(times[i])/float64(times[0]), largeRefusedOps/2, float64(ops)/float64(largeRefusedOps/2))
		}
		if status != http.StatusOK {
			m.Note += "; " + clipLine(answer)
		}
		b.metrics = append(b.metrics, m)
	}
	return nil
}

// postTimed posts one batch and returns how long the answer took, its
// status (0: no answer) and its body, or the error.
func (b *bench) postTimed(c *http.Client, base, token string, body []byte) (time.Duration, int, string) {
	req, _ := http.NewRequest(http.MethodPost, base+"/upload", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	answer, err := do(c, req, true)
	took := time.Since(start)
	var se *statusError
	switch {
	case errors.As(err, &se):
		return took, se.status, se.body
	case err != nil:
		return took, 0, err.Error()
	}
	return took, http.StatusOK, string(answer)
}

// largeBatch is a batch of n PUTs of new documents of about 300 B into
// table; with same, each sets u to the value a unique index already holds.
func largeBatch(table string, n, round int, same bool) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"batch":[`)
	filler := bytes.Repeat([]byte("x"), 300)
	for i := 0; i < n; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		u := fmt.Sprintf("u%d-%d", round, i)
		if same {
			u = "same"
		}
		fmt.Fprintf(&buf, `{"op":"PUT","table":%q,"id":"r%d-%08d","data":{"u":%q,"filler":"%s"}}`, table, round, i, u, filler)
	}
	buf.WriteString(`]}`)
	return buf.Bytes()
}
