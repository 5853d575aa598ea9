package handlers

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// fakeIdP is a transport standing in for an OpenID provider at
// https://idp.example: discovery fails while failDiscovery > 0, the token
// endpoint answers with token (or 400 invalid_grant when token is nil).
type fakeIdP struct {
	mu            sync.Mutex
	failDiscovery int
	token         map[string]any
	tokenCalls    int
}

const fakeIssuer = "https://idp.example"

func (f *fakeIdP) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(status int, v any) (*http.Response, error) {
		b, _ := json.Marshal(v)
		return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(string(b))), Request: r}, nil
	}
	switch r.URL.String() {
	case fakeIssuer + "/.well-known/openid-configuration":
		if f.failDiscovery > 0 {
			f.failDiscovery--
			return nil, errors.New("connection refused")
		}
		return reply(200, map[string]string{"issuer": fakeIssuer, "authorization_endpoint": fakeIssuer + "/authorize", "token_endpoint": fakeIssuer + "/token"})
	case fakeIssuer + "/token":
		f.tokenCalls++
		if f.token == nil {
			return reply(400, map[string]string{"error": "invalid_grant"})
		}
		return reply(200, f.token)
	}
	return reply(404, map[string]string{})
}

func (f *fakeIdP) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenCalls
}

// acceptAll is a TokenVerifier that accepts any ID token as alice's.
type acceptAll struct{}

func (acceptAll) Verify(context.Context, string, identity.VerifyOptions) (*identity.User, error) {
	u := inboxAlice
	return &u, nil
}

func serveLogin(l *Login, r *http.Request) *httptest.ResponseRecorder {
	mux := http.NewServeMux()
	for p, h := range l.Routes() {
		mux.HandleFunc(p, h)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

// TestLoginDiscoveryRetried: a failed discovery is not kept; the next
// login tries again and succeeds. The code exchange goes through
// HTTPClient, not http.DefaultClient.
func TestLoginDiscoveryRetried(t *testing.T) {
	idp := &fakeIdP{failDiscovery: 1}
	l := &Login{Issuer: fakeIssuer, ClientID: "agentauth", PublicURL: "http://agentauth.test", HTTPClient: &http.Client{Transport: idp}}
	if w := serveLogin(l, httptest.NewRequest(http.MethodGet, "/login", nil)); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET /login while discovery fails: %d, want 503", w.Code)
	}
	w := serveLogin(l, httptest.NewRequest(http.MethodGet, "/login", nil))
	if w.Code != http.StatusFound || !strings.HasPrefix(w.Header().Get("Location"), fakeIssuer+"/authorize?") {
		t.Fatalf("GET /login once discovery works: %d %q, want 302 to the provider", w.Code, w.Header().Get("Location"))
	}

	t.Run("exchange uses HTTPClient", func(t *testing.T) {
		state := mustState(t, w)
		r := httptest.NewRequest(http.MethodGet, "/callback?code=c&state="+url.QueryEscape(state), nil)
		r.AddCookie(&http.Cookie{Name: loginCookie, Value: state})
		if w := serveLogin(l, r); w.Code != http.StatusBadGateway {
			t.Errorf("callback with a refused code: %d, want 502", w.Code)
		}
		// x/oauth2 may try both client authentication styles.
		if got := idp.calls(); got == 0 {
			t.Errorf("token endpoint calls through HTTPClient: %d, want at least 1", got)
		}
	})
}

// mustState is the state of the authorization redirect w.
func mustState(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	u, err := url.Parse(w.Header().Get("Location"))
	if err != nil || u.Query().Get("state") == "" {
		t.Fatalf("no state in the redirect %q", w.Header().Get("Location"))
	}
	return u.Query().Get("state")
}

// TestLoginHostCookies: on https, the login and session cookies carry
// the __Host- prefix with Path=/, Secure and no Domain, and the session
// is read back from that name.
func TestLoginHostCookies(t *testing.T) {
	idp := &fakeIdP{}
	l := &Login{Issuer: fakeIssuer, ClientID: "agentauth", PublicURL: "https://agentauth.test", HTTPClient: &http.Client{Transport: idp}, IDTokens: acceptAll{}}
	w := serveLogin(l, httptest.NewRequest(http.MethodGet, "https://agentauth.test/login", nil))
	if w.Code != http.StatusFound {
		t.Fatalf("GET /login: %d", w.Code)
	}
	hostCookie(t, w, "__Host-agentauth_login")
	state := mustState(t, w)
	l.mu.Lock()
	nonce := l.pending[state].nonce
	l.mu.Unlock()
	claims, _ := json.Marshal(map[string]string{"nonce": nonce})
	idp.mu.Lock()
	idp.token = map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60,
		"id_token": "e30." + base64.RawURLEncoding.EncodeToString(claims) + ".sig"}
	idp.mu.Unlock()

	r := httptest.NewRequest(http.MethodGet, "https://agentauth.test/callback?code=c&state="+url.QueryEscape(state), nil)
	r.AddCookie(&http.Cookie{Name: "__Host-agentauth_login", Value: state})
	w = serveLogin(l, r)
	if w.Code != http.StatusFound {
		t.Fatalf("callback: %d\n%s", w.Code, w.Body)
	}
	sid := hostCookie(t, w, "__Host-agentauth_session").Value
	r = httptest.NewRequest(http.MethodGet, "https://agentauth.test/whoami", nil)
	r.AddCookie(&http.Cookie{Name: "__Host-agentauth_session", Value: sid})
	if s, ok := l.SessionOf(r); !ok || s.User.Subject != inboxAlice.Subject {
		t.Errorf("session read from the __Host- cookie: %+v, %v", s, ok)
	}
}

