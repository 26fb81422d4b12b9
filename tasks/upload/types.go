package upload

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// fieldType is a type a rule's types: converts a field to. PowerSync
// clients send SQLite values: dates and ObjectIds as text, decimals as
// text or floats, booleans as 0 and 1, JSON columns as text.
type fieldType int

const (
	tDate     fieldType = iota + 1 // from RFC 3339 or ISO 8601 text; a BSON date
	tObjectID                      // from 24 hex digits
	tDecimal                       // Decimal128 from text, an integer or a float
	tInt                           // 32-bit integer from an integer, an integral float or text
	tLong                          // 64-bit integer, likewise
	tDouble                        // double from a number or text
	tBool                          // from true/false, 0/1, or their text
	tJSON                          // a document, array or value from JSON text
)

func (t fieldType) String() string {
	switch t {
	case tDate:
		return "date"
	case tObjectID:
		return "objectid"
	case tDecimal:
		return "decimal"
	case tInt:
		return "int"
	case tLong:
		return "long"
	case tDouble:
		return "double"
	case tBool:
		return "bool"
	case tJSON:
		return "json"
	}
	return "unknown"
}

// typeNames lists the types a rule may name.
func typeNames() []string {
	var out []string
	for t := tDate; t <= tJSON; t++ {
		out = append(out, t.String())
	}
	return out
}

func parseType(s string) (fieldType, bool) {
	for t := tDate; t <= tJSON; t++ {
		if t.String() == s {
			return t, true
		}
	}
	return 0, false
}

// dateLayouts are the RFC 3339 and ISO 8601 forms a date may take; a time
// without a zone is UTC. Fractional seconds are accepted after the seconds
// of any of them.
var dateLayouts = [...]string{
	time.RFC3339,                // 2024-05-01T10:00:00.5Z, 2024-05-01T12:00:00+02:00 (JavaScript's toISOString)
	"2006-01-02T15:04:05Z0700",  // +0200
	"2006-01-02T15:04:05",       // no zone: UTC
	"2006-01-02 15:04:05Z07:00", // SQLite's datetime() with a zone
	"2006-01-02 15:04:05",       // SQLite's datetime('now'): UTC
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02", // a date alone: midnight UTC
}

// convert converts one value; null stays null.
func convert(v any, t fieldType, depth int) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t {
	case tDate:
		s, ok := v.(string)
		if !ok {
			break
		}
		for _, l := range dateLayouts {
			if d, err := time.Parse(l, s); err == nil {
				return bson.NewDateTimeFromTime(d), nil
			}
		}
		return nil, fmt.Errorf("want a date in RFC 3339 or ISO 8601 (2024-05-01T10:00:00Z), got %s", quoteShort(s))
	case tObjectID:
		if s, ok := v.(string); ok {
			if oid, err := bson.ObjectIDFromHex(s); err == nil && len(s) == 24 {
				return oid, nil
			}
			return nil, fmt.Errorf("want an ObjectId of 24 hex digits, got %s", quoteShort(s))
		}
	case tDecimal:
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case int32:
			s = strconv.FormatInt(int64(x), 10)
		case int64:
			s = strconv.FormatInt(x, 10)
		case float64:
			s = strconv.FormatFloat(x, 'g', -1, 64)
		default:
			return nil, typeErr(t, v)
		}
		d, err := bson.ParseDecimal128(s)
		if err != nil || d.IsNaN() || d.IsInf() != 0 {
			return nil, fmt.Errorf("want a decimal number, got %s", quoteShort(s))
		}
		return d, nil
	case tInt, tLong:
		n, err := integer(v)
		if err != nil {
			return nil, err
		}
		if t == tLong {
			return n, nil
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return nil, fmt.Errorf("want a 32-bit integer, got %d (use long)", n)
		}
		return int32(n), nil
	case tDouble:
		switch x := v.(type) {
		case float64:
			return x, nil
		case int32:
			return float64(x), nil
		case int64:
			return float64(x), nil
		case string:
			f, err := strconv.ParseFloat(x, 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("want a number, got %s", quoteShort(x))
			}
			return f, nil
		}
	case tBool:
		switch x := v.(type) {
		case bool:
			return x, nil
		case int32, int64, float64:
			switch x {
			case int32(0), int64(0), float64(0):
				return false, nil
			case int32(1), int64(1), float64(1):
				return true, nil
			}
			return nil, fmt.Errorf("want a boolean (true, false, 0 or 1), got %v", x)
		case string:
			switch x {
			case "true", "1":
				return true, nil
			case "false", "0":
				return false, nil
			}
			return nil, fmt.Errorf("want a boolean (true, false, 0 or 1), got %s", quoteShort(x))
		}
	case tJSON:
		switch x := v.(type) {
		case bson.D, bson.A:
			return x, nil
		case string:
			return decodeValue(x, depth)
		}
	}
	return nil, typeErr(t, v)
}

