package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of the PowerSync service's token verification.
const (
	// MaxLifetime is the longest exp - iat the service accepts.
	MaxLifetime = 24 * time.Hour
	// ClockSkew is the tolerance applied to exp and nbf.
	ClockSkew = 60 * time.Second
	// MaxTokenBytes bounds the tokens Verify looks at.
	MaxTokenBytes = 16 << 10
)

// Claims are the claims of a PowerSync token. Times are Unix seconds.
type Claims struct {
	Subject   string
	Issuer    string   // "" : none
	Audience  []string // one or more; one is written as a plain string
	IssuedAt  int64
	ExpiresAt int64
	NotBefore int64 // 0: none
	// Parameters, if not nil, is written as the "parameters" object that
	// PowerSync sync rules read as token_parameters.
	Parameters map[string]any
}

// ErrInvalidToken is matched (errors.Is) by every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// ErrUnknownKID is matched by a failure because no key has the token's kid,
// the case in which a remote JWKS is worth fetching again.
var ErrUnknownKID = errors.New("unknown kid")

// TokenError is a verification failure. Reason never holds the token.
type TokenError struct {
	Reason     string
	unknownKID bool
}

func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

// Is matches ErrInvalidToken, and ErrUnknownKID where it applies.
func (e *TokenError) Is(target error) bool {
	return target == ErrInvalidToken || (e.unknownKID && target == ErrUnknownKID)
}

func invalid(format string, args ...any) error {
	return &TokenError{Reason: fmt.Sprintf(format, args...)}
}

// signer signs with one private key; its JWT header is encoded once.
type signer struct {
	key    *Key
	header []byte // base64url of the header JSON, then "."
	sigLen int    // base64url length of a signature
}

func newSigner(k *Key) (*signer, error) {
	h := []byte(`{"alg":`)
	h = appendJSONString(h, k.Alg)
	h = append(h, `,"kid":`...)
	h = appendJSONString(h, k.KID)
	h = append(h, `,"typ":"JWT"}`...)
	s := &signer{key: k, header: append(base64.RawURLEncoding.AppendEncode(nil, h), '.')}
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		s.sigLen = base64.RawURLEncoding.EncodedLen(p.Size())
	case *ecdsa.PrivateKey:
		s.sigLen = base64.RawURLEncoding.EncodedLen(2 * k.info.size)
	case ed25519.PrivateKey:
		s.sigLen = base64.RawURLEncoding.EncodedLen(ed25519.SignatureSize)
	default:
		return nil, fmt.Errorf("cannot sign with a %T", k.priv)
	}
	// A key that cannot sign and verify its own token is refused now, not
	// on the first request.
	tok, err := s.sign(Claims{Subject: "self-test", Audience: []string{"self-test"}, IssuedAt: 1, ExpiresAt: 2})
	if err != nil {
		return nil, fmt.Errorf("signing a test token: %w", err)
	}
	parts := strings.SplitN(tok, ".", 3)
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !verifySignature(k.pub, k.info, []byte(tok[:len(parts[0])+1+len(parts[1])]), sig) {
		return nil, errors.New("the private key's test signature does not verify with its public key")
	}
	return s, nil
}

// Sign returns a signed JWT with header alg, kid and typ "JWT". The claims
// must be what PowerSync accepts: a subject of valid UTF-8, an audience, and
// 0 < exp - iat <= 24 h.
func (k *Set) Sign(c Claims) (string, error) {
	if k.signer == nil {
		return "", ErrNoPrivateKey
	}
	return k.signer.sign(c)
}

func (s *signer) sign(c Claims) (string, error) {
	if c.Subject == "" || !utf8.ValidString(c.Subject) {
		return "", errors.New("the subject is empty or not valid UTF-8")
	}
	if len(c.Audience) == 0 {
		return "", errors.New("no audience")
	}
	if d := c.ExpiresAt - c.IssuedAt; d <= 0 || d > int64(MaxLifetime/time.Second) {
		return "", fmt.Errorf("exp - iat is %d s, want 1 to %d", d, int64(MaxLifetime/time.Second))
	}
	var scratch [512]byte
	payload, err := appendPayload(scratch[:0], &c)
	if err != nil {
		return "", err
	}
	n := len(s.header) + base64.RawURLEncoding.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+s.sigLen)
	buf = append(buf, s.header...)
	buf = base64.RawURLEncoding.AppendEncode(buf, payload)
	var sig []byte
	switch p := s.key.priv.(type) {
	case *rsa.PrivateKey:
		d, h := digest(s.key.info.hash, buf)
		sig, err = rsa.SignPKCS1v15(nil, p, h, d)
	case *ecdsa.PrivateKey:
		d, _ := digest(s.key.info.hash, buf)
		var der []byte
		der, err = ecdsa.SignASN1(rand.Reader, p, d)
		if err == nil {
			sig, err = rawECDSA(der, s.key.info.size)
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(p, buf)
	}
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = base64.RawURLEncoding.AppendEncode(buf, sig)
	return string(buf), nil
}

