package devidp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Errors of the login step.
var (
	// ErrLoginFailed: the username or password is wrong. FetchToken wraps it.
	ErrLoginFailed = errors.New("devidp: wrong username or password")
	// errLoginUnknown: the login request is unknown, expired or finished.
	errLoginUnknown = errors.New("devidp: this sign-in request is unknown, expired or already finished; start again from the application")
	// errLoginBrowser: the form was posted by another browser than the one
	// that loaded it (or without its cookie).
	errLoginBrowser = errors.New("devidp: this sign-in form was opened in another browser (or cookies are off); start again from the application")
)

// storage implements op.Storage in memory. All state is behind mu.
type storage struct {
	issuer  string
	now     func() time.Time
	key     *signingKey
	users   map[string]*User // by subject
	byName  map[string]*User // by username
	clients map[string]*client
	order   []*User // configuration order, for the login page
	access  time.Duration
	refresh time.Duration

	mu       sync.Mutex
	requests map[string]*authRequest  // by id; the id is also the grant id
	codes    map[string]*codeEntry    // by code
	tokens   map[string]*accessToken  // by id (the JWT's jti)
	refreshs map[string]*refreshToken // by token value
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

type codeEntry struct {
	requestID string
	expires   time.Time
	used      bool // a second use revokes the grant (RFC 6749 §4.1.2)
}

type accessToken struct {
	grant    string
	clientID string
	subject  string
	scopes   []string
	audience []string
	expires  time.Time
}

type refreshToken struct {
	token    string
	grant    string
	clientID string
	subject  string
	scopes   []string // of the grant; a refresh may ask for fewer
	audience []string
	amr      []string
	authTime time.Time
	expires  time.Time
	used     bool // rotated: presenting it again is invalid_grant
}

func newStorage(cfg Config, key *signingKey) (*storage, error) {
	s := &storage{
		issuer:   cfg.Issuer,
		now:      cfg.Now,
		key:      key,
		users:    make(map[string]*User),
		byName:   make(map[string]*User),
		clients:  make(map[string]*client),
		access:   cfg.AccessTokenTTL,
		refresh:  cfg.RefreshTokenTTL,
		requests: make(map[string]*authRequest),
		codes:    make(map[string]*codeEntry),
		tokens:   make(map[string]*accessToken),
		refreshs: make(map[string]*refreshToken),
	}
	if len(cfg.Users) == 0 {
		return nil, fmt.Errorf("%w: no users", ErrInvalidConfig)
	}
	for _, u := range cfg.Users {
		switch {
		case u.Subject == "" || u.Username == "" || u.Password == "":
			return nil, fmt.Errorf("%w: user %q: subject, username and password are required", ErrInvalidConfig, u.Username)
		case s.users[u.Subject] != nil:
			return nil, fmt.Errorf("%w: subject %q used twice", ErrInvalidConfig, u.Subject)
		case s.byName[u.Username] != nil:
			return nil, fmt.Errorf("%w: username %q used twice", ErrInvalidConfig, u.Username)
		}
		s.users[u.Subject], s.byName[u.Username] = &u, &u
		s.order = append(s.order, &u)
	}
	if len(cfg.Clients) == 0 {
		return nil, fmt.Errorf("%w: no clients", ErrInvalidConfig)
	}
	for _, c := range cfg.Clients {
		if c.ID == "" {
			return nil, fmt.Errorf("%w: a client has no id", ErrInvalidConfig)
		}
		if s.clients[c.ID] != nil {
			return nil, fmt.Errorf("%w: client %q configured twice", ErrInvalidConfig, c.ID)
		}
		if len(c.RedirectURIs) == 0 {
			return nil, fmt.Errorf("%w: client %q has no redirect URI", ErrInvalidConfig, c.ID)
		}
		for _, uri := range slices.Concat(c.RedirectURIs, c.PostLogoutRedirectURIs) {
			if u, err := url.Parse(uri); err != nil || u.Scheme == "" || u.Fragment != "" {
				return nil, fmt.Errorf("%w: client %q: redirect URI %q must be absolute, without fragment", ErrInvalidConfig, c.ID, uri)
			}
		}
		s.clients[c.ID] = &client{
			id:         c.ID,
			secret:     c.Secret,
			redirects:  slices.Clone(c.RedirectURIs),
			postLogout: slices.Clone(c.PostLogoutRedirectURIs),
			audience:   slices.Concat([]string{c.ID}, c.Audience),
			loginURL:   cfg.Issuer + loginPath + "?authRequestID=",
			idTTL:      cfg.IDTokenTTL,
			access:     c.AccessTokenTTL,
		}
	}
	return s, nil
}

func newID() string { return rand.Text() } // 26 base32 characters, 130 bits

// pruneLocked forgets what has expired.
func (s *storage) pruneLocked(now time.Time) {
	for id, r := range s.requests {
		if now.After(r.expires) {
			delete(s.requests, id)
		}
	}
	for c, e := range s.codes {
		if now.After(e.expires) {
			delete(s.codes, c)
		}
	}
	for id, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, id)
		}
	}
	for v, t := range s.refreshs {
		if now.After(t.expires) {
			delete(s.refreshs, v)
		}
	}
}

