// Package mongostore implements the runtime's store interfaces on the
// deployment's MongoDB, so that every instance of a deployment and every
// CLI on any machine sees the same state: run records (runs.go, the
// runtime.RunStore of `_runtime_runs`), and the stores of runtime/schedule
// and runtime/queue (jobs.go: `_runtime_jobs` and its companions).
//
// The runtime declares the interfaces and imports no MongoDB code;
// cmd/runtime passes OpenRuns (and the others) in, as database/sql drivers
// are chosen by main. Every collection is named `_runtime_*` (upload refuses
// to write them) in the database that upload uses, through the one client of
// the process (store.Database: runtime.Shared under store.SharedKey).
//
// Everything is written with single-document atomic operations (an insert
// on a unique _id, replaceOne, findOneAndUpdate): the embedded development
// store (FerretDB) has no transactions, no TTL indexes and no change
// streams, and the same code runs on it and on MongoDB. Retention is
// therefore a query (PruneRuns), not a TTL index.
package mongostore
