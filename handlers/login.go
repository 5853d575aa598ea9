package handlers

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/identity"
)

// Login is the browser login of agentauth's HTTP edge: authorization code
// with PKCE S256, state and nonce against the configured OpenID issuer,
// an HttpOnly SameSite session cookie, logout, and a "who am I" page that
// later capabilities (connected accounts, approval inbox) build on.
// Sessions live in Sessions (shared by instances, kept across restarts),
// or in this process's memory without one.
type Login struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	PublicURL    string           // agentauth's base URL; the redirect URI is PublicURL+"/callback"
	IDTokens     TokenVerifier    // verifies ID tokens for ClientID
	HTTPClient   *http.Client     // for discovery and the token endpoint
	Now          func() time.Time // default time.Now
	SessionTTL   time.Duration    // default 8h
	Sessions     SessionStore     // nil: sessions in this process's memory
	Log          *slog.Logger     // session store failures; slog.Default() if nil

	// StateKey (32 bytes) seals logins in progress (PKCE verifier, nonce)
	// into Sessions, so that the callback may reach another instance or
	// come after a restart; instances sharing Sessions share it. Without
	// it (or without Sessions) logins in progress stay in memory.
	StateKey []byte

	// CSRFKey keys the form token of the logout form (formToken, as the
	// inbox and connected accounts pages). nil: derived from StateKey
	// (instances sharing sessions share it), else a random key of this
	// process.
	CSRFKey []byte

	cfgMu   sync.Mutex     // guards oauth: discovery is cached once it succeeds
	oauth   *oauth2.Config // nil until discovery succeeds
	keyOnce sync.Once
	csrfKey []byte
	mu      sync.Mutex
	pending map[string]pendingLogin
	session map[string]Session
}

type pendingLogin struct {
	verifier, nonce, next string
	created               time.Time
}

// sealedPending is a login in progress as stored, sealed with StateKey.
type sealedPending struct {
	Verifier string    `json:"verifier"`
	Nonce    string    `json:"nonce"`
	Next     string    `json:"next"`
	Created  time.Time `json:"created"`
}

func pendingKey(state string) string {
	h := sha256.Sum256([]byte("agentauth login\x00" + state))
	return "login." + hex.EncodeToString(h[:])
}

func (l *Login) stateAEAD() (cipher.AEAD, bool) {
	if l.Sessions == nil || len(l.StateKey) != 32 {
		return nil, false
	}
	b, err := aes.NewCipher(l.StateKey)
	if err != nil {
		return nil, false
	}
	g, err := cipher.NewGCM(b)
	return g, err == nil
}

// maxPendingLogins bounds the logins in progress kept in memory (without
// a SessionStore): anonymous browsers create them.
const maxPendingLogins = 10_000

var errTooManyLogins = errors.New("too many logins in progress")

// putPending keeps a login in progress for loginTTL. In memory, at most
// maxPendingLogins (expired ones are dropped when the limit is reached);
// beyond that it returns errTooManyLogins.
func (l *Login) putPending(ctx context.Context, state string, p pendingLogin) error {
	g, ok := l.stateAEAD()
	if !ok {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.pending == nil {
			l.pending = map[string]pendingLogin{}
		}
		if len(l.pending) >= maxPendingLogins {
			for k, old := range l.pending {
				if p.created.Sub(old.created) > loginTTL {
					delete(l.pending, k)
				}
			}
			if len(l.pending) >= maxPendingLogins {
				return errTooManyLogins
			}
		}
		l.pending[state] = p
		return nil
	}
	plain, err := json.Marshal(sealedPending{Verifier: p.verifier, Nonce: p.nonce, Next: p.next, Created: p.created})
	if err != nil {
		return err
	}
	key := pendingKey(state)
	nonce := make([]byte, g.NonceSize())
	_, _ = rand.Read(nonce)
	return l.Sessions.PutSession(ctx, key, g.Seal(nonce, nonce, plain, []byte(key)), loginTTL)
}

// takePending returns a login in progress and forgets it (single use).
func (l *Login) takePending(ctx context.Context, state string) (pendingLogin, bool) {
	g, ok := l.stateAEAD()
	if !ok {
		l.mu.Lock()
		defer l.mu.Unlock()
		p, ok := l.pending[state]
		delete(l.pending, state)
		return p, ok
	}
	key := pendingKey(state)
	b, err := l.Sessions.TakeSession(ctx, key)
	if err != nil {
		l.log().Warn("session store unavailable: a login in progress could not be read", "error", err)
		return pendingLogin{}, false
	}
	if len(b) < g.NonceSize() {
		return pendingLogin{}, false
	}
	plain, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], []byte(key))
	if err != nil {
		return pendingLogin{}, false
	}
	var sp sealedPending
	if json.Unmarshal(plain, &sp) != nil {
		return pendingLogin{}, false
	}
	return pendingLogin{verifier: sp.Verifier, nonce: sp.Nonce, next: sp.Next, created: sp.Created}, true
}

