// Package jwks serves GET /jwks: the public keys that verify PowerSync
// tokens, as {"keys":[...]}. Point the PowerSync service's JWKS URI at it.
//
// Each key has its public members only (n, e / x, y, crv), "kty", "kid",
// "alg" and "use":"sig"; never d, p, q, dp, dq or qi. The body is built once,
// when the deployment starts, and served with Content-Type application/json,
// Cache-Control "public, max-age=300" (the PowerSync service refreshes about
// every five minutes) and an ETag; a matching If-None-Match gets 304.
//
// Variables (see internal/keys for the formats):
//
//   - POWERSYNC_PUBLIC_KEY: the public key(s) to serve, several while
//     rotating. Optional: defaults to the public half of the private key.
//   - POWERSYNC_PRIVATE_KEY (secret): the signing key, which must match one
//     of the public keys. Optional here: a deployment may serve a JWKS
//     without being able to sign.
//
// With neither set, a development deployment generates a pair into its
// git-ignored local file; a production deployment refuses to start.
package jwks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
)

// CacheControl is sent with every JWKS response.
const CacheControl = "public, max-age=300"

type server struct {
	body []byte
	etag string
}

// Task registers jwks; tasks/all.go lists it.
func Task() runtime.Task {
	s := &server{}
	return runtime.Task{
		Name:        "jwks",
		Description: "the public keys that verify PowerSync tokens (JWKS)",
		HTTP:        map[string]runtime.HTTPFunc{http.MethodGet: s.get, http.MethodHead: s.get},
		Access:      runtime.Public,
		NoDeadline:  true, // it answers bytes made at start
		Vars:        keys.Vars,
		Init:        s.init,
	}
}

func (s *server) init(ctx context.Context, setup *runtime.Setup) error {
	set, err := keys.Load(setup)
	if err != nil {
		return err
	}
	s.body = set.JWKS()
	sum := sha256.Sum256(s.body)
	s.etag = `"` + hex.EncodeToString(sum[:12]) + `"`
	setup.Log.Info().Strs("kids", set.KIDs()).Msg("serving the JWKS at /jwks")
	return nil
}

func (s *server) get(c echo.Context, env *runtime.Env) error {
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, CacheControl)
	h.Set("ETag", s.etag)
	if match(c.Request().Header.Get("If-None-Match"), s.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	if c.Request().Method == http.MethodHead {
		h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		return c.NoContent(http.StatusOK)
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.body)
}

// match reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match).
func match(header, etag string) bool {
	if header == "" || len(header) > 4096 {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
