package cli

import (
	"encoding/json"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// listing is the --json / --wide pair of every listing command.
type listing struct{ json, wide bool }

func (l *listing) flags(c *cobra.Command) {
	c.Flags().BoolVar(&l.json, "json", false, "print JSON: every field, nothing shortened")
	c.Flags().BoolVar(&l.wide, "wide", false, "do not shorten long values to fit 100 columns")
}

// print writes v as indented JSON with --json, else the table (header,
// table, footer lines around it).
func (l listing) print(w io.Writer, v any, t table) error {
	if l.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return t.write(w, l.wide)
}

// table is rows of text cells under a header, with optional lines before
// and after it.
type table struct {
	before []string
	header []string
	rows   [][]string
	after  []string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

const (
	gap      = 2
	minWidth = 8 // a column is shortened to no less (or its header)
	ellipsis = "…"
)

// write prints the table with columns two spaces apart. Unless wide, the
// widest columns are shortened until a row fits helpWidth; a shortened
// value ends with an ellipsis.
func (t *table) write(w io.Writer, wide bool) error {
	n := len(t.header)
	widths := make([]int, n)
	floor := make([]int, n)
	for i, h := range t.header {
		widths[i] = utf8.RuneCountInString(h)
		floor[i] = max(widths[i], minWidth)
	}
	for _, r := range t.rows {
		for i := 0; i < n && i < len(r); i++ {
			widths[i] = max(widths[i], utf8.RuneCountInString(r[i]))
		}
	}
	if !wide {
		total := gap * (n - 1)
		for _, x := range widths {
			total += x
		}
		for total > helpWidth {
			widest := -1
			for i, x := range widths {
				if x > floor[i] && (widest < 0 || x >= widths[widest]) {
					widest = i
				}
			}
			if widest < 0 {
				break
			}
			widths[widest]--
			total--
		}
	}
	var b strings.Builder
	for _, l := range t.before {
		b.WriteString(l + "\n")
	}
	line := func(cells []string) {
		var l strings.Builder
		for i := 0; i < n; i++ {
			c := ""
			if i < len(cells) {
				c = shorten(cells[i], widths[i])
			}
			l.WriteString(c)
			if i < n-1 {
				l.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+gap))
			}
		}
		b.WriteString(strings.TrimRight(l.String(), " ") + "\n")
	}
	line(t.header)
	for _, r := range t.rows {
		line(r)
	}
	for _, l := range t.after {
		b.WriteString(l + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shorten cuts s to width runes, the last one an ellipsis.
func shorten(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + ellipsis
}

// orDash is s, or "-" when it is empty (a table cell is never blank).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
