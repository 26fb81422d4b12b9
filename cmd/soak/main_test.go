package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/tasks"
)

// TestMain lets the test binary act as the runtime, as the soak binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == serveArg {
		os.Exit(cli.Main(cli.App{Args: os.Args[2:], Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Tasks: tasks.All()}))
	}
	os.Exit(m.Run())
}

// TestShortSoak runs the whole soak for a few seconds: it starts a store
// and a runtime, drives them, checks the data and says PASS.
func TestShortSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a runtime")
	}
	var out bytes.Buffer
	ok, err := soak(config{
		duration: 4 * time.Second, interval: time.Second, retryDelay: 100 * time.Millisecond,
		clients: 3, batch: 5, rows: 10, root: "../..", dep: "testing", rssGrowth: 100,
	}, &out)
	t.Log(out.String())
	if err != nil || !ok {
		t.Fatalf("soak failed: %v", err)
	}
	for _, want := range []string{"ok   5xx answers: 0", "0 missing, 0 corrupted, 0 unexpected", "server memory flat", "\nPASS\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
