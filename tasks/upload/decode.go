package upload

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Limits of what a batch may hold.
const (
	DefaultMaxOps    = 10000 // operations per batch (UPLOAD_MAX_OPS)
	MaxDepth         = 100   // nesting levels of an operation's data
	MaxIDBytes       = 1024  // bytes of an id
	MaxCollectionLen = 120   // bytes of a collection name
)

// The memory a batch's data may take once decoded: twice the body, plus
// decodeAllowance. With the body itself, a batch then holds at most about
// three times its size while it is decoded, whatever its shape (millions
// of tiny nested values included), which leaves the write room under 4x.
// Rows of a real client (strings, numbers and names of a few bytes or
// more) take well under this; only absurdly dense data reaches it.
const (
	decodeFactor    = 2
	decodeAllowance = 1 << 20
)

// Memory costs the decoder charges against the batch's budget, in bytes:
// a field of an object (bson.E), an element of an array, the box of a
// string, number or non-empty object or array in an interface.
const (
	costField = 32
	costElem  = 16
	costBox   = 16
	costNum   = 8
	costSlice = 24
)

// decodeError is a request that no SDK would send. It becomes a 4xx naming
// the problem, the operation (when there is one) and the byte offset.
type decodeError struct {
	status int
	msg    string
	op     int // -1: not inside an operation
	offset int // -1: not a syntax error
}

func (e *decodeError) Error() string {
	if e.op >= 0 {
		return fmt.Sprintf("batch[%d]: %s", e.op, e.msg)
	}
	return e.msg
}

// decoder is a hand-written JSON parser for one upload body. It builds each
// operation's data as bson.D directly, and enforces on the way what
// encoding/json would let through: invalid UTF-8 and lone surrogates,
// duplicate keys, nesting depth, and the field-name rules.
type decoder struct {
	buf    []byte
	pos    int
	op     int // index of the operation being decoded, -1 outside
	maxOps int
	names  map[string]string // interned collection names and kinds

	// Objects and arrays are decoded onto these stacks, then copied into
	// a slice of their exact size: no slice grows, so decoding makes
	// almost no garbage, and what it keeps is what it charged.
	fields stack[bson.E]
	elems  stack[any]
	cost   int // bytes charged (see the cost constants)
	budget int
	empty  [2]any // a shared boxed empty bson.D and bson.A

	// row holds the last data object's field names by position, checked
	// (checkField at the top level) and distinct: rows of a table mostly
	// have the same columns in the same order, so a name equal to the one
	// at its position last time needs no lookup, no check and, while
	// every name before it matched too, no duplicate test.
	row []string
}

// maxRow bounds the names by position the decoder keeps.
const maxRow = 64

// decode parses and validates a whole upload body. Nothing about the
// database or the deployment's rules is checked here: only what makes a
// request malformed or hostile. The string values of the operations share
// body's memory (see text): body must not change while they are in use.
func decode(body []byte, maxOps int) ([]Op, error) {
	return newDecoder(body, maxOps, decodeAllowance).request()
}

// newDecoder is a decoder of buf with a budget of decodeFactor times its
// size plus allowance.
func newDecoder(buf []byte, maxOps, allowance int) *decoder {
	d := &decoder{buf: buf, op: -1, maxOps: maxOps, budget: decodeFactor*len(buf) + allowance}
	d.empty = [2]any{bson.D{}, bson.A{}}
	d.fields.d, d.elems.d = d, d
	return d
}

// charge counts n bytes of decoded data against the batch's budget.
func (d *decoder) charge(n int) error {
	d.cost += n
	if d.cost > d.budget {
		return d.errAt(http.StatusRequestEntityTooLarge, "the batch's data would take more than %d times its size in memory once decoded (%d bytes): split the batch, or send fewer, larger values",
			decodeFactor, d.budget)
	}
	return nil
}

func (d *decoder) errAt(status int, format string, args ...any) *decodeError {
	return &decodeError{status: status, msg: fmt.Sprintf(format, args...), op: d.op, offset: -1}
}

func (d *decoder) fail(format string, args ...any) *decodeError {
	return d.errAt(http.StatusBadRequest, format, args...)
}

