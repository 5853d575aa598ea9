package vault

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// providerMode is what the fake provider does with refresh tokens.
type providerMode int

const (
	modeStrict      providerMode = iota // rotating: a used refresh token dies at once
	modeGrace                           // rotating: a used refresh token lives for the grace window
	modeNonRotating                     // the refresh token stays; refresh answers carry none
	modeNonExpiring                     // no expires_in, no refresh token
)

func (m providerMode) String() string {
	return [...]string{"strict", "grace", "non-rotating", "non-expiring"}[m]
}

// behaviour is the vault's name for the mode.
func (m providerMode) behaviour() RefreshBehaviour {
	return [...]RefreshBehaviour{RefreshRotating, RefreshRotatingGrace, RefreshNonRotating, RefreshNonExpiring}[m]
}

// providerFault is a fault of the fake provider's token endpoint.
type providerFault int

const (
	failNone         providerFault = iota
	failInvalidGrant               // 400 invalid_grant
	fail500                        // 500 server_error
	fail429                        // 429 with Retry-After: 7
	failHang                       // no answer until the request's context ends
	failMalformed                  // 200 with a truncated JSON body
	failLostAnswer                 // handles the request (a strict provider uses the refresh token), then answers garbage
	failGitHubDead                 // 200 {"error":"bad_refresh_token"}, as GitHub answers a dead refresh token
	failUnknown200                 // 200 with an error code no one documents
)

// revocation is one call of the fake provider's RFC 7009 endpoint.
type revocation struct{ Token, Hint string }

// codeGrant is what /authorize remembered about a code.
type codeGrant struct {
	redirectURI, challenge, scope string
}

// fakeProvider is an OAuth 2.0 provider on an httptest.Server that
// imitates providers' refresh-token quirks and faults:
//
//	GET  /authorize  redirects at once to redirect_uri with code and state (no login)
//	POST /token      authorization_code (code, redirect_uri, PKCE S256) and refresh_token
//	POST /revoke     RFC 7009; records what it revoked
//
// Client credentials are accepted in a Basic header or in the form (not
// both). Faults and expires_in can be switched while it runs. It is safe
// for concurrent use.
type fakeProvider struct {
	tb           testing.TB
	srv          *httptest.Server
	clientID     string
	clientSecret string
	mode         providerMode
	grace        time.Duration
	// clockOffset is added to expires_in so that expiries, which
	// x/oauth2 computes on the real clock, agree with the test clock.
	clockOffset func() time.Duration
	release     chan struct{} // closed at cleanup: hung requests return

	mu        sync.Mutex
	expiresIn int // seconds; 0: omitted
	fault     providerFault
	deny      bool                 // /authorize answers error=access_denied
	noRefresh bool                 // code exchanges hand out no refresh token (expiring access tokens only)
	renames   map[string]string    // scope → the name the token answer reports it by (Google's userinfo.email…)
	onlyAuth  oauth2.AuthStyle     // the only client authentication accepted; 0: Basic or form
	onToken   func(grant string)   // runs before each token answer, outside mu
	codes     map[string]codeGrant // unused codes
	refresh   map[string]time.Time // live refresh tokens → when first used (zero: unused)
	access    map[string]bool      // live access tokens
	issued    []string             // every token handed out, for leak checks
	revoked   []revocation
	lastQuery url.Values // of the last /authorize request

	calls       atomic.Int64 // token endpoint, all requests
	codeCalls   atomic.Int64 // grant_type=authorization_code
	refreshCall atomic.Int64 // grant_type=refresh_token
	pkceChecked atomic.Int64 // code exchanges whose verifier matched a challenge
}

// newFakeProvider starts a provider in mode whose tokens live an hour;
// it is closed at the end of the test.
func newFakeProvider(tb testing.TB, mode providerMode) *fakeProvider {
	tb.Helper()
	p := &fakeProvider{
		tb: tb, clientID: "client-1", clientSecret: "client secret/1", mode: mode, grace: time.Minute,
		clockOffset: func() time.Duration { return 0 }, release: make(chan struct{}),
		expiresIn: 3600, codes: map[string]codeGrant{}, refresh: map[string]time.Time{}, access: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("POST /revoke", p.revoke)
	p.srv = httptest.NewServer(mux)
	tb.Cleanup(p.srv.Close)
	tb.Cleanup(func() { close(p.release) }) // runs before Close
	return p
}

func (p *fakeProvider) URL() string { return p.srv.URL }

// SetFault switches the token endpoint's fault (failNone: none).
func (p *fakeProvider) SetFault(f providerFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
}

// SetExpiresIn sets the lifetime of the access tokens handed out next.
func (p *fakeProvider) SetExpiresIn(seconds int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expiresIn = seconds
}

// SetNoRefreshToken makes code exchanges answer without a refresh
// token, their access tokens still expiring.
func (p *fakeProvider) SetNoRefreshToken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noRefresh = true
}

// OnlyClientAuth makes the token and revocation endpoints accept client
// credentials only in the Basic header (AuthStyleInHeader) or only in
// the form (AuthStyleInParams).
func (p *fakeProvider) OnlyClientAuth(s oauth2.AuthStyle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onlyAuth = s
}

// SetDeny makes /authorize answer error=access_denied.
func (p *fakeProvider) SetDeny(deny bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deny = deny
}

// OnToken sets a function run before every token answer.
func (p *fakeProvider) OnToken(f func(grant string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onToken = f
}

// Issued returns every access and refresh token handed out.
func (p *fakeProvider) Issued() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.issued)
}

// Revoked returns the revocation requests in order.
func (p *fakeProvider) Revoked() []revocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.revoked)
}

