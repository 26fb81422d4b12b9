package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"
)

func maxProcs() int { return goruntime.GOMAXPROCS(0) }

// decodeOps is the size of the batches of the decoding measurement.
const decodeOps = 1000

// badTable ends the decoding measurement's batches: a table name that the
// upload task refuses while decoding, so that it answers 400 after decoding
// and validating the whole batch, and never touches the database.
const badTable = "bench$refused"

// decodeBody is a batch of decodeOps operations of the workload whose last
// operation names badTable.
func decodeBody() []byte {
	ops := newMix(decodeOps, 0).batch(1<<21, 1, decodeOps)
	ops = ops[:len(ops)-1]
	body := appendJSON(nil, ops)
	body = body[:len(body)-2] // "]}"
	body = append(body, `,{"op":"PUT","table":"`+badTable+`","id":"x","data":{"a":1}}]}`...)
	return body
}

// measureDecode measures decoding and validating inside the runtime: it
// posts batches that the upload task decodes and validates in full and then
// refuses for their last operation, without a database, and divides the
// operations by the runtime's CPU time: operations per second per core.
// That includes reading the body, HTTP and authentication, a few percent
// of the work at this batch size. (tasks/upload's BenchmarkDecode measures
// the decoder alone, in process.)
func (b *bench) measureDecode(ctx context.Context, p *proc) error {
	b.logf("decode+validate: %d-op batches refused at their last operation", decodeOps)
	conc := 2
	c := newClient(conc)
	defer c.CloseIdleConnections()
	tok, err := getToken(c, p.addr, "bench-decoder")
	if err != nil {
		return err
	}
	body := decodeBody()
	st := Load{
		Workers: conc, Warmup: b.cfg.warmup, Duration: b.cfg.duration, Max: b.cfg.maxRequests, Log: b.logf, CPU: p.cpu,
		Do: func(ctx context.Context, w, i int) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.addr+"/upload", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			_, err = do(c, req, false)
			var se *statusError
			switch {
			case errors.As(err, &se) && se.status == http.StatusBadRequest && bytes.Contains([]byte(se.body), []byte(fmt.Sprintf("batch[%d]", decodeOps-1))):
				return nil
			case err == nil:
				return errors.New("the runtime accepted a batch with a refused table name")
			}
			return err
		},
	}.Run(ctx)
	rate := 0.0
	if st.CPU > 0 {
		rate = float64(st.N*decodeOps) / st.CPU.Seconds()
	}
	b.rows = append(b.rows, Row{
		Path: fmt.Sprintf("decode+validate, %d-op batch, in the runtime", decodeOps), Unit: "ops/s/core", Rate: rate,
		P50: st.Percentile(50), P99: st.Percentile(99),
		Note: fmt.Sprintf("in the runtime, no database: %d ops / %s of its CPU (incl. HTTP, auth, reading %d kB bodies); wall %s ops/s",
			st.N*decodeOps, st.CPU.Round(time.Millisecond), len(body)/1000, human(st.Rate()*decodeOps)),
		Err: errText(st),
	})
	return nil
}

// decodeLine matches a result line of BenchmarkDecode, such as
//
//	BenchmarkDecode/ops=1000   762   1492878 ns/op   237.66 MB/s   669847 ops/s   ...
var decodeLine = regexp.MustCompile(`^BenchmarkDecode/ops=(\d+)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op.*?\s([\d.e+]+) ops/s`)

// decodeResult is one sub-benchmark of BenchmarkDecode.
type decodeResult struct {
	ops     int     // operations per batch
	nsPerOp float64 // per batch
	rate    float64 // operations per second
}

// parseDecodeBench extracts the results of BenchmarkDecode from `go test
// -bench` output.
func parseDecodeBench(out string) []decodeResult {
	var res []decodeResult
	for _, line := range strings.Split(out, "\n") {
		m := decodeLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		ops, _ := strconv.Atoi(m[1])
		ns, _ := strconv.ParseFloat(m[2], 64)
		rate, _ := strconv.ParseFloat(m[3], 64)
		res = append(res, decodeResult{ops, ns, rate})
	}
	return res
}

// measureDecodeBench runs the upload task's BenchmarkDecode (its decoder
// and validator alone, in process, no database) on one core: the decoder is
// unexported, so `go test` is the way in. GOMAXPROCS=1 keeps the garbage
// collector on the same core, so the rate is per core.
func (b *bench) measureDecodeBench(ctx context.Context) error {
	b.logf("decode+validate: go test -bench BenchmarkDecode -cpu 1 ./tasks/upload/")
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkDecode$",
		"-benchtime", b.cfg.duration.String(), "-cpu", "1", "-benchmem", "./tasks/upload/")
	cmd.Dir = b.repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench BenchmarkDecode ./tasks/upload/: %v\n%s", err, out)
	}
	res := parseDecodeBench(string(out))
	if len(res) == 0 {
		return fmt.Errorf("no BenchmarkDecode result with an ops/s metric in:\n%s", out)
	}
	best := res[len(res)-1] // the largest batch
	var notes []string
	for _, r := range res {
		notes = append(notes, fmt.Sprintf("%d-op batch %s ops/s", r.ops, human(r.rate)))
	}
	b.rows = append(b.rows, Row{
		Path: fmt.Sprintf("decode+validate, %d-op batch, in process", best.ops), Unit: "ops/s/core", Rate: best.rate,
		P50: time.Duration(best.nsPerOp), MinRate: targetDecode,
		Note: "tasks/upload BenchmarkDecode on one core (p50 = one batch): " + strings.Join(notes, ", "),
	})
	return nil
}