// syntax reports invalid JSON at the current position.
func (d *decoder) syntax(format string, args ...any) *decodeError {
	e := d.fail("invalid JSON at byte %d: %s", d.pos, fmt.Sprintf(format, args...))
	e.offset = d.pos
	return e
}

func (d *decoder) unexpected() *decodeError {
	if d.pos >= len(d.buf) {
		return d.syntax("unexpected end of input")
	}
	c := d.buf[d.pos]
	if c >= 0x20 && c < 0x7f {
		return d.syntax("unexpected character %q", c)
	}
	return d.syntax("unexpected byte 0x%02x", c)
}

func (d *decoder) ws() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (d *decoder) peek() byte {
	d.ws()
	if d.pos >= len(d.buf) {
		return 0
	}
	return d.buf[d.pos]
}

func (d *decoder) expect(c byte) error {
	if d.peek() != c {
		return d.unexpected()
	}
	d.pos++
	return nil
}

// more handles the separator of an object or array after a member: it
// returns true for ',' (another member follows) and false for the closing
// byte.
func (d *decoder) more(closing byte) (bool, error) {
	switch d.peek() {
	case ',':
		d.pos++
		return true, nil
	case closing:
		d.pos++
		return false, nil
	}
	return false, d.unexpected()
}

// typeName names the JSON type of the value at the current position.
func (d *decoder) typeName() string {
	switch d.peek() {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case 0:
		return "nothing"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return "invalid JSON"
}

func (d *decoder) request() ([]Op, error) {
	if d.peek() != '{' {
		if d.pos >= len(d.buf) {
			return nil, d.fail("empty body: want {\"batch\":[...]}")
		}
		if d.typeName() == "invalid JSON" {
			return nil, d.unexpected()
		}
		return nil, d.fail("the body must be a JSON object {\"batch\":[...]}, got %s", d.typeName())
	}
	d.pos++
	var ops []Op
	seen := false
	if d.peek() == '}' {
		d.pos++
	} else {
		for {
			key, err := d.key()
			if err != nil {
				return nil, err
			}
			if string(key) == "batch" {
				if seen {
					return nil, d.fail("batch is given twice")
				}
				seen = true
				if ops, err = d.batch(); err != nil {
					return nil, err
				}
			} else if err := d.skip(1); err != nil {
				return nil, err
			}
			if more, err := d.more('}'); err != nil {
				return nil, err
			} else if !more {
				break
			}
		}
	}
	if d.peek() != 0 {
		return nil, d.syntax("unexpected data after the top-level object")
	}
	if !seen {
		return nil, d.fail("missing batch: want {\"batch\":[...]}")
	}
	return ops, nil
}

// key reads an object key and the colon after it. The returned bytes are
// only valid until the next read.
func (d *decoder) key() ([]byte, error) {
	if d.peek() != '"' {
		return nil, d.unexpected()
	}
	k, err := d.str()
	if err != nil {
		return nil, err
	}
	if err := d.expect(':'); err != nil {
		return nil, err
	}
	return k, nil
}

func (d *decoder) batch() ([]Op, error) {
	if d.peek() != '[' {
		return nil, d.fail("batch must be an array, got %s", d.typeName())
	}
	d.pos++
	if d.peek() == ']' {
		d.pos++
		return []Op{}, nil
	}
	var ops []Op
	for {
		d.op = len(ops)
		if len(ops) >= d.maxOps {
			return nil, d.errAt(http.StatusRequestEntityTooLarge, "batch has more than %d operations (UPLOAD_MAX_OPS)", d.maxOps)
		}
		op, err := d.operation()
		if err != nil {
			return nil, err
		}
		if ops == nil {
			// Operations of a batch are of similar sizes: size the slice
			// for the body's length over the first one's, which neither
			// holds room for thousands of operations in a batch of a few
			// large ones nor copies a large batch as it grows.
			n := (len(d.buf)-d.pos)/max(len(op.raw), 16) + 1
			ops = make([]Op, 0, min(d.maxOps, n+n/8))
		}
		ops = append(ops, op)
		d.op = -1
		if more, err := d.more(']'); err != nil {
			return nil, err
		} else if !more {
			return ops, nil
		}
	}
}

// Members of an operation object.
const (
	fOp = 1 << iota
	fTable
	fType
	fID
	fData
	fOpData
)

func (d *decoder) operation() (Op, error) {
	op := Op{Index: d.op}
	if d.peek() != '{' {
		return op, d.fail("an operation must be an object, got %s", d.typeName())
	}
	start := d.pos
	d.pos++
	var (
		seen        int
		table, typ  string
		dataRaw     []byte
		idOfData    any
		hasIDInData bool
	)
	if d.peek() == '}' {
		d.pos++
	} else {
		for {
			k, err := d.key()
			if err != nil {
				return op, err
			}
			var bit int
			switch string(k) {
			case "op":
				bit = fOp
			case "table":
				bit = fTable
			case "type":
				bit = fType
			case "id":
				bit = fID
			case "data":
				bit = fData
			case "opData":
				bit = fOpData
			}
			if bit != 0 && seen&bit != 0 {
				return op, d.fail("%s is given twice", k)
			}
			seen |= bit
			switch bit {
			case fOp:
				s, err := d.stringValue("op")
				if err != nil {
					return op, err
				}
				switch Kind(s) {
				case Put, Patch, Delete:
					op.Kind = Kind(s)
				default:
					return op, d.fail("op must be PUT, PATCH or DELETE, got %s", quoteShort(s))
				}
			case fTable, fType:
				s, err := d.stringValue(string(k))
				if err != nil {
					return op, err
				}
				if bit == fTable {
					table = s
				} else {
					typ = s
				}
			case fID:
				if d.peek() != '"' {
					return op, d.fail("id must be a string, got %s", d.typeName())
				}
				s, err := d.str()
				if err != nil {
					return op, err
				}
				op.ID = string(s)
			case fData, fOpData:
				if seen&(fData|fOpData) == fData|fOpData {
					// Both spellings: accept only the same value twice.
					s := d.pos
					if err := d.skip(1); err != nil {
						return op, err
					}
					if !bytes.Equal(bytes.TrimSpace(d.buf[s:d.pos]), dataRaw) {
						return op, d.fail("data and opData are both given and differ")
					}
					break
				}
				s := d.pos
				switch d.peek() {
				case 'n':
					if err := d.literal("null"); err != nil {
						return op, err
					}
					op.Data = nil
				case '{':
					s = d.pos
					data, id, hasID, err := d.document()
					if err != nil {
						return op, err
					}
					op.Data, idOfData, hasIDInData = data, id, hasID
				default:
					return op, d.fail("%s must be an object or null, got %s", k, d.typeName())
				}
				dataRaw = bytes.TrimSpace(d.buf[s:d.pos])
			default:
				if err := d.skip(1); err != nil {
					return op, err
				}
			}
			if more, err := d.more('}'); err != nil {
				return op, err
			} else if !more {
				break
			}
		}
	}
	op.raw = d.buf[start:d.pos]

	switch {
	case seen&fOp == 0:
		return op, d.fail("missing op (PUT, PATCH or DELETE)")
	case seen&(fTable|fType) == 0:
		return op, d.fail("missing table (or type)")
	case seen&fID == 0:
		return op, d.fail("missing id")
	case seen&(fTable|fType) == fTable|fType && table != typ:
		return op, d.fail("table %s and type %s differ", quoteShort(table), quoteShort(typ))
	}
	if seen&fTable != 0 {
		op.Collection = table
	} else {
		op.Collection = typ
	}
	if err := checkCollection(op.Collection); err != nil {
		return op, d.fail("%s", err)
	}
	if err := checkID(op.ID); err != nil {
		return op, d.fail("%s", err)
	}
	if hasIDInData {
		if s, ok := idOfData.(string); !ok || s != op.ID {
			return op, d.fail("_id in data disagrees with id %s", quoteShort(op.ID))
		}
	}
	if op.Kind == Delete {
		op.Data = nil
	}
	return op, nil
}

// checkID enforces what an id must be.
func checkID(id string) error {
	if id == "" {
		return fmt.Errorf("id must not be empty")
	}
	if len(id) > MaxIDBytes {
		return fmt.Errorf("id is longer than %d bytes", MaxIDBytes)
	}
	return nil
}

// checkCollection refuses collection names that no client table has and
// that would reach what they must not: system collections, operators,
// sub-namespaces, PowerSync's own collections, the runtime's own.
func checkCollection(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("table must not be empty")
	case len(name) > MaxCollectionLen:
		return fmt.Errorf("table name is longer than %d bytes", MaxCollectionLen)
	case strings.HasPrefix(name, "system."):
		return fmt.Errorf("table %s is not allowed: system. collections are reserved", quoteShort(name))
	case strings.ContainsAny(name, "$.\x00"):
		return fmt.Errorf("table %s is not allowed: a table name must not contain $, . or NUL", quoteShort(name))
	case strings.HasPrefix(name, "_powersync"):
		return fmt.Errorf("table %s is not allowed: _powersync collections are reserved", quoteShort(name))
	case strings.HasPrefix(name, "_runtime_"):
		return fmt.Errorf("table %s is not allowed: _runtime_ collections are the runtime's own (runs, schedules, jobs)", quoteShort(name))
	}
	return nil
}