func typeErr(t fieldType, v any) error {
	what := "a string"
	switch v.(type) {
	case bool:
		what = "a boolean"
	case int32, int64, float64:
		what = "a number"
	case bson.D:
		what = "an object"
	case bson.A:
		what = "an array"
	}
	return fmt.Errorf("want a value that converts to %s, got %s", t, what)
}

// integer reads an integer from an integer, an integral float or text.
func integer(v any) (int64, error) {
	switch x := v.(type) {
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case float64:
		if x == math.Trunc(x) && x >= -(1<<63) && x < 1<<63 {
			return int64(x), nil
		}
		return 0, fmt.Errorf("want an integer, got %v", x)
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("want an integer, got %s", quoteShort(x))
		}
		return n, nil
	}
	return 0, typeErr(tLong, v)
}

// decodeValue parses JSON text with the batch's own decoder, so that what
// it holds obeys the same rules as the batch (field names, depth, UTF-8).
func decodeValue(s string, depth int) (any, error) {
	d := newDecoder([]byte(s), 0, 4<<10)
	v, err := d.value(depth)
	if err == nil && d.peek() != 0 {
		err = d.syntax("unexpected data after the value")
	}
	var de *decodeError
	if errors.As(err, &de) {
		return nil, fmt.Errorf("want JSON text: %s", de.msg)
	}
	return v, err
}

// convertTypes applies a rule's types to an operation's data in place.
// decimalText stores decimals as their canonical text, for a server
// without Decimal128 (FerretDB 1.x, the development store, closes the
// connection on one).
func (r *rule) convertTypes(data bson.D, decimalText bool) (string, error) {
	for _, ty := range r.types {
		if err := convertPath(data, ty.segs, ty.t, 2, decimalText); err != nil {
			return ty.path, fmt.Errorf("%s: %w", ty.path, err)
		}
	}
	return "", nil
}

// convertPath converts the value at path in d, when present; through
// arrays, each document element's value is converted.
func convertPath(d bson.D, path []string, t fieldType, depth int, decimalText bool) error {
	for i := range d {
		if d[i].Key != path[0] {
			continue
		}
		if len(path) == 1 {
			v, err := convert(d[i].Value, t, depth)
			if err != nil {
				return err
			}
			if dec, ok := v.(bson.Decimal128); ok && decimalText {
				v = dec.String()
			}
			d[i].Value = v
			return nil
		}
		return convertIn(d[i].Value, path[1:], t, depth+1, decimalText)
	}
	return nil
}

func convertIn(v any, path []string, t fieldType, depth int, decimalText bool) error {
	switch x := v.(type) {
	case bson.D:
		return convertPath(x, path, t, depth, decimalText)
	case bson.A:
		for _, e := range x {
			if doc, ok := e.(bson.D); ok {
				if err := convertPath(doc, path, t, depth+1, decimalText); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
