// Package devidp is agentauth's built-in development OpenID Connect
// provider: a real provider (github.com/zitadel/oidc/v3 op) with a few
// configured users, a plain login page and in-memory state, so that login
// and token verification work offline. It is for development and tests
// only: passwords are compared in plain text, nothing survives a restart
// except what the caller persists (the signing key), and the login page
// lists the users.
//
// The provider supports the authorization code flow with PKCE (S256 only;
// required for public clients), refresh tokens (with offline_access,
// rotated on every use), userinfo, revocation (RFC 7009) and RP-initiated
// logout. Access and ID tokens are JWTs signed with Config.SigningKey.
package devidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Defaults of Config.
const (
	DefaultAccessTokenTTL  = 10 * time.Minute
	DefaultIDTokenTTL      = 10 * time.Minute
	DefaultRefreshTokenTTL = 24 * time.Hour

	// authRequestTTL bounds the time from the authorization request to the
	// end of the login; codeTTL the time from login to code exchange.
	authRequestTTL = 10 * time.Minute
	codeTTL        = 2 * time.Minute
)

// ErrInvalidConfig is wrapped by every error New returns.
var ErrInvalidConfig = errors.New("devidp: invalid configuration")

// Config configures the provider. Users and Clients are copied by New.
type Config struct {
	// Issuer is the provider's issuer identifier and base URL, e.g.
	// "http://127.0.0.1:8080/dev-idp"; the provider is served under its
	// path. It must be https, or http to a loopback host, without query or
	// fragment. The discovery document names it exactly.
	Issuer  string
	Users   []User
	Clients []Client
	// SigningKey signs ID and access tokens: RSA (≥ 2048 bits, RS256) or
	// ECDSA (P-256 ES256, P-384 ES384, P-521 ES512). The caller persists
	// it; tokens signed before a restart stay verifiable only if it does.
	SigningKey crypto.Signer
	// KeyID is the kid of the signing key in the JWKS and token headers.
	// Default: the key's RFC 7638 thumbprint (SHA-256, base64url).
	KeyID string
	// Now is the clock for expiry of tokens, codes and login requests;
	// default time.Now. The library stamps iat and nbf, and the ID token's
	// exp, from the wall clock.
	Now func() time.Time
	// Token lifetimes; zero means DefaultAccessTokenTTL, DefaultIDTokenTTL,
	// DefaultRefreshTokenTTL. A refresh token's lifetime restarts when it
	// is rotated.
	AccessTokenTTL, IDTokenTTL, RefreshTokenTTL time.Duration
}

// User is a development user who can sign in with Username and Password.
type User struct {
	Subject  string // sub; stable and unique
	Username string // what the login form asks for; unique
	Password string // plain text: development only
	Email    string
	Name     string
}

// Client is a registered OAuth client (relying party).
type Client struct {
	ID string
	// Secret authenticates a confidential client at the token endpoint
	// (HTTP Basic or form post). Empty means a public client, which must
	// use PKCE with S256.
	Secret string
	// RedirectURIs are matched exactly; for public clients a loopback http
	// redirect URI matches on any port (RFC 8252 §7.3).
	RedirectURIs []string
	// Audience values are added to the client id in the aud claim of the
	// tokens issued to this client (the API the tokens are for).
	Audience []string
	// PostLogoutRedirectURIs are the allowed post_logout_redirect_uri
	// values of the end-session endpoint. Without one the end-session
	// endpoint redirects to the provider's own signed-out page.
	PostLogoutRedirectURIs []string
	// AccessTokenTTL, when set, is the lifetime of this client's access
	// tokens instead of Config.AccessTokenTTL (a short one shows refresh).
	AccessTokenTTL time.Duration
}

// DefaultUsers returns the demo users alice and bob. Their passwords
// ("alice-dev-password", "bob-dev-password") are public and shown on the
// login page: development only.
func DefaultUsers() []User {
	return []User{
		{Subject: "dev-alice", Username: "alice", Password: "alice-dev-password", Email: "alice@example.com", Name: "Alice Example"},
		{Subject: "dev-bob", Username: "bob", Password: "bob-dev-password", Email: "bob@example.com", Name: "Bob Example"},
	}
}

