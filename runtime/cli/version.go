package cli

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// versionInfo is what `runtime version` prints.
type versionInfo struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func (a *App) versionCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "print the module version, commit and Go version",
		Args:  noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			read := a.BuildInfo
			if read == nil {
				read = debug.ReadBuildInfo
			}
			v := versionInfo{Version: "unknown", Go: goruntime.Version(), Platform: goruntime.GOOS + "/" + goruntime.GOARCH}
			if bi, ok := read(); ok {
				v.Module, v.Version, v.Go = bi.Main.Path, bi.Main.Version, bi.GoVersion
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						v.Commit = s.Value
					case "vcs.time":
						v.Time = s.Value
					case "vcs.modified":
						v.Modified = s.Value == "true"
					}
				}
			}
			if asJSON {
				return listing{json: true}.print(c.OutOrStdout(), v, table{})
			}
			commit := "unknown (built without VCS stamping: go build -buildvcs=true in a git checkout)"
			if v.Commit != "" {
				commit = v.Commit
				if v.Time != "" {
					commit += " (" + v.Time + ")"
				}
				if v.Modified {
					commit += ", with uncommitted changes"
				}
			}
			_, err := fmt.Fprintf(c.OutOrStdout(), "runtime %s %s\ncommit %s\n%s %s\n", v.Module, v.Version, commit, v.Go, v.Platform)
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
