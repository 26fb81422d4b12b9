package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// taskInfo is one row of `runtime tasks`.
type taskInfo struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Methods     []string  `json:"methods"` // HTTP methods; empty: not served
	Path        string    `json:"path,omitempty"`
	OnDemand    bool      `json:"on_demand"`
	Vars        []taskVar `json:"vars"`
}

type taskVar struct {
	Name     string `json:"name"`
	Optional bool   `json:"optional"`
	Secret   bool   `json:"secret"`
	Help     string `json:"help,omitempty"`
	Default  string `json:"default,omitempty"`
}

func (a *App) tasksCmd() *cobra.Command {
	var out listing
	c := &cobra.Command{
		Use:   "tasks",
		Short: "list the tasks, what they serve, their variables",
		Args:  noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			p, err := a.project()
			if err != nil {
				return err
			}
			t := table{header: []string{"NAME", "SERVES", "VARIABLES", "DESCRIPTION"}, after: []string{"", "(VAR? = optional)"}}
			js := []taskInfo{}
			for _, task := range p.reg.Tasks() {
				info := taskInfo{Name: task.Name, Description: task.Description, Methods: task.Methods(), OnDemand: task.Run != nil, Vars: []taskVar{}}
				var serves []string
				if task.HTTP != nil {
					info.Path = "/" + task.Name
					serves = append(serves, strings.Join(task.Methods(), ",")+" /"+task.Name)
				}
				if task.Run != nil {
					serves = append(serves, "on demand")
				}
				var vars []string
				for _, v := range task.Vars {
					info.Vars = append(info.Vars, taskVar{Name: v.Name, Optional: v.Optional, Secret: v.Secret, Help: v.Help, Default: v.Default})
					n := v.Name
					if v.Optional {
						n += "?"
					}
					vars = append(vars, n)
				}
				js = append(js, info)
				t.add(task.Name, strings.Join(serves, "; "), orDash(strings.Join(vars, ",")), task.Description)
			}
			return out.print(c.OutOrStdout(), js, t)
		},
	}
	out.flags(c)
	return c
}