// checkField enforces the field-name rules: no operator names at any
// depth, and at the top level no paths and no empty names.
func checkField(name string, top bool) error {
	switch {
	case strings.HasPrefix(name, "$"):
		return fmt.Errorf("field name %s must not start with $", quoteShort(name))
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("field name %s must not contain NUL", quoteShort(name))
	case top && name == "":
		return fmt.Errorf("field name must not be empty")
	case top && strings.IndexByte(name, '.') >= 0:
		return fmt.Errorf("field name %s must not contain . at the top level", quoteShort(name))
	}
	return nil
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return strconv.Quote(s) + "..."
	}
	return strconv.Quote(s)
}

func (d *decoder) stringValue(name string) (string, error) {
	if d.peek() != '"' {
		return "", d.fail("%s must be a string, got %s", name, d.typeName())
	}
	s, err := d.str()
	if err != nil {
		return "", err
	}
	return d.intern(s), nil
}

// intern returns a string for b, shared by the equal names of a request.
func (d *decoder) intern(b []byte) string {
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.names == nil {
		d.names = make(map[string]string, 32)
	}
	if len(d.names) < 4096 {
		d.names[s] = s
	}
	return s
}

// fieldName returns a field name, interned, charging the copy it makes of
// a new one. Names are copies, not views of the body as values are:
// measured with cmd/bench, names viewing the body made three 5 MB batches
// in a row peak at 4.6x their size instead of 3.5x, as if each body were
// kept past its request by something holding a name (not found in this
// package's code).
func (d *decoder) fieldName(b []byte) (string, error) {
	if s, ok := d.names[string(b)]; ok {
		return s, nil
	}
	return d.intern(b), d.charge(max(len(b), 8))
}

