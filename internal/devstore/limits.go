package devstore

// Limits is how a writer must cut and pace its writes for a FerretDB
// server, and what FerretDB lacks (internal/store asks the server which
// it is). The zero value is MongoDB's: no limit of ours.
type Limits struct {
	// MaxStatements bounds the statements of one write command. FerretDB's
	// update command holds one pooled SQLite connection per matching
	// statement until the command ends, from a pool of 100: a command of
	// 100 replacements of existing documents waits for itself forever and
	// wedges the store.
	MaxStatements int
	// Parallel bounds the collections one batch writes at once.
	Parallel int
	// Slots bounds the batches written at once by one process: with
	// MaxStatements x Parallel x Slots connections at most (64 of the
	// 100), reads and dead letters still get one.
	Slots int
	// NoTransactions: FerretDB v1 has none (it accepts and ignores the
	// transaction fields of a write).
	NoTransactions bool
	// NoDecimal128: FerretDB v1 cannot store Decimal128 values (it closes
	// the connection).
	NoDecimal128 bool
	// IDOnlyFilters: FerretDB v1 on SQLite finds a document through an
	// index only when a filter is {_id: value} alone; any other filter
	// reads the whole collection (a write that matches nothing does, for
	// each statement).
	IDOnlyFilters bool
}

// FerretDBLimits are the limits of FerretDB v1: commands of 16, two
// collections at a time (SQLite serializes writes, but reading and
// encoding documents of two collections runs on two cores), two batches
// at a time.
func FerretDBLimits() Limits {
	return Limits{MaxStatements: 16, Parallel: 2, Slots: 2, NoTransactions: true, NoDecimal128: true, IDOnlyFilters: true}
}
