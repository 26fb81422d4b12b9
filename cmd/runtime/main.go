// Command runtime serves and runs the tasks under tasks/. See README.md.
package main

import (
	"os"

	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/tasks"
)

func main() {
	os.Exit(cli.Main(cli.App{Args: os.Args[1:], Environ: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Tasks: tasks.All()}))
}