// document decodes an operation's data object (depth 1). It returns the
// fields without _id, and _id's value if present.
func (d *decoder) document() (bson.D, any, bool, error) {
	d.pos++ // '{'
	var (
		id    any
		hasID bool
		index map[string]struct{}
	)
	if d.peek() == '}' {
		d.pos++
		return bson.D{}, nil, false, nil
	}
	base := d.fields.len()
	same := true // every name so far is the one at its position in d.row
	for {
		kb, err := d.key()
		if err != nil {
			return nil, nil, false, err
		}
		if string(kb) == "_id" {
			if hasID {
				return nil, nil, false, d.fail("data: duplicate field \"_id\"")
			}
			hasID = true
			if id, err = d.value(2); err != nil {
				return nil, nil, false, err
			}
		} else {
			var k string
			i := d.fields.len() - base
			if i < len(d.row) && d.row[i] == string(kb) {
				k = d.row[i]
			} else {
				if k, err = d.fieldName(kb); err != nil {
					return nil, nil, false, err
				}
				if err := checkField(k, true); err != nil {
					return nil, nil, false, d.fail("data: %s", err)
				}
				same = false
			}
			if !same {
				if dup, err := d.dupField(base, &index, k); err != nil {
					return nil, nil, false, err
				} else if dup {
					return nil, nil, false, d.fail("data: duplicate field %s", quoteShort(k))
				}
			}
			v, err := d.value(2)
			if err != nil {
				return nil, nil, false, err
			}
			if err := d.fields.push(bson.E{Key: k, Value: v}, costField); err != nil {
				return nil, nil, false, err
			}
		}
		if more, err := d.more('}'); err != nil {
			return nil, nil, false, err
		} else if !more {
			out := bson.D(d.fields.pop(base))
			d.remember(out)
			return out, id, hasID, nil
		}
	}
}