// LastAuthorize returns the query of the last /authorize request.
func (p *fakeProvider) LastAuthorize() url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastQuery
}

// RefreshLive reports whether the provider would accept rt now.
func (p *fakeProvider) RefreshLive(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshUsable(rt)
}

// AccessLive reports whether at is a live access token.
func (p *fakeProvider) AccessLive(at string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.access[at]
}

// Mint hands out a fresh token pair without a request, as another
// instance's refresh would have (for races).
func (p *fakeProvider) Mint() (access, refresh string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newAccess(), p.newRefresh()
}

func (p *fakeProvider) refreshUsable(rt string) bool {
	used, ok := p.refresh[rt]
	if !ok {
		return false
	}
	switch p.mode {
	case modeStrict:
		return used.IsZero()
	case modeGrace:
		return used.IsZero() || time.Since(used) < p.grace
	}
	return true
}

func randomToken(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// newAccess and newRefresh run with mu held.
func (p *fakeProvider) newAccess() string {
	t := randomToken("at-")
	p.access[t] = true
	p.issued = append(p.issued, t)
	return t
}

func (p *fakeProvider) newRefresh() string {
	t := randomToken("rt-")
	p.refresh[t] = time.Time{}
	p.issued = append(p.issued, t)
	return t
}

func (p *fakeProvider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.lastQuery = q
	deny := p.deny
	p.mu.Unlock()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || q.Get("client_id") != p.clientID || q.Get("response_type") != "code" {
		http.Error(w, "bad authorize request", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	if deny {
		back.Set("error", "access_denied")
		back.Set("error_description", "The user denied access")
	} else {
		if q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
			http.Error(w, "only S256", http.StatusBadRequest)
			return
		}
		code := randomToken("code-")
		p.mu.Lock()
		p.codes[code] = codeGrant{redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), scope: q.Get("scope")}
		p.mu.Unlock()
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// client authenticates the client: Basic or form, not both (and only
// the one OnlyClientAuth set).
func (p *fakeProvider) client(r *http.Request) bool {
	user, pass, basic := r.BasicAuth()
	form := r.PostForm.Get("client_id") != ""
	if basic == form {
		return false
	}
	p.mu.Lock()
	only := p.onlyAuth
	p.mu.Unlock()
	if only == oauth2.AuthStyleInHeader && !basic || only == oauth2.AuthStyleInParams && !form {
		return false
	}
	if basic {
		var err error
		if user, err = url.QueryUnescape(user); err != nil {
			return false
		}
		if pass, err = url.QueryUnescape(pass); err != nil {
			return false
		}
	} else {
		user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return user == p.clientID && pass == p.clientSecret
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "fake provider: " + code})
}

func (p *fakeProvider) token(w http.ResponseWriter, r *http.Request) {
	p.calls.Add(1)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "authorization_code":
		p.codeCalls.Add(1)
	case "refresh_token":
		p.refreshCall.Add(1)
	}
	p.mu.Lock()
	fault, hook := p.fault, p.onToken
	p.mu.Unlock()
	if hook != nil {
		hook(grant)
	}
	switch fault {
	case failInvalidGrant:
		oauthError(w, http.StatusBadRequest, "invalid_grant")
		return
	case fail500:
		oauthError(w, http.StatusInternalServerError, "server_error")
		return
	case fail429:
		w.Header().Set("Retry-After", "7")
		oauthError(w, http.StatusTooManyRequests, "too_many_requests")
		return
	case failHang:
		select {
		case <-r.Context().Done():
		case <-p.release:
		}
		return
	case failMalformed:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":`))
		return
	case failGitHubDead:
		oauthError(w, http.StatusOK, "bad_refresh_token")
		return
	case failUnknown200:
		oauthError(w, http.StatusOK, "something_unexpected")
		return
	}
	if !p.client(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := map[string]any{"token_type": "Bearer"}
	switch grant {
	case "authorization_code":
		code := r.PostForm.Get("code")
		g, ok := p.codes[code]
		delete(p.codes, code) // single use, whatever happens next
		if !ok || g.redirectURI != r.PostForm.Get("redirect_uri") {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		if g.challenge != "" {
			sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
				oauthError(w, http.StatusBadRequest, "invalid_grant")
				return
			}
			p.pkceChecked.Add(1)
		}
		if p.mode != modeNonExpiring && !p.noRefresh {
			resp["refresh_token"] = p.newRefresh()
		}
		if g.scope != "" {
			granted := strings.Fields(g.scope)
			for i, sc := range granted {
				if n, ok := p.renames[sc]; ok {
					granted[i] = n
				}
			}
			resp["scope"] = strings.Join(granted, " ")
		}
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		if p.mode == modeNonExpiring || !p.refreshUsable(rt) {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		switch p.mode {
		case modeStrict:
			delete(p.refresh, rt)
			resp["refresh_token"] = p.newRefresh()
		case modeGrace:
			if p.refresh[rt].IsZero() {
				p.refresh[rt] = time.Now()
			}
			resp["refresh_token"] = p.newRefresh()
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	resp["access_token"] = p.newAccess()
	if p.mode != modeNonExpiring && p.expiresIn != 0 {
		resp["expires_in"] = p.expiresIn + int(p.clockOffset()/time.Second)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if fault == failLostAnswer {
		w.Write([]byte(`{"access_token":`))
		return
	}
	json.NewEncoder(w).Encode(resp)
}

func (p *fakeProvider) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	if !p.client(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	t := r.PostForm.Get("token")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revoked = append(p.revoked, revocation{Token: t, Hint: r.PostForm.Get("token_type_hint")})
	delete(p.refresh, t)
	delete(p.access, t)
	w.WriteHeader(http.StatusOK) // RFC 7009: 200 whether or not the token was valid
}