// New checks cfg and returns the provider's handler. The caller mounts it
// at the issuer's path without stripping the prefix, e.g. for the issuer
// http://127.0.0.1:8080/dev-idp: mux.Handle("/dev-idp/", h). Requests
// outside that path get 404. Under it the handler serves:
//
//	/.well-known/openid-configuration  discovery
//	/authorize, /authorize/callback    authorization endpoint
//	/login                             the login page
//	/oauth/token                       token endpoint
//	/keys                              JWKS
//	/userinfo, /revoke, /oauth/introspect, /end_session, /logged-out
//	/healthz, /ready
//
// The handler is safe for concurrent use. Errors wrap ErrInvalidConfig.
func New(cfg Config) (http.Handler, error) {
	iss, err := checkIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	key, err := newSigningKey(cfg.SigningKey, cfg.KeyID)
	if err != nil {
		return nil, err
	}
	ttls := []*time.Duration{&cfg.AccessTokenTTL, &cfg.IDTokenTTL, &cfg.RefreshTokenTTL}
	for i, def := range []time.Duration{DefaultAccessTokenTTL, DefaultIDTokenTTL, DefaultRefreshTokenTTL} {
		switch {
		case *ttls[i] < 0:
			return nil, fmt.Errorf("%w: negative token lifetime %s", ErrInvalidConfig, *ttls[i])
		case *ttls[i] == 0:
			*ttls[i] = def
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := newStorage(cfg, key)
	if err != nil {
		return nil, err
	}

	var cryptoKey [32]byte // encrypts authorization codes; per process
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, err
	}
	alg := string(key.alg)
	opts := []op.Option{
		op.WithAccessTokenVerifierOpts(op.WithSupportedAccessTokenSigningAlgorithms(alg)),
		op.WithIDTokenHintVerifierOpts(op.WithSupportedIDTokenHintSigningAlgorithms(alg)),
	}
	if iss.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:                cryptoKey,
		DefaultLogoutRedirectURI: cfg.Issuer + loggedOutPath,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
	}, st, op.StaticIssuer(cfg.Issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	prefix := strings.TrimSuffix(iss.Path, "/")
	return &handler{
		issuer:   cfg.Issuer,
		prefix:   prefix,
		secure:   iss.Scheme == "https",
		st:       st,
		op:       provider,
		provider: http.StripPrefix(prefix, provider),
	}, nil
}

func checkIssuer(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || s == "" || u.Host == "" {
		return nil, fmt.Errorf("%w: issuer %q is not an absolute URL", ErrInvalidConfig, s)
	}
	if u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#") {
		return nil, fmt.Errorf("%w: issuer %q has a query or fragment", ErrInvalidConfig, s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: issuer %q has user information", ErrInvalidConfig, s)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("%w: issuer %q must use https (http only to a loopback host)", ErrInvalidConfig, s)
	}
	return u, nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// signingKey implements op.SigningKey and op.Key.
type signingKey struct {
	id  string
	alg jose.SignatureAlgorithm
	key any // *rsa.PrivateKey, *ecdsa.PrivateKey or a jose.OpaqueSigner
	pub crypto.PublicKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k *signingKey) Algorithm() jose.SignatureAlgorithm          { return k.alg }
func (k *signingKey) ID() string                                  { return k.id }
func (k *signingKey) Use() string                                 { return "sig" }

// Key returns the private key (or opaque signer); publicKey overrides it
// for the JWKS.
func (k *signingKey) Key() any { return k.key }

var _ op.SigningKey = (*signingKey)(nil)

func newSigningKey(s crypto.Signer, kid string) (*signingKey, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: no signing key", ErrInvalidConfig)
	}
	k := &signingKey{id: kid, key: s, pub: s.Public()}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA signing key has %d bits; at least 2048 are required", ErrInvalidConfig, pub.N.BitLen())
		}
		k.alg = jose.RS256
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			k.alg = jose.ES256
		case elliptic.P384():
			k.alg = jose.ES384
		case elliptic.P521():
			k.alg = jose.ES512
		default:
			return nil, fmt.Errorf("%w: ECDSA signing key on an unsupported curve (use P-256, P-384 or P-521)", ErrInvalidConfig)
		}
	default:
		return nil, fmt.Errorf("%w: signing key of type %T; RSA or ECDSA required", ErrInvalidConfig, k.pub)
	}
	switch s.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
	default: // an HSM, KMS or other opaque signer
		k.key = cryptosigner.Opaque(s)
	}
	if k.id == "" {
		tp, err := (&jose.JSONWebKey{Key: k.pub}).Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("%w: signing key thumbprint: %v", ErrInvalidConfig, err)
		}
		k.id = base64.RawURLEncoding.EncodeToString(tp)
	}
	// Sign once now, so a broken key fails New rather than every login.
	signer, err := op.SignerFromKey(k)
	if err == nil {
		_, err = signer.Sign([]byte("{}"))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the signing key cannot sign %s: %v", ErrInvalidConfig, k.alg, err)
	}
	return k, nil
}

// handler routes the issuer's path: the login and signed-out pages here,
// everything else to the library's router with the prefix stripped.
type handler struct {
	issuer   string
	prefix   string // issuer path without trailing slash; "" at the root
	secure   bool   // https issuer: cookies are Secure
	st       *storage
	op       *op.Provider
	provider http.Handler
}

const (
	loginPath     = "/login"
	loggedOutPath = "/logged-out"
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		http.NotFound(w, r)
		return
	}
	switch rest {
	case loginPath:
		h.login(w, r)
	case loggedOutPath:
		h.page(w, r, http.StatusOK, pageData{Title: "Signed out", Message: "You are signed out of the development identity provider."})
	case "/":
		h.page(w, r, http.StatusOK, pageData{Title: "Development identity provider",
			Message: "Discovery document: " + h.issuer + "/.well-known/openid-configuration", Users: h.userRows()})
	default:
		h.provider.ServeHTTP(w, r)
	}
}
