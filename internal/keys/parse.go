package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf8"
)

// MinRSABits is the smallest RSA modulus accepted, as in the PowerSync
// service.
const MinRSABits = 2048

// maxKeyInput bounds one variable's value: a handful of keys, not a file.
const maxKeyInput = 256 << 10

type algInfo struct {
	kty   string
	hash  crypto.Hash
	curve elliptic.Curve
	size  int // EC coordinate size in bytes
}

var algs = map[string]algInfo{
	"RS256": {kty: "RSA", hash: crypto.SHA256},
	"RS384": {kty: "RSA", hash: crypto.SHA384},
	"RS512": {kty: "RSA", hash: crypto.SHA512},
	"ES256": {kty: "EC", hash: crypto.SHA256, curve: elliptic.P256(), size: 32},
	"ES384": {kty: "EC", hash: crypto.SHA384, curve: elliptic.P384(), size: 48},
	"ES512": {kty: "EC", hash: crypto.SHA512, curve: elliptic.P521(), size: 66},
	"EdDSA": {kty: "OKP"},
}

// Algorithms lists the supported JWS algorithms.
var Algorithms = []string{"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512"}

var curves = map[string]struct {
	curve elliptic.Curve
	size  int
	alg   string
}{
	"P-256": {elliptic.P256(), 32, "ES256"},
	"P-384": {elliptic.P384(), 48, "ES384"},
	"P-521": {elliptic.P521(), 66, "ES512"},
}

