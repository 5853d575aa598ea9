package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

// vaultAgent registers an agent whose policy allows the demo connection
// and connects it.
func vaultAgent(t *testing.T, m *Main, id string, scopes ...string) *client.Client {
	t.Helper()
	creds := MustRegister(t, m, id, agents.Policy{Connections: []agents.ConnectionGrant{{Connection: demoConnection, Scopes: scopes}}})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// loggedIn is a browser logged in to agentauth as user.
func loggedIn(t *testing.T, m *Main, user string) *http.Client {
	t.Helper()
	hc := browser(t)
	resp, page := get(t, hc, m.PublicURL()+"/login")
	if resp, page = logIn(t, hc, resp, page, user, user+"-dev-password"); !strings.Contains(page, "You are logged in") {
		t.Fatalf("login as %s failed (%s):\n%s", user, resp.Request.URL, page)
	}
	return hc
}

// connectInBrowser follows a connect link in a logged-in browser through
// the provider's login form back to /connect/callback.
func connectInBrowser(t *testing.T, hc *http.Client, link, user string) (int, string) {
	t.Helper()
	resp, page := get(t, hc, link)
	if strings.Contains(resp.Request.URL.Path, "/dev-idp/") {
		resp, page = logIn(t, hc, resp, page, user, user+"-dev-password")
	}
	return resp.StatusCode, page
}

// vaultAudit reads the vault's audit events through `agentauth replay`.
func vaultAudit(t *testing.T, m *Main) []schemas.AuditVault {
	return auditData[schemas.AuditVault](t, m, "agentauth.audit.vault.>")
}

// auditData reads the data of the audit events on subject through
// `agentauth replay`, once everything recorded so far is stored.
func auditData[T any](t *testing.T, m *Main, subject string) []T {
	t.Helper()
	if err := m.auditor.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress", "--subject", subject)
	var recs []T
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		var a T
		if err := e.DataAs(&a); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, a)
	}
	return recs
}

func auditEvents(recs []schemas.AuditVault) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Event)
	}
	return out
}

// jwtSubject reads the sub of a JWT without verifying it (the provider's
// own tests verify its tokens).
func jwtSubject(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Sub
}

// TestVaultEndToEnd is the "done when": never connected → the
// interrupt with a working link; the person connects in a browser; the
// agent learns it from its feed and gets a sealed token; the token is
// refreshed when it expires; a disconnected account yields the interrupt
// again; every step is in the audit stream and no token is.
func TestVaultEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.DevConnectionTTL = 3 * time.Second
	m := MustMain(t, cfg)
	agent := vaultAgent(t, m, "mail-bot")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	userTok := devToken(t, m, "alice")

	_, err := agent.Token(ctx, userTok, demoConnection)
	var ar *client.AuthorizationRequired
	if !errors.As(err, &ar) {
		t.Fatalf("never connected: want *AuthorizationRequired, got %v", err)
	}
	if ar.Reason != "not_connected" || !strings.HasPrefix(ar.URL, m.PublicURL()+"/connect/") || ar.Connection != demoConnection || len(ar.RequiredScopes) == 0 {
		t.Fatalf("interrupt: %+v", ar)
	}

	// A link is for the person it was made for: bob cannot use alice's.
	bob := loggedIn(t, m, "bob")
	if status, page := connectInBrowser(t, bob, ar.URL, "bob"); status != http.StatusForbidden || !strings.Contains(page, "another account") {
		t.Fatalf("bob opening alice's link: %d\n%s", status, page)
	}

	waited := make(chan error, 1)
	go func() {
		ev, err := agent.WaitForConnection(ctx, ar)
		if err == nil && (ev.Subject != "dev-alice" || ev.LinkID != ar.LinkID) {
			err = errors.New("wrong event: " + ev.Subject + " " + ev.LinkID)
		}
		waited <- err
	}()
	alice := loggedIn(t, m, "alice")
	status, page := connectInBrowser(t, alice, ar.URL, "alice")
	if status != http.StatusOK || !strings.Contains(page, `id="connected"`) || !strings.Contains(page, "offline_access") {
		t.Fatalf("connecting: %d\n%s", status, page)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitForConnection: %v", err)
	}
	// The link was used up.
	if status, page := connectInBrowser(t, alice, ar.URL, "alice"); status != http.StatusGone {
		t.Fatalf("replayed link: %d\n%s", status, page)
	}

	tok, err := agent.Token(ctx, userTok, demoConnection, "openid")
	if err != nil {
		t.Fatal(err)
	}
	if jwtSubject(t, tok.AccessToken) != "dev-alice" || tok.Fingerprint != schemas.Fingerprint(tok.AccessToken) || tok.Expiry.IsZero() {
		t.Fatalf("token: %+v", tok)
	}
	list, err := agent.Connections(ctx, userTok)
	if err != nil || len(list) != 1 || list[0].Status != "active" || list[0].Connection != demoConnection {
		t.Fatalf("connections: %+v %v", list, err)
	}

	// Expired: the next request refreshes it (a rotating provider).
	time.Sleep(time.Until(tok.Expiry) + 100*time.Millisecond)
	fresh, err := agent.Token(ctx, userTok, demoConnection)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.AccessToken == tok.AccessToken || !fresh.Expiry.After(tok.Expiry) {
		t.Fatalf("not refreshed: %v → %v", tok.Expiry, fresh.Expiry)
	}

	out, err := agent.Disconnect(ctx, userTok, demoConnection)
	if err != nil || out.Revocation != "revoked" {
		t.Fatalf("disconnect: %+v %v", out, err)
	}
	_, err = agent.Token(ctx, userTok, demoConnection)
	if !errors.As(err, &ar) || ar.Reason != "not_connected" {
		t.Fatalf("after disconnect: %v", err)
	}

	recs := vaultAudit(t, m)
	got := strings.Join(auditEvents(recs), " ")
	for _, want := range []string{"connection.linked", "token.issued", "token.refreshed", "connection.disconnected"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit lacks %s: %s", want, got)
		}
	}
	// No token in the audit or events streams, fingerprints only.
	for _, stream := range []string{"audit", "events"} {
		raw := runCLI(t, "replay", "--stream", stream, "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress")
		for _, secret := range []string{tok.AccessToken, fresh.AccessToken, userTok} {
			if strings.Contains(raw, secret) {
				t.Errorf("a token appears in the %s stream", stream)
			}
		}
	}
}

