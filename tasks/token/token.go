// Package token serves GET /token: a JWT with which a PowerSync client
// connects to the PowerSync service.
//
//	GET /token?user_id=U  ->  200 {"token":"<JWT>","powersync_url":"<POWERSYNC_URL>","expires_at":"2026-01-02T15:04:05Z"}
//
// expires_at is the token's exp as an RFC 3339 UTC time. The JWT's header
// has alg, kid and typ "JWT"; its claims are sub (the user), aud
// (POWERSYNC_URL), iat, exp and iss. The response has Cache-Control
// no-store.
//
// Who may ask for a token (TOKEN_AUTH):
//
//   - open: anyone may get a token for any user_id. For development only:
//     it is announced in the log at start and refused in a production
//     deployment. It is the default of non-production deployments.
//   - verified: the caller sends "Authorization: Bearer <JWT>" issued by the
//     app's identity provider (Auth0, Firebase, Cognito, Supabase, ...). The
//     JWT is checked against the provider's JWKS (TOKEN_IDP_JWKS_URL),
//     issuer (TOKEN_IDP_ISSUER) and audience (TOKEN_IDP_AUDIENCE), with exp
//     required and 60 s of clock skew, and the PowerSync token's sub is that
//     JWT's sub. user_id may then be left out; if given, it must equal the
//     JWT's subject (403 otherwise). Production deployments must use it.
//     The JWKS is fetched with a 10 s timeout, kept, refreshed in the
//     background every 5 minutes, fetched again (at most every 30 s) when a
//     token names an unknown kid, and dropped after an hour without a
//     successful fetch.
//
// user_id, in open mode, and whenever given: missing, empty or blank, given
// twice, over 255 bytes, not valid UTF-8 or malformed percent-encoding: 400
// with a JSON error. Any other value (unicode, spaces, &, /, %, ...) is the
// token's sub unchanged.
//
// Variables:
//
//   - POWERSYNC_URL (required): the PowerSync instance URL; the tokens'
//     audience, returned to clients as powersync_url.
//   - TOKEN_LIFETIME: a duration such as 5m (the default) or 1h, or whole
//     seconds; at least 1s and at most 24h (the service's limit).
//   - TOKEN_ISSUER: the iss claim; default the deployment's url, else
//     "taskrun".
//   - TOKEN_AUTH: open or verified (see above).
//   - TOKEN_IDP_JWKS_URL, TOKEN_IDP_ISSUER, TOKEN_IDP_AUDIENCE: required when
//     verified. The JWKS URL must be https in production.
//   - POWERSYNC_PRIVATE_KEY, POWERSYNC_PUBLIC_KEY: the keys (see
//     internal/keys); the private one is required to start, except in
//     a development deployment with neither, which generates a pair.
package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/internal/keys"
	"github.com/taskrun/taskrun/runtime"
)

// Variable names.
const (
	URLVar         = "POWERSYNC_URL"
	LifetimeVar    = "TOKEN_LIFETIME"
	IssuerVar      = keys.IssuerVar
	AuthVar        = "TOKEN_AUTH"
	IdPJWKSVar     = "TOKEN_IDP_JWKS_URL"
	IdPIssuerVar   = "TOKEN_IDP_ISSUER"
	IdPAudienceVar = "TOKEN_IDP_AUDIENCE"
)

// Token modes.
const (
	Open     = "open"
	Verified = "verified"
)

// Limits.
const (
	DefaultLifetime = 5 * time.Minute
	MaxUserID       = 255
	DefaultIssuer   = "taskrun"
)

type server struct {
	keys     *keys.Set
	url      string
	audience []string
	issuer   string
	lifetime int64 // seconds
	mode     string
	idp      *idp
	now      func() time.Time
	// tail is `","powersync_url":"<url>","expires_at":"`, encoded once.
	tail []byte
}

// Task registers token; tasks/all.go lists it.
func Task() runtime.Task { return newTask(time.Now) }

