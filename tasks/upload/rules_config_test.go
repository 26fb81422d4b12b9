package upload

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/taskrun/taskrun/internal/store/storetest"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/cli"
	"github.com/taskrun/taskrun/runtime/deployment"
	"github.com/taskrun/taskrun/runtime/runtimetest"
)

// startWithRules starts upload on a deployment whose file is yamlText,
// with keys, a database and vars; it returns the start error and the logs.
func startWithRules(t *testing.T, prod bool, yamlText string, vars map[string]string) (error, string) {
	t.Helper()
	kv, _ := testKeys(t)
	delete(kv, "UPLOAD_ALLOW")
	kv["MONGO_URI"], kv["MONGO_DATABASE"] = storetest.URI(t), storetest.DatabaseName(t)
	for k, v := range vars {
		kv[k] = v
	}
	dep := deployment.New("testing", prod, kv)
	if yamlText != "" {
		if err := dep.SetSections("deployments/testing.yaml", []byte(yamlText)); err != nil {
			t.Fatal(err)
		}
	}
	h, err := runtimetest.Start(t, dep, Task())
	return err, h.Logs.String()
}

// TestRulesRefusedAtStart: every problem of the rules in one message, each
// with the file, the line and the entry.
func TestRulesRefusedAtStart(t *testing.T) {
	bad := `production: false
upload:
  default: maybe
  colour: red
  rules:
    system.x: deny
    rejects: deny
    lists:
      owner: owner_id
      writable: [name]
      immutable: [created_at]
      types: {name: uuid}
      extra: 1
    todos: maybe
    a$b: deny
    events:
      owner: user_id
      types: {_id: date, a..b: int, user_id: date}
    notes:
      immutable: [a, a, $x, _id]
      writable: []
    notes2:
      owner: n
      types: {n.sub: objectid}
    notes3:
      owner: a.b
`
	err, _ := startWithRules(t, false, bad, map[string]string{"UPLOAD_REFUSED_COLLECTION": "rejects"})
	if err == nil {
		t.Fatal("the deployment started")
	}
	f := "deployments/testing.yaml:"
	for _, want := range []string{
		f + "3: upload.default: want allow or deny",
		f + "4: upload.colour: unknown key",
		f + "6: upload.rules.system.x: table \"system.x\" is not allowed",
		f + "7: upload.rules.rejects: table \"rejects\" is the dead-letter collection",
		f + "9: upload.rules.lists.owner: owner_id is not in writable",
		f + "11: upload.rules.lists.immutable: created_at is not in writable",
		f + "12: upload.rules.lists.types.name: unknown type \"uuid\"",
		f + "13: upload.rules.lists.extra: unknown key (want owner, immutable, writable or types)",
		f + "14: upload.rules.todos: want deny, allow or a mapping",
		f + "15: upload.rules.a$b: table \"a$b\" is not allowed",
		f + "18: upload.rules.events.types._id: the type of _id is UPLOAD_ID_MODE's",
		f + "18: upload.rules.events.types.a..b: empty segment",
		f + "18: upload.rules.events.types.user_id: the owner field is compared with the caller's user id",
		f + "20: upload.rules.notes.immutable: a is listed twice",
		f + "20: upload.rules.notes.immutable: field name \"$x\" must not start with $",
		f + "20: upload.rules.notes.immutable: _id is the document's id",
		f + "21: upload.rules.notes.writable: no field is writable: say deny",
		f + "24: upload.rules.notes2.types.n.sub: the owner field holds the caller's user id",
		f + "26: upload.rules.notes3.owner: field name \"a.b\" must not contain . at the top level",
		"has 19 problem(s)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not contain %q:\n%v", want, err)
		}
	}
}

