package load

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"

	"github.com/go-jose/go-jose/v4"
)

// GenerateKeys returns a new RS256 key pair in the format of the
// POWERSYNC_PRIVATE_KEY and POWERSYNC_PUBLIC_KEY variables (base64 of a JWK's
// JSON, as PowerSync's own key generator writes them), and its kid.
func GenerateKeys() (private, public, kid string, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", "", err
	}
	var id [5]byte
	_, _ = rand.Read(id[:])
	kid = "powersync-" + hex.EncodeToString(id[:])
	enc := func(key any) (string, error) {
		b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: "RS256", Use: "sig"})
		return base64.StdEncoding.EncodeToString(b), err
	}
	if private, err = enc(k); err != nil {
		return "", "", "", err
	}
	if public, err = enc(&k.PublicKey); err != nil {
		return "", "", "", err
	}
	return private, public, kid, nil
}