// newTask builds the task with a clock (tests pass a fake one).
func newTask(now func() time.Time) runtime.Task {
	s := &server{now: now}
	vars := append([]runtime.Var{
		{Name: URLVar, Help: "the PowerSync instance URL: the tokens' audience, returned as powersync_url"},
		{Name: LifetimeVar, Optional: true, Help: "token lifetime, such as 5m (default) or 1h; at most 24h", Default: "5m"},
		{Name: IssuerVar, Optional: true, Help: `the tokens' iss claim (default: the deployment's url, else "taskrun")`, Default: "(the deployment's url, else taskrun)"},
		{Name: AuthVar, Optional: true, Help: `who may get a token: "open" (development only, the default there) or "verified" (required in production)`, Default: "(open in development; production must set it)"},
		{Name: IdPJWKSVar, Optional: true, Help: "verified mode: the identity provider's JWKS URL"},
		{Name: IdPIssuerVar, Optional: true, Help: "verified mode: the identity provider's issuer (iss)"},
		{Name: IdPAudienceVar, Optional: true, Help: "verified mode: the audience (aud) of the identity provider's tokens"},
	}, keys.Vars...)
	return runtime.Task{
		Name:        "token",
		Description: "a PowerSync token for a user (GET /token?user_id=U)",
		HTTP:        map[string]runtime.HTTPFunc{http.MethodGet: s.get},
		Access:      runtime.Authenticated(s.authenticate),
		Vars:        vars,
		Init:        s.init,
		Timeout:     15 * time.Second,
	}
}

func (s *server) init(ctx context.Context, setup *runtime.Setup) error {
	dep := setup.Deployment
	var errs []error
	set, err := keys.Load(setup)
	if err != nil {
		errs = append(errs, err)
	} else if !set.CanSign() {
		errs = append(errs, fmt.Errorf("%s is not set: the token task cannot sign (the public keys alone only verify)", keys.PrivateVar))
	}
	s.keys = set

	s.url = strings.TrimSpace(dep.Get(URLVar))
	if u, err := url.Parse(s.url); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		errs = append(errs, fmt.Errorf("%s must be the PowerSync instance URL, such as https://YOUR-INSTANCE.powersync.journeyapps.com", URLVar))
	}
	s.audience = []string{s.url}

	lt, err := parseLifetime(dep.Get(LifetimeVar))
	if err != nil {
		errs = append(errs, err)
	}
	s.lifetime = int64(lt / time.Second)

	s.issuer = strings.TrimSpace(dep.Get(IssuerVar))
	if s.issuer == "" {
		s.issuer = dep.URL
	}
	if s.issuer == "" {
		s.issuer = DefaultIssuer
	}

	s.mode = strings.ToLower(strings.TrimSpace(dep.Get(AuthVar)))
	switch {
	case s.mode == "" && dep.Production:
		errs = append(errs, fmt.Errorf("%s is not set: a production deployment must set it to %q and configure %s, %s and %s",
			AuthVar, Verified, IdPJWKSVar, IdPIssuerVar, IdPAudienceVar))
	case s.mode == "":
		s.mode = Open
	case s.mode == Open && dep.Production:
		errs = append(errs, fmt.Errorf("%s=open lets anyone get a token for any user and is refused in a production deployment: set it to %q and configure %s, %s and %s",
			AuthVar, Verified, IdPJWKSVar, IdPIssuerVar, IdPAudienceVar))
	case s.mode == Open, s.mode == Verified:
	default:
		errs = append(errs, fmt.Errorf("%s must be %q or %q", AuthVar, Open, Verified))
	}
	if s.mode == Verified {
		cfg, err := idpConfigFrom(dep.Get(IdPJWKSVar), dep.Get(IdPIssuerVar), dep.Get(IdPAudienceVar), dep.Production)
		if err != nil {
			errs = append(errs, err)
		} else {
			s.idp = newIdP(cfg)
			s.idp.now = s.now
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	u, err := json.Marshal(s.url)
	if err != nil {
		return err
	}
	s.tail = slices.Concat([]byte(`","powersync_url":`), u, []byte(`,"expires_at":"`))

	log := setup.Log.With().Str("kid", set.SigningKID()).Str("alg", set.SigningAlg()).
		Int64("lifetime_s", s.lifetime).Str("mode", s.mode).Logger()
	if s.mode == Open {
		log.Warn().Msgf("TOKEN_AUTH=open: ANYONE can get a PowerSync token for ANY user at /token?user_id=... This is for development only; set %s=verified (with your identity provider) before going live", AuthVar)
	} else {
		log.Info().Str("idp_jwks", s.idp.cfg.jwksURL).Str("idp_issuer", s.idp.cfg.issuer).
			Msg("/token issues tokens to callers with a valid identity-provider token (TOKEN_AUTH=verified)")
		// Fetch the provider's keys now, so a wrong URL shows at start; a
		// failure is not fatal (the provider may be briefly down), the
		// readiness check reports it and requests try again.
		fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		if _, err := s.idp.keys(fctx); err != nil {
			log.Warn().Str("error", err.Error()).Msg("could not fetch the identity provider's JWKS yet; /token answers 503 until it can")
		}
		cancel()
		setup.Check("token_idp_jwks", func(ctx context.Context) error {
			_, err := s.idp.keys(ctx)
			return err
		})
	}
	if lt < time.Minute {
		log.Warn().Msg("TOKEN_LIFETIME is under a minute: PowerSync clients refresh when 30 s remain, so they will ask for tokens very often")
	}
	return nil
}

// parseLifetime reads TOKEN_LIFETIME: a Go duration or whole seconds.
func parseLifetime(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return DefaultLifetime, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr != nil || n > int64(keys.MaxLifetime/time.Second)+1 {
			return 0, fmt.Errorf("%s: want a duration such as 5m or 1h, or whole seconds, got %q", LifetimeVar, v)
		}
		d = time.Duration(n) * time.Second
	}
	switch {
	case d <= 0:
		return 0, fmt.Errorf("%s must be positive, got %s", LifetimeVar, v)
	case d < time.Second || d%time.Second != 0:
		return 0, fmt.Errorf("%s must be whole seconds (JWT times are seconds), got %s", LifetimeVar, v)
	case d > keys.MaxLifetime:
		return 0, fmt.Errorf("%s is %s: the PowerSync service refuses tokens that live longer than 24h (5m to 1h is usual)", LifetimeVar, d)
	}
	return d, nil
}

