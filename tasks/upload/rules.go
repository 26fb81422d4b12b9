package upload

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Section is the top-level key of the deployment file that holds upload's
// write rules.
const Section = "upload"

// rules are the upload: section of a deployment file: who may write what,
// and in which types. See README "Write rules".
//
//	upload:
//	  default: deny            # collections without a rule: allow | deny
//	  rules:
//	    lists:
//	      owner: owner_id      # PUT must carry the caller; PATCH/DELETE only where it does
//	      immutable: [owner_id, created_at]
//	    profiles:
//	      owner: _id           # one document per user, keyed by the user id
//	      writable: [display_name, avatar]
//	    audit_log: deny
//	    events:
//	      owner: user_id
//	      types: {starts_at: date, list_id: objectid, amount: decimal}
type rules struct {
	file     string
	allow    bool // the default for collections without a rule
	explicit bool // default: is written in the file
	colls    map[string]*rule
	decimals []string // the fields typed decimal, as coll.path, sorted
}

// rule is one collection's entry.
type rule struct {
	coll   string
	closed bool // "deny": clients may not write it at all
	open   bool // "allow": no restriction
	// owner is the field matched against the token's subject: "" none,
	// "_id" the document id itself.
	owner     string
	ownerType fieldType // the owner field's entry in types (0: text)
	immutable []string  // may be set on insert, never changed
	writable  []string  // nil: any field; else the only fields a client may set
	types     []typed   // shorter paths first, so that a json parent converts before its children
}

// typed is one entry of types.
type typed struct {
	path string   // as written: address.zip
	segs []string // address, zip
	t    fieldType
}

// Names of the rules, as refusals and listings give them.
func (r *rules) defaultName() string { return Section + ".default" }
func (r *rule) name(key ...string) string {
	return strings.Join(append([]string{Section, "rules", r.coll}, key...), ".")
}

// guarded reports whether the rule adds conditions to the writes
// themselves (an owner field, immutable fields, or writable's partial
// replacement).
func (r *rule) guarded() bool {
	return r.owner != "" && r.owner != "_id" || len(r.immutable) > 0 || r.writable != nil
}

func (r *rule) isWritable(f string) bool { return r.writable == nil || slices.Contains(r.writable, f) }

// loadRules reads the upload: section of dep, or returns nil when there is
// none. Every problem is reported at once, each with the file, the line
// and the entry.
func loadRules(dep *deployment.Deployment, deadLetter string) (*rules, error) {
	sec, ok := dep.Section(Section)
	if !ok {
		return nil, nil
	}
	p := &ruleParser{sec: sec, deadLetter: deadLetter}
	r := p.parse()
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("the %s: section of the deployment file has %d problem(s):\n  %s",
			Section, len(p.errs), p.problems())
	}
	return r, nil
}

type ruleParser struct {
	sec        deployment.Section
	deadLetter string // the dead-letter collection, which no rule may name
	errs       []string
	lines      []int // of errs, to list them in the file's order
}

func (p *ruleParser) bad(n *yaml.Node, entry, format string, args ...any) {
	p.errs = append(p.errs, p.sec.Errorf(n, "%s: %s", entry, fmt.Sprintf(format, args...)).Error())
	p.lines = append(p.lines, n.Line)
}

// problems are the errors in the order of their lines.
func (p *ruleParser) problems() string {
	idx := make([]int, len(p.errs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return p.lines[a] - p.lines[b] })
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = p.errs[j]
	}
	return strings.Join(out, "\n  ")
}

// mapping returns the keys and values of a mapping node, reporting
// duplicate keys; nil when n is not a mapping.
func (p *ruleParser) mapping(n *yaml.Node, entry string) ([]*yaml.Node, []*yaml.Node, bool) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, nil, false
	}
	var keys, vals []*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if seen[k.Value] {
			p.bad(k, entry+"."+k.Value, "given twice")
			continue
		}
		seen[k.Value] = true
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals, true
}

