package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// GenerateAlgs are the algorithms Generate accepts.
var GenerateAlgs = []string{"RS256", "ES256", "EdDSA"}

// nodeOrder is the member order of Node's JWK export, which PowerSync's own
// key generator prints, followed by the members it adds.
var nodeOrder = map[string][]string{
	"RSA": {"kty", "n", "e", "d", "p", "q", "dp", "dq", "qi", "alg", "kid", "use"},
	"EC":  {"kty", "x", "y", "crv", "d", "alg", "kid", "use"},
	"OKP": {"crv", "d", "x", "kty", "alg", "kid", "use"},
}

// Generate makes a new key pair for alg (RS256 when empty: RSA 2048; ES256:
// P-256; EdDSA: Ed25519) and returns the standard base64 of its private and
// public JWK JSON, and its kid ("powersync-" and ten random hex digits).
//
// The output is that of PowerSync's own key generator: the JWK (go-jose
// writes it) with its members in the order of Node's JWK export (RSA
// kty,n,e,d,p,q,dp,dq,qi; EC kty,x,y,crv,d; OKP crv,d,x,kty), then "alg" and
// "kid", as compact JSON in padded standard base64. One member follows:
// "use":"sig", which the PowerSync service and JWK importers read as
// intended, so keys move between the two either way.
func Generate(alg string) (privateB64, publicB64, kid string, err error) {
	if alg == "" {
		alg = "RS256"
	}
	var key crypto.Signer
	switch alg {
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, MinRSABits)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return "", "", "", fmt.Errorf("unsupported algorithm %q (want one of RS256, ES256, EdDSA)", clip(alg))
	}
	if err != nil {
		return "", "", "", err
	}
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", "", err
	}
	kid = "powersync-" + hex.EncodeToString(rnd[:])
	jwk := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
	priv, err := nodeJWK(jwk)
	if err != nil {
		return "", "", "", err
	}
	pub, err := nodeJWK(jwk.Public())
	if err != nil {
		return "", "", "", err
	}
	return base64.StdEncoding.EncodeToString(priv), base64.StdEncoding.EncodeToString(pub), kid, nil
}

// nodeJWK marshals a JWK with go-jose and writes its members again in
// nodeOrder.
func nodeJWK(k jose.JSONWebKey) ([]byte, error) {
	js, err := k.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(js, &members); err != nil {
		return nil, err
	}
	var kty string
	_ = json.Unmarshal(members["kty"], &kty)
	var b bytes.Buffer
	b.WriteByte('{')
	written := 0
	for _, name := range nodeOrder[kty] {
		v, ok := members[name]
		if !ok {
			continue
		}
		if written > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", name)
		b.Write(v)
		written++
	}
	if written != len(members) {
		return nil, errors.New("generated JWK has members Node's export does not write")
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