// revokeGrantLocked ends every token issued from one authorization.
func (s *storage) revokeGrantLocked(grant string) {
	for id, t := range s.tokens {
		if t.grant == grant {
			delete(s.tokens, id)
		}
	}
	for v, t := range s.refreshs {
		if t.grant == grant {
			delete(s.refreshs, v)
		}
	}
}

// --- authorization requests and login ---

func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	c := s.clients[req.ClientID]
	if c == nil { // op checked already; keep the invariant local
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("unknown client")
	}
	// PKCE: S256 only; public clients must use it (RFC 9700 §2.1.1).
	switch {
	case req.CodeChallenge == "" && c.public():
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required for public clients: send code_challenge with code_challenge_method=S256")
	case req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256:
		return nil, oidc.ErrInvalidRequest().WithDescription("only code_challenge_method=S256 is supported")
	}
	if slices.Contains(req.Prompt, oidc.PromptNone) {
		return nil, oidc.ErrLoginRequired().WithDescription("this provider keeps no login session; every authorization needs the login form")
	}
	now := s.now()
	r := &authRequest{
		id:           newID(),
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		scopes:       slices.Clone(req.Scopes),
		state:        req.State,
		nonce:        req.Nonce,
		responseType: req.ResponseType,
		responseMode: req.ResponseMode,
		loginHint:    req.LoginHint,
		audience:     slices.Clone(c.audience),
		expires:      now.Add(authRequestTTL),
	}
	if req.CodeChallenge != "" {
		r.challenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	s.requests[r.id] = r
	return r.clone(), nil
}

// requestLocked returns the live auth request id, or nil.
func (s *storage) requestLocked(id string) *authRequest {
	r := s.requests[id]
	if r == nil || s.now().After(r.expires) {
		return nil
	}
	return r
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requestLocked(id)
	if r == nil {
		return nil, errLoginUnknown
	}
	return r.clone(), nil
}

// AuthRequestByCode consumes code: whatever the outcome of the exchange, a
// code works once. A second use revokes the tokens issued for it.
func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.codes[code]
	switch {
	case e == nil || s.now().After(e.expires):
		return nil, errors.New("unknown or expired authorization code")
	case e.used:
		s.revokeGrantLocked(e.requestID)
		delete(s.requests, e.requestID)
		return nil, errors.New("authorization code used twice; the tokens issued for it are revoked")
	}
	e.used = true
	r := s.requestLocked(e.requestID)
	if r == nil {
		return nil, errors.New("the authorization of this code has expired")
	}
	return r.clone(), nil
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requestLocked(id)
	switch {
	case r == nil:
		return oidc.ErrInvalidRequest().WithDescription("the authorization request is unknown or expired")
	case r.subject == "":
		return oidc.ErrInteractionRequired().WithDescription("the user has not signed in")
	case r.code != "":
		return oidc.ErrInvalidRequest().WithDescription("a code was already issued for this authorization request")
	}
	exp := s.now().Add(codeTTL)
	r.code = code
	if exp.After(r.expires) {
		r.expires = exp // the request lives as long as its code
	}
	s.codes[code] = &codeEntry{requestID: id, expires: exp}
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	return nil
}

