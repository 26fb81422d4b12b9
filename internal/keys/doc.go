// Package keys holds the PowerSync signing keys of a deployment: it parses
// them once per process, serves them as a JWKS, signs tokens with the
// private key and verifies tokens exactly as the PowerSync service does.
//
// go-jose (github.com/go-jose/go-jose/v4) does the JOSE work: it parses
// JWKs, writes the JWKS and generated keys, signs tokens and checks their
// signatures and registered claims (jwt.Claims.ValidateWithLeeway).
// crypto/x509 parses PEM. This package keeps what neither decides:
// PowerSync's rules (the algorithms, "use" and "key_ops", RSA sizes, aud,
// the 24 h lifetime, the 60 s skew with the service's exp boundary, a
// non-empty sub, parameters an object), the input formats, start-up checks
// (a private key must match a public one and sign a token its public key
// verifies) and error messages that name the variable, never the value.
//
// Variables (read by Load from the deployment, never from the process):
//
//   - POWERSYNC_PRIVATE_KEY (secret): the one key tokens are signed with.
//     Base64 (standard, URL-safe, padded or not) of a private JWK's JSON, the
//     format of PowerSync's own key generator, for example
//     {"kty":"RSA","n":...,"d":...,"alg":"RS256","kid":"powersync-0123456789"};
//     or a PEM block (PKCS#8 "PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY" or SEC1
//     "EC PRIVATE KEY").
//   - POWERSYNC_PUBLIC_KEY: the keys the JWKS serves, one or more, separated
//     by commas or white space: base64 of a public JWK, base64 of a JWKS
//     ({"keys":[...]}), or PEM "PUBLIC KEY" (SPKI) blocks. Serve the old and
//     the new key together while rotating. When unset, the public half of
//     the private key is served.
//
// Supported algorithms: RS256, RS384, RS512 (RSA of 2048 to 4096 bits),
// ES256, ES384, ES512 (P-256, P-384, P-521) and EdDSA (Ed25519). A JWK without
// "alg" gets the usual one for its key (RS256 for RSA); a key without "kid"
// (PEM, or a JWK without one) gets "powersync-" and ten hex digits of the
// SHA-256 of its public key, so that a private and a public PEM of the same
// key agree.
//
// The private key must match one of the public keys (same public part, and
// the same kid and alg where both say one). Every error names the variable
// and never its value.
//
// A development deployment with neither variable gets a generated RS256 pair,
// written to its git-ignored local file (deployments/<name>.local.env) and
// announced in the log by kid. A production deployment refuses to start
// without keys.
package keys