// digest hashes msg; the array backs the returned slice.
func digest(h crypto.Hash, msg []byte) ([]byte, crypto.Hash) {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:], h
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:], h
	default:
		d := sha256.Sum256(msg)
		return d[:], crypto.SHA256
	}
}

func appendPayload(b []byte, c *Claims) ([]byte, error) {
	b = append(b, `{"sub":`...)
	b = appendJSONString(b, c.Subject)
	if c.Issuer != "" {
		b = append(b, `,"iss":`...)
		b = appendJSONString(b, c.Issuer)
	}
	b = append(b, `,"aud":`...)
	if len(c.Audience) == 1 {
		b = appendJSONString(b, c.Audience[0])
	} else {
		b = append(b, '[')
		for i, a := range c.Audience {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
		}
		b = append(b, ']')
	}
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt, 10)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.ExpiresAt, 10)
	if c.NotBefore != 0 {
		b = append(b, `,"nbf":`...)
		b = strconv.AppendInt(b, c.NotBefore, 10)
	}
	if c.Parameters != nil {
		p, err := json.Marshal(c.Parameters)
		if err != nil {
			return nil, fmt.Errorf("parameters: %w", err)
		}
		b = append(b, `,"parameters":`...)
		b = append(b, p...)
	}
	return append(b, '}'), nil
}

// VerifyOptions tune VerifyWith.
type VerifyOptions struct {
	// Audience must be in the token's aud (a string or an array). Required.
	Audience string
	// Issuer, if set, must equal the token's iss.
	Issuer string
	// MaxLifetime, if set, requires iat and refuses exp - iat above it.
	MaxLifetime time.Duration
	// Now is the time to check against (time.Now() when zero).
	Now time.Time
}

// Verify checks a token exactly as the PowerSync service does: the header's
// kid is one of the set's keys and its alg is that key's; the signature;
// sub, iat and exp present; aud containing audience; exp - iat at most 24
// hours; exp and nbf with 60 seconds of clock skew; parameters, if present,
// an object.
func (k *Set) Verify(token, audience string, now time.Time) (*Claims, error) {
	return k.VerifyWith(token, VerifyOptions{Audience: audience, MaxLifetime: MaxLifetime, Now: now})
}

