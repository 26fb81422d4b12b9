package upload

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestTransient: failures a retry can cure are 503s; others are not.
func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"deadline", context.DeadlineExceeded, true},
		{"server stopped mid-command (FerretDB)", mongo.CommandError{Code: 1, Name: "InternalError", Message: "context canceled"}, true},
		{"shutdown in progress", mongo.CommandError{Code: 91, Name: "ShutdownInProgress"}, true},
		{"bad value", mongo.CommandError{Code: 2, Name: "BadValue"}, false},
		{"plain error", errors.New("boom"), false},
		{"nil", nil, false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("%s: transient = %t, want %t", tt.name, got, tt.want)
		}
	}
}
