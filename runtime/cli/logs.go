package cli

import (
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
)

func (a *App) logsCmd() *cobra.Command {
	var id string
	c := &cobra.Command{
		Use:   "logs <task>",
		Short: "show a task's latest (or given) run record",
		Args:  a.taskArg,
		RunE: func(c *cobra.Command, args []string) error {
			p, err := a.project()
			if err != nil {
				return err
			}
			rec, err := runtime.LoadRecord(p.stateDir(), args[0], id)
			if err != nil {
				return err
			}
			rec.Print(c.OutOrStdout())
			return nil
		},
	}
	c.Flags().StringVar(&id, "run", "", "show run `ID` (default: the latest run)")
	return c
}
