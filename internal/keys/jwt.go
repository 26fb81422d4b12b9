package keys

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/taskrun/taskrun/internal/procs"
)

// Limits of the PowerSync service's token verification.
const (
	// MaxLifetime is the longest exp - iat the service accepts.
	MaxLifetime = 24 * time.Hour
	// ClockSkew is the tolerance applied to exp, nbf and iat.
	ClockSkew = 60 * time.Second
	// MaxTokenBytes bounds the tokens Verify looks at.
	MaxTokenBytes = 16 << 10
)

// IssuerVar is the deployment variable naming the issuer of its tokens:
// /token writes it as "iss", and /upload then requires it.
const IssuerVar = "TOKEN_ISSUER"

// supportedAlgs are Algorithms, for go-jose's parser.
var supportedAlgs = []jose.SignatureAlgorithm{
	jose.EdDSA, jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512,
}

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

// signedClaims is a token's JSON as signed: plain fields, which
// encoding/json writes with less work than jwt.Claims' marshalers.
type signedClaims struct {
	Subject    string `json:"sub"`
	Issuer     string `json:"iss,omitempty"`
	Audience   any    `json:"aud"` // a string for one audience, as jwt.Audience writes it
	IssuedAt   int64  `json:"iat"`
	Expiry     int64  `json:"exp"`
	NotBefore  int64  `json:"nbf,omitempty"`
	Parameters any    `json:"parameters,omitempty"`
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

// signer signs with one private key. go-jose makes every part of a token:
// the protected header (encoded once, from a token of go-jose's own
// Signer), the signature (its cryptosigner, which also turns ECDSA's ASN.1
// into r||s); the claims are encoding/json's. Only the joining is here:
// go-jose's Signer re-encodes the constant header twice per token, which
// cost a quarter of GET /token's CPU with Ed25519 (cmd/bench -baseline).
type signer struct {
	key    *Key
	header string // base64url of the protected header, then "."
	sig    jose.OpaqueSigner
	alg    jose.SignatureAlgorithm
	gate   *procs.Gate // procs.Cores signatures at a time, in arrival order
}

func newSigner(k *Key) (*signer, error) {
	alg := jose.SignatureAlgorithm(k.Alg)
	js, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.KID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	jws, err := js.Sign([]byte("{}"))
	if err != nil {
		return nil, err
	}
	compact, err := jws.CompactSerialize()
	if err != nil {
		return nil, err
	}
	s := &signer{key: k, header: compact[:strings.IndexByte(compact, '.')+1], sig: cryptosigner.Opaque(k.priv), alg: alg,
		gate: procs.NewGate(procs.Cores)}
	// A key that cannot sign a token its public key verifies (go-jose
	// checks it) is refused now, not on the first request.
	tok, err := s.sign(Claims{Subject: "self-test", Audience: []string{"self-test"}, IssuedAt: 1, ExpiresAt: 2})
	if err != nil {
		return nil, fmt.Errorf("signing a test token: %w", err)
	}
	if parsed, err := jose.ParseSignedCompact(tok, supportedAlgs); err != nil {
		return nil, fmt.Errorf("a test token does not parse: %w", err)
	} else if _, err := parsed.Verify(k.pub); err != nil {
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
	p := signedClaims{Subject: c.Subject, Issuer: c.Issuer, Audience: c.Audience, IssuedAt: c.IssuedAt, Expiry: c.ExpiresAt, NotBefore: c.NotBefore}
	if len(c.Audience) == 1 {
		p.Audience = c.Audience[0]
	}
	if c.Parameters != nil {
		p.Parameters = c.Parameters
	}
	claims, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("the claims: %w", err)
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(s.header)+enc.EncodedLen(len(claims))+1+enc.EncodedLen(512))
	buf = append(buf, s.header...)
	buf = enc.AppendEncode(buf, claims)
	s.gate.Enter()
	sig, err := s.sig.SignPayload(buf, s.alg)
	s.gate.Leave()
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	return string(enc.AppendEncode(buf, sig)), nil
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
// sub (not empty), iat and exp present; aud containing audience; exp - iat
// at most 24 hours; exp, nbf and iat with 60 seconds of clock skew;
// parameters, if present, an object.
func (k *Set) Verify(token, audience string, now time.Time) (*Claims, error) {
	return k.VerifyWith(token, VerifyOptions{Audience: audience, MaxLifetime: MaxLifetime, Now: now})
}

// VerifyWith checks a token against the set's keys with the given options:
// go-jose parses it, checks the signature and the registered claims; the
// rules here are PowerSync's. Errors match ErrInvalidToken and never hold
// the token.
func (k *Set) VerifyWith(token string, o VerifyOptions) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, invalid("longer than %d bytes", MaxTokenBytes)
	}
	tok, err := jwt.ParseSigned(token, supportedAlgs)
	if err != nil {
		return nil, invalid("not a compact JWS signed with one of %s", strings.Join(Algorithms, ", "))
	}
	h := tok.Headers[0]
	if _, ok := h.ExtraHeaders["b64"]; ok {
		return nil, invalid(`unsupported "b64" header`)
	}
	var p jwt.Claims
	var extra struct {
		Parameters json.RawMessage `json:"parameters"`
	}
	claims := func(key *Key) error {
		p, extra.Parameters = jwt.Claims{}, nil
		return tok.Claims(key.pub, &p, &extra)
	}
	var key *Key
	if kk, ok := k.byKID[h.KeyID]; ok && h.KeyID != "" {
		if !kk.matchesAlg(h.Algorithm) {
			return nil, invalid("algorithm %s does not match key %q (%s)", h.Algorithm, clip(kk.KID), kk.Alg)
		}
		if err := claims(kk); err != nil {
			return nil, claimsError(err)
		}
		key = kk
	}
	if key == nil {
		for _, kk := range k.wildcard {
			if kk.matchesAlg(h.Algorithm) && claims(kk) == nil {
				key = kk
				break
			}
		}
	}
	if key == nil {
		if h.KeyID == "" {
			return nil, &TokenError{Reason: `the header has no "kid" and no key without a kid verifies it`, unknownKID: len(k.wildcard) == 0}
		}
		return nil, &TokenError{Reason: fmt.Sprintf("no key has kid %q", clip(h.KeyID)), unknownKID: true}
	}
	return checkClaims(&p, extra.Parameters, o)
}

