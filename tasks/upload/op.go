package upload

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Kind is what an operation does.
type Kind string

// The three kinds of operation a PowerSync client sends.
const (
	Put    Kind = "PUT"    // replace or insert the whole document
	Patch  Kind = "PATCH"  // set the given fields of an existing document
	Delete Kind = "DELETE" // delete the document; a missing one is fine
)

// Op is one operation of a batch, validated. Customise may change any of
// its fields.
type Op struct {
	// Index is the operation's position in the batch.
	Index int
	Kind  Kind
	// Collection is the client's table name, which is the collection.
	Collection string
	// ID is the client's row id; it becomes _id (an ObjectID when
	// UPLOAD_ID_MODE=objectid and it is 24 hex digits).
	ID string
	// Data holds the fields, in the client's order, without _id: the whole
	// document for Put, the fields to set for Patch, nil for Delete. Values
	// are string, int32, int64 (integers), float64, bool, nil, bson.D
	// (objects) and bson.A (arrays); Customise may put any value the driver
	// can marshal, such as time.Time. Decoded strings share the request
	// body's memory: a Customise that keeps one after the request should
	// keep strings.Clone of it, or it keeps the whole body alive.
	Data bson.D

	raw []byte // the operation's JSON as received, for the dead-letter record
}

// Get returns a field's value and whether the field is present.
func (op *Op) Get(field string) (any, bool) {
	for _, e := range op.Data {
		if e.Key == field {
			return e.Value, true
		}
	}
	return nil, false
}

// Has reports whether the operation carries a field.
func (op *Op) Has(field string) bool {
	_, ok := op.Get(field)
	return ok
}

// Set sets a field, replacing it in place or adding it at the end.
func (op *Op) Set(field string, value any) {
	for i := range op.Data {
		if op.Data[i].Key == field {
			op.Data[i].Value = value
			return
		}
	}
	op.Data = append(op.Data, bson.E{Key: field, Value: value})
}

// Remove drops a field from the operation (a Patch then leaves it as it is
// in the database).
func (op *Op) Remove(field string) {
	for i := range op.Data {
		if op.Data[i].Key == field {
			op.Data = append(op.Data[:i:i], op.Data[i+1:]...)
			return
		}
	}
}

// checkValue makes sure the driver can marshal a value that Customise set,
// before anything is written: documents are marshalled one write command
// at a time, and a failure there would leave the batch half-written.
func checkValue(v any) error {
	switch x := v.(type) {
	case nil, string, bool, int32, int64, float64:
		return nil
	case bson.D:
		for _, e := range x {
			if err := checkValue(e.Value); err != nil {
				return err
			}
		}
		return nil
	case bson.A:
		for _, e := range x {
			if err := checkValue(e); err != nil {
				return err
			}
		}
		return nil
	}
	_, _, err := bson.MarshalValue(v)
	return err
}

// Request describes the upload request that an operation belongs to.
type Request struct {
	// User is the verified token's subject ("" when UPLOAD_AUTH=off).
	User string
	// ID is the request id, also in the logs and the response header.
	ID string
	// Log is tagged with the task and the request id.
	Log zerolog.Logger
	// Deployment gives the deployment's variables.
	Deployment *deployment.Deployment
	// Env is the request's runtime environment: Env.Enqueue stores a job
	// for slow work after the batch is answered (a notification, a
	// total). Customise runs before the batch is written and a client
	// sends a failed batch again: give such jobs a Key (the op's table and
	// id, say), and let them read what was written.
	Env *runtime.Env
}

// Refusal is an operation that the deployment's rules refuse: it is
// reported to the client in a 2xx and kept in the dead-letter collection
// (or fails the whole batch with 422 when UPLOAD_REFUSED=strict).
type Refusal struct {
	Reason string
}

func (r *Refusal) Error() string { return "refused: " + r.Reason }

// Refuse returns a Refusal for Customise to return.
func Refuse(format string, args ...any) error {
	return &Refusal{Reason: fmt.Sprintf(format, args...)}
}

// IsRefusal reports whether err is (or wraps) a Refusal, and returns it.
func IsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}
