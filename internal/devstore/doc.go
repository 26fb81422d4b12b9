// Package devstore is everything specific to the embedded development
// store, FerretDB v1 on SQLite, behind one boundary:
//
//   - starting and stopping it (Start, Server), with its files in one
//     folder and an index on every collection that FerretDB's writes by
//     _id can use (see index.go);
//   - who owns a folder's store (Claim, Running): one process per folder
//     runs it, the others connect to it;
//   - what a writer must respect on any FerretDB server, embedded or named
//     by MONGO_URI (Limits).
//
// Building with -tags nodevstore leaves FerretDB out (a smaller binary for
// production); Start then returns ErrNotIncluded, which says how to get a
// binary with it. Ownership and Limits need no FerretDB and stay.
package devstore
