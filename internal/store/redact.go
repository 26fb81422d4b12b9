package store

import (
	"net/url"
	"strings"
)

// unparseable is what Redact shows of a string the driver would refuse in
// a way that leaves no safe part to show.
const unparseable = "(unparseable connection string)"

// Redact returns a connection string without its password and options,
// scheme://user:xxxxx@host1,host2/database, splitting it as the driver's
// parser does (x/mongo/driver/connstring): the user information ends at
// the first '@' (a password may hold an unescaped '?' or '#', which
// net/url would take for the start of the query or the fragment), the
// user name at the first ':', the hosts at the next '/' or '?'. A string
// the driver cannot split that way shows as "(unparseable connection
// string)".
func Redact(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || (scheme != "mongodb" && scheme != "mongodb+srv") {
		return unparseable
	}
	user := ""
	if info, after, ok := strings.Cut(rest, "@"); ok {
		name, _, hasPass := strings.Cut(info, ":")
		if strings.Contains(name, "/") {
			// The driver refuses a '/' in the user name: here the '@'
			// is past the hosts (in the options, say), and what comes
			// before may be anything.
			return unparseable
		}
		user = name + "@"
		if hasPass {
			user = name + ":xxxxx@"
		}
		rest = after
	}
	hosts, tail := rest, ""
	if i := strings.IndexAny(rest, "/?@"); i >= 0 {
		if rest[i] == '@' {
			return unparseable // a second '@': an unescaped one in the password
		}
		hosts, tail = rest[:i], rest[i:]
	}
	db := ""
	if strings.HasPrefix(tail, "/") {
		db, _, _ = strings.Cut(tail[1:], "?")
		db = "/" + db
	}
	return scheme + "://" + user + hosts + db
}

// scrub removes a URI and its password from an error's text, in case a
// driver error quotes either.
func scrub(err error, uri string) string {
	msg := err.Error()
	if uri == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, uri, Redact(uri))
	if _, rest, ok := strings.Cut(uri, "://"); ok {
		if info, _, ok := strings.Cut(rest, "@"); ok {
			if _, pass, ok := strings.Cut(info, ":"); ok && pass != "" {
				msg = strings.ReplaceAll(msg, pass, "xxxxx")
				if dec, err := url.PathUnescape(pass); err == nil && dec != "" {
					msg = strings.ReplaceAll(msg, dec, "xxxxx")
				}
			}
		}
	}
	return msg
}
