package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/taskrun/taskrun/internal/devkeys"
	goruntime "runtime"
	"strconv"
	"time"
)

// tokenClaims are the claims the token task signs.
type tokenClaims struct {
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Iss string `json:"iss,omitempty"`
}

// stdSigner signs JWTs with the standard library only: the limit the token
// task is compared with.
type stdSigner struct {
	header string // base64url of the header, then "."
	sign   func(digestOrMsg []byte) ([]byte, error)
	hashed bool // sign takes a SHA-256 digest (RS256, ES256), not the message
}

// newStdSigner generates a fresh key of alg's kind and returns its signer.
func newStdSigner(alg string) (*stdSigner, error) {
	key, err := devkeys.NewKey(alg)
	if err != nil {
		return nil, err
	}
	return signerFor(alg, "powersync-0123456789", key)
}

// signerFor signs JWTs for alg with key, whose kid is kid.
func signerFor(alg, kid string, key crypto.Signer) (*stdSigner, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	s := &stdSigner{header: base64.RawURLEncoding.EncodeToString(hdr) + "."}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg != "RS256" {
			break
		}
		s.hashed = true
		s.sign = func(d []byte) ([]byte, error) { return rsa.SignPKCS1v15(nil, k, crypto.SHA256, d) }
		return s, nil
	case *ecdsa.PrivateKey:
		if alg != "ES256" {
			break
		}
		s.hashed = true
		s.sign = func(d []byte) ([]byte, error) {
			r, ss, err := ecdsa.Sign(rand.Reader, k, d)
			if err != nil {
				return nil, err
			}
			out := make([]byte, 64)
			r.FillBytes(out[:32])
			ss.FillBytes(out[32:])
			return out, nil
		}
		return s, nil
	case ed25519.PrivateKey:
		if alg != "EdDSA" {
			break
		}
		s.sign = func(m []byte) ([]byte, error) { return ed25519.Sign(k, m), nil }
		return s, nil
	}
	return nil, fmt.Errorf("a %T cannot sign %s", key, alg)
}

// token signs c and returns the compact JWT.
func (s *stdSigner) token(c tokenClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	msg := make([]byte, 0, 512)
	msg = append(msg, s.header...)
	msg = base64.RawURLEncoding.AppendEncode(msg, payload)
	in := msg
	if s.hashed {
		d := sha256.Sum256(msg)
		in = d[:]
	}
	sig, err := s.sign(in)
	if err != nil {
		return "", err
	}
	msg = append(msg, '.')
	msg = base64.RawURLEncoding.AppendEncode(msg, sig)
	return string(msg), nil
}

// signLoad signs tokens on GOMAXPROCS goroutines with a fresh key of
// alg's kind, no HTTP (latency = one signature).
func signLoad(alg, audience string, warmup, d time.Duration, logf func(string, ...any)) (Load, error) {
	s, err := newStdSigner(alg)
	if err != nil {
		return Load{}, err
	}
	now := time.Now().Unix()
	return Load{
		Workers:  goruntime.GOMAXPROCS(0),
		Warmup:   warmup,
		Duration: d,
		Log:      logf,
		Do: func(_ context.Context, w, i int) error {
			_, err := s.token(tokenClaims{
				Sub: "user-" + strconv.Itoa(w) + "-" + strconv.Itoa(i),
				Aud: audience, Iat: now, Exp: now + 300, Iss: "bench",
			})
			return err
		},
	}, nil
}
