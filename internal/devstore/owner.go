package devstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Roles of a process that holds a lock on a store's folder.
const (
	// RoleServe: `runtime deploy`, serving the deployment.
	RoleServe = "serve"
	// RoleRun: a command that runs and ends (`runtime test`, `runtime
	// runs`): it runs the store only while no other process does.
	RoleRun = "run"
	// RoleSupervisor: `runtime dev`, which holds the store while the
	// processes it starts serve and restart.
	RoleSupervisor = "supervisor"
)

// Holder describes the process holding a lock, as written in its file.
type Holder struct {
	PID     int       `json:"pid"`
	Role    string    `json:"role"`
	Addr    string    `json:"addr,omitempty"` // the store's host:port (store lock)
	URL     string    `json:"url,omitempty"`  // what it serves (serve lock), if known
	Started time.Time `json:"started"`
}

func (h *Holder) String() string {
	s := fmt.Sprintf("pid %d", h.PID)
	switch h.Role {
	case RoleServe:
		s += ", runtime deploy"
	case RoleSupervisor:
		s += ", runtime dev"
	case RoleRun:
		s += ", a one-off command"
	}
	if h.URL != "" {
		s += ", serving " + h.URL
	}
	if h.Addr != "" {
		s += ", store at " + h.Addr
	}
	return s
}

// Long reports whether the holder keeps the store up for others (it is not
// a one-off command).
func (h *Holder) Long() bool { return h.Role == RoleServe || h.Role == RoleSupervisor }

// Lock is an advisory lock on a file of a store's folder, held by this
// process until Release (or until it exits, however it exits: the kernel
// drops the lock of a dead process, so a stale file never blocks anyone).
type Lock struct {
	f    *os.File
	info string // the holder file
}

// The two locks of a store's folder.
const (
	// StoreLock is held by the process that runs the store on the files.
	StoreLock = "store"
	// ServeLock is held by the process that serves the deployment.
	ServeLock = "serve"
)

// TryLock takes lock name (StoreLock or ServeLock) of dir for this process
// with holder h, or returns the holder that has it (with a nil Lock and a
// nil error). A holder that has taken the lock but not written its file
// yet is waited for, up to wait.
func TryLock(dir, name string, h Holder, wait time.Duration) (*Lock, *Holder, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, err
	}
	info := filepath.Join(dir, name+".json")
	deadline := time.Now().Add(wait)
	for {
		ok, err := tryFlock(f)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		if ok {
			l := &Lock{f: f, info: info}
			if err := l.Update(h); err != nil {
				l.Release()
				return nil, nil, err
			}
			return l, nil, nil
		}
		if other, err := readHolder(info); err == nil && other.PID != 0 {
			f.Close()
			return nil, other, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, &Holder{}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Update rewrites the holder file (for example once the store listens).
func (l *Lock) Update(h Holder) error {
	if h.PID == 0 {
		h.PID = os.Getpid()
	}
	if h.Started.IsZero() {
		h.Started = time.Now().UTC().Truncate(time.Second)
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	tmp := l.info + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.info)
}

// Release removes the holder file and drops the lock.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = os.Remove(l.info)
	_ = l.f.Close() // closing drops the flock
	l.f = nil
}

// Held returns the holder of lock name of dir, or nil when no live process
// holds it.
func Held(dir, name string) (*Holder, error) {
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ok, err := tryFlock(f)
	if err != nil {
		return nil, err
	}
	if ok {
		return nil, nil // free (closing f drops the lock just taken)
	}
	h, err := readHolder(filepath.Join(dir, name+".json"))
	if err != nil {
		return &Holder{}, nil
	}
	return h, nil
}

func readHolder(path string) (*Holder, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h Holder
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
