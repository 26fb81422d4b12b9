package deployment

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskrun/taskrun/internal/suggest"
)

// keysOf lists the mapstructure keys of a struct type, sorted.
func keysOf(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ","); k != "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// aliases are keys from other tools with a known equivalent here.
var aliases = map[string]string{"secret": "masked", "port": "listen", "addr": "listen", "address": "listen", "env": "vars", "variables": "vars"}

// checkKeys names every unknown key of a deployment file with its line and
// the closest known key: viper's own message has neither. Keys are those
// of the file struct, nested structs (runs:) and lists of structs (vars:)
// included; sections declared as any (upload:, schedules:) are their
// readers' to check.
func checkKeys(path string, src []byte) []error {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil || len(root.Content) == 0 {
		return nil // reported by whoever parses it
	}
	var errs []error
	var walk func(n *yaml.Node, t reflect.Type, where string)
	walk = func(n *yaml.Node, t reflect.Type, where string) {
		switch {
		case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
			for i, item := range n.Content {
				walk(item, t.Elem(), fmt.Sprintf("%s[%d]", where, i))
			}
		case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
			known := keysOf(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i]
				k := strings.ToLower(key.Value)
				f, ok := fieldOf(t, k)
				if ok {
					walk(n.Content[i+1], f.Type, strings.TrimPrefix(where+"."+k, "."))
					continue
				}
				hint := suggest.Hint(k, known)
				if a, ok := aliases[k]; ok && hint == "" && slices.Contains(known, a) {
					hint = " (did you mean " + a + "?)"
				}
				prefix := ""
				if where != "" {
					prefix = where + ": "
				}
				errs = append(errs, fmt.Errorf("%s:%d: %sunknown key %q%s; known keys: %s", path, key.Line, prefix, key.Value, hint, strings.Join(known, ", ")))
			}
		}
	}
	walk(root.Content[0], reflect.TypeFor[file](), "")
	return errs
}

// fieldOf finds the field of struct t whose mapstructure key is k.
func fieldOf(t reflect.Type, k string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ","); name == k {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// Placeholders lists the settings and variables whose value is still a
// template's placeholder: it contains YOUR- (or YOUR_), or it is a URL of
// a reserved example domain (example, *.example, example.com, .net,
// .org). Each entry is "NAME=value", or just the name for a masked value.
// Only the named variables are looked at (those the tasks at hand
// declare), and the url setting when withURL. A production deployment
// refuses to start with any.
func (d *Deployment) Placeholders(names []string, withURL bool) []string {
	var out []string
	if withURL && IsPlaceholder(d.URL) {
		out = append(out, "url="+d.URL)
	}
	for _, n := range names {
		v := d.Var(n)
		if !IsPlaceholder(v.Value) {
			continue
		}
		if v.Masked {
			out = append(out, v.Name)
		} else {
			out = append(out, v.Name+"="+v.Display())
		}
	}
	return out
}

// IsPlaceholder reports whether a value looks like a template's
// placeholder (see Placeholders).
func IsPlaceholder(v string) bool {
	up := strings.ToUpper(v)
	if strings.Contains(up, "YOUR-") || strings.Contains(up, "YOUR_") {
		return true
	}
	if !strings.Contains(v, "://") {
		return false
	}
	u, err := url.Parse(v)
	if err != nil {
		return false
	}
	h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	for _, d := range []string{"example", "example.com", "example.net", "example.org"} {
		if h == d || strings.HasSuffix(h, "."+d) {
			return true
		}
	}
	return false
}
