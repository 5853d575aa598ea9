package main

import (
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/agentauth/agentauth/bus"
)

var (
	formAction  = regexp.MustCompile(`<form[^>]*action="([^"]*)"`)
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
)

// browser is a headless browser: a cookie jar that follows redirects.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar}
}

func get(t *testing.T, hc *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// logIn submits the development provider's login form on page.
func logIn(t *testing.T, hc *http.Client, resp *http.Response, page, user, password string) (*http.Response, string) {
	t.Helper()
	action := formAction.FindStringSubmatch(page)
	if action == nil {
		t.Fatalf("no login form at %s:\n%s", resp.Request.URL, page)
	}
	post, _ := resp.Request.URL.Parse(html.UnescapeString(action[1]))
	form := url.Values{"username": {user}, "password": {password}}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	r, err := hc.PostForm(post.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r, string(b)
}

// TestBrowserLogin: /login → the provider's login page → /callback → a
// session whose page shows the user; logout ends it.
func TestBrowserLogin(t *testing.T) {
	m := MustMain(t, testConfig(t))
	hc := browser(t)
	resp, page := get(t, hc, m.PublicURL()+"/whoami")
	if !strings.Contains(page, "not logged in") {
		t.Fatalf("before login: %s", page)
	}
	resp, page = get(t, hc, m.PublicURL()+"/login")
	if !strings.Contains(resp.Request.URL.String(), "/dev-idp/") || !strings.Contains(page, "DEVELOPMENT") {
		t.Fatalf("login did not reach the provider: %s", resp.Request.URL)
	}
	resp, page = logIn(t, hc, resp, page, "alice", "alice-dev-password")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `<dd id="subject">dev-alice</dd>`) || !strings.Contains(page, "Alice Example") {
		t.Fatalf("after login (%s %s):\n%s", resp.Status, resp.Request.URL, page)
	}
	// The session cookie is HttpOnly and SameSite.
	var found bool
	for _, c := range hc.Jar.Cookies(resp.Request.URL) {
		found = found || c.Name == "agentauth_session"
	}
	if !found {
		t.Fatal("no session cookie")
	}
	req, _ := http.NewRequest(http.MethodGet, m.PublicURL()+"/whoami", nil)
	req.Header.Set("Accept", "application/json")
	r, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var me struct{ Subject string }
	if err := json.Unmarshal(b, &me); err != nil || me.Subject != "dev-alice" {
		t.Errorf("whoami JSON: %s", b)
	}
	pr := logOut(t, hc, m)
	pb, _ := io.ReadAll(pr.Body)
	pr.Body.Close()
	if !strings.Contains(string(pb), "not logged in") {
		t.Errorf("after logout: %s", pb)
	}
}

// TestLoginBadInput: a callback that this browser did not start, a
// replayed callback, and a provider error are all refused.
func TestLoginBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	// Intercept the redirect back to /callback to replay it.
	hc := browser(t)
	var callback *url.URL
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Path == "/callback" && callback == nil {
			callback = req.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, page := get(t, hc, m.PublicURL()+"/login")
	logIn(t, hc, resp, page, "alice", "alice-dev-password")
	if callback == nil {
		t.Fatal("no callback")
	}
	// Another browser opening the same callback: not its login.
	other := browser(t)
	r, body := get(t, other, callback.String())
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "state mismatch") {
		t.Errorf("forwarded callback: %d %s", r.StatusCode, body)
	}
	// The right browser: accepted once, refused when replayed.
	hc.CheckRedirect = nil
	r, body = get(t, hc, callback.String())
	if r.StatusCode != http.StatusOK || !strings.Contains(body, "dev-alice") {
		t.Fatalf("callback: %d %s", r.StatusCode, body)
	}
	r, body = get(t, hc, callback.String())
	if r.StatusCode != http.StatusBadRequest || !(strings.Contains(body, "expired or was already used") || strings.Contains(body, "state mismatch")) {
		t.Errorf("replayed callback accepted: %d %s", r.StatusCode, body)
	}
	r, body = get(t, browser(t), m.PublicURL()+"/callback?error=access_denied&error_description=nope")
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "access_denied") {
		t.Errorf("provider error: %d %s", r.StatusCode, body)
	}
}

