// Package upload is the task behind a PowerSync client's uploadData(): it
// applies the client's queued writes to MongoDB.
//
//	POST /upload
//	Authorization: Bearer <token from /token>      (or: Token <token>)
//	Content-Type: application/json
//
//	{"batch":[{"op":"PUT","table":"lists","id":"61d1...","data":{"name":"Name"}}, ...]}
//
// Both spellings that clients send are accepted: "table" or "type", "data"
// or "opData". op_id, tx_id, old, metadata and unknown members are ignored.
//
// # Semantics
//
//   - PUT replaces or inserts {_id: id, ...data} (an upsert).
//   - PATCH sets the given fields of {_id: id}; null sets null. A PATCH of a
//     document that does not exist changes nothing (no upsert), as in
//     PowerSync's reference backends (an SQL UPDATE): upserting would
//     resurrect a partial document that another writer deleted. Retries do
//     not need it: a retried batch is replayed whole and in order.
//   - DELETE deletes {_id: id}; deleting a missing document succeeds.
//
// Operations on the same document are applied in batch order: the batch's
// operations on each document are folded in memory into the one write that
// has their combined effect (PUT then PATCH is one PUT, anything then
// DELETE is one DELETE, ...). The writes of a batch then touch distinct
// documents, so each collection's writes go in one bulk write (at most one
// update and one delete command per ~128 KiB of documents; commands of 16 on
// FerretDB), collections in parallel (two at a time on FerretDB). The
// bulk write is unordered: order between distinct documents carries no
// meaning, and a document the database refuses must not stop the others (in
// a transaction it is ordered). Every write is idempotent, so a batch
// applied twice, or retried after a partial failure, leaves the same data.
//
// The answer is 200 {"applied": n, "refused": [{"op_index": i, "reason": "..."}]},
// sent only once the database has acknowledged the writes (with
// UPLOAD_WRITE_CONCERN if set).
//
// # Bad requests, refused operations, failures
//
// The whole batch is decoded and validated before anything is written.
// Requests that no SDK sends get a 4xx JSON error naming the problem, with
// "op_index" when an operation is at fault, and nothing is written: not
// JSON (400, with "offset"), not application/json (415), no batch, wrong
// types, an unknown op, a missing or empty id, an id that is not a string
// or is longer than 1024 bytes, more than UPLOAD_MAX_OPS operations (413),
// a body over the deployment's body_limit (413); and hostile content:
// collection names that are empty, longer than 120 bytes, start with
// "system.", "_powersync" or "_runtime_" (the runtime's own), or contain
// $, . or NUL; field names that start with $ at any depth, contain . or
// are empty at the top level, or contain NUL; duplicate field names; _id in data that disagrees with id; nesting
// deeper than 100 levels; invalid UTF-8 (and lone UTF-16 surrogates).
//
// Operations that a real client could send but that the deployment's rules
// refuse (a collection outside UPLOAD_ALLOW, a write rule, Customise returning Refuse,
// the database refusing a document, such as a duplicate key in a unique
// index or a schema validator) must not block the client's queue: by
// default the batch succeeds with the refused operations listed in
// "refused", and each is stored in the dead-letter collection
// (_powersync_refused; UPLOAD_REFUSED_COLLECTION) as
// {op, table, id, op_index, reason, user, time, request_id, raw, last_seen,
// attempts}, raw being the operation's JSON as received. A retried batch
// updates its records (attempts) rather than adding more. With
// UPLOAD_REFUSED=strict the batch fails with 422 and the list instead;
// nothing is written, except that without transactions a document refused
// by the database is only known after the other writes were made.
//
// The database down, a timeout, an election: 503 with Retry-After: 5, never
// a 2xx; the client's retry then converges.
//
// # Variables
//
//	POWERSYNC_URL             audience of the tokens (required unless UPLOAD_AUTH=off)
//	UPLOAD_AUTH               on (default) | off: no token needed; development only, refused in production
//	UPLOAD_ID_MODE            string (default) | objectid: 24-hex ids are written as ObjectIds,
//	                          other ids as strings, so collections keyed by ObjectId stay consistent
//	UPLOAD_TRANSACTIONS       false (default) | true: each batch in one transaction; refused at start
//	                          when the server cannot (standalone servers, the development store)
//	UPLOAD_WRITE_CONCERN      majority | <n>; default: the connection string's, else the server's
//	UPLOAD_ALLOW              comma-separated collections clients may write; empty: any valid name
//	UPLOAD_REFUSED            deadletter (default) | strict
//	UPLOAD_REFUSED_COLLECTION dead-letter collection (default _powersync_refused)
//	UPLOAD_MAX_OPS            most operations in one batch (default 10000)
//	MONGO_URI, MONGO_DATABASE see internal/store (unset in development: an embedded store)
//	POWERSYNC_PRIVATE_KEY, POWERSYNC_PUBLIC_KEY  see internal/keys
//
// # Write rules
//
// The deployment file's upload: section (rules.go) says per collection who
// may write what: an owner field matched against the token's subject,
// immutable fields, the writable fields, collections closed to clients, a
// default for the others, and field types (types.go). What can be decided
// from the operation alone is checked before anything is written; whose
// document it is, and what its immutable fields hold, is a condition of
// the write itself (guard.go), so there is no window between a check and
// its write; on a server that finds a document quickly only by {_id} alone
// (FerretDB, the development store) they are checked by reading by _id,
// under a lock of the collection from the check to the write (checkByID).
// A refused operation is reported per operation (reason
// "forbidden" or "type", with "rule" and "message") and dead-lettered like
// the others; an operation refused at the write is folded out and the
// others on its document written again. A production deployment refuses
// to start without rules unless they say default: allow.
//
// # Customisation
//
// Customise (customise.go) sees every operation that the rules accepted,
// with its types converted, before it is written, and may change it or
// refuse it; see its documentation for an example.
//
// # Values
//
// JSON values become BSON as MongoDB's own tools store them: integers as
// int32 when they fit, else int64, other numbers as double, objects and
// arrays as documents and arrays.
package upload
