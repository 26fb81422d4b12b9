package main

// A check of issued tokens against a served JWKS, standard library only: an
// independent check of what internal/keys signs. The key pairs come
// from internal/devkeys.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// verifyToken checks a compact JWT against a JWKS body as the PowerSync
// service does in the main: a known kid, the key's algorithm, a valid
// signature, the audience and a sane lifetime. It returns the subject.
func verifyToken(token string, jwks []byte, aud string, now time.Time) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWT")
	}
	var hdr struct{ Alg, Kid, Typ string }
	if err := decodePart(parts[0], &hdr); err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(jwks, &set); err != nil {
		return "", fmt.Errorf("JWKS: %w", err)
	}
	var key map[string]any
	for _, k := range set.Keys {
		if k["kid"] == hdr.Kid {
			key = k
		}
	}
	if key == nil {
		return "", fmt.Errorf("kid %q is not in the JWKS", hdr.Kid)
	}
	if key["alg"] != hdr.Alg {
		return "", fmt.Errorf("alg %q, the key says %v", hdr.Alg, key["alg"])
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if _, ok := key[private]; ok {
			return "", fmt.Errorf("the JWKS holds the private member %q", private)
		}
	}
	str := func(name string) []byte {
		s, _ := key[name].(string)
		b, _ := base64.RawURLEncoding.DecodeString(s)
		return b
	}
	signed := []byte(parts[0] + "." + parts[1])
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", errors.New("signature is not base64url")
	}
	digest := sha256.Sum256(signed)
	ok := false
	switch hdr.Alg {
	case "RS256":
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(str("n")), E: int(new(big.Int).SetBytes(str("e")).Int64())}
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
	case "ES256":
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, str("x")...), str("y")...))
		if err != nil {
			return "", err
		}
		ok = len(sig) == 64 && ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case "EdDSA":
		x := str("x")
		ok = len(x) == ed25519.PublicKeySize && ed25519.Verify(ed25519.PublicKey(x), signed, sig)
	default:
		return "", fmt.Errorf("unexpected alg %q", hdr.Alg)
	}
	if !ok {
		return "", errors.New("the signature does not verify")
	}
	var c struct {
		Sub      string
		Aud      any
		Iat, Exp int64
	}
	if err := decodePart(parts[1], &c); err != nil {
		return "", fmt.Errorf("claims: %w", err)
	}
	audOK := c.Aud == aud
	if list, isList := c.Aud.([]any); isList {
		for _, a := range list {
			audOK = audOK || a == aud
		}
	}
	switch {
	case !audOK:
		return "", fmt.Errorf("aud %v does not hold %s", c.Aud, aud)
	case c.Exp-c.Iat > 86400 || c.Exp <= c.Iat:
		return "", fmt.Errorf("lifetime exp-iat = %d s", c.Exp-c.Iat)
	case now.Unix() > c.Exp+60 || now.Unix() < c.Iat-60:
		return "", errors.New("expired or not yet valid")
	}
	return c.Sub, nil
}

func decodePart(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
