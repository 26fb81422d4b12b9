package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// Variable names.
const (
	PrivateVar = "POWERSYNC_PRIVATE_KEY"
	PublicVar  = "POWERSYNC_PUBLIC_KEY"
)

// Vars are the deployment variables of the keys, for a task's Vars. Both
// are optional: a development deployment generates a pair.
var Vars = []runtime.Var{
	{Name: PrivateVar, Optional: true, Secret: true,
		Help:    "base64 of the private JWK (or PEM) that signs PowerSync tokens; generate with `runtime test generate_keys`",
		Default: "(development: a generated pair)"},
	{Name: PublicVar, Optional: true,
		Help:    "base64 of the public JWK(s), a JWKS or PEM, comma separated while rotating; defaults to the private key's public half",
		Default: "(the private key's public half)"},
}

// SharedKey is the runtime.Shared key under which Load keeps the Set.
const SharedKey = "powersync-keys"

// ErrNoPrivateKey is returned by Sign when the deployment has public keys
// only.
var ErrNoPrivateKey = errors.New(PrivateVar + " is not set: this deployment can verify tokens but not sign them")

// Set is a deployment's parsed keys: the public keys the JWKS serves and
// the one private key that signs. It is immutable and safe for concurrent
// use.
type Set struct {
	keys     []*Key          // public keys, in the order given
	byKID    map[string]*Key // every key with a kid
	wildcard []*Key          // keys without a kid (only from ParseJWKS)
	signer   *signer         // nil: cannot sign
	jwks     []byte

	// Generated is set when Load generated a development pair.
	Generated bool
}

// Keys returns the public keys, in the order given.
func (k *Set) Keys() []*Key { return append([]*Key(nil), k.keys...) }

// CanSign reports whether the set holds a private key.
func (k *Set) CanSign() bool { return k.signer != nil }

// SigningKID returns the kid of the signing key ("" if none).
func (k *Set) SigningKID() string {
	if k.signer == nil {
		return ""
	}
	return k.signer.key.KID
}

// SigningAlg returns the algorithm of the signing key ("" if none).
func (k *Set) SigningAlg() string {
	if k.signer == nil {
		return ""
	}
	return k.signer.key.Alg
}

// KIDs returns the kids of the public keys, in order.
func (k *Set) KIDs() []string {
	out := make([]string, len(k.keys))
	for i, key := range k.keys {
		out[i] = key.KID
	}
	return out
}

// JWKS returns the prebuilt JWKS body {"keys":[...]}: public members, kid,
// alg and "use":"sig" only. The caller must not modify it.
func (k *Set) JWKS() []byte { return k.jwks }

// Load returns the deployment's keys, parsed once per process (see the
// package doc). Every task that needs keys calls it from its Init.
func Load(s *runtime.Setup) (*Set, error) {
	return runtime.Shared(s, SharedKey, func(ctx context.Context, s *runtime.Setup) (*Set, func(context.Context) error, error) {
		set, err := load(s.Deployment, s.Log)
		return set, nil, err
	})
}

func load(dep *deployment.Deployment, log zerolog.Logger) (*Set, error) {
	privVal, hasPriv := dep.Lookup(PrivateVar)
	pubVal, hasPub := dep.Lookup(PublicVar)
	if !hasPriv && !hasPub {
		if dep.Production {
			return nil, fmt.Errorf("production deployment %q has neither %s nor %s: generate a pair on a trusted machine with `runtime test generate_keys --params '{\"save\":\"%s\"}'` (it writes deployments/%s.local.env and prints no private key) and set both variables",
				dep.Name, PrivateVar, PublicVar, dep.Name, dep.Name)
		}
		return generateDev(dep, log)
	}
	set, err := New(privVal, pubVal)
	if err != nil {
		return nil, err
	}
	ev := log.Info().Strs("kids", set.KIDs())
	if set.CanSign() {
		ev = ev.Str("signing_kid", set.SigningKID()).Str("alg", set.SigningAlg())
	}
	ev.Msg("PowerSync keys loaded")
	if !hasPub {
		log.Info().Str("kid", set.SigningKID()).Msgf("%s is not set: serving the public half of %s", PublicVar, PrivateVar)
	}
	return set, nil
}

