package upload

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/taskrun/taskrun/runtime/deployment"
)

func TestConvert(t *testing.T) {
	date := func(s string) any {
		d, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return bson.NewDateTimeFromTime(d)
	}
	dec := func(s string) any {
		d, err := bson.ParseDecimal128(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	oid, _ := bson.ObjectIDFromHex("65f1a2b3c4d5e6f708091a2b")
	tests := []struct {
		t      fieldType
		in     any
		want   any
		errHas string
	}{
		{tDate, "2024-05-01T10:00:00.5Z", date("2024-05-01T10:00:00.5Z"), ""},
		{tDate, "2024-05-01T12:00:00+02:00", date("2024-05-01T10:00:00Z"), ""},
		{tDate, "2024-05-01T12:00:00+0200", date("2024-05-01T10:00:00Z"), ""},
		{tDate, "2024-05-01T10:00:00", date("2024-05-01T10:00:00Z"), ""},
		{tDate, "2024-05-01 10:00:00", date("2024-05-01T10:00:00Z"), ""},
		{tDate, "2024-05-01 10:00:00.123", date("2024-05-01T10:00:00.123Z"), ""},
		{tDate, "2024-05-01T10:00", date("2024-05-01T10:00:00Z"), ""},
		{tDate, "2024-05-01", date("2024-05-01T00:00:00Z"), ""},
		{tDate, nil, nil, ""},
		{tDate, "yesterday", nil, "want a date in RFC 3339 or ISO 8601"},
		{tDate, "2024-13-01", nil, "want a date"},
		{tDate, int32(1714557600), nil, "got a number"},
		{tObjectID, "65f1a2b3c4d5e6f708091a2b", oid, ""},
		{tObjectID, "65F1A2B3C4D5E6F708091A2B", oid, ""},
		{tObjectID, "65f1a2b3c4d5e6f708091a2", nil, "24 hex digits"},
		{tObjectID, "zzf1a2b3c4d5e6f708091a2b", nil, "24 hex digits"},
		{tObjectID, int32(1), nil, "got a number"},
		{tDecimal, "12.50", dec("12.50"), ""},
		{tDecimal, 19.99, dec("19.99"), ""},
		{tDecimal, int32(7), dec("7"), ""},
		{tDecimal, int64(1 << 40), dec("1099511627776"), ""},
		{tDecimal, "1e3", dec("1E+3"), ""},
		{tDecimal, "NaN", nil, "want a decimal"},
		{tDecimal, "Infinity", nil, "want a decimal"},
		{tDecimal, "twelve", nil, "want a decimal"},
		{tDecimal, true, nil, "got a boolean"},
		{tInt, int32(5), int32(5), ""},
		{tInt, int64(5), int32(5), ""},
		{tInt, 5.0, int32(5), ""},
		{tInt, "-12", int32(-12), ""},
		{tInt, 5.5, nil, "want an integer"},
		{tInt, int64(1 << 40), nil, "want a 32-bit integer"},
		{tInt, "12a", nil, "want an integer"},
		{tLong, int32(5), int64(5), ""},
		{tLong, "1099511627776", int64(1 << 40), ""},
		{tLong, 1e300, nil, "want an integer"},
		{tDouble, int32(2), 2.0, ""},
		{tDouble, "2.5", 2.5, ""},
		{tDouble, 2.5, 2.5, ""},
		{tDouble, "NaN", nil, "want a number"},
		{tDouble, "1e999", nil, "want a number"},
		{tBool, int32(1), true, ""},
		{tBool, int64(0), false, ""},
		{tBool, "true", true, ""},
		{tBool, "0", false, ""},
		{tBool, false, false, ""},
		{tBool, int32(2), nil, "want a boolean"},
		{tBool, "yes", nil, "want a boolean"},
		{tJSON, `{"a":[1,"x"],"b":null}`, bson.D{{Key: "a", Value: bson.A{int32(1), "x"}}, {Key: "b", Value: nil}}, ""},
		{tJSON, `[1,2]`, bson.A{int32(1), int32(2)}, ""},
		{tJSON, `  "s" `, "s", ""},
		{tJSON, bson.D{{Key: "k", Value: "v"}}, bson.D{{Key: "k", Value: "v"}}, ""},
		{tJSON, `{"$where":"1"}`, nil, "must not start with $"},
		{tJSON, `{"a":1,"a":2}`, nil, "duplicate field"},
		{tJSON, `{"a":1} x`, nil, "unexpected data after the value"},
		{tJSON, `{"a":`, nil, "want JSON text"},
		{tJSON, strings.Repeat("[", 200) + strings.Repeat("]", 200), nil, "nested deeper than 100"},
		{tJSON, int32(3), nil, "got a number"},
	}
	for _, tc := range tests {
		got, err := convert(tc.in, tc.t, 2)
		if tc.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("%s(%#v): error %v, want %q", tc.t, tc.in, err, tc.errHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s(%#v): %v", tc.t, tc.in, err)
			continue
		}
		if canon(t, got) != canon(t, tc.want) {
			t.Errorf("%s(%#v) = %s, want %s", tc.t, tc.in, canon(t, got), canon(t, tc.want))
		}
	}
}

// TestConvertPaths: nested paths, through arrays of documents, a json
// parent before its children, decimals as text for FerretDB.
func TestConvertPaths(t *testing.T) {
	dep := deployment.New("testing", false, nil)
	if err := dep.SetSections("x.yaml", []byte(`upload:
  rules:
    orders:
      types: {address.zip: int, items.qty: int, meta: json, meta.at: date, total: decimal}
`)); err != nil {
		t.Fatal(err)
	}
	rs, err := loadRules(dep, DefaultRefusedCol)
	if err != nil {
		t.Fatal(err)
	}
	r := rs.colls["orders"]
	data := bson.D{
		{Key: "address", Value: bson.D{{Key: "zip", Value: "01234"}, {Key: "city", Value: "X"}}},
		{Key: "items", Value: bson.A{bson.D{{Key: "qty", Value: "2"}}, "not a document", bson.D{{Key: "sku", Value: "a"}}}},
		{Key: "meta", Value: `{"at":"2024-05-01","n":1}`},
		{Key: "total", Value: "10.10"},
	}
	if _, err := r.convertTypes(data, true); err != nil {
		t.Fatal(err)
	}
	want := bson.D{
		{Key: "address", Value: bson.D{{Key: "zip", Value: int32(1234)}, {Key: "city", Value: "X"}}},
		{Key: "items", Value: bson.A{bson.D{{Key: "qty", Value: int32(2)}}, "not a document", bson.D{{Key: "sku", Value: "a"}}}},
		{Key: "meta", Value: bson.D{{Key: "at", Value: bson.NewDateTimeFromTime(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC))}, {Key: "n", Value: int32(1)}}},
		{Key: "total", Value: "10.10"},
	}
	if canon(t, data) != canon(t, want) {
		t.Errorf("converted\n%s\nwant\n%s", canon(t, data), canon(t, want))
	}
	path, err := r.convertTypes(bson.D{{Key: "items", Value: bson.A{bson.D{{Key: "qty", Value: "many"}}}}}, false)
	if path != "items.qty" || err == nil || !strings.Contains(err.Error(), `items.qty: want an integer, got "many"`) {
		t.Errorf("path %q, error %v", path, err)
	}
	// Absent fields and fields that are not documents convert nothing.
	data = bson.D{{Key: "address", Value: "somewhere"}}
	if _, err := r.convertTypes(data, false); err != nil || data[0].Value != "somewhere" {
		t.Errorf("%v %v", data, err)
	}
}

// TestRawEqual: checkByID's equality is MongoDB's: numbers by value, an
// owner array holding the caller, null as missing for immutable fields,
// never an array for a value that is not one.
func TestRawEqual(t *testing.T) {
	raw := func(v any) bson.RawValue {
		if v == nil {
			return bson.RawValue{Type: bson.TypeNull}
		}
		ty, b, err := bson.MarshalValue(v)
		if err != nil {
			t.Fatal(err)
		}
		return bson.RawValue{Type: ty, Value: b}
	}
	for _, tc := range []struct {
		stored, want any
		eq           bool
	}{
		{"a", "a", true}, {"a", "b", false}, {int32(1), int64(1), true}, {int64(1), 1.0, true},
		{1.5, int32(1), false}, {"1", int32(1), false}, {bson.A{"a"}, bson.A{"a"}, true}, {bson.A{"a"}, "a", false},
		{bson.D{{Key: "x", Value: "y"}}, bson.D{{Key: "x", Value: "y"}}, true}, {nil, nil, true}, {nil, "a", false},
	} {
		if got := rawEqual(raw(tc.stored), tc.want); got != tc.eq {
			t.Errorf("rawEqual(%v, %v) = %t", tc.stored, tc.want, got)
		}
	}
	if !ownerHolds(raw(bson.A{"x", "bob"}), "bob") || ownerHolds(raw(bson.A{"x"}), "bob") || ownerHolds(bson.RawValue{}, "bob") {
		t.Error("ownerHolds")
	}
	g := &guard{r: &rule{immutable: []string{"c", "tags"}}}
	doc := func(d bson.D) bson.Raw {
		b, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		stored, data bson.D
		holds        bool
	}{
		{bson.D{{Key: "c", Value: "X"}}, bson.D{{Key: "c", Value: "X"}}, true},
		{bson.D{{Key: "c", Value: "X"}}, bson.D{{Key: "c", Value: "Y"}}, false},
		{bson.D{{Key: "c", Value: "X"}}, bson.D{}, false},
		{bson.D{}, bson.D{{Key: "c", Value: nil}}, true},
		{bson.D{{Key: "c", Value: nil}}, bson.D{}, true},
		{bson.D{{Key: "tags", Value: bson.A{"x"}}}, bson.D{{Key: "tags", Value: "x"}}, false},
		{bson.D{{Key: "tags", Value: bson.A{"x"}}}, bson.D{{Key: "tags", Value: bson.A{"x"}}}, true},
		{bson.D{}, bson.D{{Key: "c", Value: "X"}}, false},
	} {
		if got := g.immutableHolds(doc(tc.stored), tc.data); got != tc.holds {
			t.Errorf("immutableHolds(%v, %v) = %t", tc.stored, tc.data, got)
		}
	}
}
