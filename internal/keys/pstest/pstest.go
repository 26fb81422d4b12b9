// Package pstest verifies PowerSync tokens for tests the way the PowerSync
// service does, without package keys: go-jose parses the JWKS, checks the
// signature and validates the registered claims (aud, exp, nbf, iat with
// 60 s of leeway); this package adds only the service's own rules.
package pstest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var supported = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// Verify checks token against a JWKS body as the PowerSync service does and
// returns its header and claims:
//   - the JWKS keys are skipped unless kty is RSA, EC or OKP, use (if any) is
//     "sig" and key_ops (if any) has "verify";
//   - the header's kid is present and names a JWKS key, whose alg (if any)
//     equals the header's alg; the signature verifies with that key;
//   - sub, iat and exp are present; exp is after now - 60 s; nbf and iat
//     (if any) before now + 60 s;
//   - aud (a string or an array) contains audience;
//   - exp - iat <= 86400;
//   - parameters, if present, is an object.
func Verify(jwks []byte, token, audience string, now time.Time) (header map[string]any, claims map[string]any, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil || doc.Keys == nil {
		return nil, nil, errors.New("JWKS: no keys array")
	}
	byKID := map[string]jose.JSONWebKey{}
	for _, raw := range doc.Keys {
		var meta struct {
			Kty    string   `json:"kty"`
			Use    *string  `json:"use"`
			KeyOps []string `json:"key_ops"`
		}
		_ = json.Unmarshal(raw, &meta)
		if meta.Kty != "RSA" && meta.Kty != "EC" && meta.Kty != "OKP" {
			continue
		}
		if meta.Use != nil && *meta.Use != "sig" {
			continue
		}
		if meta.KeyOps != nil && !slices.Contains(meta.KeyOps, "verify") {
			continue
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			return nil, nil, fmt.Errorf("JWKS key does not parse: %w", err)
		}
		if !k.IsPublic() {
			return nil, nil, errors.New("JWKS holds a private key")
		}
		byKID[k.KeyID] = k
	}
	tok, err := jwt.ParseSigned(token, supported)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	h := tok.Headers[0]
	if h.KeyID == "" {
		return nil, nil, errors.New("no kid")
	}
	key, ok := byKID[h.KeyID]
	if !ok {
		return nil, nil, fmt.Errorf("kid %q not in the JWKS", h.KeyID)
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, nil, fmt.Errorf("alg %s, key says %s", h.Algorithm, key.Algorithm)
	}
	var c jwt.Claims
	if err := tok.Claims(key, &c, &claims); err != nil {
		return nil, nil, fmt.Errorf("signature or claims: %w", err)
	}
	n := now.Truncate(time.Second)
	if err := c.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{audience}, Time: n}, 60*time.Second); err != nil {
		return nil, nil, err
	}
	// The service's own rules, which go-jose's validation does not make.
	if c.Subject == "" || c.IssuedAt == nil || c.Expiry == nil {
		return nil, nil, errors.New("missing sub, iat or exp")
	}
	if !c.Expiry.Time().After(n.Add(-60 * time.Second)) {
		return nil, nil, errors.New("expired (exp <= now - 60 s)")
	}
	if *c.Expiry-*c.IssuedAt > 86400 {
		return nil, nil, fmt.Errorf("lifetime %ds over 86400", *c.Expiry-*c.IssuedAt)
	}
	if p, ok := claims["parameters"]; ok && p != nil {
		if _, obj := p.(map[string]any); !obj {
			return nil, nil, errors.New("parameters not an object")
		}
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.SplitN(token, ".", 2)[0])
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(raw, &header); err != nil {
		return nil, nil, err
	}
	return header, claims, nil
}