// TestVaultMasterKey: a wrong master key refuses to start and says why;
// `agentauth vault rotate-key` re-encrypts the vault and replaces the
// default key file, after which the records read back and the old key is
// refused.
func TestVaultMasterKey(t *testing.T) {
	cfg := testConfig(t)
	m := MustMain(t, cfg)
	u := vault.UserRef{Issuer: "https://issuer.example", Subject: "carol"}
	rec := vault.Record{User: u, Connection: demoConnection, Scopes: []string{"openid"}, AccessToken: "at-secret", RefreshToken: "rt-secret", Status: vault.StatusActive, LinkedAt: time.Now()}
	if err := m.vaultStore.Put(&rec, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	oldKey, err := os.ReadFile(keyPath(cfg.DataDir, vaultKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	wrong := cfg
	wrong.VaultKey = base64.StdEncoding.EncodeToString(vault.GenerateKey())
	w := NewMain(wrong, slog.New(slog.NewTextHandler(io.Discard, nil)))
	err = w.Run(context.Background())
	_ = w.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "AGENTAUTH_VAULT_KEY") {
		t.Fatalf("wrong master key: want a refusal that says what to do, got %v", err)
	}

	out := runCLI(t, "vault", "rotate-key", "--data-dir", cfg.DataDir, "--new-key-file", filepath.Join(t.TempDir(), "new.key"), "--no-progress")
	if !strings.Contains(out, "re-encrypted") {
		t.Fatalf("rotate-key: %s", out)
	}
	m2 := MustMain(t, cfg)
	got, err := m2.vaultStore.Get(u, demoConnection)
	if err != nil || got.AccessToken != "at-secret" || got.RefreshToken != "rt-secret" {
		t.Fatalf("after rotation: %+v %v", got, err)
	}
	if err := m2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := cfg
	old.VaultKey = strings.TrimSpace(string(oldKey))
	o := NewMain(old, slog.New(slog.NewTextHandler(io.Discard, nil)))
	err = o.Run(context.Background())
	_ = o.Close(context.Background())
	if err == nil || !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("old key after rotation: %v", err)
	}
}

// TestVaultRotateKeyReplacesFile: rotate-key puts the new key in the
// default key file by a rename, never by rewriting the old file in place
// (a crash mid-write would leave no usable key): a hard link to the old
// file keeps the old key, the new file is 0600, and no temporary file is
// left.
func TestVaultRotateKeyReplacesFile(t *testing.T) {
	cfg := testConfig(t)
	if err := MustMain(t, cfg).Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	keyFile := keyPath(cfg.DataDir, vaultKeyFile)
	oldKey, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(cfg.DataDir, "vault.key.backup")
	if err := os.Link(keyFile, backup); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadDir(filepath.Dir(keyFile))
	if err != nil {
		t.Fatal(err)
	}

	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	runCLI(t, "vault", "rotate-key", "--data-dir", cfg.DataDir, "--new-key-file", newKeyFile, "--no-progress")
	newKey, err := os.ReadFile(newKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(keyFile); err != nil || !bytes.Equal(got, newKey) {
		t.Errorf("key file after rotation: got %q (%v), want the new key", got, err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode after rotation: got %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if got, err := os.ReadFile(backup); err != nil || !bytes.Equal(got, oldKey) {
		t.Errorf("the old key file was rewritten in place: a link to it holds %q (%v), want the old key", got, err)
	}
	after, err := os.ReadDir(filepath.Dir(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		var names []string
		for _, e := range after {
			names = append(names, e.Name())
		}
		t.Errorf("keys dir after rotation: %v, want the %d files it had", names, len(before))
	}
}

// TestVaultBadInput: over the wire, every refusal has its code, changes
// nothing in the vault, and never echoes the token.
func TestVaultBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := vaultAgent(t, m, "scoped-bot", "openid")
	other := MustAgent(t, m, "no-vault-bot")
	ctx := context.Background()
	alice := devToken(t, m, "alice")
	before, err := m.vaultStore.Count()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		want schemas.ErrorCode
	}{
		{"unknown connection", func() error { _, err := agent.Token(ctx, alice, "nope"); return err }, schemas.CodeNotFound},
		{"connection not in the policy", func() error { _, err := other.Token(ctx, alice, demoConnection); return err }, schemas.CodeDenied},
		{"scope outside the policy", func() error { _, err := agent.Token(ctx, alice, demoConnection, "email"); return err }, schemas.CodeDenied},
		{"link for a scope outside the policy", func() error { _, err := agent.ConnectLink(ctx, alice, demoConnection, "email"); return err }, schemas.CodeDenied},
		{"invalid connection name", func() error { _, err := agent.Token(ctx, alice, "Not A Name"); return err }, schemas.CodeSchemaViolation},
		{"empty user token", func() error { _, err := agent.Token(ctx, "", demoConnection); return err }, schemas.CodeSchemaViolation},
		{"garbage user token", func() error { _, err := agent.Token(ctx, "not-a-jwt", demoConnection); return err }, schemas.CodeUnauthenticated},
		{"disconnect what is not connected", func() error { _, err := agent.Disconnect(ctx, alice, demoConnection); return err }, schemas.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != tc.want {
				t.Fatalf("got %v, want code %s", err, tc.want)
			}
			if strings.Contains(ce.Message, alice) {
				t.Error("the error message contains the token")
			}
		})
	}
	if after, err := m.vaultStore.Count(); err != nil || after != before {
		t.Errorf("records %d → %d (%v): bad input changed the vault", before, after, err)
	}
	// A link for the allowed scope works and names it.
	l, err := agent.ConnectLink(ctx, alice, demoConnection, "openid")
	if err != nil || !strings.HasPrefix(l.ConnectURL, m.PublicURL()+"/connect/") || len(l.Scopes) != 1 || l.Scopes[0] != "openid" {
		t.Fatalf("connect link: %+v %v", l, err)
	}
	// The callback refuses what did not come from agentauth.
	hc := loggedIn(t, m, "alice")
	for _, q := range []string{"state=forged.sig&code=x", "state=&code=x", "error=access_denied&state=x"} {
		if resp, page := get(t, hc, m.PublicURL()+"/connect/callback?"+q); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, `id="error"`) {
			t.Errorf("callback ?%s: %s\n%s", q, resp.Status, page)
		}
	}
	// A link opened without a session goes to the login first.
	resp, _ := get(t, browser(t), l.ConnectURL)
	if !strings.Contains(resp.Request.URL.Path, "/dev-idp/") {
		t.Errorf("link without a session ended at %s, want the login", resp.Request.URL)
	}
}

// TestVaultCloseWaitsForRefresh: a background refresh that is at the
// provider when agentauth shuts down is stored before the vault closes.
// The provider rotates: had the answer been dropped, the record would keep
// the consumed refresh token and need the person again after a restart.
func TestVaultCloseWaitsForRefresh(t *testing.T) {
	entered := make(chan struct{}, 10)
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" || r.FormValue("grant_type") != "refresh_token" || r.FormValue("refresh_token") != "rt-old" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		entered <- struct{}{}
		<-gate
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at-new","refresh_token":"rt-new","token_type":"Bearer","expires_in":3600}`)
	}))
	defer prov.Close()
	defer release() // before the provider closes

	cfg := testConfig(t)
	cfg.VaultRefreshInterval = 100 * time.Millisecond
	cfg.Connections = []vault.Config{{Name: "acme", AuthURL: prov.URL + "/authorize", TokenURL: prov.URL + "/token",
		ClientID: "client-1", ClientSecret: "secret-1", Refresh: vault.RefreshRotating}}
	m := MustMain(t, cfg)
	u := vault.UserRef{Issuer: "https://issuer.example", Subject: "carol"}
	now := time.Now()
	rec := vault.Record{User: u, Connection: "acme", Scopes: []string{"read"}, AccessToken: "at-old", RefreshToken: "rt-old",
		Expiry: now.Add(-time.Minute), Status: vault.StatusActive, LinkedAt: now.Add(-time.Hour)}
	if err := m.vaultStore.Put(&rec, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(30 * time.Second): // a watchdog
		t.Fatal("the background refresher did not refresh the record")
	}

	closed := make(chan error, 1)
	go func() { closed <- m.Close(context.Background()) }()
	// Give a Close that does not wait the time to close the store before
	// the provider answers (a bound, not an assertion).
	select {
	case <-closed:
		closed <- nil
	case <-time.After(time.Second):
	}
	release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(30 * time.Second): // a watchdog
		t.Fatal("Close did not return after the provider answered")
	}

	key, _, err := vault.LoadOrCreateKeyFile(keyPath(cfg.DataDir, vaultKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := vault.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := vault.OpenStore(vaultDir(cfg.DataDir), kr, vault.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Get(u, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got.RefreshToken != "rt-new" || got.AccessToken != "at-new" || !got.Refreshing.IsZero() || got.Status != vault.StatusActive {
		t.Errorf("after shutdown: refresh token is the new one %v, access token is the new one %v, refreshing %v, status %s; want the provider's answer stored, no attempt marked",
			got.RefreshToken == "rt-new", got.AccessToken == "at-new", got.Refreshing, got.Status)
	}
}

// TestWaitForConnectionIsThePersons: an agent serving several people waits
// for alice's link; bob linking the same connection meanwhile is not it.
func TestWaitForConnectionIsThePersons(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := vaultAgent(t, m, "mail-bot")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ar *client.AuthorizationRequired
	if _, err := agent.Token(ctx, devToken(t, m, "alice"), demoConnection); !errors.As(err, &ar) {
		t.Fatalf("never connected: want *AuthorizationRequired, got %v", err)
	}
	if ar.Subject != "dev-alice" || ar.Issuer == "" {
		t.Fatalf("the interrupt does not say whose it is: %+v", ar)
	}
	waited := make(chan *schemas.ConnectionEvent, 1)
	go func() {
		ev, err := agent.WaitForConnection(ctx, ar)
		if err != nil {
			t.Error(err)
		}
		waited <- ev
	}()
	// bob connects the same account type, with the default scopes, first.
	var bobAR *client.AuthorizationRequired
	if _, err := agent.Token(ctx, devToken(t, m, "bob"), demoConnection); !errors.As(err, &bobAR) {
		t.Fatalf("bob never connected: want *AuthorizationRequired, got %v", err)
	}
	if status, page := connectInBrowser(t, loggedIn(t, m, "bob"), bobAR.URL, "bob"); status != http.StatusOK {
		t.Fatalf("bob connecting: %d\n%s", status, page)
	}
	select {
	case ev := <-waited:
		t.Fatalf("alice's wait ended with bob's link: %+v", ev)
	case <-time.After(500 * time.Millisecond): // bob's event was delivered by then; no timing is asserted
	}
	if status, page := connectInBrowser(t, loggedIn(t, m, "alice"), ar.URL, "alice"); status != http.StatusOK {
		t.Fatalf("alice connecting: %d\n%s", status, page)
	}
	if ev := <-waited; ev == nil || ev.Subject != "dev-alice" {
		t.Fatalf("alice's wait: %+v", ev)
	}
}
