package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// benchRules are the write rules of the bench-rules deployment, as a
// todo-list app's: the workload's documents are owned by the uploader
// (every PUT carries owner_id), their owner and creation time immutable.
const benchRules = `
upload:
  default: deny
  rules:
    bench_lists: {owner: owner_id, immutable: [owner_id, created_at]}
    bench_todos: {owner: owner_id, immutable: [owner_id, created_at]}
`

// rulesDeployment is the RS256 deployment with write rules.
const rulesDeployment = "rules" // deploymentName: bench-rules

// targetRules is the least upload with rules may do of upload without.
const targetRules = 0.8

// writeRulesDeployment writes bench-rules beside the RS256 deployment:
// the same settings and keys, with benchRules.
func (b *bench) writeRulesDeployment() error {
	dir := filepath.Join(b.tmp, "project", "deployments")
	from, to := deploymentName("RS256"), deploymentName(rulesDeployment)
	y, err := os.ReadFile(filepath.Join(dir, from+".yaml"))
	if err != nil {
		return err
	}
	local, err := os.ReadFile(filepath.Join(dir, from+".local.env"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, to+".yaml"), append(y, benchRules...), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, to+".local.env"), local, 0o600)
}

// measureUploadRules loads POST /upload through a runtime with write rules
// beside plain, the RS256 runtime without, with the same batches of the
// largest size, alternately in rounds on empty collections (as
// measureUpload pairs the runtime with the driver). Every PATCH and DELETE
// then carries the owner condition, every PUT the owner and the immutable
// fields; the first round's PATCHes and DELETEs find nothing, which costs
// the rules side one read per command.
func (b *bench) measureUploadRules(ctx context.Context, plain *proc) error {
	if len(b.cfg.uploadSizes) == 0 {
		return nil
	}
	sizes := []int{slices.Max(b.cfg.uploadSizes)}
	if err := b.writeRulesDeployment(); err != nil {
		return err
	}
	ruled, err := b.deploy(rulesDeployment)
	if err != nil {
		return err
	}
	defer b.stopRuntime(ruled)
	conc := b.cfg.uploadConc
	c := newClient(conc)
	defer c.CloseIdleConnections()
	plainTok, err := getToken(c, plain.addr, ownerID)
	if err != nil {
		return err
	}
	ruledTok, err := getToken(c, ruled.addr, ownerID)
	if err != nil {
		return err
	}
	for _, size := range sizes {
		ops := make([]atomic.Int64, conc)
		m := newMix(size, b.maxPatch())
		without := uploadDo(c, plain.addr, plainTok, m, size, ops)
		with := uploadDo(c, ruled.addr, ruledTok, m, size, ops)
		b.logf("upload x%d: without rules, then with, %d times", size, rounds)
		var (
			rt, limit       Stats
			rtErr, limitErr string
			warmup          = conc
			perRound        = (minBatches + rounds - 1) / rounds
		)
		for r := 0; r < rounds; r++ {
			lst, msg, err := b.runWorkload(ctx, Load{Workers: conc, WarmupN: warmup, Duration: b.cfg.duration / rounds,
				Max: b.cfg.maxRequests, Min: perRound, Do: without, CPU: plain.cpu}, ops, m)
			if err != nil {
				return err
			}
			limit = limit.merge(lst)
			if limitErr == "" {
				limitErr = msg
			}
			if lst.N == 0 {
				break
			}
			// The same batches, no more, no less.
			st, msg, err := b.runWorkload(ctx, Load{Workers: conc, WarmupN: warmup, Duration: time.Hour,
				Max: lst.N, Min: lst.N, Do: with, CPU: ruled.cpu}, ops, m)
			if err != nil {
				return err
			}
			rt = rt.merge(st)
			if rtErr == "" {
				rtErr = msg
			}
			warmup = 0
		}
		b.logf("  %d batches: %s/s with rules, %s/s without", rt.N, human(rt.Rate()), human(limit.Rate()))
		row := Row{
			Path: fmt.Sprintf("POST /upload x%d with rules", size), Unit: "batch/s",
			Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
			Limit: limit.Rate(), LimitName: "the same batches without rules",
			Err:  joinErr(rtErr, limitErr),
			Note: fmt.Sprintf("owner and immutable rules on both collections (%s); without: p50 %s p99 %s, %d+%d batches", m, dur(limit.Percentile(50)), dur(limit.Percentile(99)), rt.N, limit.N),
		}
		if size >= 100 {
			row.MinRatio = targetRules
		}
		if cpu := rt.CPU; cpu > 0 && rt.N > 0 && limit.CPU > 0 && limit.N > 0 {
			row.Note += fmt.Sprintf("; runtime CPU %s/op with, %s/op without", dur(cpu/time.Duration(rt.N*size)), dur(limit.CPU/time.Duration(limit.N*size)))
		}
		b.rows = append(b.rows, row)
	}
	return b.dropWorkload(ctx)
}
