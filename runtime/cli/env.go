package cli

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/runtime"
)

// envVar is one row of `runtime env`; Value is as it may be shown (masked,
// URL passwords redacted), never a secret.
type envVar struct {
	Name     string   `json:"name"`
	Value    string   `json:"value"`
	Source   string   `json:"source"`            // file, local, process, unset
	Default  string   `json:"default,omitempty"` // what the tasks do when it is unset
	Required bool     `json:"required"`
	Masked   bool     `json:"masked"`
	UsedBy   []string `json:"used_by"`
}

func (a *App) envCmd() *cobra.Command {
	var out listing
	c := &cobra.Command{
		Use:   "env <deployment>",
		Short: "list a deployment's variables (masked) and their sources",
		Long: `runtime env: list a deployment's variables, sorted, with their sources.

Masked values print as ********, URLs with their password redacted; an
unset variable shows the default its tasks apply (source "default").
After the variables, what tasks make of the deployment file's sections:
upload's effective write rules.
Precedence: the process environment > deployments/<name>.local.env >
deployments/<name>.yaml.`,
		Args: a.deploymentArg,
		RunE: func(c *cobra.Command, args []string) error {
			p, err := a.project()
			if err != nil {
				return err
			}
			dep, err := p.load(args[0], a.Environ, p.reg)
			if err != nil {
				return err
			}
			users := map[string][]string{}
			for _, t := range p.reg.Tasks() {
				for _, v := range t.Vars {
					users[v.Name] = append(users[v.Name], t.Name)
				}
			}
			declared := map[string]runtime.Var{}
			for _, v := range p.reg.Vars() {
				declared[v.Name] = v
			}
			names := map[string]bool{}
			for _, v := range dep.Vars() {
				names[v.Name] = true
			}
			for n := range declared {
				names[n] = true
			}
			t := table{
				before: []string{fmt.Sprintf("deployment %s (production: %t, listen: %s)", dep.Name, dep.Production, dep.Listen)},
				header: []string{"NAME", "VALUE", "SOURCE", "USED BY"},
				after: []string{"", fmt.Sprintf("precedence: process environment > %s > %s",
					filepath.Join("deployments", dep.Name+".local.env"), filepath.Join("deployments", dep.Name+".yaml"))},
			}
			js := struct {
				Deployment string   `json:"deployment"`
				Production bool     `json:"production"`
				Listen     string   `json:"listen"`
				Vars       []envVar `json:"vars"`
				// Sections: each task's Describe of the deployment's sections.
				Sections map[string][]string `json:"sections,omitempty"`
			}{dep.Name, dep.Production, dep.Listen, []envVar{}, nil}
			for _, n := range slices.Sorted(maps.Keys(names)) {
				v := dep.Var(n)
				d, isDeclared := declared[n]
				row := envVar{Name: n, Value: v.Display(), Source: v.Source, Masked: v.Masked,
					Required: isDeclared && !d.Optional, UsedBy: append([]string{}, users[n]...), Default: d.Default}
				source, shown := v.Source, row.Value
				if v.Value == "" {
					row.Source, source = "unset", "unset"
					switch {
					case row.Required:
						source = "MISSING (required)"
					case d.Default != "":
						source, shown = "default", d.Default
					}
				}
				js.Vars = append(js.Vars, row)
				t.add(n, shown, source, orDash(strings.Join(users[n], ",")))
			}
			for _, tk := range p.reg.Tasks() {
				if tk.Describe == nil {
					continue
				}
				lines, err := tk.Describe(dep)
				if err != nil {
					return fmt.Errorf("task %s: %w", tk.Name, err)
				}
				if js.Sections == nil {
					js.Sections = map[string][]string{}
				}
				js.Sections[tk.Name] = lines
				t.after = append(t.after, "", tk.Name+":")
				for _, l := range lines {
					t.after = append(t.after, "  "+l)
				}
			}
			return out.print(c.OutOrStdout(), js, t)
		},
	}
	out.flags(c)
	return c
}