// loginView binds the auth request id to browser (the login cookie) and
// returns what the login form shows.
func (s *storage) loginView(id, browser string) (clientID, loginHint string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requestLocked(id)
	if r == nil || r.subject != "" {
		return "", "", errLoginUnknown
	}
	r.browser = browser
	return r.clientID, r.loginHint, nil
}

// login checks the credentials and marks the auth request id done. It
// returns ErrLoginFailed for a wrong username or password.
func (s *storage) login(id, browser, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requestLocked(id)
	switch {
	case r == nil || r.subject != "":
		return errLoginUnknown
	case r.browser == "" || subtle.ConstantTimeCompare([]byte(r.browser), []byte(browser)) != 1:
		return errLoginBrowser
	}
	u := s.byName[username]
	if u == nil || !equalSecret(u.Password, password) {
		return ErrLoginFailed
	}
	r.subject = u.Subject
	r.authTime = s.now()
	return nil
}

func equalSecret(want, got string) bool {
	w, g := sha256.Sum256([]byte(want)), sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}

// userList is the users in configuration order (the login page shows them).
func (s *storage) userList() []User {
	out := make([]User, len(s.order))
	for i, u := range s.order {
		out[i] = *u
	}
	return out
}

// --- tokens ---

// grantOf returns the grant (authorization) and client a token request
// belongs to.
func grantOf(req op.TokenRequest) (grant, clientID string, err error) {
	switch r := req.(type) {
	case *authRequest:
		return r.id, r.clientID, nil
	case *refreshRequest:
		return r.t.grant, r.t.clientID, nil
	}
	return "", "", oidc.ErrUnsupportedGrantType()
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	grant, clientID, err := grantOf(req)
	if err != nil {
		return "", time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newAccessLocked(grant, clientID, req)
}

func (s *storage) newAccessLocked(grant, clientID string, req op.TokenRequest) (string, time.Time, error) {
	now := s.now()
	s.pruneLocked(now)
	id := newID()
	ttl := s.access
	if c := s.clients[clientID]; c != nil && c.access > 0 {
		ttl = c.access
	}
	exp := now.Add(ttl)
	s.tokens[id] = &accessToken{
		grant:    grant,
		clientID: clientID,
		subject:  req.GetSubject(),
		scopes:   slices.Clone(req.GetScopes()),
		audience: slices.Clone(req.GetAudience()),
		expires:  exp,
	}
	return id, exp, nil
}

// CreateAccessAndRefreshTokens issues an access token and a new refresh
// token. With currentRefreshToken it rotates: the current one is marked
// used, and of two concurrent refreshes with it only one succeeds.
func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	grant, clientID, err := grantOf(req)
	if err != nil {
		return "", "", time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	next := &refreshToken{
		token:    newID(),
		grant:    grant,
		clientID: clientID,
		subject:  req.GetSubject(),
		scopes:   slices.Clone(req.GetScopes()),
		audience: slices.Clone(req.GetAudience()),
		expires:  now.Add(s.refresh),
	}
	if current != "" {
		old := s.refreshs[current]
		switch {
		case old == nil || now.After(old.expires) || old.grant != grant:
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("unknown, expired or revoked refresh token")
		case old.used:
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token already used (it was rotated)")
		}
		old.used = true
		next.scopes, next.amr, next.authTime = slices.Clone(old.scopes), old.amr, old.authTime
	} else if r, ok := req.(*authRequest); ok {
		next.amr, next.authTime = r.GetAMR(), r.authTime
	}
	id, exp, err := s.newAccessLocked(grant, clientID, req)
	if err != nil {
		return "", "", time.Time{}, err
	}
	s.refreshs[next.token] = next
	return id, next.token, exp, nil
}

func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.refreshs[token]
	switch {
	case t == nil || s.now().After(t.expires):
		return nil, errors.New("unknown, expired or revoked refresh token")
	case t.used:
		return nil, errors.New("refresh token already used (it was rotated)")
	}
	c := *t
	c.scopes = slices.Clone(t.scopes)
	return &refreshRequest{t: c, scopes: slices.Clone(t.scopes)}, nil
}

