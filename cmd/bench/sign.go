package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	goruntime "runtime"
	"time"

	"github.com/taskrun/taskrun/internal/keys/pstest"
)

// tokenInputBytes is about the length of a token's signing input (its
// base64url header and claims).
const tokenInputBytes = 320

// signLoad computes signatures on GOMAXPROCS goroutines with a fresh key of
// alg's kind: the signature alone, the physical limit of GET /token (no
// JWT encoding, no HTTP; latency = one signature).
func signLoad(alg string, warmup, d time.Duration, logf func(string, ...any)) (Load, error) {
	var key crypto.Signer
	var err error
	opts := crypto.Hash(0)
	switch alg {
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		opts = crypto.SHA256
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		opts = crypto.SHA256
	case "EdDSA":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("unknown algorithm %q", alg)
	}
	if err != nil {
		return Load{}, err
	}
	msg := make([]byte, tokenInputBytes)
	return Load{
		Workers:  goruntime.GOMAXPROCS(0),
		Warmup:   warmup,
		Duration: d,
		Log:      logf,
		Do: func(_ context.Context, w, i int) error {
			in := msg
			if opts != 0 {
				sum := sha256.Sum256(msg)
				in = sum[:]
			}
			_, err := key.Sign(rand.Reader, in, opts)
			return err
		},
	}, nil
}

// verifyIssued checks a token a runtime issued for user against the JWKS
// it serves, as the PowerSync service does (pstest).
func verifyIssued(token string, jwks []byte, user string, now time.Time) error {
	_, claims, err := pstest.Verify(jwks, token, audience, now)
	if err != nil {
		return err
	}
	if claims["sub"] != user {
		return fmt.Errorf("token subject %v, want %s", claims["sub"], user)
	}
	return nil
}