func (p *ruleParser) parse() *rules {
	r := &rules{file: p.sec.File, colls: map[string]*rule{}}
	n := p.sec.Node
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return r // "upload:" with nothing under it: no rules, default deny
	}
	keys, vals, ok := p.mapping(n, Section)
	if !ok {
		p.bad(n, Section, "want a mapping with default: and rules:")
		return r
	}
	for i, k := range keys {
		v := vals[i]
		switch k.Value {
		case "default":
			switch v.Value {
			case "allow", "deny":
				r.allow, r.explicit = v.Value == "allow", true
			default:
				p.bad(v, Section+".default", "want allow or deny, got %s", quoteShort(v.Value))
			}
		case "rules":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue
			}
			ck, cv, ok := p.mapping(v, Section+".rules")
			if !ok {
				p.bad(v, Section+".rules", "want a mapping of collection names to rules")
				continue
			}
			for j, c := range ck {
				if ru := p.rule(c, cv[j]); ru != nil {
					r.colls[ru.coll] = ru
					for _, ty := range ru.types {
						if ty.t == tDecimal {
							r.decimals = append(r.decimals, ru.coll+"."+ty.path)
						}
					}
				}
			}
		default:
			p.bad(k, Section+"."+k.Value, "unknown key (want default or rules)")
		}
	}
	slices.Sort(r.decimals)
	return r
}

func (p *ruleParser) rule(key, n *yaml.Node) *rule {
	r := &rule{coll: key.Value}
	entry := r.name()
	if err := checkCollection(r.coll); err != nil {
		p.bad(key, entry, "%v", err)
	} else if r.coll == p.deadLetter {
		p.bad(key, entry, "table %s is the dead-letter collection (%s): clients never write it", quoteShort(r.coll), VarRefusedColl)
	}
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "deny":
			r.closed = true
		case "allow":
			r.open = true
		default:
			p.bad(n, entry, "want deny, allow or a mapping of owner, immutable, writable, types; got %s", quoteShort(n.Value))
		}
		return r
	}
	keys, vals, ok := p.mapping(n, entry)
	if !ok {
		p.bad(n, entry, "want deny, allow or a mapping of owner, immutable, writable, types")
		return r
	}
	var typesNode, immNode, ownerNode *yaml.Node
	for i, k := range keys {
		v := vals[i]
		switch k.Value {
		case "owner":
			ownerNode = v
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				p.bad(v, r.name("owner"), "want a field name, or _id")
				continue
			}
			r.owner = v.Value
			if r.owner != "_id" {
				if err := checkField(r.owner, true); err != nil {
					p.bad(v, r.name("owner"), "%v (owner is a top-level field)", err)
				}
			}
		case "immutable":
			immNode = v
			r.immutable = p.fields(v, r.name("immutable"))
		case "writable":
			r.writable = p.fields(v, r.name("writable"))
			if r.writable == nil {
				if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
					p.bad(v, r.name("writable"), "no field is writable: say deny to close the collection")
				}
			}
		case "types":
			typesNode = v
			r.types = p.types(v, r)
		default:
			p.bad(k, r.name(k.Value), "unknown key (want owner, immutable, writable or types)")
		}
	}
	// What would make the rule impossible to satisfy, or a typo.
	if r.writable != nil {
		if r.owner != "" && r.owner != "_id" && !r.isWritable(r.owner) {
			p.bad(ownerNode, r.name("owner"), "%s is not in writable: no client could create a document (a new document must carry its owner)", r.owner)
		}
		for _, f := range r.immutable {
			if !r.isWritable(f) {
				p.bad(immNode, r.name("immutable"), "%s is not in writable: it could never be set", f)
			}
		}
		for _, ty := range r.types {
			if !r.isWritable(ty.segs[0]) {
				p.bad(typesNode, r.name("types", ty.path), "%s is not in writable: no client value reaches it", ty.segs[0])
			}
		}
	}
	for _, ty := range r.types {
		if len(ty.segs) == 1 && ty.segs[0] == r.owner {
			switch ty.t {
			case tObjectID, tInt, tLong:
				r.ownerType = ty.t
			default:
				p.bad(typesNode, r.name("types", ty.path), "the owner field is compared with the caller's user id: its type may be objectid, int or long, not %s", ty.t)
			}
		}
		if len(ty.segs) > 1 && ty.segs[0] == r.owner {
			p.bad(typesNode, r.name("types", ty.path), "the owner field holds the caller's user id, not a document")
		}
	}
	return r
}

