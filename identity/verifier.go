// Package identity verifies user tokens (JWT access and ID tokens) from
// standard OpenID Connect issuers, several at once, following RFC 8725 and
// OpenID Connect Core: algorithms from configuration only, keys only from
// the JWKS of the issuer the token names, exact iss, required aud, exp/nbf/
// iat with at most 60 s leeway, explicit token types where the issuer sets
// them, and size and shape checks before any parsing.
package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentauth/agentauth/schemas"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// Defaults and limits of Options.
const (
	DefaultLeeway        = 60 * time.Second
	MaxLeeway            = 60 * time.Second
	DefaultJWKSCooldown  = 30 * time.Second
	DefaultMaxTokenBytes = 8192
)

// defaultAlgorithms is the allow-list used when IssuerConfig.Algorithms is
// empty.
var defaultAlgorithms = []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}

// supported are the algorithms an allow-list may name: asymmetric only.
var supported = map[string]jose.SignatureAlgorithm{
	"RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
	"PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
	"ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
	"EdDSA": jose.EdDSA,
}

// IssuerConfig is one trusted OpenID Connect issuer.
type IssuerConfig struct {
	// Issuer is compared with the token's iss exactly: a trailing slash or a
	// difference in case makes another issuer.
	Issuer string
	// Audience must be one of the token's aud values.
	Audience string
	// JWKSURL is where the issuer's keys are. When empty it is read from
	// Issuer (trailing slash removed) + "/.well-known/openid-configuration",
	// whose "issuer" must equal Issuer exactly. Both must be https, or http
	// to a loopback host.
	JWKSURL string
	// Algorithms is the allow-list of signature algorithms; default RS256,
	// PS256, ES256, ES384, EdDSA. "none" and HS* are refused, and so is any
	// name other than RS/PS/ES 256/384/512 and EdDSA (names are
	// case-sensitive, as in JWS).
	Algorithms []string
	// DistinguishesTokenTypes says the issuer sets typ "at+jwt" (or
	// "application/at+jwt") on access tokens (RFC 9068): an access token
	// must then have it. ID tokens never may, whatever this says. When false
	// an ID token of this issuer passes as an access token: nothing in it
	// tells them apart reliably.
	DistinguishesTokenTypes bool
}

// Options tune a Verifier. The zero value is ready to use.
type Options struct {
	// HTTPClient fetches discovery documents and JWKS. Default: a client
	// with a 10 s timeout that only follows redirects to https (or loopback
	// http) URLs.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Leeway for exp, nbf and iat; default (and maximum) 60 s. Zero means
	// the default.
	Leeway time.Duration
	// JWKSCooldown is the minimum time between two fetches of one issuer's
	// JWKS (a failed fetch counts); default 30 s.
	JWKSCooldown time.Duration
	// MaxTokenBytes caps the token length; default 8192.
	MaxTokenBytes int
}

// Kind is the kind of token a caller expects. Append only.
type Kind int

// Kinds of token.
const (
	AccessToken Kind = iota // an OAuth access token in JWT form (RFC 9068)
	IDToken                 // an OpenID Connect ID token
)

