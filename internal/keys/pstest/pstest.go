// Package pstest verifies PowerSync tokens for tests the way the PowerSync
// service does, independently of package keys: it parses the JWKS and
// checks signatures with go-jose, and the claims with its own code.
package pstest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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
//   - sub, iat and exp are present; exp is after now - 60 s; nbf (if any)
//     before now + 60 s;
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
		if meta.KeyOps != nil && !contains(meta.KeyOps, "verify") {
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
	jws, err := jose.ParseSigned(token, supported)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, nil, errors.New("want one signature")
	}
	h := jws.Signatures[0].Protected
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
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, nil, fmt.Errorf("signature: %w", err)
	}
	rawHeader := strings.SplitN(token, ".", 2)[0]
	header, err = decodeSegment(rawHeader)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	for _, c := range []string{"sub", "iat", "exp"} {
		if _, ok := claims[c]; !ok {
			return nil, nil, fmt.Errorf("missing %s", c)
		}
	}
	iat, ok1 := claims["iat"].(float64)
	exp, ok2 := claims["exp"].(float64)
	if !ok1 || !ok2 {
		return nil, nil, errors.New("iat or exp not a number")
	}
	n := math.Floor(float64(now.UnixMilli()) / 1000)
	if exp <= n-60 {
		return nil, nil, errors.New("expired")
	}
	if nbf, ok := claims["nbf"].(float64); ok && nbf > n+60 {
		return nil, nil, errors.New("not yet valid")
	}
	var auds []any
	switch a := claims["aud"].(type) {
	case string:
		auds = []any{a}
	case []any:
		auds = a
	case nil:
		return nil, nil, errors.New("missing aud")
	}
	found := false
	for _, a := range auds {
		found = found || a == audience
	}
	if !found {
		return nil, nil, fmt.Errorf("aud %v lacks %q", claims["aud"], audience)
	}
	if exp-iat > 86400 {
		return nil, nil, fmt.Errorf("lifetime %gs over 86400", exp-iat)
	}
	if p, ok := claims["parameters"]; ok && p != nil {
		if _, obj := p.(map[string]any); !obj {
			return nil, nil, errors.New("parameters not an object")
		}
	}
	return header, claims, nil
}

func decodeSegment(s string) (map[string]any, error) {
	b, err := base64URL(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
