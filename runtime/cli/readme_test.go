package cli_test

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/taskrun/taskrun/runtime/cli"
)

var update = flag.Bool("update", false, "rewrite the README's CLI section from the help text")

// The README's CLI section is `runtime help`, indented as a code block;
// -update rewrites it. Every line of every help fits 100 columns.
func TestREADME(t *testing.T) {
	const path = "../../README.md"
	r := run(t, nil, nil, "help")
	r.check(t, cli.OK, nil, nil)
	var block strings.Builder
	for _, l := range strings.Split(strings.TrimRight(r.stdout, "\n"), "\n") {
		if l != "" {
			block.WriteString("    " + l)
		}
		block.WriteString("\n")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)(<!-- runtime help: begin[^\n]*-->\n).*?(<!-- runtime help: end -->)`)
	if !re.Match(b) {
		t.Fatal("README.md has no runtime help markers")
	}
	want := re.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := re.FindSubmatch(m)
		return []byte(string(sub[1]) + "\n" + block.String() + "\n" + string(sub[2]))
	})
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if string(want) != string(b) {
		t.Error("README.md's CLI section differs from `runtime help`: run go test ./runtime/cli -run TestREADME -update")
	}
	for _, name := range append(commands(t), "") {
		h := run(t, nil, nil, "help", name)
		if name == "" {
			h = r // the root's help
		}
		for _, l := range strings.Split(h.stdout, "\n") {
			if utf8.RuneCountInString(l) > 100 {
				t.Errorf("help %s has a line over 100 columns:\n%s", name, l)
			}
		}
	}
}