func (k Kind) String() string {
	switch k {
	case AccessToken:
		return "access token"
	case IDToken:
		return "ID token"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// VerifyOptions are per-call requirements.
type VerifyOptions struct {
	// Kind is the kind of token expected (the zero value is AccessToken).
	Kind Kind
	// AuthorizedParty, when set, must equal the token's azp, or its
	// client_id when azp is absent.
	AuthorizedParty string
}

// Verifier verifies user tokens from the configured issuers. It is safe for
// concurrent use. It fetches each issuer's keys on first use, and again when
// a token names an unknown kid, at most once per Options.JWKSCooldown per
// issuer; concurrent verifications share one fetch.
type Verifier struct {
	issuers  map[string]*issuer
	deflt    string                    // the default issuer: the first configured
	algs     []jose.SignatureAlgorithm // union of the issuers' allow-lists
	client   *http.Client
	now      func() time.Time
	leeway   time.Duration
	cooldown time.Duration
	maxBytes int
	tooLarge string // the message for ReasonTooLarge
}

// NewVerifier checks the configuration and returns a Verifier. It does no
// I/O. Errors wrap ErrInvalidConfig. The first issuer is the default
// issuer: the User.ID of its users is their bare subject, that of any
// other issuer's users is qualified (see UserID).
func NewVerifier(issuers []IssuerConfig, o Options) (*Verifier, error) {
	if len(issuers) == 0 {
		return nil, fmt.Errorf("%w: no issuers", ErrInvalidConfig)
	}
	v := &Verifier{
		issuers:  make(map[string]*issuer, len(issuers)),
		deflt:    issuers[0].Issuer,
		client:   o.HTTPClient,
		now:      o.Now,
		leeway:   o.Leeway,
		cooldown: o.JWKSCooldown,
		maxBytes: o.MaxTokenBytes,
	}
	switch {
	case v.leeway < 0 || v.leeway > MaxLeeway:
		return nil, fmt.Errorf("%w: leeway %s is outside 0…%s", ErrInvalidConfig, o.Leeway, MaxLeeway)
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	}
	switch {
	case v.cooldown < 0:
		return nil, fmt.Errorf("%w: negative JWKS cooldown %s", ErrInvalidConfig, o.JWKSCooldown)
	case v.cooldown == 0:
		v.cooldown = DefaultJWKSCooldown
	}
	switch {
	case v.maxBytes < 0:
		return nil, fmt.Errorf("%w: negative MaxTokenBytes %d", ErrInvalidConfig, o.MaxTokenBytes)
	case v.maxBytes == 0:
		v.maxBytes = DefaultMaxTokenBytes
	}
	v.tooLarge = "the token is longer than the " + strconv.Itoa(v.maxBytes) + "-byte limit"
	if v.client == nil {
		v.client = defaultClient()
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, c := range issuers {
		is, err := newIssuer(c)
		if err != nil {
			return nil, err
		}
		if _, dup := v.issuers[c.Issuer]; dup {
			return nil, fmt.Errorf("%w: issuer %q configured twice", ErrInvalidConfig, c.Issuer)
		}
		v.issuers[c.Issuer] = is
		for _, a := range is.algs {
			if !slices.Contains(v.algs, a) {
				v.algs = append(v.algs, a)
			}
		}
	}
	return v, nil
}

func newIssuer(c IssuerConfig) (*issuer, error) {
	if c.Issuer == "" {
		return nil, fmt.Errorf("%w: empty issuer", ErrInvalidConfig)
	}
	if c.Audience == "" {
		return nil, fmt.Errorf("%w: issuer %q: empty audience", ErrInvalidConfig, c.Issuer)
	}
	if c.JWKSURL != "" {
		if err := checkFetchURL(c.JWKSURL); err != nil {
			return nil, fmt.Errorf("%w: issuer %q: JWKS URL: %v", ErrInvalidConfig, c.Issuer, err)
		}
	} else if err := checkFetchURL(c.Issuer); err != nil {
		return nil, fmt.Errorf("%w: issuer %q has no JWKS URL and cannot be discovered: %v", ErrInvalidConfig, c.Issuer, err)
	}
	names := c.Algorithms
	if len(names) == 0 {
		names = defaultAlgorithms
	}
	is := &issuer{cfg: c, allowed: make(map[jose.SignatureAlgorithm]bool), jwksURL: c.JWKSURL}
	is.cfg.Algorithms = slices.Clone(names)
	for _, n := range names {
		a, ok := supported[n]
		if !ok {
			return nil, fmt.Errorf("%w: issuer %q: algorithm %q is not allowed (only asymmetric algorithms: RS*, PS*, ES*, EdDSA)", ErrInvalidConfig, c.Issuer, n)
		}
		if !is.allowed[a] {
			is.allowed[a] = true
			is.algs = append(is.algs, a)
		}
	}
	return is, nil
}

// Verify checks raw (a compact JWS, without any "Bearer " prefix) and
// returns the user it was issued for. Every rejection is a *TokenError. It
// blocks only while the issuer's keys are fetched, and returns early when
// ctx is done.
func (v *Verifier) Verify(ctx context.Context, raw string, o VerifyOptions) (*User, error) {
	// Shape first: nothing below may see a huge token or one full of dots.
	if len(raw) > v.maxBytes {
		return nil, rejectf(ReasonTooLarge, v.tooLarge)
	}
	if strings.Count(raw, ".") != 2 {
		return nil, rejectf(ReasonMalformed, "the token is not a JWT: a signed JWT has exactly three dot-separated parts")
	}
	if o.Kind != AccessToken && o.Kind != IDToken {
		return nil, &TokenError{Reason: ReasonInvalidKind, code: schemas.CodeInternal, message: "the verifier was asked for an unknown kind of token"}
	}

	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, rejectf(ReasonAlgorithm, fmt.Sprintf("signing algorithm %s is not accepted", quote(string(alg.Got))))
		}
		return nil, rejectf(ReasonMalformed, "the token is not a well-formed signed JWT")
	}
	if len(jws.Signatures) != 1 {
		return nil, rejectf(ReasonMalformed, "the token is not a well-formed signed JWT")
	}
	h := jws.Signatures[0].Header
	typ, terr := checkHeader(h)
	if terr != nil {
		return nil, terr
	}

	// The claims are read before the signature is checked only to learn
	// which issuer's keys to use; nothing else is trusted until it is.
	var c claims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		return nil, rejectf(ReasonMalformed, "the token's claims are not a valid JSON object of JWT claims")
	}
	if c.Issuer == "" {
		return nil, rejectf(ReasonMissingClaim, "the token has no iss claim")
	}
	is, ok := v.issuers[c.Issuer]
	if !ok {
		return nil, rejectf(ReasonUnknownIssuer, fmt.Sprintf("issuer %s is not trusted here (issuers match exactly, including case and trailing slash)", quote(c.Issuer)))
	}
	alg := jose.SignatureAlgorithm(h.Algorithm)
	if !is.allowed[alg] {
		return nil, rejectf(ReasonAlgorithm, fmt.Sprintf("signing algorithm %s is not accepted for issuer %s (allowed: %s)",
			quote(h.Algorithm), quote(is.cfg.Issuer), strings.Join(is.cfg.Algorithms, ", ")))
	}

	keys, kerr := v.keysFor(ctx, is, h.KeyID, alg)
	if kerr != nil {
		return nil, kerr
	}
	verified := false
	for _, k := range keys {
		// The key is given explicitly: go-jose never looks at jwk, jku or
		// x5u headers, nor at a key set, when it is not one.
		if _, err := jws.Verify(k.Key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, rejectf(ReasonSignature, fmt.Sprintf("the token's signature does not verify with the keys of issuer %s", quote(is.cfg.Issuer)))
	}

	if terr := v.checkClaims(is, &c, typ, o); terr != nil {
		return nil, terr
	}
	u := &User{
		Subject:         c.Subject,
		Issuer:          c.Issuer,
		ID:              UserID(v.deflt, c.Issuer, c.Subject),
		Email:           c.Email,
		EmailVerified:   bool(c.EmailVerified),
		Name:            c.Name,
		AuthorizedParty: c.authorizedParty(),
		Audience:        []string(c.Audience),
		Expiry:          c.Expiry.Time(),
	}
	if c.IssuedAt != nil {
		u.IssuedAt = c.IssuedAt.Time()
	}
	switch {
	case c.Scope != nil:
		u.Scopes = []string(*c.Scope)
	case c.Scp != nil:
		u.Scopes = []string(*c.Scp)
	}
	return u, nil
}

// checkHeader refuses headers this verifier does not implement and returns
// the normalized typ ("", "jwt" or "at+jwt").
func checkHeader(h jose.Header) (string, *TokenError) {
	for _, name := range []jose.HeaderKey{"crit", "b64"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return "", rejectf(ReasonHeader, "the token uses the "+string(name)+" header, which user tokens must not use")
		}
	}
	if cty, ok := h.ExtraHeaders[jose.HeaderContentType]; ok {
		s, _ := cty.(string)
		if strings.TrimPrefix(strings.ToLower(s), "application/") == "jwt" {
			return "", rejectf(ReasonHeader, "nested JWTs are not accepted")
		}
	}
	raw, ok := h.ExtraHeaders[jose.HeaderType]
	if !ok {
		return "", nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", rejectf(ReasonMalformed, "the token's typ header is not a string")
	}
	// RFC 7515 §4.1.9: "application/" may be omitted; media types are
	// case-insensitive.
	typ := strings.TrimPrefix(strings.ToLower(s), "application/")
	switch typ {
	case "jwt", "at+jwt":
		return typ, nil
	}
	return "", rejectf(ReasonTokenType, fmt.Sprintf("tokens of type %s are not user tokens (accepted: JWT, at+jwt)", quote(s)))
}

