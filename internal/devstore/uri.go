package devstore

import (
	"log/slog"
	"net/url"

	"github.com/rs/zerolog"
)

// URI is the connection string of a store listening on addr, naming
// database db ("" : none).
func URI(addr, db string) string {
	return (&url.URL{Scheme: "mongodb", Host: addr, Path: "/" + db}).String()
}

// Slogger returns a logger for FerretDB's own log that passes only its
// errors on to l, tagged component=devstore: at warning level FerretDB
// logs every failed command's whole wire message (data included) and
// every dropped connection.
func Slogger(l zerolog.Logger) *slog.Logger {
	return slog.New(zerolog.NewSlogHandler(l.With().Str("component", "devstore").Logger().Level(zerolog.ErrorLevel)))
}
