package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// FileRunStore keeps one deployment's run records as files, for the
// embedded development store (one machine):
//
//	<state>/runs/<deployment>/<task>/<start>-<id>.json   the record, mode 0600
//	<state>/runs/<deployment>/.ids/<id>                  claims the id; holds the record's path
//
// Creating the id file with O_EXCL makes SaveRun's duplicate check atomic
// across processes; records are written to a temporary file and renamed,
// so a reader never sees half a record.
type FileRunStore struct {
	dir string
}

// NewFileRunStore returns the file store of deployment dep under stateDir.
func NewFileRunStore(stateDir, dep string) *FileRunStore {
	return &FileRunStore{dir: filepath.Join(stateDir, "runs", dep)}
}

// Dir is the folder of the deployment's records.
func (s *FileRunStore) Dir() string { return s.dir }

// startLayout names record files so that they sort by start time.
const startLayout = "20060102T150405.000000000Z"

func (s *FileRunStore) idPath(id string) string { return filepath.Join(s.dir, ".ids", id) }

// SaveRun writes a new record; ErrDuplicateRun when its id is taken.
func (s *FileRunStore) SaveRun(_ context.Context, r *Record) error {
	if err := checkRecordNames(r); err != nil {
		return err
	}
	rel := filepath.Join(r.Task, r.Start.UTC().Format(startLayout)+"-"+r.ID+".json")
	if err := os.MkdirAll(filepath.Join(s.dir, ".ids"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, r.Task), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(s.idPath(r.ID), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ErrDuplicateRun
	}
	if err != nil {
		return err
	}
	_, werr := f.WriteString(rel)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = s.write(rel, r)
	}
	if werr != nil {
		_ = os.Remove(s.idPath(r.ID))
	}
	return werr
}

// UpdateRun replaces a record that SaveRun wrote.
func (s *FileRunStore) UpdateRun(_ context.Context, r *Record) error {
	if err := checkRecordNames(r); err != nil {
		return err
	}
	rel, err := s.lookup(r.ID)
	if err != nil {
		return err
	}
	return s.write(rel, r)
}

// GetRun reads one record.
func (s *FileRunStore) GetRun(_ context.Context, id string) (*Record, error) {
	if !validRunID(id) {
		return nil, ErrRunNotFound
	}
	rel, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	r, err := readRecord(filepath.Join(s.dir, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrRunNotFound
	}
	return r, err
}

// ListRuns reads the records newest first, up to the filter's limit.
func (s *FileRunStore) ListRuns(_ context.Context, f RunFilter) ([]*Record, error) {
	files, err := s.files(f.Task)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, rf := range files {
		if len(out) == f.Max() || !f.Since.IsZero() && rf.start.Before(f.Since) {
			break
		}
		r, err := readRecord(rf.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, err
		}
		if f.Match(r) {
			r.Logs = ""
			out = append(out, r)
		}
	}
	return out, nil
}

// PruneRuns removes the records older than before, and all but the newest
// keepPerTask of each task.
func (s *FileRunStore) PruneRuns(_ context.Context, before time.Time, keepPerTask int) (int, error) {
	tasks, err := s.tasks()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, t := range tasks {
		files, err := s.files(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i, rf := range files {
			if i < keepPerTask && !rf.start.Before(before) {
				continue
			}
			if err := os.Remove(rf.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			_ = os.Remove(s.idPath(rf.id))
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (s *FileRunStore) lookup(id string) (string, error) {
	b, err := os.ReadFile(s.idPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrRunNotFound
	}
	if err != nil {
		return "", err
	}
	rel := filepath.Clean(string(b))
	if filepath.IsAbs(rel) || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%s: not a record path: %q", s.idPath(id), b)
	}
	return rel, nil
}

func (s *FileRunStore) write(rel string, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, rel)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
	}
	return werr
}

type recordFile struct {
	path  string
	name  string
	id    string
	start time.Time
}

// files returns the record files of one task, or of every task when task
// is "", newest first.
func (s *FileRunStore) files(task string) ([]recordFile, error) {
	tasks := []string{task}
	if task == "" {
		var err error
		if tasks, err = s.tasks(); err != nil {
			return nil, err
		}
	}
	var out []recordFile
	for _, t := range tasks {
		entries, err := os.ReadDir(filepath.Join(s.dir, t))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			name := e.Name()
			id, ok := strings.CutSuffix(name, ".json")
			if !ok || len(id) < len(startLayout)+2 || id[len(startLayout)] != '-' {
				continue
			}
			start, err := time.Parse(startLayout, id[:len(startLayout)])
			if err != nil {
				continue
			}
			out = append(out, recordFile{path: filepath.Join(s.dir, t, name), name: name,
				id: id[len(startLayout)+1:], start: start})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name > out[j].name })
	return out, nil
}

func (s *FileRunStore) tasks() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && NameRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func readRecord(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// checkRecordNames refuses a record whose id or task cannot name a file.
func checkRecordNames(r *Record) error {
	if !validRunID(r.ID) {
		return fmt.Errorf("invalid run id %q", r.ID)
	}
	if !NameRE.MatchString(r.Task) {
		return fmt.Errorf("invalid task name %q", r.Task)
	}
	return nil
}