// remember keeps a data object's field names by position for the next.
func (d *decoder) remember(fields bson.D) {
	n := min(len(fields), maxRow)
	if cap(d.row) < n {
		d.row = make([]string, n, maxRow)
	}
	d.row = d.row[:n]
	for i := range n {
		d.row[i] = fields[i].Key
	}
}

// value decodes any JSON value at nesting level depth (the data object is
// level 1).
func (d *decoder) value(depth int) (any, error) {
	switch c := d.peek(); c {
	case '{':
		return d.object(depth)
	case '[':
		return d.array(depth)
	case '"':
		start := d.pos
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		n := costBox
		if len(s) > 0 && unsafe.SliceData(s) != unsafe.SliceData(d.buf[start+1:]) {
			n += len(s) // strSlow's own buffer
		}
		return text(s), d.charge(n)
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return nil, d.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			v, err := d.number()
			if err == nil {
				err = d.charge(costNum)
			}
			return v, err
		}
		return nil, d.unexpected()
	}
}

// text returns s as a string without copying it. s is a part of the
// request body, which nothing writes to once it is read, or the buffer that
// strSlow made for this string alone; either way its bytes never change, so
// the string is as immutable as a copy would be. Values are most of a
// batch's bytes: copying them would hold the body twice while it is
// written (the 5 MB row of cmd/bench).
func text(s []byte) string {
	return unsafe.String(unsafe.SliceData(s), len(s))
}

func (d *decoder) tooDeep() *decodeError {
	return d.fail("data is nested deeper than %d levels", MaxDepth)
}

// object decodes a nested object; an empty one is the decoder's shared
// boxed empty bson.D.
func (d *decoder) object(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, d.tooDeep()
	}
	d.pos++
	if d.peek() == '}' {
		d.pos++
		return d.empty[0], nil
	}
	base := d.fields.len()
	var index map[string]struct{}
	for {
		kb, err := d.key()
		if err != nil {
			return nil, err
		}
		k, err := d.fieldName(kb)
		if err != nil {
			return nil, err
		}
		if err := checkField(k, false); err != nil {
			return nil, d.fail("data: %s", err)
		}
		if dup, err := d.dupField(base, &index, k); err != nil {
			return nil, err
		} else if dup {
			return nil, d.fail("data: duplicate field %s", quoteShort(k))
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if err := d.fields.push(bson.E{Key: k, Value: v}, costField); err != nil {
			return nil, err
		}
		if more, err := d.more('}'); err != nil {
			return nil, err
		} else if !more {
			return bson.D(d.fields.pop(base)), d.charge(costSlice)
		}
	}
}

// array decodes a nested array; an empty one is the decoder's shared
// boxed empty bson.A.
func (d *decoder) array(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, d.tooDeep()
	}
	d.pos++
	if d.peek() == ']' {
		d.pos++
		return d.empty[1], nil
	}
	base := d.elems.len()
	for {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if err := d.elems.push(v, costElem); err != nil {
			return nil, err
		}
		if more, err := d.more(']'); err != nil {
			return nil, err
		} else if !more {
			return bson.A(d.elems.pop(base)), d.charge(costSlice)
		}
	}
}

func (d *decoder) literal(word string) error {
	if !bytes.HasPrefix(d.buf[d.pos:], []byte(word)) {
		return d.unexpected()
	}
	d.pos += len(word)
	return nil
}

// scanNumber checks the JSON number grammar and returns its end and whether
// it is an integer (no fraction, no exponent).
func (d *decoder) scanNumber() (end int, integer bool, err error) {
	b, i := d.buf, d.pos
	integer = true
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		d.pos = i
		return 0, false, d.unexpected()
	}
	if i < len(b) && b[i] == '.' {
		integer = false
		i++
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			d.pos = i
			return 0, false, d.unexpected()
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integer = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			d.pos = i
			return 0, false, d.unexpected()
		}
	}
	return i, integer, nil
}

