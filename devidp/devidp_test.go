package devidp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentauth/agentauth/identity"
	"golang.org/x/oauth2"
)

const (
	cliClient   = "agentauth-cli"
	cliRedirect = "http://127.0.0.1/callback"
	webClient   = "web"
	webSecret   = "web-dev-secret"
	webRedirect = "http://127.0.0.1:9/web/callback"
	apiAudience = "agentauth"
	testKID     = "dev-key-1"
)

var (
	ecKeyOnce sync.Once
	ecKey     *ecdsa.PrivateKey
)

func mustECKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	ecKeyOnce.Do(func() {
		var err error
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
	return ecKey
}

type testIDP struct {
	srv    *httptest.Server
	issuer string
	clock  *testClock
}

// testClock is a settable clock; zero offset is the wall clock.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// mustStart serves a provider under /dev-idp/ of a real HTTP server.
func mustStart(tb testing.TB, key crypto.Signer, mutate func(*Config)) *testIDP {
	tb.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	clock := new(testClock)
	cfg := Config{
		Issuer:     srv.URL + "/dev-idp",
		Users:      DefaultUsers(),
		SigningKey: key,
		KeyID:      testKID,
		Now:        clock.now,
		Clients: []Client{
			{ID: cliClient, RedirectURIs: []string{cliRedirect}, Audience: []string{apiAudience}},
			{ID: webClient, Secret: webSecret, RedirectURIs: []string{webRedirect}, PostLogoutRedirectURIs: []string{"http://127.0.0.1:9/web/bye"}},
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	mux.Handle("/dev-idp/", h)
	return &testIDP{srv: srv, issuer: cfg.Issuer, clock: clock}
}

func (p *testIDP) verifier(tb testing.TB, audience string) *identity.Verifier {
	tb.Helper()
	v, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: p.issuer, Audience: audience}},
		identity.Options{HTTPClient: p.srv.Client()})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func (p *testIDP) fetch(tb testing.TB, user, password string, scopes ...string) (*oauth2.Token, error) {
	tb.Helper()
	return FetchToken(context.Background(), p.srv.Client(), p.issuer, cliClient, cliRedirect, user, password, scopes...)
}

func (p *testIDP) oauth(clientID, secret, redirect string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	if secret == "" {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID: clientID, ClientSecret: secret, RedirectURL: redirect,
		Scopes: []string{"openid", "profile", "email", "offline_access"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   p.issuer + "/authorize",
			TokenURL:  p.issuer + "/oauth/token",
			AuthStyle: style,
		},
	}
}

func (p *testIDP) ctx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, p.srv.Client())
}

// code runs the browser part of the flow by hand for conf.
func (p *testIDP) code(tb testing.TB, conf *oauth2.Config, user, password, state string, opts ...oauth2.AuthCodeOption) (string, error) {
	tb.Helper()
	return authorize(context.Background(), p.srv.Client(), conf.AuthCodeURL(state, opts...), conf.RedirectURL, state, user, password)
}

