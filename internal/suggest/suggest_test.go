package suggest

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"deploy", "dev", "env", "generate_keys", "listen", "logs", "tasks", "test", "url"}
	for _, tt := range []struct{ in, want string }{
		{"deplyo", "deploy"},
		{"genrate_keys", "generate_keys"},
		{"generate_key", "generate_keys"},
		{"listn", "listen"},
		{"Listen", "listen"},
		{"tset", "test"},
		{"gen", "generate_keys"},  // a prefix
		{"listen_addr", "listen"}, // extends one
		{"tests", "test"},
		{"zzzzzz", ""},
		{"u", ""},
		{"test", "test"},
	} {
		if got := Closest(tt.in, known); got != tt.want {
			t.Errorf("Closest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if h := Hint("deplyo", known); h != " (did you mean deploy?)" {
		t.Errorf("Hint = %q", h)
	}
	if h := Hint("test", known); h != "" {
		t.Errorf("Hint of a known name = %q", h)
	}
}
