package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Verdict of a row against its target.
const (
	NoTarget = iota
	Pass
	Miss
)

// Row is one line of the throughput table: a path measured beside its limit.
type Row struct {
	Path      string
	Rate      float64 // per second, in Unit
	Unit      string  // "req/s" when empty
	P50, P99  time.Duration
	Limit     float64 // the limit's rate, same unit; 0: none
	LimitName string  // what the limit is
	MinRatio  float64 // target: Rate/Limit >= MinRatio (0: none)
	MinRate   float64 // target: Rate >= MinRate (0: none)
	MaxTail   float64 // target: P99 <= MaxTail * P50 (0: none)
	Note      string
	Err       string // the measurement failed (partly): shown instead of a verdict
}

// Ratio is Rate/Limit, or NaN without a limit.
func (r Row) Ratio() float64 {
	if r.Limit <= 0 {
		return math.NaN()
	}
	return r.Rate / r.Limit
}

// Target describes the row's target, "" when none.
func (r Row) Target() string {
	switch {
	case r.MinRatio > 0:
		return fmt.Sprintf(">= %s", trimFloat(r.MinRatio))
	case r.MinRate > 0:
		return fmt.Sprintf(">= %s %s", human(r.MinRate), r.unit())
	case r.MaxTail > 0:
		return fmt.Sprintf("p99 <= %sx p50", trimFloat(r.MaxTail))
	}
	return ""
}

// Verdict is Pass, Miss or NoTarget. A row with an error never passes.
func (r Row) Verdict() int {
	switch {
	case r.MinRatio > 0:
		if r.Err == "" && r.Ratio() >= r.MinRatio {
			return Pass
		}
		return Miss
	case r.MinRate > 0:
		if r.Err == "" && r.Rate >= r.MinRate {
			return Pass
		}
		return Miss
	case r.MaxTail > 0:
		if r.Err == "" && r.P50 > 0 && float64(r.P99) <= r.MaxTail*float64(r.P50) {
			return Pass
		}
		return Miss
	}
	return NoTarget
}

func (r Row) unit() string {
	if r.Unit == "" {
		return "req/s"
	}
	return r.Unit
}

// Metric is one line of the resources table.
type Metric struct {
	Name   string
	Value  string
	Target string
	// Verdict: NoTarget, Pass or Miss.
	Verdict int
	Note    string
}

func verdictText(v int, err string) string {
	switch {
	case err != "":
		return "ERROR"
	case v == Pass:
		return "pass"
	case v == Miss:
		return "MISS"
	}
	return ""
}

// human formats a rate with three significant digits and a k/M suffix.
func human(v float64) string {
	switch {
	case math.IsNaN(v) || v <= 0:
		return "-"
	case v >= 1e6:
		return trimFloat3(v/1e6) + "M"
	case v >= 1e3:
		return trimFloat3(v/1e3) + "k"
	}
	return trimFloat3(v)
}

func trimFloat3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// dur formats a latency with three significant digits.
func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return trimFloat3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return trimFloat3(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return trimFloat3(d.Seconds()) + "s"
}

func ratioText(r float64) string {
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

var rowHeader = []string{"path", "rate", "p50", "p99", "limit", "limit is", "ratio", "target", "result", "note"}

// oneLine makes a cell of s: one line, at most 300 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func (r Row) cells() []string {
	note := r.Note
	if r.Err != "" {
		note = oneLine(strings.TrimSpace(note + " error: " + r.Err))
	}
	return []string{
		r.Path,
		human(r.Rate) + " " + r.unit(),
		dur(r.P50), dur(r.P99),
		human(r.Limit), r.LimitName,
		ratioText(r.Ratio()), r.Target(), verdictText(r.Verdict(), r.Err), note,
	}
}

var metricHeader = []string{"metric", "value", "target", "result", "note"}

func (m Metric) cells() []string {
	return []string{m.Name, m.Value, m.Target, verdictText(m.Verdict, ""), oneLine(m.Note)}
}

// writeText prints both tables aligned for a terminal.
func writeText(w io.Writer, rows []Row, metrics []Metric) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(rowHeader, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r.cells(), "\t"))
	}
	tw.Flush()
	if len(metrics) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(metricHeader, "\t"))
	for _, m := range metrics {
		fmt.Fprintln(tw, strings.Join(m.cells(), "\t"))
	}
	tw.Flush()
}

// writeMarkdown writes both tables as Markdown.
func writeMarkdown(w io.Writer, rows []Row, metrics []Metric) {
	mdTable(w, rowHeader, func(yield func([]string)) {
		for _, r := range rows {
			yield(r.cells())
		}
	})
	if len(metrics) == 0 {
		return
	}
	fmt.Fprintln(w)
	mdTable(w, metricHeader, func(yield func([]string)) {
		for _, m := range metrics {
			yield(m.cells())
		}
	})
}

func mdTable(w io.Writer, header []string, rows func(func([]string))) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(header, " | "))
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	rows(func(cells []string) {
		esc := make([]string, len(cells))
		for i, c := range cells {
			esc[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(esc, " | "))
	})
}