// hostCookie returns the non-empty cookie name set by w and checks the
// __Host- rules.
func hostCookie(t *testing.T, w *httptest.ResponseRecorder, name string) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == name && c.Value != "" {
			if c.Path != "/" || !c.Secure || c.Domain != "" {
				t.Errorf("cookie %s: Path=%q Secure=%v Domain=%q, want Path=/, Secure, no Domain", name, c.Path, c.Secure, c.Domain)
			}
			return c
		}
	}
	t.Fatalf("no cookie %s in %q", name, w.Header().Values("Set-Cookie"))
	return nil
}

// TestHTMLPagesNotFramed: the connected accounts and whoami pages refuse
// framing and sniffing.
func TestHTMLPagesNotFramed(t *testing.T) {
	c, _, _ := testConnect(t)
	for name, w := range map[string]*httptest.ResponseRecorder{
		"/connections": serveConnect(c, as(httptest.NewRequest(http.MethodGet, "/connections", nil), "sid-alice")),
		"/whoami":      serveLogin(c.Login, as(httptest.NewRequest(http.MethodGet, "/whoami", nil), "sid-alice")),
		"/whoami anon": serveLogin(c.Login, httptest.NewRequest(http.MethodGet, "/whoami", nil)),
	} {
		h := w.Header()
		if w.Code != http.StatusOK || h.Get("X-Frame-Options") != "DENY" || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d X-Frame-Options=%q CSP=%q nosniff=%q", name, w.Code, h.Get("X-Frame-Options"), h.Get("Content-Security-Policy"), h.Get("X-Content-Type-Options"))
		}
	}
}

var logoutCSRF = regexp.MustCompile(`<form method="post" action="/logout"><input type="hidden" name="csrf" value="([^"]*)">`)

