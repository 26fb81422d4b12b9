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
	"slices"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// RSA key sizes accepted: the PowerSync service's minimum, and the largest
// modulus go-jose parses (jose.MaxRSAModulusBits).
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

// maxKeyInput bounds one variable's value: a handful of keys, not a file.
const maxKeyInput = 256 << 10

// algFamily is what an algorithm needs of a key.
type algFamily struct {
	kty   string
	curve elliptic.Curve // EC only
}

var algs = map[string]algFamily{
	"RS256": {kty: "RSA"}, "RS384": {kty: "RSA"}, "RS512": {kty: "RSA"},
	"ES256": {"EC", elliptic.P256()}, "ES384": {"EC", elliptic.P384()}, "ES512": {"EC", elliptic.P521()},
	"EdDSA": {kty: "OKP"},
}

// Algorithms lists the supported JWS algorithms, sorted.
var Algorithms = []string{"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512"}

// curveAlgs are the EC curves accepted, by JWK name, with their algorithm.
var curveAlgs = map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

// Key is one parsed key: a public key, and its private half when known.
type Key struct {
	KID string
	Alg string

	pub  crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	priv crypto.Signer    // *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey or nil

	explicitKID bool // the kid came from the input, not derived
	explicitAlg bool
	strictAlg   bool // tokens must use Alg (keys we publish with an alg)
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// HasPrivate reports whether the private half is known.
func (k *Key) HasPrivate() bool { return k.priv != nil }

// jwkMeta is what our rules read of a JWK before go-jose parses it. Every
// member go-jose reads as a string is typed here, so that a JWK with a
// number in place of a string fails here, with a message that holds none
// of the value.
type jwkMeta struct {
	Kty    string   `json:"kty"`
	Alg    string   `json:"alg"`
	Kid    string   `json:"kid"`
	Use    *string  `json:"use"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	Oth    any      `json:"oth"`

	N, E, X, Y string
	D, P, Q, K *string
	Dp         *string `json:"dp"`
	Dq         *string `json:"dq"`
	Qi         *string `json:"qi"`
}

func (m *jwkMeta) hasPrivate() bool {
	return m.D != nil || m.P != nil || m.Q != nil || m.K != nil || m.Dp != nil || m.Dq != nil || m.Qi != nil
}

// parseJWK parses one JWK: PowerSync's rules here, the key itself by
// go-jose. wantPrivate: the key must hold private members; otherwise it
// must not.
func parseJWK(raw []byte, wantPrivate bool) (*Key, error) {
	var m jwkMeta
	if json.Unmarshal(raw, &m) != nil {
		return nil, errors.New("malformed JWK (want a JSON object whose key members are strings)")
	}
	if m.Kty == "" {
		return nil, errors.New(`not a JWK: no "kty"`)
	}
	if m.Use != nil && *m.Use != "sig" {
		return nil, fmt.Errorf(`"use" is %q, want "sig"`, clip(*m.Use))
	}
	if m.KeyOps != nil {
		want := "verify"
		if wantPrivate {
			want = "sign"
		}
		if !slices.Contains(m.KeyOps, want) {
			return nil, fmt.Errorf(`"key_ops" lacks %q`, want)
		}
	}
	switch m.Kty {
	case "RSA":
		if m.Oth != nil {
			return nil, errors.New("multi-prime RSA keys are not supported")
		}
	case "EC":
		if _, ok := curveAlgs[m.Crv]; !ok {
			return nil, fmt.Errorf("unsupported EC curve %q (want P-256, P-384 or P-521)", clip(m.Crv))
		}
	case "OKP":
		if m.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q (want Ed25519)", clip(m.Crv))
		}
	case "oct":
		return nil, errors.New(`symmetric keys ("kty":"oct") are not supported: they cannot be published in a JWKS`)
	default:
		return nil, fmt.Errorf("unsupported key type %q", clip(m.Kty))
	}
	if wantPrivate && !m.hasPrivate() {
		return nil, errors.New("holds a public key only, want the private key")
	}
	if !wantPrivate && m.hasPrivate() {
		return nil, errors.New("holds private key material: put only public keys here (the private key is a secret)")
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, joseKeyError(m.Kty, wantPrivate, err)
	}
	k := &Key{}
	switch key := jwk.Key.(type) {
	case *rsa.PublicKey:
		k.pub = key
	case *ecdsa.PublicKey:
		k.pub = key
	case ed25519.PublicKey:
		k.pub = key
	case *rsa.PrivateKey:
		key.Precompute()
		k.priv, k.pub = key, &key.PublicKey
	case *ecdsa.PrivateKey:
		// go-jose does not check that d belongs to x and y; the standard
		// library derives the public key from d, and the two must agree.
		priv, err := ecdsa.ParseRawPrivateKey(key.Curve, key.D.FillBytes(make([]byte, (key.Curve.Params().BitSize+7)/8)))
		if err != nil || !priv.PublicKey.Equal(&key.PublicKey) {
			return nil, errors.New(`EC private key: "d" does not match "x" and "y"`)
		}
		k.priv, k.pub = priv, &priv.PublicKey
	case ed25519.PrivateKey:
		k.priv, k.pub = key, key.Public()
	default:
		return nil, fmt.Errorf("unsupported key type %q", clip(m.Kty))
	}
	if jwk.Algorithm != "" {
		k.Alg, k.explicitAlg = jwk.Algorithm, true
	}
	if jwk.KeyID != "" {
		k.KID, k.explicitKID = jwk.KeyID, true
	}
	if err := k.complete(); err != nil {
		return nil, err
	}
	return k, nil
}

// joseKeyError words go-jose's refusal of a JWK. go-jose's messages name
// members and lengths, never their values.
func joseKeyError(kty string, private bool, err error) error {
	what := kty + " public key"
	if private {
		what = kty + " private key"
	}
	if errors.Is(err, jose.ErrUnsupportedKeyType) && kty == "RSA" {
		return fmt.Errorf("%s: unsupported (an RSA modulus over %d bits?)", what, MaxRSABits)
	}
	return fmt.Errorf("%s is invalid: %s", what, strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
}

// complete checks the key and its algorithm against PowerSync's rules, and
// fills in the default algorithm and the derived kid.
func (k *Key) complete() error {
	if rsaPub, ok := k.pub.(*rsa.PublicKey); ok {
		switch bits := rsaPub.N.BitLen(); {
		case bits < MinRSABits:
			return fmt.Errorf("RSA key of %d bits is too small (want %d to %d)", bits, MinRSABits, MaxRSABits)
		case bits > MaxRSABits:
			return fmt.Errorf("RSA key of %d bits is too large (want %d to %d)", bits, MinRSABits, MaxRSABits)
		}
	}
	def := defaultAlg(k.pub)
	if def == "" {
		return errors.New("unsupported EC curve (want P-256, P-384 or P-521)")
	}
	if k.Alg == "" {
		k.Alg = def
	}
	fam, ok := algs[k.Alg]
	if !ok {
		return fmt.Errorf("unsupported algorithm %q (supported: %s)", clip(k.Alg), strings.Join(Algorithms, ", "))
	}
	if !fam.fits(k.pub) {
		return fmt.Errorf("algorithm %s does not fit %s", k.Alg, describe(k.pub))
	}
	if k.KID == "" {
		k.KID = deriveKID(k.pub)
	}
	if !utf8.ValidString(k.KID) || len(k.KID) > 256 {
		return errors.New(`"kid" is not valid UTF-8 or longer than 256 bytes`)
	}
	return nil
}

// fits reports whether a key can be used with an algorithm of the family.
func (f algFamily) fits(pub crypto.PublicKey) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return f.kty == "RSA"
	case *ecdsa.PublicKey:
		return f.kty == "EC" && f.curve == p.Curve
	case ed25519.PublicKey:
		return f.kty == "OKP"
	}
	return false
}

func describe(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return "an RSA key"
	case *ecdsa.PublicKey:
		return "an EC key on " + p.Curve.Params().Name
	}
	return "an Ed25519 key"
}

// defaultAlg is the usual algorithm of a key ("" for a curve not supported).
func defaultAlg(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		return curveAlgs[p.Curve.Params().Name]
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

// parsePEMBlock parses one PEM block into a key (crypto/x509 decodes it).
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
		switch pub.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			k.pub = pub
		default:
			return nil, fmt.Errorf("unsupported public key type %T", pub)
		}
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", clip(b.Type))
	}
	if err := k.complete(); err != nil {
		return nil, err
	}
	return k, nil
}

// decodeBase64 accepts standard and URL-safe base64, padded or not, and
// ignores line breaks inside.
func decodeBase64(s string) ([]byte, bool) {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == '\t' || r == ' ' {
			return -1
		}
		return r
	}, s)
	s = strings.TrimRight(s, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	b, err := enc.DecodeString(s)
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
	if probe.Keys == nil {
		k, err := parseJWK(b, wantPrivate)
		if err != nil {
			return nil, err
		}
		return []*Key{k}, nil
	}
	var out []*Key
	for i, kb := range probe.Keys {
		k, err := parseJWK(kb, wantPrivate)
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

// publicOf returns the public half of a private key.
func publicOf(priv *Key) *Key {
	return &Key{KID: priv.KID, Alg: priv.Alg, pub: priv.pub, explicitKID: priv.explicitKID, explicitAlg: priv.explicitAlg}
}

// samePublic reports whether two keys have the same public part.
func samePublic(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
