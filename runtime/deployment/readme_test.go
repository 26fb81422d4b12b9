package deployment

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The README's deployment reference has a row for every key the loader
// accepts, nested ones (runs.retention) by their dotted path.
func TestREADMEReference(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var paths []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for _, k := range keysOf(t) {
			f, _ := fieldOf(t, k)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+k+".")
				continue
			}
			paths = append(paths, prefix+k)
		}
	}
	walk(reflect.TypeFor[file](), "")
	if len(paths) < 10 {
		t.Fatalf("keys %v", paths)
	}
	for _, p := range paths {
		if !strings.Contains(readme, "\n| `"+p+"` | ") {
			t.Errorf("README.md's deployment reference has no row for %s", p)
		}
	}
}
