package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// measureTestStartup times `runtime test generate_keys` (EdDSA keys: the
// task itself takes microseconds) from exec to exit: loading the
// deployment, setting up the task and the executor (no HTTP server),
// running, saving the record. Twice: with the run store on the bench's
// MongoDB (a deployment with MONGO_URI), and on files (one without).
func (b *bench) measureTestStartup(ctx context.Context) error {
	root := filepath.Join(b.tmp, "project")
	files := "bench-files"
	if err := os.WriteFile(filepath.Join(root, "deployments", files+".yaml"),
		[]byte("# Written by cmd/bench: no MONGO_URI, so run records are files.\nproduction: false\nvars: []\n"), 0o644); err != nil {
		return err
	}
	for _, m := range []struct{ dep, store string }{{deploymentName("RS256"), "MongoDB"}, {files, "files"}} {
		b.logf("runtime test startup (run store on %s): %d runs", m.store, b.cfg.startups)
		var times []time.Duration
		for range b.cfg.startups {
			cmd := exec.CommandContext(ctx, b.bin, "test", "generate_keys", "--params", `{"alg":"EdDSA"}`,
				"--deployment", m.dep, "--root", root)
			cmd.Dir, cmd.Env = root, childEnviron()
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("runtime test generate_keys --deployment %s: %v\n%s", m.dep, err, out)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		b.metrics = append(b.metrics, Metric{
			Name:  "startup of `runtime test` to exit, run store on " + m.store,
			Value: fmt.Sprintf("%s median, %s max", dur(times[len(times)/2]), dur(times[len(times)-1])),
			Note: fmt.Sprintf("%d runs of `runtime test generate_keys` (EdDSA), exec to exit: deployment, task set-up and executor without any HTTP server, the run, its record saved",
				len(times)),
		})
	}
	return nil
}
