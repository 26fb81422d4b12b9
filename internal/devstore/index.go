//go:build !nodevstore

package devstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // FerretDB's SQLite driver, registered as "sqlite"
)

// FerretDB v1 keeps a collection as an SQLite table of JSON documents, and
// finds a document by _id with WHERE _ferretdb_sjson->'$._id' = ?, while
// the unique index it creates for _id is on _ferretdb_sjson->"_id": not the
// same expression, so SQLite cannot use it and every write by _id reads
// the whole table (10,000 upserts into an empty collection: minutes). The
// indexer adds, next to FerretDB's own, an index on the very expression
// its queries use. FerretDB does not know it (listIndexes does not show
// it), keeps it up to date like any SQLite index, and drops it with the
// collection's table.

// idIndexSuffix names our index on a collection's table.
const idIndexSuffix = "_taskrun_id"

// indexInterval is how often the indexer looks for new collections. The
// first writes into a new collection, until the next look, run without
// the index: a few milliseconds of them.
const indexInterval = 20 * time.Millisecond

// indexer adds the _id index to every collection of the SQLite files in
// dir, looking for new ones every indexInterval until stopped.
type indexer struct {
	dir  string
	log  *slog.Logger
	dbs  map[string]*watchedDB // file name -> open database
	stop chan struct{}
	done chan struct{}
}

type watchedDB struct {
	db      *sql.DB
	info    os.FileInfo // the file it was opened on: a dropped and recreated database is a new file
	version int64       // schema_version at the last look; -1: never looked
}

func startIndexer(dir string, log *slog.Logger) *indexer {
	ix := &indexer{dir: dir, log: log, dbs: map[string]*watchedDB{}, stop: make(chan struct{}), done: make(chan struct{})}
	go ix.loop()
	return ix
}

// close stops the indexer and closes its connections.
func (ix *indexer) close() {
	close(ix.stop)
	<-ix.done
}

func (ix *indexer) loop() {
	defer close(ix.done)
	defer func() {
		for name, w := range ix.dbs {
			_ = w.db.Close()
			delete(ix.dbs, name)
		}
	}()
	t := time.NewTicker(indexInterval)
	defer t.Stop()
	for {
		ix.scan()
		select {
		case <-ix.stop:
			return
		case <-t.C:
		}
	}
}

// scan opens the database files that appeared, forgets those that went,
// and indexes the collections of every file whose schema changed.
func (ix *indexer) scan() {
	files, _ := filepath.Glob(filepath.Join(ix.dir, "*.sqlite"))
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		name := filepath.Base(f)
		seen[name] = true
		info, err := os.Stat(f)
		if err != nil {
			continue
		}
		w := ix.dbs[name]
		if w != nil && !os.SameFile(w.info, info) {
			_ = w.db.Close()
			w = nil
		}
		if w == nil {
			db, err := sql.Open("sqlite", fileURL(f))
			if err != nil {
				continue
			}
			db.SetMaxOpenConns(1)
			w = &watchedDB{db: db, info: info, version: -1}
			ix.dbs[name] = w
		}
		if err := w.index(); err != nil && !strings.Contains(err.Error(), "no such table") {
			ix.log.Error("indexing the development store's collections", slog.String("file", name), slog.Any("error", err))
		}
	}
	for name, w := range ix.dbs {
		if !seen[name] {
			_ = w.db.Close()
			delete(ix.dbs, name)
		}
	}
}

// index adds the _id index to the collections that lack it, if the schema
// changed since the last look.
func (w *watchedDB) index() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var v int64
	if err := w.db.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&v); err != nil {
		return err
	}
	if v == w.version {
		return nil
	}
	rows, err := w.db.QueryContext(ctx, `SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?)`, idIndexSuffix)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		// IF NOT EXISTS: FerretDB may drop or rename the table meanwhile,
		// and then this fails harmlessly until the next look.
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (_ferretdb_sjson->'$._id')`, quoteIdent(t+idIndexSuffix), quoteIdent(t))
		if _, err := w.db.ExecContext(ctx, q); err != nil && !strings.Contains(err.Error(), "no such table") {
			return err
		}
	}
	if err := w.db.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&v); err != nil {
		return err
	}
	w.version = v
	return nil
}

// quoteIdent quotes an SQLite identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// fileURL is the SQLite URL of a database file, waiting up to 10 s for
// FerretDB's write lock as FerretDB itself does.
func fileURL(path string) string {
	return (&url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=busy_timeout(10000)"}).String()
}
