package deployment_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskrun/taskrun/runtime/deployment"
)

func TestSectionKeepsCaseAndLines(t *testing.T) {
	d := load(t, "sections", deployment.Options{})
	file := filepath.Join(testdata, "sections.yaml")
	if d.File != file {
		t.Errorf("File = %q, want %q", d.File, file)
	}
	up, ok := d.Section("upload")
	if !ok || up.File != file {
		t.Fatalf("Section(upload) = %+v, %t", up, ok)
	}
	var rules struct {
		Default string                       `yaml:"default"`
		Rules   map[string]map[string]string `yaml:"rules"`
	}
	if err := up.Node.Decode(&rules); err != nil {
		t.Fatal(err)
	}
	if rules.Default != "deny" || rules.Rules["TodoLists"]["owner"] != "ownerID" {
		t.Errorf("upload decoded as %+v: case lost?", rules)
	}
	// rules -> TodoLists: the key node of the entry is on line 5.
	entry := up.Node.Content[3].Content[0]
	if entry.Value != "TodoLists" {
		t.Fatalf("entry %q", entry.Value)
	}
	if got, want := up.Pos(entry), file+":5"; got != want {
		t.Errorf("Pos = %q, want %q", got, want)
	}
	if err := up.Errorf(entry, "bad %s", "rule"); err.Error() != file+":5: bad rule" {
		t.Errorf("Errorf = %v", err)
	}

	sch, ok := d.Section("schedules")
	if !ok {
		t.Fatal("no schedules section")
	}
	var list []struct {
		Name   string         `yaml:"name"`
		Params map[string]any `yaml:"params"`
	}
	if err := sch.Node.Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "Nightly" || list[0].Params["Since"] != "24h" {
		t.Errorf("schedules decoded as %+v", list)
	}
	if sch.Node.Content[0].Line != 8 {
		t.Errorf("first schedule on line %d, want 8", sch.Node.Content[0].Line)
	}

	// Each call returns its own copy.
	up.Node.Content[1].Value = "allow"
	again, _ := d.Section("upload")
	if again.Node.Content[1].Value != "deny" {
		t.Error("changing a returned section changed the deployment's")
	}
	if _, ok := d.Section("nope"); ok {
		t.Error("Section(nope) reported present")
	}
}

func TestSectionsOfNew(t *testing.T) {
	d := deployment.New("x", false, nil)
	if _, ok := d.Section("upload"); ok {
		t.Error("a deployment from New has no sections")
	}
	if err := d.SetSections("x.yaml", []byte("upload:\n  default: allow\n")); err != nil {
		t.Fatal(err)
	}
	sec, ok := d.Section("upload")
	if !ok || sec.Pos(nil) != "x.yaml:2" {
		t.Errorf("section %+v %t, pos %s", sec, ok, sec.Pos(nil))
	}
	for _, bad := range []string{"[1, 2]", "upload: [unclosed"} {
		if err := d.SetSections("x.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "x.yaml") {
			t.Errorf("SetSections(%q) = %v, want an error naming x.yaml", bad, err)
		}
	}
}
