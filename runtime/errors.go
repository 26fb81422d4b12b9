package runtime

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an error with an HTTP status that a handler returns to the
// client as is. Its Message and Fields go into the JSON body; Err (the cause)
// only into the log.
type Error struct {
	Status  int
	Message string
	Fields  map[string]any // extra members of the JSON body
	Header  http.Header    // extra response headers (Retry-After, Allow)
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given status and message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// With adds a field to the JSON body and returns e.
func (e *Error) With(key string, value any) *Error {
	if e.Fields == nil {
		e.Fields = map[string]any{}
	}
	e.Fields[key] = value
	return e
}

// WithHeader adds a response header and returns e.
func (e *Error) WithHeader(key, value string) *Error {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set(key, value)
	return e
}

// Wrap records the cause, which is logged and never sent, and returns e.
func (e *Error) Wrap(err error) *Error {
	e.Err = err
	return e
}

// BadRequest is a 400 with a message for the client.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, format, args...)
}

// Unauthorized is a 401 with a message for the client.
func Unauthorized(format string, args ...any) *Error {
	return Errorf(http.StatusUnauthorized, format, args...)
}

// Unavailable is a 503 with a Retry-After header: a temporary failure the
// client should retry.
func Unavailable(retryAfterSeconds int, cause error, format string, args ...any) *Error {
	return Errorf(http.StatusServiceUnavailable, format, args...).
		WithHeader("Retry-After", fmt.Sprint(retryAfterSeconds)).Wrap(cause)
}

// AsError finds an *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
