// Command runtime serves and runs the tasks under tasks/. See README.md.
//
// main is where the implementations are chosen: the tasks, and the stores
// the runtime declares (run records on the deployment's MongoDB, or files
// on the embedded development store).
package main

import (
	"os"

	"github.com/taskrun/taskrun/internal/mongostore"
	"github.com/taskrun/taskrun/internal/store"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/tasks"
	"github.com/taskrun/taskrun/tasks/upload"
)

func main() {
	os.Exit(cli.Main(cli.App{Args: os.Args[1:], Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Tasks: tasks.All(),
		OpenRuns: mongostore.OpenRuns, OpenSchedules: mongostore.OpenSchedules, OpenJobs: mongostore.OpenJobs, Vars: store.Vars,
		Dashboard: cli.DashboardParts{Refused: upload.DeadLetters}, ServeLock: store.ClaimServing, HoldStore: store.Hold}))
}