// TerminateSession does nothing: the provider keeps no login session (every
// authorization shows the login form), and tokens outlive a logout.
func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

// RevokeToken revokes an access token by id (jti), or a refresh token
// together with every token of its grant (RFC 7009 §2.1). Unknown tokens
// are not an error.
func (s *storage) RevokeToken(_ context.Context, tokenOrID, _ string, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.refreshs[tokenOrID]; t != nil {
		if t.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("the token was not issued to this client")
		}
		s.revokeGrantLocked(t.grant)
		return nil
	}
	if t := s.tokens[tokenOrID]; t != nil {
		if t.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("the token was not issued to this client")
		}
		delete(s.tokens, tokenOrID)
	}
	return nil
}

// GetRefreshTokenInfo returns the refresh token itself as its id.
func (s *storage) GetRefreshTokenInfo(_ context.Context, _ string, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.refreshs[token]
	if t == nil {
		return "", "", op.ErrInvalidRefreshToken
	}
	return t.subject, token, nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{s.key.alg}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.key}}, nil
}

// publicKey is the JWKS entry of the signing key.
type publicKey struct{ *signingKey }

func (k publicKey) Key() any { return k.pub }

// --- clients ---

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c := s.clients[id]
	if c == nil {
		return nil, fmt.Errorf("unknown client %q", id)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	c := s.clients[id]
	if c == nil || c.public() || !equalSecret(c.secret, secret) {
		return errors.New("wrong client id or secret")
	}
	return nil
}

// --- claims ---

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil // deprecated by the library; SetUserinfoFromRequest does the work
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.userinfo(info, req.GetSubject(), scopes)
}

func (s *storage) userinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	u := s.users[subject]
	if u == nil {
		return fmt.Errorf("unknown subject %q", subject)
	}
	info.Subject = u.Subject
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.Name = u.Name
		info.PreferredUsername = u.Username
	}
	if slices.Contains(scopes, oidc.ScopeEmail) && u.Email != "" {
		info.Email = u.Email
		info.EmailVerified = true // development users' addresses are taken as verified
	}
	return nil
}

// activeLocked returns the live access token id issued to subject.
func (s *storage) activeLocked(id, subject string) *accessToken {
	t := s.tokens[id]
	if t == nil || t.subject != subject || s.now().After(t.expires) {
		return nil
	}
	return t
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t := s.activeLocked(tokenID, subject)
	var scopes []string
	if t != nil {
		scopes = t.scopes
	}
	s.mu.Unlock()
	if t == nil {
		return errors.New("the access token is expired or revoked")
	}
	return s.userinfo(info, subject, scopes)
}

// SetIntrospectionFromToken answers for tokens of the introspecting client,
// or whose audience names it.
func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	t := s.activeLocked(tokenID, subject)
	var c accessToken
	if t != nil {
		c = *t
	}
	s.mu.Unlock()
	if t == nil || (c.clientID != clientID && !slices.Contains(c.audience, clientID)) {
		return errors.New("token not active for this client")
	}
	info := new(oidc.UserInfo)
	if err := s.userinfo(info, subject, c.scopes); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Scope = c.scopes
	resp.ClientID = c.clientID
	resp.TokenType = oidc.BearerToken
	resp.Expiration = oidc.FromTime(c.expires)
	resp.Audience = c.audience
	resp.Issuer = s.issuer
	resp.JWTID = tokenID
	return nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil // GetPrivateClaimsFromRequest does the work
}