// fields reads a list of top-level field names.
func (p *ruleParser) fields(n *yaml.Node, entry string) []string {
	if n.Kind != yaml.SequenceNode {
		p.bad(n, entry, "want a list of field names, such as [name, created_at]")
		return nil
	}
	var out []string
	for _, f := range n.Content {
		switch {
		case f.Kind != yaml.ScalarNode || f.Value == "":
			p.bad(f, entry, "want a field name")
		case f.Value == "_id":
			p.bad(f, entry, "_id is the document's id, not a field a client sets")
		case slices.Contains(out, f.Value):
			p.bad(f, entry, "%s is listed twice", f.Value)
		default:
			if err := checkField(f.Value, true); err != nil {
				p.bad(f, entry, "%v", err)
				continue
			}
			out = append(out, f.Value)
		}
	}
	return out
}

func (p *ruleParser) types(n *yaml.Node, r *rule) []typed {
	keys, vals, ok := p.mapping(n, r.name("types"))
	if !ok {
		p.bad(n, r.name("types"), "want a mapping of field paths to types (%s)", strings.Join(typeNames(), ", "))
		return nil
	}
	var out []typed
	for i, k := range keys {
		entry := r.name("types", k.Value)
		segs := strings.Split(k.Value, ".")
		okPath := true
		for j, s := range segs {
			if s == "" {
				p.bad(k, entry, "empty segment in the path %s", quoteShort(k.Value))
				okPath = false
				break
			}
			if err := checkField(s, j == 0); err != nil {
				p.bad(k, entry, "%v", err)
				okPath = false
				break
			}
		}
		if okPath && segs[0] == "_id" {
			p.bad(k, entry, "the type of _id is UPLOAD_ID_MODE's")
			okPath = false
		}
		t, known := parseType(vals[i].Value)
		if vals[i].Kind != yaml.ScalarNode || !known {
			p.bad(vals[i], entry, "unknown type %s (want one of %s)", quoteShort(vals[i].Value), strings.Join(typeNames(), ", "))
			continue
		}
		if okPath {
			out = append(out, typed{path: k.Value, segs: segs, t: t})
		}
	}
	slices.SortStableFunc(out, func(a, b typed) int { return len(a.segs) - len(b.segs) })
	return out
}

// describeRules is the task's Describe: the effective rules of dep, as
// `runtime env` prints them.
func describeRules(dep *deployment.Deployment) ([]string, error) {
	refused := dep.Get(VarRefusedColl)
	if refused == "" {
		refused = DefaultRefusedCol
	}
	rs, err := loadRules(dep, refused)
	if err != nil {
		return nil, err
	}
	if rs == nil {
		if dep.Production {
			return nil, errors.New("no write rules: a production deployment refuses to start without an upload: section")
		}
		return []string{"no write rules: any caller may write any document of any collection (development only)"}, nil
	}
	return append([]string{"write rules of " + rs.file}, rs.describe()...), nil
}