// Session is a logged-in browser.
type Session struct {
	User    identity.User
	Expires time.Time
}

// SessionStore keeps sessions by key (a hash of the session cookie, never
// the cookie itself) for a TTL. GetSession returns nil for a key it does
// not hold.
type SessionStore interface {
	PutSession(ctx context.Context, key string, value []byte, ttl time.Duration) error
	GetSession(ctx context.Context, key string) ([]byte, error)
	// TakeSession returns the value under key and removes it; of
	// concurrent takers, one gets it.
	TakeSession(ctx context.Context, key string) ([]byte, error)
	DeleteSession(ctx context.Context, key string) error
}

// sessionKey is the store key of a session cookie: a leaked store gives
// no usable cookie.
func sessionKey(sid string) string {
	h := sha256.Sum256([]byte("agentauth session\x00" + sid))
	return hex.EncodeToString(h[:])
}

func (l *Login) log() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.Default()
}

// putSession starts session s under the cookie value sid.
func (l *Login) putSession(ctx context.Context, sid string, s Session, ttl time.Duration) error {
	if l.Sessions == nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.session == nil {
			l.session = map[string]Session{}
		}
		now := l.now()
		for k, old := range l.session { // ended sessions do not pile up
			if !now.Before(old.Expires) {
				delete(l.session, k)
			}
		}
		l.session[sid] = s
		return nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return l.Sessions.PutSession(ctx, sessionKey(sid), b, ttl)
}

// getSession returns the live session of cookie value sid. A store that
// cannot answer counts as no session (fail closed), and is logged.
func (l *Login) getSession(ctx context.Context, sid string) (Session, bool) {
	var s Session
	if l.Sessions == nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		var ok bool
		if s, ok = l.session[sid]; !ok || !l.now().Before(s.Expires) {
			delete(l.session, sid)
			return Session{}, false
		}
		return s, true
	}
	b, err := l.Sessions.GetSession(ctx, sessionKey(sid))
	if err != nil {
		l.log().Warn("session store unavailable: treating the browser as logged out", "error", err)
		return Session{}, false
	}
	if b == nil || json.Unmarshal(b, &s) != nil || !l.now().Before(s.Expires) {
		return Session{}, false
	}
	return s, true
}

func (l *Login) deleteSession(ctx context.Context, sid string) {
	if l.Sessions == nil {
		l.mu.Lock()
		delete(l.session, sid)
		l.mu.Unlock()
		return
	}
	if err := l.Sessions.DeleteSession(ctx, sessionKey(sid)); err != nil {
		l.log().Warn("session not deleted from the store; it ends at its expiry", "error", err)
	}
}

const (
	loginCookie   = "agentauth_login"
	sessionCookie = "agentauth_session"
	// hostPrefix is the cookie name prefix that browsers accept only
	// with Secure, Path=/ and no Domain: a cookie no sibling subdomain
	// or plain-http page can set or overwrite.
	hostPrefix = "__Host-"
	loginTTL   = 10 * time.Minute
	// discoveryTimeout bounds one discovery attempt, independent of the
	// request that triggered it.
	discoveryTimeout = 10 * time.Second
)

// sessionCookieName is the session cookie's name: __Host-agentauth_session
// when PublicURL is https, agentauth_session on plain http (development),
// where browsers refuse the prefix. Every reader and writer uses it.
func (l *Login) sessionCookieName() string {
	if l.secure() {
		return hostPrefix + sessionCookie
	}
	return sessionCookie
}

// loginCookieName is the name of the cookie holding a login's state, as
// sessionCookieName.
func (l *Login) loginCookieName() string {
	if l.secure() {
		return hostPrefix + loginCookie
	}
	return loginCookie
}

// sessionID is the session cookie's value in r, if any.
func (l *Login) sessionID(r *http.Request) (string, bool) {
	c, err := r.Cookie(l.sessionCookieName())
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

// formToken is the form token of session sid (the logout form's).
func (l *Login) formToken(sid string) string {
	l.keyOnce.Do(func() {
		switch {
		case len(l.CSRFKey) > 0:
			l.csrfKey = l.CSRFKey
		case len(l.StateKey) > 0:
			m := hmac.New(sha256.New, l.StateKey)
			m.Write([]byte("agentauth logout csrf"))
			l.csrfKey = m.Sum(nil)
		default:
			l.csrfKey = make([]byte, 32)
			_, _ = rand.Read(l.csrfKey)
		}
	})
	return formToken(l.csrfKey, sid)
}

func (l *Login) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Login) secure() bool { return strings.HasPrefix(l.PublicURL, "https://") }