// Key is one parsed key: a public key, and its private half when known.
type Key struct {
	KID string
	Alg string

	pub  crypto.PublicKey  // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	priv crypto.PrivateKey // *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey or nil

	explicitKID bool // the kid came from the input, not derived
	explicitAlg bool
	strictAlg   bool // tokens must use Alg (keys we publish with an alg)
	info        algInfo
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// HasPrivate reports whether the private half is known.
func (k *Key) HasPrivate() bool { return k.priv != nil }

// rawJWK is a JWK as JSON. Members not listed are ignored.
type rawJWK struct {
	Kty    string   `json:"kty"`
	Alg    string   `json:"alg"`
	Kid    *string  `json:"kid"`
	Use    *string  `json:"use"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	D      string   `json:"d"`
	P      string   `json:"p"`
	Q      string   `json:"q"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	K      string   `json:"k"`
	Oth    any      `json:"oth"`
}

func (r *rawJWK) hasPrivate() bool {
	return r.D != "" || r.P != "" || r.Q != "" || r.K != ""
}

// b64url decodes a JWK member: base64url without padding, padding tolerated.
func b64url(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	return base64.RawURLEncoding.DecodeString(s)
}

// parseJWK parses one JWK. wantPrivate: the key must hold private members;
// otherwise it must not.
func parseJWK(r *rawJWK, wantPrivate bool) (*Key, error) {
	if r.Kty == "" {
		return nil, errors.New(`not a JWK: no "kty"`)
	}
	if r.Use != nil && *r.Use != "sig" {
		return nil, fmt.Errorf(`"use" is %q, want "sig"`, *r.Use)
	}
	if r.KeyOps != nil {
		want := "verify"
		if wantPrivate {
			want = "sign"
		}
		ok := false
		for _, op := range r.KeyOps {
			ok = ok || op == want
		}
		if !ok {
			return nil, fmt.Errorf(`"key_ops" lacks %q`, want)
		}
	}
	if wantPrivate && !r.hasPrivate() {
		return nil, errors.New("holds a public key only, want the private key")
	}
	if !wantPrivate && r.hasPrivate() {
		return nil, errors.New("holds private key material: put only public keys here (the private key is a secret)")
	}
	k := &Key{}
	var err error
	switch r.Kty {
	case "RSA":
		err = parseRSAJWK(r, k)
	case "EC":
		err = parseECJWK(r, k)
	case "OKP":
		err = parseOKPJWK(r, k)
	case "oct":
		return nil, errors.New(`symmetric keys ("kty":"oct") are not supported: they cannot be published in a JWKS`)
	default:
		return nil, fmt.Errorf("unsupported key type %q", clip(r.Kty))
	}
	if err != nil {
		return nil, err
	}
	if r.Alg != "" {
		k.Alg, k.explicitAlg = r.Alg, true
	}
	if r.Kid != nil && *r.Kid != "" {
		k.KID, k.explicitKID = *r.Kid, true
	}
	if err := k.complete(); err != nil {
		return nil, err
	}
	return k, nil
}

func parseRSAJWK(r *rawJWK, k *Key) error {
	if r.Oth != nil {
		return errors.New("multi-prime RSA keys are not supported")
	}
	nb, err1 := b64url(r.N)
	eb, err2 := b64url(r.E)
	if err1 != nil || err2 != nil || len(nb) == 0 || len(eb) == 0 || len(eb) > 4 {
		return errors.New(`RSA key: "n" or "e" is missing or not base64url`)
	}
	e := 0
	for _, b := range eb {
		e = e<<8 | int(b)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: e}
	if err := checkRSAPublic(pub); err != nil {
		return err
	}
	k.pub = pub
	if r.D == "" {
		return nil
	}
	db, err1 := b64url(r.D)
	pb, err2 := b64url(r.P)
	qb, err3 := b64url(r.Q)
	if err1 != nil || err2 != nil || err3 != nil || len(db) == 0 || len(pb) == 0 || len(qb) == 0 {
		return errors.New(`RSA private key: "d", "p" or "q" is missing or not base64url`)
	}
	priv := &rsa.PrivateKey{
		PublicKey: *pub,
		D:         new(big.Int).SetBytes(db),
		Primes:    []*big.Int{new(big.Int).SetBytes(pb), new(big.Int).SetBytes(qb)},
	}
	if err := priv.Validate(); err != nil {
		return errors.New("RSA private key is inconsistent (n, e, d, p, q do not agree)")
	}
	priv.Precompute()
	k.priv, k.pub = priv, &priv.PublicKey
	return nil
}

func checkRSAPublic(pub *rsa.PublicKey) error {
	if pub.N.BitLen() < MinRSABits {
		return fmt.Errorf("RSA key of %d bits is too small (want %d or more)", pub.N.BitLen(), MinRSABits)
	}
	if pub.E < 3 || pub.E&1 == 0 {
		return errors.New("RSA key has an invalid public exponent")
	}
	return nil
}

func parseECJWK(r *rawJWK, k *Key) error {
	c, ok := curves[r.Crv]
	if !ok {
		return fmt.Errorf("unsupported EC curve %q (want P-256, P-384 or P-521)", clip(r.Crv))
	}
	xb, err1 := b64url(r.X)
	yb, err2 := b64url(r.Y)
	if err1 != nil || err2 != nil || len(xb) != c.size || len(yb) != c.size {
		return fmt.Errorf(`EC key: "x" or "y" is missing, not base64url or not %d bytes`, c.size)
	}
	point := make([]byte, 0, 1+2*c.size)
	point = append(append(append(point, 4), xb...), yb...)
	pub, err := ecdsa.ParseUncompressedPublicKey(c.curve, point)
	if err != nil {
		return errors.New("EC key: the point is not on the curve")
	}
	k.pub = pub
	if r.D == "" {
		return nil
	}
	db, err := b64url(r.D)
	if err != nil || len(db) != c.size {
		return fmt.Errorf(`EC private key: "d" is not base64url or not %d bytes`, c.size)
	}
	priv, err := ecdsa.ParseRawPrivateKey(c.curve, db)
	if err != nil {
		return errors.New("EC private key is invalid")
	}
	if !priv.PublicKey.Equal(pub) {
		return errors.New(`EC private key: "d" does not match "x" and "y"`)
	}
	k.priv, k.pub = priv, &priv.PublicKey
	return nil
}

func parseOKPJWK(r *rawJWK, k *Key) error {
	if r.Crv != "Ed25519" {
		return fmt.Errorf("unsupported OKP curve %q (want Ed25519)", clip(r.Crv))
	}
	xb, err := b64url(r.X)
	if err != nil || len(xb) != ed25519.PublicKeySize {
		return errors.New(`Ed25519 key: "x" is missing, not base64url or not 32 bytes`)
	}
	pub := ed25519.PublicKey(xb)
	k.pub = pub
	if r.D == "" {
		return nil
	}
	db, err := b64url(r.D)
	if err != nil || len(db) != ed25519.SeedSize {
		return errors.New(`Ed25519 private key: "d" is not base64url or not 32 bytes`)
	}
	priv := ed25519.NewKeyFromSeed(db)
	if !pub.Equal(priv.Public()) {
		return errors.New(`Ed25519 private key: "d" does not match "x"`)
	}
	k.priv = priv
	return nil
}

// complete checks the algorithm against the key, and fills in the default
// algorithm and the derived kid.
func (k *Key) complete() error {
	def := defaultAlg(k.pub)
	if k.Alg == "" {
		k.Alg = def
	}
	info, ok := algs[k.Alg]
	if !ok {
		return fmt.Errorf("unsupported algorithm %q (supported: %s)", clip(k.Alg), strings.Join(Algorithms, ", "))
	}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if info.kty != "RSA" {
			return fmt.Errorf("algorithm %s does not fit an RSA key", k.Alg)
		}
	case *ecdsa.PublicKey:
		if info.kty != "EC" || info.curve != pub.Curve {
			return fmt.Errorf("algorithm %s does not fit an EC key on %s", k.Alg, pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if info.kty != "OKP" {
			return fmt.Errorf("algorithm %s does not fit an Ed25519 key", k.Alg)
		}
	}
	k.info = info
	if k.KID == "" {
		k.KID = deriveKID(k.pub)
	}
	if !utf8.ValidString(k.KID) || len(k.KID) > 256 {
		return errors.New(`"kid" is not valid UTF-8 or longer than 256 bytes`)
	}
	return nil
}

func defaultAlg(pub crypto.PublicKey) string {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		for _, c := range curves {
			if c.curve == pub.Curve {
				return c.alg
			}
		}
	case ed25519.PublicKey:
		return "EdDSA"
	}
	return ""
}

// deriveKID names a key that came without a kid: "powersync-" and ten hex
// digits of the SHA-256 of its SPKI encoding.
func deriveKID(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "powersync-" + hex.EncodeToString(sum[:5])
}

// clip keeps untrusted strings in error messages short.
func clip(s string) string {
	if len(s) > 64 || !utf8.ValidString(s) {
		return "(unrecognised)"
	}
	return s
}

// parsePEMBlock parses one PEM block into a key.
func parsePEMBlock(b *pem.Block, wantPrivate bool) (*Key, error) {
	if _, enc := b.Headers["Proc-Type"]; enc {
		return nil, errors.New("encrypted PEM keys are not supported")
	}
	k := &Key{}
	switch b.Type {
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
		if !wantPrivate {
			return nil, errors.New("holds a PEM private key: put only public keys here (the private key is a secret)")
		}
		var priv any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			priv, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			priv, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			priv, err = x509.ParseECPrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM %s block does not parse", b.Type)
		}
		switch p := priv.(type) {
		case *rsa.PrivateKey:
			if len(p.Primes) != 2 {
				return nil, errors.New("multi-prime RSA keys are not supported")
			}
			if err := checkRSAPublic(&p.PublicKey); err != nil {
				return nil, err
			}
			p.Precompute()
			k.priv, k.pub = p, &p.PublicKey
		case *ecdsa.PrivateKey:
			k.priv, k.pub = p, &p.PublicKey
		case ed25519.PrivateKey:
			k.priv, k.pub = p, p.Public()
		default:
			return nil, fmt.Errorf("unsupported private key type %T", priv)
		}
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		if wantPrivate {
			return nil, errors.New("holds a public key only, want the private key")
		}
		var pub any
		var err error
		if b.Type == "PUBLIC KEY" {
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		} else {
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM %s block does not parse", b.Type)
		}
		switch p := pub.(type) {
		case *rsa.PublicKey:
			if err := checkRSAPublic(p); err != nil {
				return nil, err
			}
			k.pub = p
		case *ecdsa.PublicKey:
			k.pub = p
		case ed25519.PublicKey:
			k.pub = p
		default:
			return nil, fmt.Errorf("unsupported public key type %T", pub)
		}
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", clip(b.Type))
	}
	if ec, ok := k.pub.(*ecdsa.PublicKey); ok && defaultAlg(ec) == "" {
		return nil, errors.New("unsupported EC curve (want P-256, P-384 or P-521)")
	}
	if err := k.complete(); err != nil {
		return nil, err
	}
	return k, nil
}

