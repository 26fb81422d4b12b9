package deployment

import (
	"fmt"
	"net/url"
	"strings"
)

// DevelopmentOrigins are the browser origins a development deployment
// allows when it lists none: any port of the loopback names.
func DevelopmentOrigins() []string { return []string{"http://localhost:*", "http://127.0.0.1:*"} }

// corsOrigins checks the cors_origins list: "*" (any origin), exact origins
// (scheme://host[:port], nothing after), or a loopback host with the port
// "*" (http://localhost:*, http://127.0.0.1:*, http://[::1]:*). Unset, a
// development deployment gets DevelopmentOrigins() and a production one none.
func corsOrigins(list []string, set, production, credentials bool) ([]string, error) {
	if !set {
		if production {
			return nil, nil
		}
		return DevelopmentOrigins(), nil
	}
	var out, bad []string
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "*" {
			if credentials {
				return nil, fmt.Errorf("cors_origins: \"*\" with cors_credentials: true would let any web site call the tasks with its visitors' credentials: list the origins")
			}
			out = append(out, o)
			continue
		}
		if err := checkOrigin(o); err != nil {
			bad = append(bad, fmt.Sprintf("%q (%v)", o, err))
			continue
		}
		out = append(out, o)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("cors_origins: want \"*\", an origin such as https://app.example.com, or http://localhost:* ; got %s", strings.Join(bad, ", "))
	}
	return out, nil
}

func checkOrigin(o string) error {
	host, wildcard := o, false
	if strings.HasSuffix(o, ":*") {
		host, wildcard = strings.TrimSuffix(o, ":*"), true
	}
	u, err := url.Parse(host)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("the scheme must be http or https")
	case u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "/"):
		return fmt.Errorf("an origin is scheme://host[:port], nothing else")
	case strings.Contains(u.Host, "*"):
		return fmt.Errorf("only the port may be *, and only for localhost, 127.0.0.1 or [::1]")
	case wildcard && u.Port() != "":
		return fmt.Errorf("a port and a * port")
	case wildcard && !loopback(u.Hostname()):
		return fmt.Errorf("a * port is only for localhost, 127.0.0.1 or [::1]")
	case strings.ToLower(o) != o:
		return fmt.Errorf("browsers send origins in lower case")
	}
	return nil
}

func loopback(host string) bool { return host == "localhost" || host == "127.0.0.1" || host == "::1" }

// OriginAllowed reports whether a browser origin is in the list that
// corsOrigins checked.
func OriginAllowed(list []string, origin string) bool {
	for _, o := range list {
		if o == "*" || o == origin {
			return true
		}
		if base, ok := strings.CutSuffix(o, ":*"); ok {
			rest, ok := strings.CutPrefix(origin, base+":")
			if ok && rest != "" && len(rest) <= 5 && strings.Trim(rest, "0123456789") == "" {
				return true
			}
		}
	}
	return false
}