// GetPrivateClaimsFromRequest adds scope to access tokens, and the user's
// name and email when the profile and email scopes were granted.
func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	scopes := req.GetScopes()
	info := new(oidc.UserInfo)
	if err := s.userinfo(info, req.GetSubject(), scopes); err != nil {
		return nil, err
	}
	claims := map[string]any{"scope": strings.Join(scopes, " ")}
	if info.Name != "" {
		claims["name"] = info.Name
	}
	if info.PreferredUsername != "" {
		claims["preferred_username"] = info.PreferredUsername
	}
	if info.Email != "" {
		claims["email"] = info.Email
		claims["email_verified"] = true
	}
	return claims, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("private_key_jwt client authentication is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// --- request types ---

// authRequest implements op.AuthRequest. The storage hands out clones, so
// the library never sees a value that changes under it.
type authRequest struct {
	id           string
	clientID     string
	redirectURI  string
	scopes       []string
	state        string
	nonce        string
	responseType oidc.ResponseType
	responseMode oidc.ResponseMode
	challenge    *oidc.CodeChallenge
	loginHint    string
	audience     []string
	expires      time.Time

	browser  string    // login cookie value that may post the form
	subject  string    // set by a successful login
	authTime time.Time // of the login
	code     string    // set once the code is issued
}

var _ op.AuthRequest = (*authRequest)(nil)

func (r *authRequest) clone() *authRequest {
	c := *r
	c.scopes, c.audience = slices.Clone(r.scopes), slices.Clone(r.audience)
	if r.challenge != nil {
		ch := *r.challenge
		c.challenge = &ch
	}
	return &c
}

func (r *authRequest) GetID() string                         { return r.id }
func (r *authRequest) GetACR() string                        { return "" }
func (r *authRequest) GetAMR() []string                      { return []string{"pwd"} }
func (r *authRequest) GetAudience() []string                 { return r.audience }
func (r *authRequest) GetAuthTime() time.Time                { return r.authTime }
func (r *authRequest) GetClientID() string                   { return r.clientID }
func (r *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return r.challenge }
func (r *authRequest) GetNonce() string                      { return r.nonce }
func (r *authRequest) GetRedirectURI() string                { return r.redirectURI }
func (r *authRequest) GetResponseType() oidc.ResponseType    { return r.responseType }
func (r *authRequest) GetResponseMode() oidc.ResponseMode    { return r.responseMode }
func (r *authRequest) GetScopes() []string                   { return r.scopes }
func (r *authRequest) GetState() string                      { return r.state }
func (r *authRequest) GetSubject() string                    { return r.subject }
func (r *authRequest) Done() bool                            { return r.subject != "" }

// refreshRequest implements op.RefreshTokenRequest over a copy of a
// refresh token record.
type refreshRequest struct {
	t      refreshToken
	scopes []string // the scopes asked for now (a subset of t.scopes)
}

var _ op.RefreshTokenRequest = (*refreshRequest)(nil)

func (r *refreshRequest) GetAMR() []string                 { return r.t.amr }
func (r *refreshRequest) GetAudience() []string            { return r.t.audience }
func (r *refreshRequest) GetAuthTime() time.Time           { return r.t.authTime }
func (r *refreshRequest) GetClientID() string              { return r.t.clientID }
func (r *refreshRequest) GetScopes() []string              { return r.scopes }
func (r *refreshRequest) GetSubject() string               { return r.t.subject }
func (r *refreshRequest) SetCurrentScopes(scopes []string) { r.scopes = scopes }

// client implements op.Client.
type client struct {
	id         string
	secret     string
	redirects  []string
	postLogout []string
	audience   []string // the client id first
	loginURL   string   // + the auth request id
	idTTL      time.Duration
	access     time.Duration // 0: the provider's
}

var _ op.Client = (*client)(nil)

func (c *client) public() bool                     { return c.secret == "" }
func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirects }
func (c *client) PostLogoutRedirectURIs() []string { return c.postLogout }
func (c *client) LoginURL(id string) string        { return c.loginURL + url.QueryEscape(id) }
func (c *client) AccessTokenType() op.AccessTokenType {
	return op.AccessTokenTypeJWT
}
func (c *client) IDTokenLifetime() time.Duration { return c.idTTL }
func (c *client) DevMode() bool                  { return false }
func (c *client) ClockSkew() time.Duration       { return 0 }

// IsScopeAllowed admits any scope beyond the standard ones: this provider
// has no scope policy, and API scopes are the relying party's to check.
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }

// ApplicationType: public clients are native apps (CLIs, agents: loopback
// redirects on any port), confidential ones web apps.
func (c *client) ApplicationType() op.ApplicationType {
	if c.public() {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.public() {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}

func identityScopes(scopes []string) []string { return scopes }

func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return identityScopes
}

func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return identityScopes
}