// discover reads the issuer's endpoints and keeps them once an attempt
// succeeds; a failed attempt is not kept, the next caller tries again.
// Each attempt runs with its own deadline (discoveryTimeout), detached
// from the cancellation of the request that triggered it. Concurrent
// callers wait for one attempt.
func (l *Login) discover(ctx context.Context) (*oauth2.Config, error) {
	l.cfgMu.Lock()
	defer l.cfgMu.Unlock()
	if l.oauth != nil {
		return l.oauth, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(l.Issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, err
	}
	resp, err := l.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery at %s: %w", l.Issuer, err)
	}
	defer resp.Body.Close()
	var d struct {
		Issuer string `json:"issuer"`
		Auth   string `json:"authorization_endpoint"`
		Token  string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil || d.Auth == "" || d.Token == "" {
		return nil, fmt.Errorf("discovery at %s: no authorization and token endpoints", l.Issuer)
	}
	if d.Issuer != l.Issuer {
		return nil, fmt.Errorf("discovery at %s names issuer %q", l.Issuer, d.Issuer)
	}
	l.oauth = &oauth2.Config{
		ClientID: l.ClientID, ClientSecret: l.ClientSecret,
		Endpoint:    oauth2.Endpoint{AuthURL: d.Auth, TokenURL: d.Token},
		RedirectURL: l.PublicURL + "/callback",
		Scopes:      []string{"openid", "profile", "email"},
	}
	return l.oauth, nil
}

// httpClient is HTTPClient, or a client with a 10 s timeout.
func (l *Login) httpClient() *http.Client {
	if l.HTTPClient != nil {
		return l.HTTPClient
	}
	return &http.Client{Timeout: discoveryTimeout}
}

func random() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Routes are the login routes for the HTTP edge.
func (l *Login) Routes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /login":    l.login,
		"GET /callback": l.callback,
		"POST /logout":  l.logout,
		"GET /whoami":   l.whoami,
	}
}

// login starts the flow: state in a cookie bound to this browser, PKCE
// verifier and nonce kept here, single use, ten minutes.
func (l *Login) login(w http.ResponseWriter, r *http.Request) {
	oc, err := l.discover(r.Context())
	if err != nil {
		http.Error(w, "login is unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	next := localNext(r.URL.Query().Get("next"))
	state, nonce, verifier := random(), random(), oauth2.GenerateVerifier()
	if err := l.putPending(r.Context(), state, pendingLogin{verifier: verifier, nonce: nonce, next: next, created: l.now()}); err != nil {
		l.log().Warn("login not started", "error", err)
		http.Error(w, "login is unavailable: agentauth could not keep this login in progress; try again in a moment", http.StatusServiceUnavailable)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: l.loginCookieName(), Value: state, Path: "/", MaxAge: int(loginTTL.Seconds()), HttpOnly: true, Secure: l.secure(), SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)), http.StatusFound)
}

func (l *Login) fail(w http.ResponseWriter, status int, msg string) {
	htmlHeaders(w)
	w.WriteHeader(status)
	_ = page.Execute(w, pageData{Title: "Login failed", Error: msg})
}

