package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/tasks"
)

// runtimeCmd is the runtime's own command line (cmd/runtime), run inside
// this binary with a CPU profile: `bench runtime -cpuprofile F deploy ...`.
// With -profile, the benchmark starts its runtimes this way, so that the
// profiles show the runtime under the benchmark's load.
func runtimeCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("runtime", flag.ContinueOnError)
	cpu := fs.String("cpuprofile", "", "write a CPU profile to this file")
	mem := fs.String("memprofile", "", "write a heap profile (in use and allocated) at exit to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stop, err := startCPUProfile(*cpu)
	if err != nil {
		return err
	}
	code := cli.Main(cli.App{Args: fs.Args(), Environ: os.Environ(), Stdout: stdout, Stderr: os.Stderr, Tasks: tasks.All(),
		OpenRuns: mongostore.OpenRuns, OpenSchedules: mongostore.OpenSchedules, OpenJobs: mongostore.OpenJobs, Vars: store.Vars})
	stop()
	if *mem != "" {
		f, err := os.Create(*mem)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
	}
	if code != 0 {
		return fmt.Errorf("exit code %d", code)
	}
	return nil
}

// startCPUProfile profiles to path ("" : not at all) until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, errors.Join(err, os.Remove(path))
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
