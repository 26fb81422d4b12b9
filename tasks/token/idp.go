package token

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
)

// Identity-provider JWKS caching.
const (
	fetchTimeout  = 10 * time.Second
	refreshAfter  = 5 * time.Minute // refresh in the background after this
	dropAfter     = time.Hour       // stop trusting keys not refreshed for this long
	minFetchEvery = 30 * time.Second
	maxJWKSBytes  = 1 << 20
)

type idpConfig struct {
	jwksURL  string
	issuer   string
	audience string
}

func idpConfigFrom(jwksURL, issuer, audience string, production bool) (idpConfig, error) {
	cfg := idpConfig{strings.TrimSpace(jwksURL), strings.TrimSpace(issuer), strings.TrimSpace(audience)}
	var errs []error
	for _, v := range []struct{ name, value string }{{IdPJWKSVar, cfg.jwksURL}, {IdPIssuerVar, cfg.issuer}, {IdPAudienceVar, cfg.audience}} {
		if v.value == "" {
			errs = append(errs, fmt.Errorf("%s=%s needs %s", AuthVar, Verified, v.name))
		}
	}
	if cfg.jwksURL != "" {
		u, err := url.Parse(cfg.jwksURL)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			errs = append(errs, fmt.Errorf("%s must be an http(s) URL", IdPJWKSVar))
		case u.User != nil:
			errs = append(errs, fmt.Errorf("%s must not hold a user or password", IdPJWKSVar))
		case production && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("%s must be https in a production deployment", IdPJWKSVar))
		}
	}
	return cfg, errors.Join(errs...)
}

type cached struct {
	set *keys.Set
	at  time.Time // last successful fetch
}

// idp verifies identity-provider tokens against its JWKS, which it fetches
// lazily, keeps, and refreshes with a rate limit.
type idp struct {
	cfg    idpConfig
	client *http.Client
	now    func() time.Time

	cur atomic.Pointer[cached]

	mu          sync.Mutex // one fetch at a time
	lastAttempt time.Time
	lastErr     error
	refreshing  atomic.Bool
}

func newIdP(cfg idpConfig) *idp {
	return &idp{cfg: cfg, client: &http.Client{Timeout: fetchTimeout}, now: time.Now}
}

// keys returns the provider's keys, fetching them if there are none (or
// only keys too old to trust) and refreshing stale ones in the background.
func (p *idp) keys(ctx context.Context) (*keys.Set, error) {
	now := p.now()
	if c := p.cur.Load(); c != nil && now.Sub(c.at) < dropAfter {
		if now.Sub(c.at) >= refreshAfter && p.refreshing.CompareAndSwap(false, true) {
			go func() {
				defer p.refreshing.Store(false)
				ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
				defer cancel()
				_ = p.refresh(ctx, false)
			}()
		}
		return c.set, nil
	}
	if err := p.refresh(ctx, false); err != nil {
		return nil, err
	}
	return p.cur.Load().set, nil
}

// refresh fetches the JWKS unless one was fetched (or tried) within
// minFetchEvery; force skips the check for a fresh success but not the rate
// limit.
func (p *idp) refresh(ctx context.Context, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if c := p.cur.Load(); c != nil && !force && now.Sub(c.at) < refreshAfter {
		return nil // someone else just did it
	}
	if !p.lastAttempt.IsZero() && now.Sub(p.lastAttempt) < minFetchEvery {
		if c := p.cur.Load(); c != nil && now.Sub(c.at) < dropAfter {
			return nil
		}
		return p.lastErr
	}
	p.lastAttempt = now
	set, err := p.fetch(ctx)
	p.lastErr = err
	if err != nil {
		return err
	}
	p.cur.Store(&cached{set: set, at: now})
	return nil
}

func (p *idp) fetch(ctx context.Context) (*keys.Set, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IdPJWKSVar, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the identity provider's JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the identity provider's JWKS: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the identity provider's JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("the identity provider's JWKS is larger than %d bytes", maxJWKSBytes)
	}
	set, err := keys.ParseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("the identity provider's JWKS: %w", err)
	}
	return set, nil
}

// authenticate checks the request's bearer token and returns its subject.
func (p *idp) authenticate(r *http.Request) (string, error) {
	h := r.Header.Values("Authorization")
	if len(h) == 0 {
		return "", unauthorized("an identity token is required: send Authorization: Bearer <token of your identity provider>")
	}
	if len(h) > 1 {
		return "", unauthorized("send one Authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", unauthorized("the Authorization header must be: Bearer <token>")
	}
	set, err := p.keys(r.Context())
	if err != nil {
		return "", runtime.Unavailable(30, err, "the identity provider's keys are unavailable; try again shortly")
	}
	opts := keys.VerifyOptions{Audience: p.cfg.audience, Issuer: p.cfg.issuer, Now: p.now()}
	claims, err := set.VerifyWith(tok, opts)
	if errors.Is(err, keys.ErrUnknownKID) {
		// The provider may have rotated its keys: fetch them again (rate
		// limited) and retry once.
		if rerr := p.refresh(r.Context(), true); rerr == nil {
			if c := p.cur.Load(); c != nil && c.set != set {
				claims, err = c.set.VerifyWith(tok, opts)
			}
		}
	}
	if err != nil {
		var te *keys.TokenError
		if errors.As(err, &te) {
			return "", unauthorized("identity token rejected: %s", te.Reason)
		}
		return "", unauthorized("identity token rejected")
	}
	switch {
	case strings.TrimSpace(claims.Subject) == "":
		return "", unauthorized("identity token rejected: empty sub")
	case len(claims.Subject) > MaxUserID:
		return "", unauthorized("identity token rejected: sub is longer than %d bytes", MaxUserID)
	}
	return claims.Subject, nil
}

func unauthorized(format string, args ...any) *runtime.Error {
	return runtime.Unauthorized(format, args...).WithHeader("WWW-Authenticate", `Bearer realm="token"`)
}