// authenticate is the task's Access: in open mode it lets every caller
// through; in verified mode it returns the identity token's subject.
func (s *server) authenticate(c echo.Context, env *runtime.Env) (any, error) {
	if s.idp == nil {
		return nil, nil
	}
	return s.idp.authenticate(c.Request())
}

// get serves GET /token.
func (s *server) get(c echo.Context, env *runtime.Env) error {
	userID, given, err := userIDParam(c.Request().URL.RawQuery)
	var sub string
	switch {
	case s.idp != nil:
		sub, _ = env.Subject.(string)
		if given && err == nil && userID != sub {
			return runtime.Errorf(http.StatusForbidden, "user_id does not match the subject of the identity token; leave user_id out")
		}
		if given && err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		sub = userID
	}
	iat := s.now().Unix()
	exp := iat + s.lifetime
	tok, err := s.keys.Sign(keys.Claims{Subject: sub, Issuer: s.issuer, Audience: s.audience, IssuedAt: iat, ExpiresAt: exp})
	if err != nil {
		return fmt.Errorf("signing the token: %w", err)
	}
	buf := make([]byte, 0, len(tok)+len(s.tail)+48)
	buf = append(buf, `{"token":"`...)
	buf = append(buf, tok...)
	buf = append(buf, s.tail...)
	buf = time.Unix(exp, 0).UTC().AppendFormat(buf, time.RFC3339)
	buf = append(buf, `"}`...)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, buf)
}

// userIDParam reads user_id from a raw query string (net/url decodes it).
// given reports whether it was there at all; err is a 400 for the client.
// A malformed query is refused whole, as if user_id were given badly:
// net/url drops the pair it cannot decode, which may be user_id's.
func userIDParam(raw string) (id string, given bool, err error) {
	q, qerr := url.ParseQuery(raw)
	ids, given := q["user_id"]
	switch {
	case qerr != nil:
		return "", true, runtime.BadRequest("the query string is malformed (invalid percent-encoding, or a raw ';'): send GET /token?user_id=<percent-encoded user id>")
	case !given:
		return "", false, runtime.BadRequest("user_id is required: GET /token?user_id=<user id>")
	case len(ids) > 1:
		return "", true, runtime.BadRequest("user_id is given more than once")
	}
	id = ids[0]
	switch {
	case strings.TrimFunc(id, unicode.IsSpace) == "":
		return "", true, runtime.BadRequest("user_id is empty")
	case len(id) > MaxUserID:
		return "", true, runtime.BadRequest("user_id is longer than %d bytes", MaxUserID)
	case !utf8.ValidString(id):
		return "", true, runtime.BadRequest("user_id is not valid UTF-8")
	}
	return id, true, nil
}
