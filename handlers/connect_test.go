package handlers

import (
	"context"
	"errors"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

// discardEvents is a vault.Events that keeps nothing.
type discardEvents struct{}

func (discardEvents) Feed(context.Context, string, string, string, schemas.ConnectionEvent) error {
	return nil
}
func (discardEvents) Audit(string, string, schemas.AuditVault) {}

// testConnect is the connect pages over a real vault (in memory) with
// alice's acme account stored, alice and bob logged in (sessions
// "sid-alice" and "sid-bob"), and the inbox's CSRF key.
func testConnect(t *testing.T) (*Connect, *vault.Store, vault.UserRef) {
	t.Helper()
	kr, err := vault.NewKeyring(vault.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	st, err := vault.OpenStore("", kr, vault.StoreOptions{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	alice := vault.UserRef{Issuer: inboxAlice.Issuer, Subject: inboxAlice.Subject}
	rec := vault.Record{User: alice, Connection: "acme", Scopes: []string{"read"}, AccessToken: "at-alice", Status: vault.StatusActive, LinkedAt: time.Now()}
	if err := st.Put(&rec, 0); err != nil {
		t.Fatal(err)
	}
	svc := &vault.Service{
		Store: st, Events: discardEvents{}, Log: slog.New(slog.DiscardHandler),
		Connections: map[string]vault.Connection{"acme": {Name: "acme", Title: "Acme", AuthURL: "https://acme.example/a", TokenURL: "https://acme.example/t", ClientID: "id"}},
	}
	exp := time.Now().Add(time.Hour)
	l := &Login{session: map[string]Session{"sid-alice": {User: inboxAlice, Expires: exp}, "sid-bob": {User: inboxBob, Expires: exp}}}
	return &Connect{Login: l, Service: svc, CSRFKey: []byte("the inbox's csrf key, 32 bytes..")}, st, alice
}

func serveConnect(c *Connect, r *http.Request) *httptest.ResponseRecorder {
	mux := http.NewServeMux()
	for p, h := range c.Routes() {
		mux.HandleFunc(p, h)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

var csrfInput = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]*)">`)

// TestConnectDisconnectCSRF: the disconnect form carries the session's
// form token (the inbox's); a POST without it, or with another session's,
// disconnects nothing.
func TestConnectDisconnectCSRF(t *testing.T) {
	c, st, alice := testConnect(t)
	page := serveConnect(c, as(httptest.NewRequest(http.MethodGet, "/connections", nil), "sid-alice"))
	if page.Code != http.StatusOK {
		t.Fatalf("GET /connections: %d\n%s", page.Code, page.Body)
	}
	m := csrfInput.FindStringSubmatch(page.Body.String())
	if m == nil {
		t.Fatalf("the disconnect form has no csrf field:\n%s", page.Body)
	}
	token := html.UnescapeString(m[1])
	if want := (&Inbox{CSRFKey: c.CSRFKey}).csrf("sid-alice"); token != want {
		t.Errorf("form token %q, want the inbox's %q", token, want)
	}

	post := func(form url.Values) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/connections/acme/disconnect", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return serveConnect(c, as(r, "sid-alice"))
	}
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"no token", url.Values{}},
		{"garbage token", url.Values{"csrf": {"not-a-token"}}},
		{"another session's token", url.Values{"csrf": {c.csrf("sid-bob")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := post(tc.form)
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "nothing was disconnected") {
				t.Errorf("POST: %d, want 403 saying nothing was disconnected\n%s", w.Code, w.Body)
			}
			if _, err := st.Get(alice, "acme"); err != nil {
				t.Errorf("the account after a refused POST: %v, want it still stored", err)
			}
		})
	}

	w := post(url.Values{"csrf": {token}})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/connections" {
		t.Fatalf("POST with the page's token: %d %s, want 303 to /connections\n%s", w.Code, w.Header().Get("Location"), w.Body)
	}
	if _, err := st.Get(alice, "acme"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("the account after disconnecting: err = %v, want ErrNotFound", err)
	}
}