// TestLogoutCSRF: a logout without the session's form token is refused
// (403, no cookie cleared, the session lives); the /whoami form's token
// logs out.
func TestLogoutCSRF(t *testing.T) {
	i, _, _ := testInbox(t)
	l := i.Login
	logout := func(form url.Values) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/logout", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return serveLogin(l, as(r, "sid-alice"))
	}
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"no token", url.Values{}},
		{"another session's token", url.Values{"csrf": {l.formToken("sid-bob")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := logout(tc.form)
			if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
				t.Errorf("POST /logout: %d, cookies %q; want 403 and none", w.Code, w.Header().Values("Set-Cookie"))
			}
			if _, ok := l.getSession(t.Context(), "sid-alice"); !ok {
				t.Error("the session ended on a refused logout")
			}
		})
	}

	page := serveLogin(l, as(httptest.NewRequest(http.MethodGet, "/whoami", nil), "sid-alice"))
	m := logoutCSRF.FindStringSubmatch(page.Body.String())
	if m == nil {
		t.Fatalf("the logout form has no csrf field:\n%s", page.Body)
	}
	w := logout(url.Values{"csrf": {html.UnescapeString(m[1])}})
	if w.Code != http.StatusFound {
		t.Errorf("POST /logout with the token: %d, want 302", w.Code)
	}
	if _, ok := l.getSession(t.Context(), "sid-alice"); ok {
		t.Error("still logged in after logout with the token")
	}
}

// TestInboxEventsEndWithSession: the event stream ends when its session
// is logged out; a notification after the logout is not sent.
func TestInboxEventsEndWithSession(t *testing.T) {
	i, _, n := testInbox(t)
	i.Heartbeat = time.Hour // the check before each event must suffice
	mux := http.NewServeMux()
	for p, h := range i.Routes() {
		mux.HandleFunc(p, h)
	}
	for p, h := range i.Login.Routes() {
		mux.HandleFunc(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/approvals/events", nil)
	resp, err := http.DefaultClient.Do(as(req, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sub := receiveSub(t, n)
	br := bufio.NewReader(resp.Body)
	if e := readEvent(t, br); e.name != "pending" {
		t.Fatalf("first event %+v, want the snapshot", e)
	}

	form := url.Values{"csrf": {i.Login.formToken("sid-alice")}}
	lr, _ := http.NewRequest(http.MethodPost, srv.URL+"/logout", strings.NewReader(form.Encode()))
	lr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	out, err := noRedirect.Do(as(lr, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if out.StatusCode != http.StatusFound {
		t.Fatalf("logout: %d", out.StatusCode)
	}

	sub.fn(schemas.TypeApprovalRequested, schemas.ApprovalNotification{AuthReqID: "r1", Issuer: inboxAlice.Issuer, Subject: inboxAlice.Subject,
		BindingMessage: "After logout", ExpiresAt: time.Now().Add(time.Minute)})
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "event: requested") {
			t.Fatal("a notification was sent after the session ended")
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("stream: %v", err)
			}
			break // the stream ended
		}
	}
}

// TestLoginPendingBounded: logins in progress kept in memory are
// bounded; past the bound a new one is refused, the map does not grow.
func TestLoginPendingBounded(t *testing.T) {
	l := &Login{Issuer: fakeIssuer, ClientID: "agentauth", PublicURL: "http://agentauth.test", HTTPClient: &http.Client{Transport: &fakeIdP{}}}
	if w := serveLogin(l, httptest.NewRequest(http.MethodGet, "/login", nil)); w.Code != http.StatusFound {
		t.Fatalf("GET /login: %d", w.Code)
	}
	now := time.Now()
	l.mu.Lock()
	for k := len(l.pending); k < maxPendingLogins; k++ {
		l.pending[random()] = pendingLogin{created: now}
	}
	l.mu.Unlock()
	if w := serveLogin(l, httptest.NewRequest(http.MethodGet, "/login", nil)); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /login at the bound: %d, want 503", w.Code)
	}
	l.mu.Lock()
	n := len(l.pending)
	l.mu.Unlock()
	if n != maxPendingLogins {
		t.Errorf("logins in progress: %d, want at most %d", n, maxPendingLogins)
	}
}
