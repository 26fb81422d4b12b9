package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
)

// GenerateAlgs are the algorithms Generate accepts.
var GenerateAlgs = []string{"RS256", "ES256", "EdDSA"}

// Generate makes a new key pair for alg (RS256 when empty: RSA 2048; ES256:
// P-256; EdDSA: Ed25519) and returns the standard base64 of its private and
// public JWK JSON, and its kid ("powersync-" and ten random hex digits).
//
// The output is that of PowerSync's own key generator: Node's JWK export
// (RSA kty,n,e,d,p,q,dp,dq,qi; EC kty,x,y,crv,d; OKP crv,d,x,kty), then
// "alg" and "kid", as compact JSON in padded standard base64. One member
// follows: "use":"sig", which the PowerSync service and JWK importers read
// as intended, so keys move between the two either way.
func Generate(alg string) (privateB64, publicB64, kid string, err error) {
	if alg == "" {
		alg = "RS256"
	}
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", "", err
	}
	kid = "powersync-" + hex.EncodeToString(rnd[:])
	var priv, pub []byte
	switch alg {
	case "RS256":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return "", "", "", err
		}
		pub = appendPublicJWK(nil, &k.PublicKey)
		priv = appendRSAPrivateJWK(nil, k)
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", "", err
		}
		pub = appendPublicJWK(nil, &k.PublicKey)
		d, err := k.Bytes()
		if err != nil {
			return "", "", "", err
		}
		priv = append(pub[:len(pub)-1:len(pub)-1], `,"d":"`...)
		priv = appendB64(priv, d)
		priv = append(priv, `"}`...)
	case "EdDSA":
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", "", "", err
		}
		pub = appendPublicJWK(nil, p)
		priv = append([]byte(nil), `{"crv":"Ed25519","d":"`...)
		priv = appendB64(priv, k.Seed())
		priv = append(priv, `","x":"`...)
		priv = appendB64(priv, p)
		priv = append(priv, `","kty":"OKP"}`...)
	default:
		return "", "", "", fmt.Errorf("unsupported algorithm %q (want one of RS256, ES256, EdDSA)", clip(alg))
	}
	return base64.StdEncoding.EncodeToString(withAlgKid(priv, alg, kid)),
		base64.StdEncoding.EncodeToString(withAlgKid(pub, alg, kid)), kid, nil
}

// withAlgKid replaces the closing brace of a JWK by ,"alg","kid","use".
func withAlgKid(jwk []byte, alg, kid string) []byte {
	b := append([]byte(nil), jwk[:len(jwk)-1]...)
	b = append(b, `,"alg":`...)
	b = appendJSONString(b, alg)
	b = append(b, `,"kid":`...)
	b = appendJSONString(b, kid)
	return append(b, `,"use":"sig"}`...)
}

func appendRSAPrivateJWK(b []byte, k *rsa.PrivateKey) []byte {
	p, q := k.Primes[0], k.Primes[1]
	one := big.NewInt(1)
	dp := new(big.Int).Mod(k.D, new(big.Int).Sub(p, one))
	dq := new(big.Int).Mod(k.D, new(big.Int).Sub(q, one))
	qi := new(big.Int).ModInverse(q, p)
	b = append(b, `{"kty":"RSA"`...)
	for _, m := range []struct {
		name string
		v    *big.Int
	}{{"n", k.N}, {"e", big.NewInt(int64(k.E))}, {"d", k.D}, {"p", p}, {"q", q}, {"dp", dp}, {"dq", dq}, {"qi", qi}} {
		b = append(b, `,"`...)
		b = append(b, m.name...)
		b = append(b, `":"`...)
		b = appendB64(b, m.v.Bytes())
		b = append(b, '"')
	}
	return append(b, '}')
}