func (c *claims) authorizedParty() string {
	if c.AuthorizedParty != "" {
		return c.AuthorizedParty
	}
	return c.ClientID
}

func (v *Verifier) checkClaims(is *issuer, c *claims, typ string, o VerifyOptions) *TokenError {
	switch {
	case o.Kind == IDToken && typ == "at+jwt":
		return rejectf(ReasonTokenType, "an access token (typ at+jwt) was given where an ID token is required")
	case o.Kind == AccessToken && is.cfg.DistinguishesTokenTypes && typ != "at+jwt":
		return rejectf(ReasonTokenType, fmt.Sprintf(
			"an access token is required, and issuer %s marks access tokens with typ at+jwt; this token is not one (an ID token?)", quote(is.cfg.Issuer)))
	}

	now := v.now()
	lw := seconds(v.leeway)
	if c.Expiry == nil {
		return rejectf(ReasonMissingClaim, "the token has no exp claim")
	}
	if exp := c.Expiry.Time(); now.After(exp.Add(v.leeway)) {
		return rejectf(ReasonExpired, fmt.Sprintf("the token expired at %s (leeway %s); get a new one", stamp(exp), lw))
	}
	if c.NotBefore != nil {
		if nbf := c.NotBefore.Time(); now.Add(v.leeway).Before(nbf) {
			return rejectf(ReasonNotYetValid, fmt.Sprintf("the token is not valid before %s (leeway %s); check the clocks", stamp(nbf), lw))
		}
	}
	if c.IssuedAt != nil {
		if iat := c.IssuedAt.Time(); now.Add(v.leeway).Before(iat) {
			return rejectf(ReasonIssuedInFuture, fmt.Sprintf("the token claims to be issued at %s, in the future (leeway %s); check the clocks", stamp(iat), lw))
		}
	}
	if !c.Audience.Contains(is.cfg.Audience) {
		if len(c.Audience) == 0 {
			return rejectf(ReasonAudience, fmt.Sprintf("the token has no audience; it must include %s", quote(is.cfg.Audience)))
		}
		return rejectf(ReasonAudience, fmt.Sprintf("audience %s does not include %s", quoteList(c.Audience), quote(is.cfg.Audience)))
	}
	if c.Subject == "" {
		return rejectf(ReasonMissingClaim, "the token has no sub claim")
	}
	if o.AuthorizedParty != "" {
		if got := c.authorizedParty(); got != o.AuthorizedParty {
			if got == "" {
				return rejectf(ReasonAuthorizedParty, fmt.Sprintf("the token names no client (azp or client_id); it must be issued to %s", quote(o.AuthorizedParty)))
			}
			return rejectf(ReasonAuthorizedParty, fmt.Sprintf("the token was issued to client %s, not %s", quote(got), quote(o.AuthorizedParty)))
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// seconds formats d as "60s" rather than "1m0s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}