// number decodes a number: integers as int32 when they fit, else int64
// (as MongoDB's shell and Node.js driver store them), anything else, and
// integers beyond int64, as float64.
func (d *decoder) number() (any, error) {
	end, integer, err := d.scanNumber()
	if err != nil {
		return nil, err
	}
	lit := d.buf[d.pos:end]
	if integer && len(lit) <= 19 {
		neg := lit[0] == '-'
		digits := lit
		if neg {
			digits = lit[1:]
		}
		var n uint64
		for _, c := range digits {
			n = n*10 + uint64(c-'0')
		}
		if n <= math.MaxInt64 {
			v := int64(n)
			if neg {
				v = -v
			}
			d.pos = end
			if v >= math.MinInt32 && v <= math.MaxInt32 {
				return int32(v), nil
			}
			return v, nil
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, d.fail("number %s is out of range", quoteShort(string(lit)))
	}
	d.pos = end
	return f, nil
}

// str reads a JSON string and returns its decoded bytes, which are only
// valid until the next read when the string has no escapes. Invalid UTF-8,
// control characters and lone surrogates are refused.
func (d *decoder) str() ([]byte, error) {
	b := d.buf
	i := d.pos + 1
	start := i
	ascii := true
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			s := b[start:i]
			if !ascii && !utf8.Valid(s) {
				d.pos = start
				return nil, d.fail("invalid UTF-8 in a string")
			}
			d.pos = i + 1
			return s, nil
		case c == '\\':
			return d.strSlow(start, i)
		case c < 0x20:
			d.pos = i
			return nil, d.syntax("control character 0x%02x in a string", c)
		case c >= 0x80:
			ascii = false
		}
		i++
	}
	d.pos = i
	return nil, d.syntax("unterminated string")
}

// strSlow decodes a string with escapes, from start, where the bytes up to
// i need no decoding.
func (d *decoder) strSlow(start, i int) ([]byte, error) {
	b := d.buf
	out := make([]byte, 0, i-start+16)
	out = append(out, b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				d.pos = start
				return nil, d.fail("invalid UTF-8 in a string")
			}
			d.pos = i + 1
			return out, nil
		case c < 0x20:
			d.pos = i
			return nil, d.syntax("control character 0x%02x in a string", c)
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		// An escape.
		if i+1 >= len(b) {
			d.pos = i
			return nil, d.syntax("unterminated string")
		}
		switch e := b[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
			i += 2
		case 'b':
			out, i = append(out, '\b'), i+2
		case 'f':
			out, i = append(out, '\f'), i+2
		case 'n':
			out, i = append(out, '\n'), i+2
		case 'r':
			out, i = append(out, '\r'), i+2
		case 't':
			out, i = append(out, '\t'), i+2
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				d.pos = i
				return nil, d.syntax("invalid \\u escape")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2, ok = hex4(b, i+2)
				}
				dec := utf16.DecodeRune(r, r2)
				if !ok || dec == utf8.RuneError {
					d.pos = i - 6
					return nil, d.fail("invalid UTF-8 in a string: lone UTF-16 surrogate \\u%04x", r)
				}
				i += 6
				r = dec
			}
			out = utf8.AppendRune(out, r)
		default:
			d.pos = i
			return nil, d.syntax("invalid escape \\%c", e)
		}
	}
	d.pos = i
	return nil, d.syntax("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// skip validates and discards a value the task does not use (op_id, tx_id,
// old, metadata, unknown members), at nesting level depth.
func (d *decoder) skip(depth int) error {
	switch c := d.peek(); c {
	case '{', '[':
		if depth > MaxDepth {
			return d.fail("a value is nested deeper than %d levels", MaxDepth)
		}
		d.pos++
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		if d.peek() == closing {
			d.pos++
			return nil
		}
		for {
			if c == '{' {
				if _, err := d.key(); err != nil {
					return err
				}
			}
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			if more, err := d.more(closing); err != nil {
				return err
			} else if !more {
				return nil
			}
		}
	case '"':
		_, err := d.str()
		return err
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			end, _, err := d.scanNumber()
			if err != nil {
				return err
			}
			d.pos = end
			return nil
		}
		return d.unexpected()
	}
}