// callback finishes the flow: the state must be this browser's and
// unused, the code is exchanged with the PKCE verifier, the ID token is
// verified and its nonce checked, then a session starts.
func (l *Login) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		l.fail(w, http.StatusBadRequest, "The identity provider refused the login: "+e+" "+q.Get("error_description"))
		return
	}
	state := q.Get("state")
	c, err := r.Cookie(l.loginCookieName())
	if err != nil || state == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		l.fail(w, http.StatusBadRequest, "This login was not started in this browser (state mismatch). Start again at /login.")
		return
	}
	p, ok := l.takePending(r.Context(), state)
	if !ok || l.now().Sub(p.created) > loginTTL {
		l.fail(w, http.StatusBadRequest, "This login expired or was already used. Start again at /login.")
		return
	}
	oc, err := l.discover(r.Context())
	if err != nil {
		l.fail(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	tok, err := oc.Exchange(context.WithValue(r.Context(), oauth2.HTTPClient, l.httpClient()), q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		l.fail(w, http.StatusBadGateway, "The identity provider did not accept the code; start again at /login.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	u, err := l.IDTokens.Verify(r.Context(), raw, identity.VerifyOptions{Kind: identity.IDToken})
	if err != nil {
		msg := err.Error()
		var te *identity.TokenError
		if errors.As(err, &te) {
			msg = te.PublicMessage()
		}
		l.fail(w, http.StatusUnauthorized, "The ID token was not accepted: "+msg)
		return
	}
	if nonceOf(raw) != p.nonce {
		l.fail(w, http.StatusUnauthorized, "The ID token's nonce does not match this login.")
		return
	}
	sid := random()
	ttl := l.SessionTTL
	if ttl <= 0 {
		ttl = 8 * time.Hour
	}
	if err := l.putSession(r.Context(), sid, Session{User: *u, Expires: l.now().Add(ttl)}, ttl); err != nil {
		l.log().Warn("session not stored", "error", err)
		l.fail(w, http.StatusServiceUnavailable, "agentauth could not start a session (its session store is unavailable); try again in a moment at /login.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: l.loginCookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: l.secure(), SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: l.sessionCookieName(), Value: sid, Path: "/", MaxAge: int(ttl.Seconds()), HttpOnly: true, Secure: l.secure(), SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, localNext(p.next), http.StatusFound)
}

// defaultNext is where a login ends when it was given no usable next.
const defaultNext = "/whoami"

// localNext returns next if it is a path on this site, defaultNext
// otherwise. Browsers read a backslash as a slash and drop tabs and
// newlines (WHATWG URL): "/" + backslash + "evil.example" and "/" + tab +
// "/evil.example" are "//evil.example" to them. So next must parse as a
// URL without scheme, host or user, start with one "/" (its decoded path
// too), and hold no backslash, control or white-space character, neither
// as given nor in its percent-decoded path.
func localNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(u.Path, "//") ||
		strings.ContainsFunc(next, unsafeInNext) || strings.ContainsFunc(u.Path, unsafeInNext) {
		return defaultNext
	}
	return next
}

func unsafeInNext(r rune) bool {
	return r == '\\' || r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r)
}

// nonceOf reads the nonce of an ID token whose signature was verified.
func nonceOf(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Nonce
}

// SessionOf returns the logged-in user of a request.
func (l *Login) SessionOf(r *http.Request) (Session, bool) {
	sid, ok := l.sessionID(r)
	if !ok {
		return Session{}, false
	}
	return l.getSession(r.Context(), sid)
}

// logout ends the session. With a session cookie the form must carry the
// session's form token (the /whoami page's logout form does): another
// site cannot log the person out. Refused: 403, nothing cleared.
func (l *Login) logout(w http.ResponseWriter, r *http.Request) {
	if sid, ok := l.sessionID(r); ok {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		_ = r.ParseForm()
		if got := r.PostFormValue("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(l.formToken(sid))) != 1 {
			l.fail(w, http.StatusForbidden, "This logout did not come from agentauth's page in this browser session (missing or stale form token); you are still logged in. Log out from /whoami.")
			return
		}
		l.deleteSession(r.Context(), sid)
	}
	http.SetCookie(w, &http.Cookie{Name: l.sessionCookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: l.secure(), SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/whoami", http.StatusFound)
}

func (l *Login) whoami(w http.ResponseWriter, r *http.Request) {
	s, ok := l.SessionOf(r)
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not logged in", "login": "/login"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"subject": s.User.Subject, "issuer": s.User.Issuer, "email": s.User.Email, "name": s.User.Name})
		return
	}
	htmlHeaders(w)
	d := pageData{Title: "Who am I"}
	if ok {
		d.User = &s.User
		if sid, ok := l.sessionID(r); ok {
			d.CSRF = l.formToken(sid)
		}
	}
	_ = page.Execute(w, d)
}

type pageData struct {
	Title string
	User  *identity.User
	Error string
	CSRF  string // the logout form's token
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>agentauth — {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}dt{font-weight:600}.error{color:#b00}</style></head>
<body><h1>agentauth</h1>
{{if .Error}}<p class="error">{{.Error}}</p><p><a href="/login">Log in</a></p>
{{else if .User}}<p>You are logged in.</p>
<dl><dt>Name</dt><dd id="name">{{.User.Name}}</dd><dt>Email</dt><dd id="email">{{.User.Email}}</dd>
<dt>Subject</dt><dd id="subject">{{.User.Subject}}</dd><dt>Issuer</dt><dd id="issuer">{{.User.Issuer}}</dd></dl>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button>Log out</button></form>
{{else}}<p>You are not logged in.</p><p><a href="/login">Log in</a></p>{{end}}
</body></html>`))
