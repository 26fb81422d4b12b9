package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// helpWidth is the width help text and tables fit in.
const helpWidth = 100

// synopsisWidth bounds the first column of the command list; a longer
// synopsis has its summary on the next line.
const synopsisWidth = 44

// synopsis is a command's name, arguments and flags:
// "deploy <deployment> [--listen HOST:PORT]".
func synopsis(c *cobra.Command) string {
	s := c.Use
	c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		if name, _ := pflag.UnquoteUsage(f); name != "" {
			s += " [--" + f.Name + " " + name + "]"
		} else {
			s += " [--" + f.Name + "]"
		}
	})
	return s
}

// wrapSynopsis breaks a synopsis longer than the help's width between
// its flags, continuing lines under the command's arguments.
func wrapSynopsis(s string) string {
	var lines []string
	cur, width := "", 2 // the indent writeHelp puts before it
	for _, part := range strings.SplitAfter(s, "] ") {
		if cur != "" && width+len(cur)+len(part) > helpWidth {
			lines = append(lines, strings.TrimRight(cur, " "))
			cur, width = "", 6
		}
		cur += part
	}
	return strings.Join(append(lines, cur), "\n      ")
}

// writeHelp prints a command's help: what it does, its usage line, its
// subcommands, its flags, then the global ones. The README's CLI section
// is this text (TestREADME).
func writeHelp(w io.Writer, c *cobra.Command) {
	c.InitDefaultHelpFlag()
	var b strings.Builder
	if c.Long != "" {
		b.WriteString(strings.TrimSpace(c.Long))
	} else {
		fmt.Fprintf(&b, "%s: %s", c.CommandPath(), c.Short)
	}
	b.WriteString("\n\nUsage:\n")
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "  %s <command> [flags]\n", c.CommandPath())
		b.WriteString("\nCommands:\n")
		var subs [][2]string
		width := 0
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() || s.Name() == "help" {
				subs = append(subs, [2]string{synopsis(s), s.Short})
				if w := len(subs[len(subs)-1][0]); w <= synopsisWidth {
					width = max(width, w)
				}
			}
		}
		for _, s := range subs {
			if len(s[0]) > width {
				fmt.Fprintf(&b, "  %s\n  %-*s  %s\n", wrapSynopsis(s[0]), width, "", s[1])
			} else {
				fmt.Fprintf(&b, "  %-*s  %s\n", width, s[0], s[1])
			}
		}
	} else {
		fmt.Fprintf(&b, "  %s\n", c.UseLine())
	}
	if c.Example != "" {
		fmt.Fprintf(&b, "\nExamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(&b, "\nFlags:\n%s", c.LocalFlags().FlagUsagesWrapped(helpWidth))
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(&b, "\nGlobal flags:\n%s", c.InheritedFlags().FlagUsagesWrapped(helpWidth))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\nRun '%s help <command>' for a command's flags.\n", c.CommandPath())
	}
	io.WriteString(w, b.String())
}
