// Package cli implements the runtime's commands on cobra. main passes in
// the arguments, the process environment, the output streams and the
// tasks (App); Main builds a fresh command tree for that one invocation
// (no package state) and returns the exit code: 0 success, 1 failure,
// 2 usage error (an unknown command, flag or argument; *usageError).
//
// Adding a command is a local change:
//
//  1. write func (a *App) fooCmd() *cobra.Command in foo.go: Use (the name
//     and its arguments, "foo <task>"), Short (one line for the command
//     list), Long and Example if they help, Args (taskArg, deploymentArg,
//     noArgs or cobra.RangeArgs wrapped by usageArgs), the command's own
//     flags (c.Flags(); listing commands call listing.flags for --json and
//     --wide) and RunE, which calls a.project() for the root, the registry
//     and deployments, and prints to c.OutOrStdout();
//  2. add a.fooCmd() to commands() in cli.go (help lists them in order);
//  3. run `go test ./runtime/cli -run TestREADME -update` to regenerate
//     the README's CLI section from the help text.
//
// Global flags (--root) are persistent flags of the root command, so they
// go anywhere on the line. Errors that are the user's to fix return
// usageErr (exit 2, the command's usage line); any other error is a
// failure (exit 1). Tables go through table.write, which fits them to
// 100 columns unless --wide.
package cli