// decodeBase64 accepts standard and URL-safe base64, padded or not, and
// ignores line breaks inside.
func decodeBase64(s string) ([]byte, bool) {
	if strings.ContainsAny(s, "\r\n\t ") {
		s = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == '\t' || r == ' ' {
				return -1
			}
			return r
		}, s)
	}
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		b, err := base64.RawURLEncoding.DecodeString(s)
		return b, err == nil
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	return b, err == nil
}

// parseValue parses a variable's value into keys. It accepts, in any
// number when many is set, separated by commas or white space: base64 of a
// JWK or JWKS, raw JWK or JWKS JSON, and PEM blocks (also base64 of PEM, and
// PEM whose line breaks were written as \n).
func parseValue(value string, wantPrivate, many bool) ([]*Key, error) {
	if len(value) > maxKeyInput {
		return nil, fmt.Errorf("the value is longer than %d bytes", maxKeyInput)
	}
	if strings.Contains(value, "-----BEGIN") && !strings.Contains(value, "\n") && strings.Contains(value, `\n`) {
		value = strings.ReplaceAll(value, `\n`, "\n")
	}
	var out []*Key
	rest := value
	for n := 1; ; n++ {
		rest = strings.TrimLeft(rest, " \t\r\n,")
		if rest == "" {
			break
		}
		var (
			got []*Key
			err error
		)
		switch {
		case strings.HasPrefix(rest, "-----BEGIN"):
			var b *pem.Block
			b, remain := pem.Decode([]byte(rest))
			if b == nil {
				return nil, fmt.Errorf("item %d: malformed PEM block", n)
			}
			rest = string(remain)
			var k *Key
			k, err = parsePEMBlock(b, wantPrivate)
			got = []*Key{k}
		case rest[0] == '{':
			dec := json.NewDecoder(strings.NewReader(rest))
			var raw json.RawMessage
			if dec.Decode(&raw) != nil {
				return nil, fmt.Errorf("item %d: malformed JSON", n)
			}
			rest = rest[dec.InputOffset():]
			got, err = parseJSONKeys(raw, wantPrivate)
		default:
			end := strings.IndexAny(rest, " \t\r\n,")
			if end < 0 {
				end = len(rest)
			}
			tok := rest[:end]
			rest = rest[end:]
			b, ok := decodeBase64(tok)
			if !ok {
				return nil, fmt.Errorf("item %d: neither base64 of a JWK, JSON nor PEM", n)
			}
			b = bytes.TrimSpace(b)
			switch {
			case bytes.HasPrefix(b, []byte("-----BEGIN")):
				got, err = parseValue(string(b), wantPrivate, true)
			case len(b) > 0 && b[0] == '{':
				got, err = parseJSONKeys(b, wantPrivate)
			default:
				return nil, fmt.Errorf("item %d: the base64 decodes to neither a JWK nor PEM", n)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", n, err)
		}
		out = append(out, got...)
	}
	if len(out) == 0 {
		return nil, errors.New("holds no key")
	}
	if !many && len(out) > 1 {
		return nil, fmt.Errorf("holds %d keys, want exactly one", len(out))
	}
	return out, nil
}

// parseJSONKeys parses a JWK or a JWKS.
func parseJSONKeys(b []byte, wantPrivate bool) ([]*Key, error) {
	var probe struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return nil, errors.New("malformed JSON (want a JWK object or a JWKS)")
	}
	if probe.Keys != nil {
		var out []*Key
		for i, kb := range probe.Keys {
			var r rawJWK
			if json.Unmarshal(kb, &r) != nil {
				return nil, fmt.Errorf("JWKS key %d: malformed JWK", i+1)
			}
			k, err := parseJWK(&r, wantPrivate)
			if err != nil {
				return nil, fmt.Errorf("JWKS key %d: %w", i+1, err)
			}
			out = append(out, k)
		}
		if len(out) == 0 {
			return nil, errors.New(`JWKS has an empty "keys"`)
		}
		return out, nil
	}
	var r rawJWK
	if json.Unmarshal(b, &r) != nil {
		return nil, errors.New("malformed JWK")
	}
	k, err := parseJWK(&r, wantPrivate)
	if err != nil {
		return nil, err
	}
	return []*Key{k}, nil
}

// publicOf returns the public half of a private key.
func publicOf(priv *Key) *Key {
	return &Key{KID: priv.KID, Alg: priv.Alg, pub: priv.pub, explicitKID: priv.explicitKID, explicitAlg: priv.explicitAlg, info: priv.info}
}

// samePublic reports whether two keys have the same public part.
func samePublic(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