// segment decodes part i (0 header, 1 claims) of a JWT.
func segment(tb testing.TB, jwt string, i int) map[string]any {
	tb.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		tb.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

func idToken(tb testing.TB, tok *oauth2.Token) string {
	tb.Helper()
	s, _ := tok.Extra("id_token").(string)
	if s == "" {
		tb.Fatal("no id_token in the token response")
	}
	return s
}

func retrieveCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func TestDiscovery(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	resp, err := p.srv.Client().Get(p.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if got := d["issuer"]; got != p.issuer {
		t.Errorf("issuer = %v, want %q", got, p.issuer)
	}
	for name, want := range map[string]string{
		"authorization_endpoint": "/authorize",
		"token_endpoint":         "/oauth/token",
		"jwks_uri":               "/keys",
		"userinfo_endpoint":      "/userinfo",
		"revocation_endpoint":    "/revoke",
		"end_session_endpoint":   "/end_session",
	} {
		if got := d[name]; got != p.issuer+want {
			t.Errorf("%s = %v, want %q", name, got, p.issuer+want)
		}
	}
	if got := d["code_challenge_methods_supported"]; !slices.Contains(anyStrings(got), "S256") {
		t.Errorf("code_challenge_methods_supported = %v, want S256", got)
	}

	// The JWKS is served under the prefix and names the key.
	resp, err = p.srv.Client().Get(d["jwks_uri"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []struct{ Kid, Alg, Use, Kty, D string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	if len(jwks.Keys) != 1 || jwks.Keys[0].Kid != testKID || jwks.Keys[0].Alg != "ES256" || jwks.Keys[0].Use != "sig" || jwks.Keys[0].Kty != "EC" {
		t.Errorf("JWKS = %+v, want one EC key %q for ES256 signatures", jwks.Keys, testKID)
	}
	if jwks.Keys[0].D != "" {
		t.Error("the JWKS publishes the private key")
	}

	// Nothing is served outside the issuer's path.
	h, err := New(Config{Issuer: p.issuer, Users: DefaultUsers(), SigningKey: mustECKey(t),
		Clients: []Client{{ID: "c", RedirectURIs: []string{cliRedirect}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/.well-known/openid-configuration", "/dev-idpx/keys", "/keys"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, rec.Code)
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func TestFetchTokenVerifies(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{"ES256", mustECKey(t), "ES256"},
		{"RS256", rsaKey, "RS256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustStart(t, tc.key, nil)
			ctx := context.Background()
			tok, err := p.fetch(t, "alice", "alice-dev-password", "profile", "email")
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Errorf("token type %q, expiry %v", tok.TokenType, tok.Expiry)
			}
			if tok.RefreshToken != "" {
				t.Error("a refresh token without offline_access")
			}

			at, err := p.verifier(t, apiAudience).Verify(ctx, tok.AccessToken, identity.VerifyOptions{Kind: identity.AccessToken, AuthorizedParty: cliClient})
			if err != nil {
				t.Fatalf("access token rejected: %v", err)
			}
			if at.Subject != "dev-alice" || at.Email != "alice@example.com" || !at.EmailVerified || at.Name != "Alice Example" {
				t.Errorf("access token user = %+v", at)
			}
			if want := []string{cliClient, apiAudience}; !slices.Equal(at.Audience, want) {
				t.Errorf("access token aud = %v, want %v", at.Audience, want)
			}
			if !slices.Contains(at.Scopes, "openid") || !slices.Contains(at.Scopes, "email") {
				t.Errorf("access token scopes = %v", at.Scopes)
			}

			raw := idToken(t, tok)
			it, err := p.verifier(t, cliClient).Verify(ctx, raw, identity.VerifyOptions{Kind: identity.IDToken, AuthorizedParty: cliClient})
			if err != nil {
				t.Fatalf("ID token rejected: %v", err)
			}
			if it.Subject != "dev-alice" || it.Email != "alice@example.com" {
				t.Errorf("ID token user = %+v", it)
			}

			for name, jwt := range map[string]string{"access": tok.AccessToken, "ID": raw} {
				h := segment(t, jwt, 0)
				if h["typ"] != "JWT" || h["kid"] != testKID || h["alg"] != tc.alg {
					t.Errorf("%s token header = %v, want typ JWT, kid %s, alg %s", name, h, testKID, tc.alg)
				}
			}
			c := segment(t, tok.AccessToken, 1)
			if c["client_id"] != cliClient || c["jti"] == "" || c["iss"] != p.issuer {
				t.Errorf("access token claims = %v", c)
			}
			c = segment(t, raw, 1)
			if c["azp"] != cliClient || c["nonce"] == "" || c["at_hash"] == "" {
				t.Errorf("ID token claims = %v", c)
			}

			bob, err := p.fetch(t, "bob", "bob-dev-password")
			if err != nil {
				t.Fatal(err)
			}
			bu, err := p.verifier(t, apiAudience).Verify(ctx, bob.AccessToken, identity.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if bu.Subject != "dev-bob" {
				t.Errorf("bob's subject = %q, want dev-bob", bu.Subject)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", "alice", "bob-dev-password"},
		{"unknown user", "mallory", "alice-dev-password"},
		{"empty password", "alice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.fetch(t, tc.user, tc.password)
			if !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("err = %v, want ErrLoginFailed", err)
			}
			if !strings.Contains(err.Error(), "wrong username or password") {
				t.Errorf("err = %q, want it to say wrong username or password", err)
			}
		})
	}
}

func TestLoginPage(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	conf := p.oauth(cliClient, "", cliRedirect)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	authURL := conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("login_hint", "bob"))
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: %s", resp.Status)
	}
	if !strings.HasPrefix(resp.Request.URL.String(), p.issuer+"/login?") {
		t.Errorf("login page at %s, want under %s/login", resp.Request.URL, p.issuer)
	}
	for _, want := range []string{"DEVELOPMENT", "alice", "bob", "alice-dev-password", cliClient, `name="username" value="bob"`, `<form method="post"`} {
		if !strings.Contains(page, want) {
			t.Errorf("login page lacks %q", want)
		}
	}
	if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("login page headers = %v", resp.Header)
	}
	id := hiddenInput.FindStringSubmatch(page)[2]
	form := url.Values{"authRequestID": {id}, "username": {"alice"}, "password": {"nope"}}

	// Wrong password: the form again, with an error.
	resp, err = hc.PostForm(p.issuer+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "Wrong username or password") || !strings.Contains(page, `<form method="post"`) {
		t.Errorf("wrong password: %s, page %q", resp.Status, page)
	}

	// The right password from another browser (without the cookie).
	form.Set("password", "alice-dev-password")
	resp, err = http.PostForm(p.issuer+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "another browser") {
		t.Errorf("login without the browser cookie: %s, page %q", resp.Status, page)
	}

	// An unknown request id.
	resp, err = hc.Get(p.issuer + "/login?authRequestID=nope")
	if err != nil {
		t.Fatal(err)
	}
	if page = readAll(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "DEVELOPMENT") {
		t.Errorf("unknown login request: %s", resp.Status)
	}
}

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestStateAndNonce(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	conf := p.oauth(cliClient, "", cliRedirect)
	verifier := oauth2.GenerateVerifier()
	code, err := p.code(t, conf, "alice", "alice-dev-password", "my-state-123",
		oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "my-nonce-456"))
	if err != nil {
		t.Fatal(err) // authorize checked that state came back
	}
	tok, err := conf.Exchange(p.ctx(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got := segment(t, idToken(t, tok), 1)["nonce"]; got != "my-nonce-456" {
		t.Errorf("nonce = %v, want my-nonce-456", got)
	}
}

func TestPKCE(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	conf := p.oauth(cliClient, "", cliRedirect)

	t.Run("verifier mismatch", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code, err := p.code(t, conf, "alice", "alice-dev-password", "s", oauth2.S256ChallengeOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		_, err = conf.Exchange(p.ctx(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if got := retrieveCode(err); got != "invalid_grant" {
			t.Fatalf("exchange with another verifier: %v, want invalid_grant", err)
		}
		// The code is spent, even for the right verifier now.
		if _, err = conf.Exchange(p.ctx(), code, oauth2.VerifierOption(verifier)); retrieveCode(err) != "invalid_grant" {
			t.Errorf("second exchange after a failed one: %v, want invalid_grant", err)
		}
	})
	t.Run("verifier missing at exchange", func(t *testing.T) {
		code, err := p.code(t, conf, "alice", "alice-dev-password", "s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err = conf.Exchange(p.ctx(), code); err == nil {
			t.Fatal("exchange without the verifier succeeded")
		}
	})
	for _, tc := range []struct {
		name string
		opts []oauth2.AuthCodeOption
	}{
		{"missing", nil},
		{"plain", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("code_challenge", "abcdefghijabcdefghijabcdefghijabcdefghijabc"), oauth2.SetAuthURLParam("code_challenge_method", "plain")}},
		{"no method (plain)", []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("code_challenge", "abcdefghijabcdefghijabcdefghijabcdefghijabc")}},
	} {
		t.Run("challenge "+tc.name, func(t *testing.T) {
			_, err := p.code(t, conf, "alice", "alice-dev-password", "s", tc.opts...)
			if !errors.Is(err, ErrAuthorizationFailed) || !strings.Contains(err.Error(), "invalid_request") {
				t.Errorf("err = %v, want an invalid_request redirect", err)
			}
		})
	}
}

func TestCodeReuse(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	conf := p.oauth(cliClient, "", cliRedirect)
	verifier := oauth2.GenerateVerifier()
	code, err := p.code(t, conf, "alice", "alice-dev-password", "s", oauth2.S256ChallengeOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := conf.Exchange(p.ctx(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.Exchange(p.ctx(), code, oauth2.VerifierOption(verifier)); retrieveCode(err) != "invalid_grant" {
		t.Fatalf("second exchange: %v, want invalid_grant", err)
	}
	// The reuse revoked what the first exchange issued (RFC 6749 §4.1.2).
	_, err = conf.TokenSource(p.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if retrieveCode(err) != "invalid_grant" {
		t.Errorf("refresh after code reuse: %v, want invalid_grant", err)
	}
}

func TestRefreshRotation(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	tok, err := p.fetch(t, "alice", "alice-dev-password", "offline_access")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}
	conf := p.oauth(cliClient, "", cliRedirect)
	refresh := func(rt string) (*oauth2.Token, error) {
		return conf.TokenSource(p.ctx(), &oauth2.Token{RefreshToken: rt}).Token()
	}
	next, err := refresh(tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh token not rotated: %q", next.RefreshToken)
	}
	u, err := p.verifier(t, apiAudience).Verify(context.Background(), next.AccessToken, identity.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Subject != "dev-alice" {
		t.Errorf("refreshed subject = %q", u.Subject)
	}
	if _, err := p.verifier(t, cliClient).Verify(context.Background(), idToken(t, next), identity.VerifyOptions{Kind: identity.IDToken}); err != nil {
		t.Errorf("refreshed ID token: %v", err)
	}
	if _, err := refresh(tok.RefreshToken); retrieveCode(err) != "invalid_grant" {
		t.Errorf("old refresh token: %v, want invalid_grant", err)
	}
	if _, err := refresh(next.RefreshToken); err != nil {
		t.Errorf("new refresh token: %v", err)
	}
}

// TestRefreshRace: of concurrent refreshes with one token exactly one wins.
func TestRefreshRace(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	tok, err := p.fetch(t, "bob", "bob-dev-password", "offline_access")
	if err != nil {
		t.Fatal(err)
	}
	conf := p.oauth(cliClient, "", cliRedirect)
	var wins, losses atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := conf.TokenSource(p.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			switch {
			case err == nil:
				wins.Add(1)
			case retrieveCode(err) == "invalid_grant":
				losses.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || losses.Load() != 7 {
		t.Errorf("wins %d, losses %d; want 1 and 7", wins.Load(), losses.Load())
	}
}

func TestRejectedRequests(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name, client, redirect, want string
	}{
		{"unknown client", "nope", cliRedirect, "client"},
		{"unregistered redirect URI", cliClient, "http://127.0.0.1/evil", "redirect_uri"},
		{"foreign redirect URI", cliClient, "https://evil.example/callback", "redirect_uri"},
		{"another client's redirect URI", cliClient, webRedirect, "redirect_uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FetchToken(ctx, p.srv.Client(), p.issuer, tc.client, tc.redirect, "alice", "alice-dev-password")
			if !errors.Is(err, ErrAuthorizationFailed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrAuthorizationFailed mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("wrong issuer", func(t *testing.T) {
		_, err := FetchToken(ctx, p.srv.Client(), p.issuer+"/", cliClient, cliRedirect, "alice", "alice-dev-password")
		if err == nil || !strings.Contains(err.Error(), "issuer") {
			t.Errorf("err = %v, want an issuer mismatch", err)
		}
	})
}

func TestConfidentialClient(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	conf := p.oauth(webClient, webSecret, webRedirect)
	code, err := p.code(t, conf, "bob", "bob-dev-password", "s") // PKCE optional for confidential clients
	if err != nil {
		t.Fatal(err)
	}
	bad := *conf
	bad.ClientSecret = "wrong"
	if _, err := bad.Exchange(p.ctx(), code); retrieveCode(err) != "invalid_client" {
		t.Errorf("wrong secret: %v, want invalid_client", err)
	}

	code, err = p.code(t, conf, "bob", "bob-dev-password", "s")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := conf.Exchange(p.ctx(), code)
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.verifier(t, webClient).Verify(context.Background(), tok.AccessToken, identity.VerifyOptions{AuthorizedParty: webClient})
	if err != nil {
		t.Fatal(err)
	}
	if u.Subject != "dev-bob" {
		t.Errorf("subject = %q", u.Subject)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}
	// The public client cannot redeem a confidential client's refresh token.
	_, err = p.oauth(cliClient, "", cliRedirect).TokenSource(p.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err == nil {
		t.Error("another client redeemed the refresh token")
	}
}

func TestUserinfoRevocationEndSession(t *testing.T) {
	p := mustStart(t, mustECKey(t), nil)
	tok, err := p.fetch(t, "alice", "alice-dev-password", "email", "offline_access")
	if err != nil {
		t.Fatal(err)
	}
	hc := p.srv.Client()
	userinfo := func(at string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, p.issuer+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+at)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(readAll(t, resp)), &m)
		return resp.StatusCode, m
	}
	if code, m := userinfo(tok.AccessToken); code != http.StatusOK || m["sub"] != "dev-alice" || m["email"] != "alice@example.com" {
		t.Errorf("userinfo = %d %v", code, m)
	}

	revoke := func(token string) int {
		resp, err := hc.PostForm(p.issuer+"/revoke", url.Values{"token": {token}, "client_id": {cliClient}})
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp.StatusCode
	}
	if code := revoke("garbage"); code != http.StatusOK {
		t.Errorf("revoking garbage = %d, want 200", code)
	}
	if code := revoke(tok.RefreshToken); code != http.StatusOK {
		t.Errorf("revoking the refresh token = %d, want 200", code)
	}
	_, err = p.oauth(cliClient, "", cliRedirect).TokenSource(p.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if retrieveCode(err) != "invalid_grant" {
		t.Errorf("refresh after revocation: %v, want invalid_grant", err)
	}
	if code, _ := userinfo(tok.AccessToken); code == http.StatusOK {
		t.Error("userinfo accepts an access token of a revoked grant")
	}

	// RP-initiated logout ends at the signed-out page.
	noFollow := *hc
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Get(p.issuer + "/end_session?id_token_hint=" + url.QueryEscape(idToken(t, tok)))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != p.issuer+"/logged-out" {
		t.Fatalf("end session = %s to %q", resp.Status, loc)
	}
	resp, err = hc.Get(p.issuer + "/logged-out")
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); !strings.Contains(page, "signed out") {
		t.Errorf("signed-out page = %q", page)
	}
}

// TestExpiry: codes and tokens expire by Config.Now.
func TestExpiry(t *testing.T) {
	p := mustStart(t, mustECKey(t), func(c *Config) { c.RefreshTokenTTL = time.Hour })
	conf := p.oauth(cliClient, "", cliRedirect)
	verifier := oauth2.GenerateVerifier()
	code, err := p.code(t, conf, "alice", "alice-dev-password", "s", oauth2.S256ChallengeOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	p.clock.advance(codeTTL + time.Second)
	if _, err := conf.Exchange(p.ctx(), code, oauth2.VerifierOption(verifier)); retrieveCode(err) != "invalid_grant" {
		t.Errorf("expired code: %v, want invalid_grant", err)
	}

	tok, err := p.fetch(t, "alice", "alice-dev-password", "offline_access")
	if err != nil {
		t.Fatal(err)
	}
	p.clock.advance(time.Hour + time.Second)
	if _, err := conf.TokenSource(p.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); retrieveCode(err) != "invalid_grant" {
		t.Errorf("expired refresh token: %v, want invalid_grant", err)
	}
}

func TestNewRejects(t *testing.T) {
	ec := mustECKey(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ok := func() Config {
		return Config{Issuer: "http://127.0.0.1:8080/dev-idp", Users: DefaultUsers(), SigningKey: ec,
			Clients: []Client{{ID: "c", RedirectURIs: []string{cliRedirect}}}}
	}
	if _, err := New(ok()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }},
		{"relative issuer", func(c *Config) { c.Issuer = "/dev-idp" }},
		{"http to a non-loopback host", func(c *Config) { c.Issuer = "http://idp.example.com/dev-idp" }},
		{"issuer with query", func(c *Config) { c.Issuer = "https://idp.example.com/dev-idp?x=1" }},
		{"issuer with fragment", func(c *Config) { c.Issuer = "https://idp.example.com/dev-idp#x" }},
		{"no key", func(c *Config) { c.SigningKey = nil }},
		{"Ed25519 key", func(c *Config) { c.SigningKey = ed }},
		{"1024-bit RSA key", func(c *Config) { c.SigningKey = small }},
		{"P-224 key", func(c *Config) { c.SigningKey = p224 }},
		{"no users", func(c *Config) { c.Users = nil }},
		{"user without password", func(c *Config) { c.Users[0].Password = "" }},
		{"duplicate username", func(c *Config) { c.Users[1].Username = c.Users[0].Username }},
		{"duplicate subject", func(c *Config) { c.Users[1].Subject = c.Users[0].Subject }},
		{"no clients", func(c *Config) { c.Clients = nil }},
		{"client without redirect URI", func(c *Config) { c.Clients[0].RedirectURIs = nil }},
		{"relative redirect URI", func(c *Config) { c.Clients[0].RedirectURIs = []string{"/callback"} }},
		{"duplicate client", func(c *Config) { c.Clients = append(c.Clients, c.Clients[0]) }},
		{"negative TTL", func(c *Config) { c.AccessTokenTTL = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok()
			tc.mutate(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// opaqueSigner hides the concrete key type, as an HSM or KMS signer would.
type opaqueSigner struct{ crypto.Signer }

func TestOpaqueSignerAndDefaultKeyID(t *testing.T) {
	p := mustStart(t, opaqueSigner{mustECKey(t)}, func(c *Config) { c.KeyID = "" })
	tok, err := p.fetch(t, "alice", "alice-dev-password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.verifier(t, apiAudience).Verify(context.Background(), tok.AccessToken, identity.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if kid, _ := segment(t, tok.AccessToken, 0)["kid"].(string); len(kid) != 43 { // base64url SHA-256
		t.Errorf("kid = %q, want the key's thumbprint", kid)
	}
}
