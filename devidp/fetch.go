package devidp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/oauth2"
)

// ErrAuthorizationFailed is wrapped when the provider refuses the
// authorization request or answers the redirect URI with an error.
var ErrAuthorizationFailed = errors.New("devidp: authorization failed")

// maxPage caps what FetchToken reads of any response.
const maxPage = 1 << 20

// FetchToken signs username in at this package's provider and returns the
// tokens, as a browser and a public client would: discovery, an
// authorization request with PKCE (S256), state and nonce, the login form,
// the redirect to redirectURI (which is never fetched), and the code
// exchange. "openid" is added to scopes when missing; add offline_access
// for a refresh token. The ID token is in the result's Extra("id_token").
//
// hc (http.DefaultClient when nil) makes every request; its Jar and
// CheckRedirect are replaced by a fresh cookie jar and a redirect policy for
// the login, on a copy. It checks state and the ID token's nonce, not the
// tokens' signatures. A wrong username or password gives an error wrapping
// ErrLoginFailed; an error answer from the provider one wrapping
// ErrAuthorizationFailed or an *oauth2.RetrieveError.
func FetchToken(ctx context.Context, hc *http.Client, issuer, clientID, redirectURI, username, password string, scopes ...string) (*oauth2.Token, error) {
	tok, err := fetchToken(ctx, hc, issuer, clientID, redirectURI, username, password, scopes)
	if err != nil {
		return nil, fmt.Errorf("devidp fetch token for %q: %w", username, err)
	}
	return tok, nil
}

func fetchToken(ctx context.Context, hc *http.Client, issuer, clientID, redirectURI, username, password string, scopes []string) (*oauth2.Token, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	conf, err := discover(ctx, hc, issuer)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(scopes, "openid") {
		scopes = append([]string{"openid"}, scopes...)
	}
	conf.ClientID, conf.RedirectURL, conf.Scopes = clientID, redirectURI, scopes
	verifier, state, nonce := oauth2.GenerateVerifier(), rand.Text(), rand.Text()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce))

	code, err := authorize(ctx, hc, authURL, redirectURI, state, username, password)
	if err != nil {
		return nil, err
	}
	tok, err := conf.Exchange(context.WithValue(ctx, oauth2.HTTPClient, hc), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, err
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return nil, errors.New("the token response has no id_token")
	}
	if got, err := unverifiedNonce(idToken); err != nil || got != nonce {
		return nil, errors.New("the ID token does not carry the nonce of the request")
	}
	return tok, nil
}

// discover reads the provider's endpoints and checks its issuer.
func discover(ctx context.Context, hc *http.Client, issuer string) (*oauth2.Config, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery: %s answered %s", req.URL, resp.Status)
	}
	var meta struct {
		Issuer   string `json:"issuer"`
		AuthURL  string `json:"authorization_endpoint"`
		TokenURL string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPage)).Decode(&meta); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	switch {
	case meta.Issuer != issuer:
		return nil, fmt.Errorf("discovery: the document names issuer %q, not %q", meta.Issuer, issuer)
	case meta.AuthURL == "" || meta.TokenURL == "":
		return nil, errors.New("discovery: the document has no authorization or token endpoint")
	}
	return &oauth2.Config{Endpoint: oauth2.Endpoint{
		AuthURL:   meta.AuthURL,
		TokenURL:  meta.TokenURL,
		AuthStyle: oauth2.AuthStyleInParams, // a public client: client_id in the body
	}}, nil
}

var (
	formAction  = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	pageError   = regexp.MustCompile(`<p class="error"[^>]*>([^<]*)</p>`)
)

// authorize drives the browser part of the flow: it requests authURL,
// fills in the login form, and returns the code the provider sends to
// redirectURI (which it does not fetch).
func authorize(ctx context.Context, hc *http.Client, authURL, redirectURI, state, username, password string) (string, error) {
	target, err := url.Parse(redirectURI)
	if err != nil {
		return "", fmt.Errorf("redirect URI: %w", err)
	}
	browser := *hc
	browser.Jar, _ = cookiejar.New(nil) // never fails with nil options
	browser.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme == target.Scheme && req.URL.Host == target.Host && req.URL.Path == target.Path {
			return http.ErrUseLastResponse
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	resp, page, err := do(&browser, req)
	if err != nil {
		return "", err
	}
	if isRedirect(resp) {
		return codeFrom(resp, state)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: the authorization request got %s: %s", ErrAuthorizationFailed, resp.Status, summary(page))
	}
	action := formAction.FindStringSubmatch(page)
	if action == nil {
		return "", fmt.Errorf("%w: %s shows no login form", ErrAuthorizationFailed, resp.Request.URL)
	}
	post, err := resp.Request.URL.Parse(html.UnescapeString(action[1]))
	if err != nil {
		return "", fmt.Errorf("login form action: %w", err)
	}
	form := url.Values{"username": {username}, "password": {password}}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, post.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, page, err = do(&browser, req)
	switch {
	case err != nil:
		return "", err
	case isRedirect(resp):
		return codeFrom(resp, state)
	case resp.StatusCode == http.StatusUnauthorized:
		return "", ErrLoginFailed
	}
	return "", fmt.Errorf("%w: the login got %s: %s", ErrAuthorizationFailed, resp.Status, summary(page))
}

// do sends req and returns the response with its body read (up to maxPage).
func do(hc *http.Client, req *http.Request) (*http.Response, string, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPage))
	if err != nil {
		return nil, "", err
	}
	return resp, string(b), nil
}

// isRedirect: the client stops only at the redirect URI.
func isRedirect(resp *http.Response) bool {
	return resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != ""
}

// codeFrom reads the authorization response from the redirect to the
// redirect URI.
func codeFrom(resp *http.Response, state string) (string, error) {
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("authorization response: %w", err)
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("%w: %s: %s", ErrAuthorizationFailed, e, q.Get("error_description"))
	}
	if q.Get("state") != state {
		return "", fmt.Errorf("%w: the response's state does not match the request's", ErrAuthorizationFailed)
	}
	code := q.Get("code")
	if code == "" {
		return "", fmt.Errorf("%w: the response has no code", ErrAuthorizationFailed)
	}
	return code, nil
}

// summary is a short, single-line version of an error page or body.
func summary(page string) string {
	if m := pageError.FindStringSubmatch(page); m != nil {
		page = html.UnescapeString(m[1])
	}
	page = strings.Join(strings.Fields(page), " ")
	if len(page) > 200 {
		page = page[:200] + "…"
	}
	return page
}

// unverifiedNonce reads the nonce claim without checking the signature: a
// consistency check of the flow, not a verification.
func unverifiedNonce(jwt string) (string, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	err = json.Unmarshal(b, &c)
	return c.Nonce, err
}

// The client agentauth registers at its development provider for scripts
// and tools: public, PKCE, any loopback port (RFC 8252).
const (
	CLIClient      = "agentauth-cli"
	CLIRedirectURI = "http://127.0.0.1/callback"
)

// UserToken logs a development user in at the provider of agentauth's
// HTTP edge (edgeURL, e.g. http://127.0.0.1:8080) as the CLI client and
// returns their access token; an empty password is the user's published
// one (DefaultUsers).
func UserToken(ctx context.Context, hc *http.Client, edgeURL, username, password string) (string, error) {
	if password == "" {
		for _, u := range DefaultUsers() {
			if u.Username == username {
				password = u.Password
			}
		}
	}
	t, err := FetchToken(ctx, hc, strings.TrimSuffix(edgeURL, "/")+"/dev-idp", CLIClient, CLIRedirectURI, username, password)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}