type rawHeader struct {
	Alg  *string         `json:"alg"`
	Kid  *string         `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

type rawPayload struct {
	Sub        json.RawMessage `json:"sub"`
	Iss        json.RawMessage `json:"iss"`
	Aud        json.RawMessage `json:"aud"`
	Iat        json.RawMessage `json:"iat"`
	Exp        json.RawMessage `json:"exp"`
	Nbf        json.RawMessage `json:"nbf"`
	Parameters json.RawMessage `json:"parameters"`
}

// VerifyWith checks a token against the set's keys with the given options.
// Errors match ErrInvalidToken and never hold the token.
func (k *Set) VerifyWith(token string, o VerifyOptions) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, invalid("longer than %d bytes", MaxTokenBytes)
	}
	d1 := strings.IndexByte(token, '.')
	d2 := strings.LastIndexByte(token, '.')
	if d1 <= 0 || d2 == d1 || d2 == len(token)-1 || strings.Count(token, ".") != 2 {
		return nil, invalid("not a compact JWS (three base64url parts)")
	}
	hb, err := base64.RawURLEncoding.DecodeString(token[:d1])
	if err != nil {
		return nil, invalid("the header is not base64url")
	}
	var h rawHeader
	if json.Unmarshal(hb, &h) != nil || !bytes.HasPrefix(bytes.TrimSpace(hb), []byte("{")) {
		return nil, invalid("the header is not a JSON object")
	}
	if h.Alg == nil {
		return nil, invalid(`the header has no "alg"`)
	}
	if h.Crit != nil || h.B64 != nil {
		return nil, invalid(`unsupported "crit" or "b64" header`)
	}
	info, ok := algs[*h.Alg]
	if !ok {
		return nil, invalid("unsupported algorithm %q", clip(*h.Alg))
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[d2+1:])
	if err != nil {
		return nil, invalid("the signature is not base64url")
	}
	signed := []byte(token[:d2])
	var key *Key
	if h.Kid != nil && *h.Kid != "" {
		if kk, ok := k.byKID[*h.Kid]; ok {
			if !kk.matchesAlg(*h.Alg) {
				return nil, invalid("algorithm %s does not match key %q (%s)", *h.Alg, clip(kk.KID), kk.Alg)
			}
			if !verifySignature(kk.pub, info, signed, sig) {
				return nil, invalid("signature verification failed")
			}
			key = kk
		}
	}
	if key == nil {
		for _, kk := range k.wildcard {
			if kk.matchesAlg(*h.Alg) && verifySignature(kk.pub, info, signed, sig) {
				key = kk
				break
			}
		}
	}
	if key == nil {
		if h.Kid == nil || *h.Kid == "" {
			return nil, &TokenError{Reason: `the header has no "kid" and no key without a kid verifies it`, unknownKID: len(k.wildcard) == 0}
		}
		return nil, &TokenError{Reason: fmt.Sprintf("no key has kid %q", clip(*h.Kid)), unknownKID: true}
	}
	pb, err := base64.RawURLEncoding.DecodeString(token[d1+1 : d2])
	if err != nil {
		return nil, invalid("the payload is not base64url")
	}
	var p rawPayload
	if json.Unmarshal(pb, &p) != nil || !bytes.HasPrefix(bytes.TrimSpace(pb), []byte("{")) {
		return nil, invalid("the payload is not a JSON object")
	}
	return checkClaims(&p, o)
}

func (k *Key) matchesAlg(alg string) bool {
	if k.explicitAlg || k.strictAlg {
		return alg == k.Alg
	}
	info, ok := algs[alg]
	if !ok || info.kty != k.info.kty {
		return false
	}
	return info.kty != "EC" || info.curve == k.info.curve
}

func verifySignature(pub any, info algInfo, signed, sig []byte) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if info.kty != "RSA" {
			return false
		}
		d, h := digest(info.hash, signed)
		return rsa.VerifyPKCS1v15(p, h, d, sig) == nil
	case *ecdsa.PublicKey:
		if info.kty != "EC" || info.curve != p.Curve || len(sig) != 2*info.size {
			return false
		}
		d, _ := digest(info.hash, signed)
		r := new(big.Int).SetBytes(sig[:info.size])
		s := new(big.Int).SetBytes(sig[info.size:])
		return ecdsa.Verify(p, d, r, s)
	case ed25519.PublicKey:
		return info.kty == "OKP" && len(sig) == ed25519.SignatureSize && ed25519.Verify(p, signed, sig)
	}
	return false
}

func checkClaims(p *rawPayload, o VerifyOptions) (*Claims, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	nowS := float64(now.Unix())
	skew := ClockSkew.Seconds()
	c := &Claims{}
	if isAbsent(p.Sub) {
		return nil, invalid(`missing required claim "sub"`)
	}
	if json.Unmarshal(p.Sub, &c.Subject) != nil {
		return nil, invalid(`"sub" is not a string`)
	}
	if isAbsent(p.Exp) {
		return nil, invalid(`missing required claim "exp"`)
	}
	exp, ok := number(p.Exp)
	if !ok {
		return nil, invalid(`"exp" is not a number`)
	}
	if exp <= nowS-skew {
		return nil, invalid("expired")
	}
	c.ExpiresAt = int64(math.Floor(exp))
	var iat float64
	if p.Iat != nil {
		if iat, ok = number(p.Iat); !ok {
			return nil, invalid(`"iat" is not a number`)
		}
		c.IssuedAt = int64(math.Floor(iat))
	} else if o.MaxLifetime > 0 {
		return nil, invalid(`missing required claim "iat"`)
	}
	if p.Nbf != nil {
		nbf, ok := number(p.Nbf)
		if !ok {
			return nil, invalid(`"nbf" is not a number`)
		}
		if nbf > nowS+skew {
			return nil, invalid("not valid yet (nbf)")
		}
		c.NotBefore = int64(math.Floor(nbf))
	}
	if p.Iss != nil {
		_ = json.Unmarshal(p.Iss, &c.Issuer)
	}
	if o.Issuer != "" && c.Issuer != o.Issuer {
		return nil, invalid(`unexpected "iss"`)
	}
	if isAbsent(p.Aud) {
		return nil, invalid(`missing required claim "aud"`)
	}
	var one string
	if json.Unmarshal(p.Aud, &one) == nil {
		c.Audience = []string{one}
	} else {
		var many []any
		if json.Unmarshal(p.Aud, &many) == nil {
			for _, a := range many {
				if s, ok := a.(string); ok {
					c.Audience = append(c.Audience, s)
				}
			}
		}
	}
	found := false
	for _, a := range c.Audience {
		found = found || a == o.Audience
	}
	if !found {
		return nil, invalid(`unexpected "aud"`)
	}
	if o.MaxLifetime > 0 && exp-iat > o.MaxLifetime.Seconds() {
		return nil, invalid("must expire within %d seconds of iat, got %g", int64(o.MaxLifetime.Seconds()), exp-iat)
	}
	if !isAbsent(p.Parameters) {
		if json.Unmarshal(p.Parameters, &c.Parameters) != nil {
			return nil, invalid(`"parameters" must be an object`)
		}
	}
	return c, nil
}

func isAbsent(m json.RawMessage) bool { return m == nil || string(m) == "null" }

func number(m json.RawMessage) (float64, bool) {
	if len(m) == 0 || !(m[0] == '-' || m[0] >= '0' && m[0] <= '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(m), 64)
	return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
}

// ParseJWKS parses a JWKS fetched from elsewhere (an identity provider's)
// for VerifyWith. Like the PowerSync service it skips keys it cannot use:
// a kty other than RSA, EC or OKP, "use" other than "sig", "key_ops"
// without "verify", or a key that does not parse. Keys without "kid" verify
// tokens without a kid; keys without "alg" accept any algorithm of their
// family. It fails when no key is usable.
func ParseJWKS(body []byte) (*Set, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(body, &doc) != nil || doc.Keys == nil {
		return nil, errors.New(`not a JWKS: want a JSON object with a "keys" array`)
	}
	set := &Set{byKID: map[string]*Key{}}
	skipped := 0
	for _, kb := range doc.Keys {
		var r rawJWK
		if json.Unmarshal(kb, &r) != nil {
			skipped++
			continue
		}
		if r.hasPrivate() {
			// Never trust, or keep, private material someone published.
			r.D, r.P, r.Q, r.K = "", "", "", ""
		}
		k, err := parseJWK(&r, false)
		if err != nil {
			skipped++
			continue
		}
		if !k.explicitKID {
			k.KID = ""
			set.wildcard = append(set.wildcard, k)
		} else if _, dup := set.byKID[k.KID]; !dup {
			set.byKID[k.KID] = k
		}
		set.keys = append(set.keys, k)
	}
	if len(set.keys) == 0 {
		return nil, fmt.Errorf("the JWKS has no usable signing key (%d skipped)", skipped)
	}
	set.jwks = buildJWKS(set.keys)
	return set, nil
}

// rawECDSA turns an ASN.1 ECDSA signature, SEQUENCE { INTEGER r, INTEGER s },
// into the JWS form: r and s big-endian, each padded to size bytes.
func rawECDSA(der []byte, size int) ([]byte, error) {
	bad := errors.New("malformed ECDSA signature")
	body, rest, ok := derElement(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, bad
	}
	out := make([]byte, 2*size)
	for i := 0; i < 2; i++ {
		var n []byte
		n, body, ok = derElement(body, 0x02)
		if !ok || len(n) == 0 || n[0]&0x80 != 0 {
			return nil, bad
		}
		for len(n) > 1 && n[0] == 0 {
			n = n[1:]
		}
		if len(n) > size {
			return nil, bad
		}
		copy(out[(i+1)*size-len(n):(i+1)*size], n)
	}
	if len(body) != 0 {
		return nil, bad
	}
	return out, nil
}

// derElement reads one DER element of the given tag.
func derElement(b []byte, tag byte) (content, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, off := int(b[1]), 2
	if n&0x80 != 0 {
		k := n & 0x7f
		if k == 0 || k > 2 || len(b) < 2+k {
			return nil, nil, false
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		off = 2 + k
	}
	if len(b)-off < n {
		return nil, nil, false
	}
	return b[off : off+n], b[off+n:], true
}