// TestBrowserSessionSurvivesRestart: a browser logged in before a restart
// is still logged in after it (the session is in JetStream, keyed by a
// hash: the cookie is nowhere in the bucket), its inbox form token is
// still valid, a made-up cookie is nobody, and logout ends the session
// for good.
func TestBrowserSessionSurvivesRestart(t *testing.T) {
	m := MustMain(t, restartableConfig(t))
	hc := loggedIn(t, m, "alice")
	var sid string
	for _, c := range hc.Jar.Cookies(mustURL(t, m.PublicURL())) {
		if c.Name == "agentauth_session" {
			sid = c.Value
		}
	}
	if sid == "" {
		t.Fatal("no session cookie")
	}
	csrfBefore := inboxCSRF(t, hc, m)
	entries := sessionEntries(t, m)
	if len(entries) != 1 {
		t.Fatalf("sessions stored: %d, want 1", len(entries))
	}
	for k, v := range entries {
		if strings.Contains(k, sid) || strings.Contains(v, sid) {
			t.Fatalf("the session cookie is stored in the bucket: %s = %s", k, v)
		}
	}
	m2 := restart(t, m)
	if who := whoAmIJSON(t, hc, m2); who != "dev-alice" {
		t.Fatalf("after the restart the browser is %q, want dev-alice", who)
	}
	if got := inboxCSRF(t, hc, m2); got != csrfBefore {
		t.Errorf("the inbox form token changed with the restart: %q, then %q", csrfBefore, got)
	}
	stranger := browser(t)
	stranger.Jar.SetCookies(mustURL(t, m2.PublicURL()), []*http.Cookie{{Name: "agentauth_session", Value: strings.Repeat("A", len(sid))}})
	if who := whoAmIJSON(t, stranger, m2); who != "" {
		t.Errorf("a made-up session cookie is %q", who)
	}
	logOut(t, hc, m2).Body.Close()
	if who := whoAmIJSON(t, hc, m2); who != "" {
		t.Errorf("after logout the browser is %q", who)
	}
	// The cookie kept from before the logout opens nothing either.
	replay := browser(t)
	replay.Jar.SetCookies(mustURL(t, m2.PublicURL()), []*http.Cookie{{Name: "agentauth_session", Value: sid}})
	if who := whoAmIJSON(t, replay, m2); who != "" {
		t.Errorf("the logged-out cookie is still %q", who)
	}
	if n := len(sessionEntries(t, m2)); n != 0 {
		t.Errorf("sessions stored after logout: %d", n)
	}
}

// logOut submits the logout form of hc's /whoami page (with its form
// token) and returns the response.
func logOut(t *testing.T, hc *http.Client, m *Main) *http.Response {
	t.Helper()
	_, page := get(t, hc, m.PublicURL()+"/whoami")
	f := regexp.MustCompile(`action="/logout"><input type="hidden" name="csrf" value="([^"]*)">`).FindStringSubmatch(page)
	if f == nil {
		t.Fatalf("no logout form with a form token:\n%s", page)
	}
	r, err := hc.PostForm(m.PublicURL()+"/logout", url.Values{"csrf": {html.UnescapeString(f[1])}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// whoAmIJSON is the subject the browser is logged in as, or "".
func whoAmIJSON(t *testing.T, hc *http.Client, m *Main) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, m.PublicURL()+"/whoami", nil)
	req.Header.Set("Accept", "application/json")
	r, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var me struct{ Subject string }
	_ = json.NewDecoder(r.Body).Decode(&me)
	return me.Subject
}

var csrfAttr = regexp.MustCompile(`data-csrf="([^"]+)"`)

// inboxCSRF is the form token of the browser's inbox page.
func inboxCSRF(t *testing.T, hc *http.Client, m *Main) string {
	t.Helper()
	_, page := get(t, hc, m.PublicURL()+"/approvals")
	c := csrfAttr.FindStringSubmatch(page)
	if c == nil {
		t.Fatalf("no form token on the inbox page:\n%s", page)
	}
	return c[1]
}

// sessionEntries reads the sessions bucket: key → value.
func sessionEntries(t *testing.T, m *Main) map[string]string {
	t.Helper()
	ctx := t.Context()
	kv, err := m.js.KeyValue(ctx, bus.SessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		out[k] = string(e.Value())
	}
	return out
}

// TestLoginNextStaysLocal: after a login the browser goes to next only
// when it is a path on this site; whatever a browser could read as
// another site (a backslash or a tab becomes a slash to it) ends at
// /whoami. Each query is sent as given.
func TestLoginNextStaysLocal(t *testing.T) {
	m := MustMain(t, testConfig(t))
	for _, tc := range []struct{ name, query, want string }{
		{"backslash", `next=/\evil.example`, "/whoami"},
		{"encoded backslash", "next=/%5Cevil.example", "/whoami"},
		{"tab", "next=/%09/evil.example", "/whoami"},
		{"scheme-relative", "next=//evil.example", "/whoami"},
		{"absolute", "next=https://evil.example", "/whoami"},
		{"local path", "next=" + url.QueryEscape("/ok/path?x=1"), "/ok/path?x=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := browser(t)
			var callback *url.URL
			hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
				if req.URL.Path == "/callback" {
					callback = req.URL
					return http.ErrUseLastResponse
				}
				return nil
			}
			resp, page := get(t, hc, m.PublicURL()+"/login?"+tc.query)
			logIn(t, hc, resp, page, "alice", "alice-dev-password")
			if callback == nil {
				t.Fatal("the provider did not send the browser back to /callback")
			}
			// One round trip, no redirect followed: the client would refuse
			// to parse some of the Locations under test.
			req, _ := http.NewRequest(http.MethodGet, callback.String(), nil)
			for _, c := range hc.Jar.Cookies(callback) {
				req.AddCookie(c)
			}
			r, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != http.StatusFound {
				t.Fatalf("callback: %s %s", r.Status, body)
			}
			if got := r.Header.Get("Location"); got != tc.want {
				t.Errorf("after login the browser goes to %q, want %q", got, tc.want)
			}
		})
	}
}