// TestRulesProduction: production is closed by default.
func TestRulesProduction(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, errHas, logHas string
	}{
		{"no upload section", "production: true\n", "a production deployment needs write rules", ""},
		{"an empty upload section", "upload:\n", "a production deployment needs write rules", ""},
		{"rules: but none", "upload:\n  rules: {}\n", "a production deployment needs write rules", ""},
		{"default allow, announced", "upload:\n  default: allow\n", "", "upload.default is allow: collections without a rule accept every user's writes"},
		{"default deny and no rules: closed", "upload:\n  default: deny\n", "", `"rules":0`},
		{"rules", corpusRules, "", `"rules":5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, logs := startWithRules(t, true, tc.yaml, nil)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs, tc.logHas) {
				t.Errorf("the log does not contain %q:\n%s", tc.logHas, logs)
			}
		})
	}
	// A development deployment without rules starts, and says so.
	err, logs := startWithRules(t, false, "", nil)
	if err != nil || !strings.Contains(logs, "NO WRITE RULES") {
		t.Errorf("error %v, logs:\n%s", err, logs)
	}
}

// TestRulesNeedWhatTheyCondition: owners need authenticated callers;
// conditioned writes are not combined with transactions (yet).
func TestRulesNeedWhatTheyCondition(t *testing.T) {
	err, _ := startWithRules(t, false, corpusRules, map[string]string{"UPLOAD_AUTH": "off"})
	if err == nil || !strings.Contains(err.Error(), "UPLOAD_AUTH=off, but the rules of events, lists, profiles, todos name an owner") {
		t.Errorf("auth off: %v", err)
	}
	err, _ = startWithRules(t, false, "upload:\n  default: allow\n  rules: {audit_log: deny, events: {types: {at: date}}}\n", map[string]string{"UPLOAD_AUTH": "off"})
	if err != nil {
		t.Errorf("rules without owners need no authentication: %v", err)
	}
	err, _ = startWithRules(t, false, corpusRules, map[string]string{"UPLOAD_TRANSACTIONS": "true"})
	if err == nil || !strings.Contains(err.Error(), "UPLOAD_TRANSACTIONS=true cannot be combined yet with rules that condition writes") {
		t.Errorf("transactions: %v", err)
	}
}

// TestRulesStrict: UPLOAD_REFUSED=strict keeps its meaning: a rule's
// refusal fails the batch with 422 and nothing is written.
func TestRulesStrict(t *testing.T) {
	h := newRulesHost(t, corpusRules, map[string]string{"UPLOAD_REFUSED": "strict"})
	status, m := h.as(t, "bob", batchOf(
		`{"op":"PUT","table":"lists","id":"lb1","data":{"name":"B1","owner_id":"bob"}}`,
		`{"op":"PUT","table":"lists","id":"la1","data":{"name":"x","owner_id":"alice"}}`,
	))
	if status != 422 || !strings.Contains(m["error"].(string), "batch[1]: forbidden by upload.rules.lists.owner: owner_id must be the caller's user id") {
		t.Fatalf("status %d: %v", status, m)
	}
	if rs := refusedList(t, m); len(rs) != 1 || rs[0].Rule != "upload.rules.lists.owner" || rs[0].Reason != ReasonForbidden {
		t.Errorf("refused %+v", rs)
	}
	wroteNothing(t, h.db)
}

// TestRulesOwnerTyped: an owner field typed objectid holds the caller's id
// as an ObjectId, and the write's condition compares it so.
func TestRulesOwnerTyped(t *testing.T) {
	h := newRulesHost(t, "upload:\n  rules:\n    notes:\n      owner: uid\n      types: {uid: objectid}\n", nil)
	const a, b = "65f1a2b3c4d5e6f708091a2b", "65f1a2b3c4d5e6f708091a2c"
	h.mustApplyAs(t, a, batchOf(`{"op":"PUT","table":"notes","id":"n1","data":{"uid":"`+a+`","t":"A"}}`))
	status, m := h.as(t, b, batchOf(
		`{"op":"PATCH","table":"notes","id":"n1","data":{"t":"B"}}`,
		`{"op":"PUT","table":"notes","id":"n2","data":{"uid":"`+b+`"}}`,
	))
	if rs := refusedList(t, m); status != 200 || len(rs) != 1 || rs[0].Index != 0 {
		t.Fatalf("status %d, refused %+v", status, rs)
	}
	d := docs(t, h.db, "notes")
	if d["n1"]["t"] != "A" || d["n1"]["uid"] != mustOID(t, a) || d["n2"]["uid"] != mustOID(t, b) {
		t.Errorf("notes %v", d)
	}
	h.mustApplyAs(t, a, batchOf(`{"op":"PATCH","table":"notes","id":"n1","data":{"t":"A2"}}`))
	// A subject that is no ObjectId owns nothing here.
	status, m = h.as(t, "carol", batchOf(`{"op":"DELETE","table":"notes","id":"n3"}`))
	if rs := refusedList(t, m); status != 200 || len(rs) != 1 || !strings.Contains(rs[0].Message, "not a valid objectid") {
		t.Errorf("status %d, refused %+v", status, rs)
	}
}

// TestRulesShownByEnv: `runtime env` prints the effective rules, and
// refuses bad ones with the file and line.
func TestRulesShownByEnv(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		if err := os.MkdirAll(filepath.Join(root, "deployments"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "deployments", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("testing.yaml", "production: false\n"+corpusRules)
	write("broken.yaml", "production: false\nupload:\n  rules:\n    lists: {owner: [a]}\n")
	run := func(args ...string) (int, string, string) {
		var out, errb runtimetest.Buffer
		code := cli.Main(cli.App{Args: append(args, "--root", root), Stdout: &out, Stderr: &errb, Tasks: []runtime.Task{Task()}})
		return code, out.String(), errb.String()
	}
	code, out, errs := run("env", "testing")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"upload:\n  write rules of " + filepath.Join(root, "deployments", "testing.yaml"),
		"  default: deny: collections without a rule are closed to clients\n  audit_log: deny (closed to clients)\n  events: owner user_id; types amount decimal, list_id objectid, starts_at date\n" +
			"  lists: owner owner_id; immutable owner_id, created_at\n  profiles: owner _id; writable display_name, avatar\n  todos: owner created_by\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("env does not print %q:\n%s", want, out)
		}
	}
	code, out, _ = run("env", "testing", "--json")
	var js struct {
		Sections map[string][]string `json:"sections"`
	}
	if err := json.Unmarshal([]byte(out), &js); code != 0 || err != nil || len(js.Sections["upload"]) < 7 {
		t.Errorf("env --json: exit %d, %v: %s", code, err, out)
	}
	code, _, errs = run("env", "broken")
	if code != 1 || !strings.Contains(errs, "broken.yaml:4: upload.rules.lists.owner: want a field name, or _id") {
		t.Errorf("exit %d: %s", code, errs)
	}
}

// TestProductionDeploymentRules: the committed production deployment's
// example rule set is valid.
func TestProductionDeploymentRules(t *testing.T) {
	dep, err := deployment.Load(filepath.Join("..", "..", "deployments"), "production", deployment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lines, err := describeRules(dep)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"default: deny", "lists: owner owner_id", "todos: owner created_by", "profiles: owner _id; writable"} {
		if !strings.Contains(text, want) {
			t.Errorf("production rules lack %q:\n%s", want, text)
		}
	}
}

func mustOID(t *testing.T, hex string) bson.ObjectID {
	t.Helper()
	oid, err := bson.ObjectIDFromHex(hex)
	if err != nil {
		t.Fatal(err)
	}
	return oid
}