// claimsError words a failure of go-jose's signature check or claims
// decoding.
func claimsError(err error) error {
	switch {
	case errors.Is(err, jose.ErrCryptoFailure):
		return invalid("signature verification failed")
	case errors.Is(err, jose.ErrUnsupportedCriticalHeader):
		return invalid(`unsupported "crit" header`)
	}
	return invalid("the payload is not a JSON object of registered claims (sub and iss strings, iat, exp and nbf numbers)")
}

func (k *Key) matchesAlg(alg string) bool {
	if k.explicitAlg || k.strictAlg {
		return alg == k.Alg
	}
	f, ok := algs[alg]
	return ok && f.fits(k.pub)
}

// checkClaims applies PowerSync's rules to verified claims; go-jose's
// validation checks iss, aud, exp, nbf and iat with the skew.
func checkClaims(p *jwt.Claims, params json.RawMessage, o VerifyOptions) (*Claims, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.Truncate(time.Second) // JWT times are whole seconds
	switch {
	case p.Subject == "":
		return nil, invalid(`missing or empty claim "sub"`)
	case p.Expiry == nil:
		return nil, invalid(`missing required claim "exp"`)
	case p.IssuedAt == nil && o.MaxLifetime > 0:
		return nil, invalid(`missing required claim "iat"`)
	case len(p.Audience) == 0:
		return nil, invalid(`missing required claim "aud"`)
	case o.Audience == "":
		return nil, invalid("no audience to check the token against")
	}
	err := p.ValidateWithLeeway(jwt.Expected{Issuer: o.Issuer, AnyAudience: jwt.Audience{o.Audience}, Time: now}, ClockSkew)
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, invalid(`unexpected "iss"`)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, invalid(`unexpected "aud"`)
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, invalid("not valid yet (nbf)")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid(`issued in the future ("iat" more than %d s ahead)`, int64(ClockSkew.Seconds()))
	case err != nil, !p.Expiry.Time().After(now.Add(-ClockSkew)):
		// The service: expired when exp <= now - skew (go-jose: exp < now - skew).
		return nil, invalid("expired")
	}
	c := &Claims{Subject: p.Subject, Issuer: p.Issuer, Audience: []string(p.Audience), ExpiresAt: int64(*p.Expiry)}
	if p.IssuedAt != nil {
		c.IssuedAt = int64(*p.IssuedAt)
	}
	if p.NotBefore != nil {
		c.NotBefore = int64(*p.NotBefore)
	}
	if o.MaxLifetime > 0 && c.ExpiresAt-c.IssuedAt > int64(o.MaxLifetime/time.Second) {
		return nil, invalid("must expire within %d seconds of iat, got %d", int64(o.MaxLifetime/time.Second), c.ExpiresAt-c.IssuedAt)
	}
	if len(params) > 0 && string(params) != "null" {
		if json.Unmarshal(params, &c.Parameters) != nil {
			return nil, invalid(`"parameters" must be an object`)
		}
	}
	return c, nil
}

// ParseJWKS parses a JWKS fetched from elsewhere (an identity provider's)
// for VerifyWith. Like the PowerSync service it skips keys it cannot use:
// a kty other than RSA, EC or OKP, "use" other than "sig", "key_ops"
// without "verify", or a key that does not parse. Private members someone
// published are dropped unread. Keys without "kid" verify tokens without a
// kid; keys without "alg" accept any algorithm of their family. It fails
// when no key is usable.
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
		var members map[string]json.RawMessage
		if json.Unmarshal(kb, &members) != nil {
			skipped++
			continue
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
			delete(members, private)
		}
		raw, _ := json.Marshal(members)
		k, err := parseJWK(raw, false)
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
	jwks, err := buildJWKS(set.keys)
	if err != nil {
		return nil, err
	}
	set.jwks = jwks
	return set, nil
}
