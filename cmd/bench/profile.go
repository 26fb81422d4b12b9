package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"

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
	tr := fs.String("trace", "", "write an execution trace (go tool trace) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stop, err := startCPUProfile(*cpu)
	if err != nil {
		return err
	}
	stopTrace, err := startTrace(*tr)
	if err != nil {
		stop()
		return err
	}
	code := cli.Main(cli.App{Args: fs.Args(), Environ: os.Environ(), Stdout: stdout, Stderr: os.Stderr, Tasks: tasks.All(),
		OpenRuns: mongostore.OpenRuns, OpenSchedules: mongostore.OpenSchedules, OpenJobs: mongostore.OpenJobs, Vars: store.Vars})
	stopTrace()
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

// startTrace writes an execution trace to path ("": none) until stop is
// called: `go tool trace -pprof=sched` then shows where runnable goroutines
// waited for a P.
func startTrace(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, errors.Join(err, os.Remove(path))
	}
	return func() {
		trace.Stop()
		f.Close()
	}, nil
}
