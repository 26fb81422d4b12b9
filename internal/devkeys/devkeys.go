// Package devkeys makes PowerSync key pairs for the commands' tests, soak
// runs and benchmarks: base64 of a JWK's JSON, the format of PowerSync's key
// generator and of POWERSYNC_PRIVATE_KEY / POWERSYNC_PUBLIC_KEY. Standard
// library only: Go's internal rule keeps cmd/ from importing
// internal/keys, and an independent implementation checks it.
package devkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
)

type jwk map[string]string

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Generate returns a fresh key for alg (RS256, ES256 or EdDSA), the base64 of its private
// and public JWK, and its kid.
func Generate(alg string) (key crypto.Signer, privB64, pubB64, kid string, err error) {
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, "", "", "", err
	}
	kid = "powersync-" + hex.EncodeToString(rnd[:])
	if key, err = NewKey(alg); err != nil {
		return nil, "", "", "", err
	}
	pub := jwk{"alg": alg, "kid": kid, "use": "sig"}
	priv := jwk{}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		pub["kty"], pub["n"], pub["e"] = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
		p, q := k.Primes[0], k.Primes[1]
		priv["d"], priv["p"], priv["q"] = b64(k.D.Bytes()), b64(p.Bytes()), b64(q.Bytes())
		priv["dp"], priv["dq"], priv["qi"] = b64(k.Precomputed.Dp.Bytes()), b64(k.Precomputed.Dq.Bytes()), b64(k.Precomputed.Qinv.Bytes())
	case *ecdsa.PrivateKey:
		raw, err := k.PublicKey.Bytes() // 0x04 || x || y
		if err != nil {
			return nil, "", "", "", err
		}
		d, err := k.Bytes()
		if err != nil {
			return nil, "", "", "", err
		}
		pub["kty"], pub["crv"], pub["x"], pub["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
		priv["d"] = b64(d)
	case ed25519.PrivateKey:
		pub["kty"], pub["crv"], pub["x"] = "OKP", "Ed25519", b64(k.Public().(ed25519.PublicKey))
		priv["d"] = b64(k.Seed())
	}
	for k, v := range pub {
		priv[k] = v
	}
	enc := func(m jwk) string {
		js, _ := json.Marshal(m)
		return base64.StdEncoding.EncodeToString(js)
	}
	return key, enc(priv), enc(pub), kid, nil
}

// NewKey returns a new private key for alg (RSA with its CRT values
// precomputed).
func NewKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "RS256":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		k.Precompute()
		return k, nil
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown algorithm %q", alg)
}