// describe lists the effective rules, one line per collection, sorted.
func (r *rules) describe() []string {
	def := "deny: collections without a rule are closed to clients"
	if r.allow {
		def = "allow: collections without a rule accept any user's writes"
	}
	if !r.explicit {
		def += " (not written: deny is the default)"
	}
	out := []string{"default: " + def}
	names := make([]string, 0, len(r.colls))
	for n := range r.colls {
		names = append(names, n)
	}
	slices.Sort(names)
	owners := false
	for _, n := range names {
		out = append(out, n+": "+r.colls[n].describe())
		owners = owners || r.colls[n].owner != ""
	}
	if owners {
		out = append(out, "(owner F: a PUT must carry the caller's user id in F, and writes change only documents whose F is the caller's;",
			" owner _id: the document's id is the user id; immutable: set when a document is created, never changed;",
			" writable: the only fields a client may set)")
	}
	return out
}

func (r *rule) describe() string {
	switch {
	case r.closed:
		return "deny (closed to clients)"
	case r.open:
		return "allow (any user may write any document)"
	}
	var parts []string
	switch r.owner {
	case "":
		parts = append(parts, "no owner (any user may write any document)")
	default:
		parts = append(parts, "owner "+r.owner)
	}
	if len(r.immutable) > 0 {
		parts = append(parts, "immutable "+strings.Join(r.immutable, ", "))
	}
	if r.writable != nil {
		parts = append(parts, "writable "+strings.Join(r.writable, ", "))
	}
	if len(r.types) > 0 {
		ts := make([]string, len(r.types))
		for i, t := range r.types {
			ts[i] = t.path + " " + t.t.String()
		}
		slices.Sort(ts)
		parts = append(parts, "types "+strings.Join(ts, ", "))
	}
	return strings.Join(parts, "; ")
}

// checkRules refuses what the deployment's other settings make of the
// rules: production without rules, owners without authentication.
func (t *task) checkRules(dep *deployment.Deployment) []error {
	var errs []error
	rs := t.rules
	if dep.Production && (rs == nil || len(rs.colls) == 0 && !rs.explicit) {
		errs = append(errs, fmt.Errorf("a production deployment needs write rules: add an %s: section to the deployment file "+
			"(see README, Write rules), or say \"%s: {default: allow}\" to let every user write every document", Section, Section))
	}
	if rs == nil {
		return errs
	}
	var owned, guarded []string
	for _, n := range slices.Sorted(maps.Keys(rs.colls)) {
		r := rs.colls[n]
		if r.owner != "" {
			owned = append(owned, n)
		}
		if r.guarded() {
			guarded = append(guarded, n)
		}
	}
	if len(owned) > 0 && !t.auth {
		errs = append(errs, fmt.Errorf("%s=off, but the rules of %s name an owner: owners are the callers' verified user ids, so they need authentication",
			VarAuth, strings.Join(owned, ", ")))
	}
	if len(guarded) > 0 && t.txn {
		errs = append(errs, fmt.Errorf("%s=true cannot be combined yet with rules that condition writes (owner, immutable, writable: %s)",
			VarTransactions, strings.Join(guarded, ", ")))
	}
	return errs
}

// announceRules says at start what the rules leave open.
func (t *task) announceRules(s *runtime.Setup) {
	rs := t.rules
	switch {
	case rs == nil:
		s.Log.Warn().Msgf("NO WRITE RULES: the deployment file has no %s: section, so any caller may write any document of any collection. "+
			"Development only: a production deployment refuses to start without rules.", Section)
		return
	case rs.allow:
		s.Log.Warn().Msgf("%s is allow: collections without a rule accept every user's writes to every document", rs.defaultName())
	}
	if len(rs.decimals) > 0 && t.decimalText {
		s.Log.Warn().Msgf("the development store (FerretDB) cannot store Decimal128: the decimal fields %s are stored as their decimal text there (a MongoDB server stores Decimal128)",
			strings.Join(rs.decimals, ", "))
	}
	s.Log.Info().Str("file", rs.file).Int("rules", len(rs.colls)).Bool("default_allow", rs.allow).Msg("upload write rules")
}