func generateDev(dep *deployment.Deployment, log zerolog.Logger) (*Set, error) {
	privB64, pubB64, kid, err := Generate("RS256")
	if err != nil {
		return nil, err
	}
	set, err := New(privB64, pubB64)
	if err != nil {
		return nil, err
	}
	set.Generated = true
	if dep.Dir == "" {
		log.Warn().Str("kid", kid).
			Msgf("DEVELOPMENT KEYS: deployment %q has no %s or %s; generated a new RS256 pair that lives only in memory (the deployment has no folder to save it in): tokens will not survive a restart", dep.Name, PrivateVar, PublicVar)
		return set, nil
	}
	path := dep.LocalFile()
	if err := deployment.AppendEnvFile(path, map[string]string{PrivateVar: privB64, PublicVar: pubB64}); err != nil {
		log.Warn().Str("kid", kid).Str("file", path).Str("error", err.Error()).
			Msgf("DEVELOPMENT KEYS: generated a new RS256 pair but could not save it: it lives only in memory until a restart")
		return set, nil
	}
	log.Warn().Str("kid", kid).Str("file", path).
		Msgf("DEVELOPMENT KEYS: deployment %q had no %s or %s; generated a new RS256 pair and saved it in its git-ignored local file. Never use these keys in production: set your own there (see generate_keys)", dep.Name, PrivateVar, PublicVar)
	return set, nil
}

// New parses a private key value and a public keys value (either may be
// empty, not both) into a Set. Errors name the variable, never the value.
func New(privateValue, publicValue string) (*Set, error) {
	privateValue, publicValue = strings.TrimSpace(privateValue), strings.TrimSpace(publicValue)
	if privateValue == "" && publicValue == "" {
		return nil, fmt.Errorf("neither %s nor %s is set", PrivateVar, PublicVar)
	}
	var priv *Key
	if privateValue != "" {
		ks, err := parseValue(privateValue, true, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", PrivateVar, err)
		}
		priv = ks[0]
	}
	var pubs []*Key
	if publicValue != "" {
		var err error
		pubs, err = parseValue(publicValue, false, true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", PublicVar, err)
		}
	} else {
		pubs = []*Key{publicOf(priv)}
	}
	// Drop exact duplicates; refuse two different keys under one kid.
	set := &Set{byKID: map[string]*Key{}}
	for i, k := range pubs {
		if old, ok := set.byKID[k.KID]; ok {
			if samePublic(old.pub, k.pub) && old.Alg == k.Alg {
				continue
			}
			return nil, fmt.Errorf("%s: key %d: kid %q is used by two different keys", PublicVar, i+1, k.KID)
		}
		k.strictAlg = true
		set.byKID[k.KID] = k
		set.keys = append(set.keys, k)
	}
	if priv != nil {
		var match *Key
		for _, k := range set.keys {
			if samePublic(k.pub, priv.pub) {
				match = k
				break
			}
		}
		if match == nil {
			if _, ok := set.byKID[priv.KID]; ok && priv.explicitKID {
				return nil, fmt.Errorf("%s (kid %q) does not match the key of the same kid in %s: the public parts differ", PrivateVar, priv.KID, PublicVar)
			}
			return nil, fmt.Errorf("%s (kid %q) matches none of the keys in %s (kids %s): tokens it signs could not be verified", PrivateVar, priv.KID, PublicVar, strings.Join(set.KIDs(), ", "))
		}
		if priv.explicitKID && match.explicitKID && priv.KID != match.KID {
			return nil, fmt.Errorf("%s has kid %q but the same key in %s has kid %q: make them equal", PrivateVar, priv.KID, PublicVar, match.KID)
		}
		if priv.explicitAlg && match.explicitAlg && priv.Alg != match.Alg {
			return nil, fmt.Errorf("%s has alg %s but the same key in %s has alg %s: make them equal", PrivateVar, priv.Alg, PublicVar, match.Alg)
		}
		// A kid or alg given on one side only wins over a derived one.
		if priv.explicitKID && !match.explicitKID {
			if _, taken := set.byKID[priv.KID]; taken {
				return nil, fmt.Errorf("%s: kid %q is used by another key in %s", PrivateVar, priv.KID, PublicVar)
			}
			delete(set.byKID, match.KID)
			match.KID, match.explicitKID = priv.KID, true
			set.byKID[match.KID] = match
		}
		if priv.explicitAlg && !match.explicitAlg {
			if priv.Alg != match.Alg {
				if err := (&Key{pub: match.pub, Alg: priv.Alg, KID: match.KID}).complete(); err != nil {
					return nil, fmt.Errorf("%s: %w", PrivateVar, err)
				}
			}
			match.Alg, match.explicitAlg = priv.Alg, true
		}
		sk := &Key{KID: match.KID, Alg: match.Alg, pub: match.pub, priv: priv.priv}
		s, err := newSigner(sk)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", PrivateVar, err)
		}
		set.signer = s
	}
	jwks, err := buildJWKS(set.keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PublicVar, err)
	}
	set.jwks = jwks
	return set, nil
}

// buildJWKS serialises the public keys with go-jose, each with its kid,
// alg and "use":"sig".
func buildJWKS(keys []*Key) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = jose.JSONWebKey{Key: k.pub, KeyID: k.KID, Algorithm: k.Alg, Use: "sig"}
	}
	return json.Marshal(set)
}
