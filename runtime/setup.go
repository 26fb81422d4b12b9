package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// Setup is what a task's Init receives: the deployment, a logger, the
// project's git-ignored state folder, and the process-wide shared resources.
type Setup struct {
	Deployment *deployment.Deployment
	Log        zerolog.Logger
	// StateDir is a git-ignored folder for local state (.runtime/).
	StateDir string
	// Task is the name of the task being set up.
	Task string

	res *resources
}

// Check registers a readiness check, reported by /readyz. Checks with the
// same name are registered once.
func (s *Setup) Check(name string, fn func(ctx context.Context) error) {
	s.res.mu.Lock()
	defer s.res.mu.Unlock()
	if _, ok := s.res.checks[name]; !ok {
		s.res.checks[name] = fn
	}
}

// Shared returns the process-wide value stored under key, opening it the
// first time it is asked for. close, if not nil, runs on shutdown, in the
// reverse order of opening. Tasks use it for what they share: parsed keys, a
// database client. open runs with the resources locked: it must not call
// Shared or Check itself (register checks after Shared returns).
func Shared[T any](s *Setup, key string, open func(ctx context.Context, s *Setup) (T, func(context.Context) error, error)) (T, error) {
	s.res.mu.Lock()
	defer s.res.mu.Unlock()
	if v, ok := s.res.values[key]; ok {
		t, ok := v.(T)
		if !ok {
			var zero T
			return zero, fmt.Errorf("shared %q holds a %T, not a %T", key, v, zero)
		}
		return t, nil
	}
	v, closer, err := open(context.Background(), s)
	if err != nil {
		return v, err
	}
	s.res.values[key] = v
	if closer != nil {
		s.res.closers = append(s.res.closers, namedCloser{key, closer})
	}
	return v, nil
}

type namedCloser struct {
	name string
	fn   func(context.Context) error
}

type resources struct {
	mu      sync.Mutex
	values  map[string]any
	closers []namedCloser
	checks  map[string]func(context.Context) error
	metrics *metrics
}

func newResources(m *metrics) *resources {
	return &resources{values: map[string]any{}, checks: map[string]func(context.Context) error{}, metrics: m}
}

func (r *resources) close(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		if err := r.closers[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", r.closers[i].name, err))
		}
	}
	r.closers = nil
	return errors.Join(errs...)
}

// ready runs every readiness check and returns the failures by name.
func (r *resources) ready(ctx context.Context) map[string]string {
	r.mu.Lock()
	names := slices.Sorted(maps.Keys(r.checks))
	fns := make([]func(context.Context) error, len(names))
	for i, n := range names {
		fns[i] = r.checks[n]
	}
	r.mu.Unlock()
	out := map[string]string{}
	for i, fn := range fns {
		if err := fn(ctx); err != nil {
			out[names[i]] = err.Error()
		} else {
			out[names[i]] = "ok"
		}
	}
	return out
}
