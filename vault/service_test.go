package vault

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

const publicURL = "http://agentauth.test"

// testClock is the real clock moved by an offset.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(c.Offset()) }
func (c *testClock) Offset() time.Duration   { return time.Duration(c.off.Load()) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

type feedEvent struct {
	Agent, Verb, Type string
	Event             schemas.ConnectionEvent
}

type auditEvent struct {
	Object, Verb string
	Data         schemas.AuditVault
}

// recordingEvents is an Events that keeps what it was given.
type recordingEvents struct {
	mu    sync.Mutex
	feed  []feedEvent
	audit []auditEvent
}

var _ Events = (*recordingEvents)(nil)

func (e *recordingEvents) Feed(_ context.Context, agent, verb, typ string, ev schemas.ConnectionEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.feed = append(e.feed, feedEvent{Agent: agent, Verb: verb, Type: typ, Event: ev})
	return nil
}

func (e *recordingEvents) Audit(object, verb string, a schemas.AuditVault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.audit = append(e.audit, auditEvent{Object: object, Verb: verb, Data: a})
}

func (e *recordingEvents) Feeds(verb string) []feedEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []feedEvent
	for _, f := range e.feed {
		if f.Verb == verb {
			out = append(out, f)
		}
	}
	return out
}

func (e *recordingEvents) Audits(event string) []schemas.AuditVault {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []schemas.AuditVault
	for _, a := range e.audit {
		if a.Data.Event == event {
			out = append(out, a.Data)
		}
	}
	return out
}

// JSON is every recorded event, marshalled.
func (e *recordingEvents) JSON(tb testing.TB) []string {
	tb.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, v := range append(anySlice(e.feed), anySlice(e.audit)...) {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func anySlice[T any](s []T) []any {
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i]
	}
	return out
}

// vaultHarness is a Service on a real Store and a fake provider.
type vaultHarness struct {
	prov   *fakeProvider
	svc    *Service
	events *recordingEvents
	clock  *testClock
	dir    string
	kr     *Keyring
	store  *Store
	agent  agents.Agent
	creds  agents.Credentials
	conns  map[string]Connection
	sealer *agents.Sealer
}

type harnessOption func(*Connection)

func withAuthStyle(s oauth2.AuthStyle) harnessOption { return func(c *Connection) { c.AuthStyle = s } }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// mustVault builds a Service whose connections "acme" and "other" use a
// fake provider in mode, and "secret" exists but is not in the agent's
// policy. The agent may ask for read and write on acme and for other's
// defaults.
func mustVault(tb testing.TB, mode providerMode, opts ...harnessOption) *vaultHarness {
	tb.Helper()
	h := &vaultHarness{prov: newFakeProvider(tb, mode), events: &recordingEvents{}, clock: &testClock{}, dir: tb.TempDir(), kr: MustKeyring(tb)}
	h.prov.clockOffset = h.clock.Offset
	conn := func(name, title string) Connection {
		c := Connection{
			Name: name, Title: title,
			AuthURL: h.prov.URL() + "/authorize", TokenURL: h.prov.URL() + "/token", RevocationURL: h.prov.URL() + "/revoke",
			DefaultScopes: []string{"read"}, PKCE: true, Refresh: mode.behaviour(), AuthStyle: oauth2.AuthStyleInHeader,
			ClientID: h.prov.clientID, ClientSecret: h.prov.clientSecret, Custom: true,
		}
		for _, o := range opts {
			o(&c)
		}
		if err := c.Validate(); err != nil {
			tb.Fatalf("test connection %s: %v", name, err)
		}
		return c
	}
	h.conns = map[string]Connection{"acme": conn("acme", "Acme"), "other": conn("other", "Other"), "secret": conn("secret", "Secret")}

	var err error
	policy := agents.Policy{Connections: []agents.ConnectionGrant{{Connection: "acme", Scopes: []string{"read", "write"}}, {Connection: "other"}}}
	if h.agent, h.creds, err = agents.New("agent-1", policy, time.Now()); err != nil {
		tb.Fatal(err)
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := kp.Seed()
	if h.sealer, err = agents.NewSealer(seed); err != nil {
		tb.Fatal(err)
	}
	h.open(tb)
	tb.Cleanup(func() {
		if h.store != nil {
			h.store.Close()
		}
	})
	return h
}

// open opens the store in h.dir and makes a new Service on it.
func (h *vaultHarness) open(tb testing.TB) {
	tb.Helper()
	st, err := OpenStore(h.dir, h.kr, StoreOptions{Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	h.store = st
	h.svc = &Service{
		Store: st, Connections: h.conns, Events: h.events, Sealer: h.sealer,
		PublicURL: publicURL, StateKey: []byte("state key state key state key 32"),
		ProviderTimeout: 2 * time.Second, Now: h.clock.Now, Log: quiet,
	}
}

// restart closes the store, as a stopped process would, and opens it
// again under a new Service.
func (h *vaultHarness) restart(tb testing.TB) {
	tb.Helper()
	if err := h.store.Close(); err != nil {
		tb.Fatal(err)
	}
	h.store = nil
	h.open(tb)
}

func (h *vaultHarness) req(u UserRef, conn string, scopes ...string) Request {
	return Request{Agent: h.agent, User: u, Connection: conn, Scopes: scopes, RequestID: "req-" + u.Subject}
}

// browser does not follow redirects.
var browser = &http.Client{
	Timeout:       5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// visit follows an authorize URL to the provider and returns the
// callback it redirects to.
func visit(tb testing.TB, authorizeURL string) Callback {
	tb.Helper()
	resp, err := browser.Get(authorizeURL)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		tb.Fatalf("authorize: status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		tb.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != publicURL+"/connect/callback" {
		tb.Fatalf("provider redirected to %s, want %s/connect/callback", got, publicURL)
	}
	q := loc.Query()
	return Callback{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"), ErrorDescription: q.Get("error_description")}
}

// begin runs Connect and BeginLink for u and returns the provider's
// callback.
func (h *vaultHarness) begin(tb testing.TB, u UserRef, conn string, scopes ...string) Callback {
	tb.Helper()
	l, err := h.svc.Connect(context.Background(), h.req(u, conn, scopes...))
	if err != nil {
		tb.Fatalf("Connect: %v", err)
	}
	to, err := h.svc.BeginLink(l.ID, u)
	if err != nil {
		tb.Fatalf("BeginLink: %v", err)
	}
	return visit(tb, to)
}

// link connects u's account through the whole flow.
func (h *vaultHarness) link(tb testing.TB, u UserRef, conn string, scopes ...string) Record {
	tb.Helper()
	rec, err := h.svc.CompleteLink(context.Background(), h.begin(tb, u, conn, scopes...), u)
	if err != nil {
		tb.Fatalf("CompleteLink: %v", err)
	}
	return rec
}

func (h *vaultHarness) get(tb testing.TB, u UserRef, conn string) Record {
	tb.Helper()
	rec, err := h.store.Get(u, conn)
	if err != nil {
		tb.Fatal(err)
	}
	return rec
}

func (h *vaultHarness) count(tb testing.TB) int {
	tb.Helper()
	n, err := h.store.Count()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// expire moves the clock past the expiry of u's stored access token.
func (h *vaultHarness) expire(tb testing.TB, u UserRef, conn string) {
	tb.Helper()
	rec := h.get(tb, u, conn)
	if rec.Expiry.IsZero() {
		tb.Fatal("the stored token does not expire")
	}
	h.clock.Advance(rec.Expiry.Sub(h.clock.Now()).Truncate(time.Second) + time.Minute)
}

// token runs Token and opens the sealed access token with the agent's seed.
func (h *vaultHarness) token(tb testing.TB, r Request) (Issued, string) {
	tb.Helper()
	iss, err := h.svc.Token(context.Background(), r)
	if err != nil {
		tb.Fatalf("Token: %v", err)
	}
	return iss, h.unseal(tb, iss)
}

func (h *vaultHarness) unseal(tb testing.TB, iss Issued) string {
	tb.Helper()
	pt, err := agents.Open([]byte(h.creds.XKeySeed), iss.Sealed)
	if err != nil {
		tb.Fatalf("open sealed token: %v", err)
	}
	return string(pt)
}

// noSecrets fails when a recorded event, or any of extra, contains a
// token the provider handed out.
func (h *vaultHarness) noSecrets(tb testing.TB, extra ...string) {
	tb.Helper()
	tokens := h.prov.Issued()
	if len(tokens) == 0 {
		tb.Fatal("the provider handed out no tokens: nothing to look for")
	}
	for _, s := range append(h.events.JSON(tb), extra...) {
		for _, tok := range tokens {
			if strings.Contains(s, tok) {
				tb.Errorf("token %s… leaked into %s", tok[:6], s)
			}
		}
	}
}

// wantError checks that err is a vault *Error with code.
func wantError(tb testing.TB, err error, code schemas.ErrorCode) *Error {
	tb.Helper()
	var ve *Error
	if !errors.As(err, &ve) {
		tb.Fatalf("err = %v (%T), want a *vault.Error with code %s", err, err, code)
	}
	if ve.Code != code {
		tb.Fatalf("code = %s (%v), want %s", ve.Code, err, code)
	}
	return ve
}

// wantReauth checks an authorization_required error with reason and
// returns its details.
func wantReauth(tb testing.TB, err error, reason string) *schemas.ErrorDetails {
	tb.Helper()
	ve := wantError(tb, err, schemas.CodeAuthorizationRequired)
	d := ve.Details
	if d == nil {
		tb.Fatalf("authorization_required without details: %v", err)
	}
	if d.Reason != reason {
		tb.Errorf("reason = %q, want %q", d.Reason, reason)
	}
	if d.LinkID == "" || d.ConnectURL != publicURL+"/connect/"+d.LinkID {
		tb.Errorf("connect URL %q, link id %q: want %s/connect/<link id>", d.ConnectURL, d.LinkID, publicURL)
	}
	return d
}

func wantLinkError(tb testing.TB, err error, status int) {
	tb.Helper()
	var le *LinkError
	if !errors.As(err, &le) {
		tb.Fatalf("err = %v (%T), want a *LinkError %d", err, err, status)
	}
	if le.Status != status {
		tb.Fatalf("LinkError status = %d (%v), want %d", le.Status, err, status)
	}
}

func TestTokenNotConnected(t *testing.T) {
	h := mustVault(t, modeStrict)
	_, err := h.svc.Token(context.Background(), h.req(alice, "acme", "read"))
	d := wantReauth(t, err, ReasonNotConnected)
	if !strings.HasPrefix(d.ConnectURL, publicURL+"/connect/") {
		t.Errorf("ConnectURL = %q, want prefix %s/connect/", d.ConnectURL, publicURL)
	}
	if d.Connection != "acme" || !slices.Equal(d.RequiredScopes, []string{"read"}) {
		t.Errorf("details = %+v, want connection acme, scopes [read]", d)
	}
	if !d.LinkExpiresAt.After(h.clock.Now()) {
		t.Errorf("LinkExpiresAt = %v, want in the future", d.LinkExpiresAt)
	}
	l, err := h.svc.PeekLink(d.LinkID)
	if err != nil || l.User != alice || l.Agent != h.agent.ID {
		t.Errorf("PeekLink(%s) = %+v, %v; want alice's link from %s", d.LinkID, l, err, h.agent.ID)
	}
	if n := h.count(t); n != 0 {
		t.Errorf("store holds %d records, want 0", n)
	}
	if n := h.prov.calls.Load(); n != 0 {
		t.Errorf("provider token calls = %d, want 0", n)
	}
}

func TestTokenLinkedIsSealed(t *testing.T) {
	h := mustVault(t, modeStrict)
	rec := h.link(t, alice, "acme")
	if q := h.prov.LastAuthorize(); q.Get("code_challenge_method") != "S256" || q.Get("scope") != "read write" {
		t.Errorf("authorize query %v: want S256 and the grant's scopes", q)
	}
	if n := h.prov.pkceChecked.Load(); n != 1 {
		t.Errorf("PKCE verified %d times, want 1", n)
	}
	if rec.Status != StatusActive || rec.RefreshToken == "" || rec.Expiry.IsZero() || rec.LinkedBy != h.agent.ID {
		t.Errorf("linked record %+v: want active, with refresh token and expiry, linked by %s", rec, h.agent.ID)
	}
	if !h.prov.AccessLive(rec.AccessToken) || !h.prov.RefreshLive(rec.RefreshToken) {
		t.Error("the stored tokens are not the provider's")
	}
	if f := h.events.Feeds("linked"); len(f) != 1 || f[0].Agent != h.agent.ID || f[0].Type != schemas.TypeConnectionLinked {
		t.Errorf("linked feed events = %+v, want one for %s", f, h.agent.ID)
	}

	iss, got := h.token(t, h.req(alice, "acme", "read"))
	if got != rec.AccessToken {
		t.Errorf("opened token = %q, want the provider's %q", got, rec.AccessToken)
	}
	fp := schemas.Fingerprint(rec.AccessToken)
	if iss.Fingerprint != fp || iss.TokenType != "Bearer" || iss.Connection != "acme" {
		t.Errorf("Issued = %+v, want fingerprint %s, Bearer, acme", iss, fp)
	}
	issued := h.events.Audits("token.issued")
	if len(issued) != 1 {
		t.Fatalf("token.issued audits = %d, want 1", len(issued))
	}
	if a := issued[0]; a.Fingerprint != fp || a.Agent != h.agent.ID || a.Subject != "alice" || a.Connection != "acme" || a.RequestID != "req-alice" {
		t.Errorf("token.issued = %+v, want fingerprint %s for agent-1, alice, acme, req-alice", a, fp)
	}
	if _, err := agents.Open([]byte(mustOtherAgent(t).XKeySeed), iss.Sealed); !errors.Is(err, agents.ErrNotForMe) {
		t.Errorf("another agent opening the token: err = %v, want ErrNotForMe", err)
	}
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want 0 for a fresh token", n)
	}
	h.noSecrets(t)
}

func mustOtherAgent(tb testing.TB) agents.Credentials {
	tb.Helper()
	_, creds, err := agents.New("agent-2", agents.Policy{}, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return creds
}

func TestTokenMissingScopes(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme", "read")
	if got := h.get(t, alice, "acme").Scopes; !slices.Equal(got, []string{"read"}) {
		t.Fatalf("stored scopes = %v, want [read]", got)
	}
	_, err := h.svc.Token(context.Background(), h.req(alice, "acme", "write"))
	d := wantReauth(t, err, ReasonMissingScopes)
	if ve := wantError(t, err, schemas.CodeAuthorizationRequired); !strings.Contains(ve.Msg, "lacks scopes write;") {
		t.Errorf("message %q: want it to name the missing scope only", ve.Msg)
	}
	if want := []string{"read", "write"}; !slices.Equal(d.RequiredScopes, want) {
		t.Errorf("RequiredScopes = %v, want %v", d.RequiredScopes, want)
	}
	// The connect link asks for the union too.
	to, err := h.svc.BeginLink(d.LinkID, alice)
	if err != nil {
		t.Fatal(err)
	}
	cb := visit(t, to)
	if got := h.prov.LastAuthorize().Get("scope"); got != "read write" {
		t.Errorf("authorize scope = %q, want %q", got, "read write")
	}
	if _, err := h.svc.CompleteLink(context.Background(), cb, alice); err != nil {
		t.Fatal(err)
	}
	h.token(t, h.req(alice, "acme", "read", "write"))
}

func TestTokenPolicy(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	records, temps, calls := h.count(t), countPrefix(t, h.store, prefixTemp), h.prov.calls.Load()
	for _, tc := range []struct {
		name, conn string
		scopes     []string
		code       schemas.ErrorCode
	}{
		{"connection not in policy", "secret", nil, schemas.CodeDenied},
		{"scopes outside the grant", "acme", []string{"read", "admin"}, schemas.CodeDenied},
		{"unknown connection", "nope", nil, schemas.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, u := range []UserRef{alice, bob} {
				_, err := h.svc.Token(context.Background(), h.req(u, tc.conn, tc.scopes...))
				wantError(t, err, tc.code)
				_, err = h.svc.Connect(context.Background(), h.req(u, tc.conn, tc.scopes...))
				wantError(t, err, tc.code)
			}
			if n := h.count(t); n != records {
				t.Errorf("records = %d, want %d", n, records)
			}
			if n := countPrefix(t, h.store, prefixTemp); n != temps {
				t.Errorf("links and states = %d, want %d", n, temps)
			}
			if n := h.prov.calls.Load(); n != calls {
				t.Errorf("provider calls = %d, want %d", n, calls)
			}
		})
	}
	if n := len(h.events.Audits("token.issued")); n != 0 {
		t.Errorf("token.issued audits = %d, want 0", n)
	}
}

// mustAgent makes an agent with a policy for acme and a request of it.
func (h *vaultHarness) mustAgent(tb testing.TB, id string, acme ...string) (func(UserRef) Request, agents.Credentials) {
	tb.Helper()
	a, creds, err := agents.New(id, agents.Policy{Connections: []agents.ConnectionGrant{{Connection: "acme", Scopes: acme}}}, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return func(u UserRef) Request { return Request{Agent: a, User: u, Connection: "acme", RequestID: "req-" + id} }, creds
}

// TestTokenNeverWiderThanPolicy: an account linked with more scopes than
// an agent's policy allows (another agent asked for them) is not handed
// to that agent, whatever scopes it asks for; agents whose policy covers
// the grant get it.
func TestTokenNeverWiderThanPolicy(t *testing.T) {
	h := mustVault(t, modeStrict)
	linked := h.link(t, alice, "acme", "read", "write") // by agent-1
	if got := h.get(t, alice, "acme").Requested; !slices.Equal(got, []string{"read", "write"}) {
		t.Fatalf("stored Requested = %v, want [read write]", got)
	}
	reader, _ := h.mustAgent(t, "agent-2", "read")
	admin, adminCreds := h.mustAgent(t, "agent-3", "read", "write", "admin")

	for _, scopes := range [][]string{nil, {"read"}} {
		r := reader(alice)
		r.Scopes = scopes
		iss, err := h.svc.Token(context.Background(), r)
		ve := wantError(t, err, schemas.CodeDenied)
		for _, want := range []string{"write", "agent-2", `"acme"`, "policy", "disconnect"} {
			if !strings.Contains(ve.Msg, want) {
				t.Errorf("message %q does not mention %q", ve.Msg, want)
			}
		}
		if len(iss.Sealed.Ciphertext) != 0 {
			t.Error("a sealed token came with the refusal")
		}
	}
	if n := len(h.events.Audits("token.issued")); n != 0 {
		t.Errorf("token.issued audits = %d, want 0", n)
	}
	if _, got := h.token(t, h.req(alice, "acme", "read")); got != linked.AccessToken {
		t.Errorf("agent-1's token = %q, want %q", got, linked.AccessToken)
	}
	iss, err := h.svc.Token(context.Background(), admin(alice))
	if err != nil {
		t.Fatalf("agent-3, whose policy covers the grant: %v", err)
	}
	if pt, err := agents.Open([]byte(adminCreds.XKeySeed), iss.Sealed); err != nil || string(pt) != linked.AccessToken {
		t.Errorf("agent-3's token: %v", err)
	}
	h.noSecrets(t)
}

// TestLinkRequestedScopes: the policy check uses the scopes agentauth
// asked for, not the provider's names for them (Google reports email as
// a URL); a re-link keeps the earlier requests; a disconnect forgets them.
func TestLinkRequestedScopes(t *testing.T) {
	h := mustVault(t, modeStrict)
	reader, _ := h.mustAgent(t, "agent-2", "read")
	h.link(t, alice, "acme", "read")
	// The provider reported the grant in its own words.
	rec := h.get(t, alice, "acme")
	rec.Scopes = []string{"https://acme.example/auth/read.only"}
	if err := h.store.Put(&rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Token(context.Background(), reader(alice)); err != nil {
		t.Fatalf("agent-2, linked with its own scope: %v", err)
	}

	// agent-1 widens the link; agent-2 no longer gets the token.
	h.link(t, alice, "acme", "write")
	if got := h.get(t, alice, "acme").Requested; !slices.Equal(got, []string{"read", "write"}) {
		t.Errorf("Requested after widening = %v, want [read write]", got)
	}
	_, err := h.svc.Token(context.Background(), reader(alice))
	wantError(t, err, schemas.CodeDenied)

	// Disconnected and connected again for agent-2 only: it gets it.
	if _, err := h.svc.DisconnectByUser(context.Background(), alice, "acme"); err != nil {
		t.Fatal(err)
	}
	l, err := h.svc.Connect(context.Background(), reader(alice))
	if err != nil {
		t.Fatal(err)
	}
	to, err := h.svc.BeginLink(l.ID, alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.CompleteLink(context.Background(), visit(t, to), alice); err != nil {
		t.Fatal(err)
	}
	if got := h.get(t, alice, "acme").Requested; !slices.Equal(got, []string{"read"}) {
		t.Errorf("Requested after a fresh link = %v, want [read]", got)
	}
	if _, err := h.svc.Token(context.Background(), reader(alice)); err != nil {
		t.Errorf("agent-2 after a fresh link with its scopes: %v", err)
	}

}

// A hundred requests for one expired token make one refresh at a
// strictly rotating provider, and the rotated refresh token is persisted.
func TestTokenConcurrentRefreshSingleFlight(t *testing.T) {
	h := mustVault(t, modeStrict)
	old := h.link(t, alice, "acme")
	h.expire(t, alice, "acme")

	const n = 100
	var (
		wg     sync.WaitGroup
		tokens [n]string
		errs   [n]error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			iss, err := h.svc.Token(context.Background(), h.req(alice, "acme", "read"))
			if errs[i] = err; err == nil {
				pt, err := agents.Open([]byte(h.creds.XKeySeed), iss.Sealed)
				tokens[i], errs[i] = string(pt), err
			}
		})
	}
	close(start)
	wg.Wait()
	if got := h.prov.refreshCall.Load(); got != 1 {
		t.Errorf("refresh calls at the provider = %d, want 1", got)
	}
	rec := h.get(t, alice, "acme")
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Token %d: %v", i, errs[i])
		}
		if tokens[i] != rec.AccessToken {
			t.Fatalf("Token %d = %q, want the new token %q", i, tokens[i], rec.AccessToken)
		}
	}
	if rec.AccessToken == old.AccessToken || rec.RefreshToken == old.RefreshToken {
		t.Errorf("stored tokens were not replaced: %+v", rec)
	}
	if !rec.Refreshing.IsZero() || rec.Status != StatusActive || rec.RefreshedAt.IsZero() {
		t.Errorf("record after refresh %+v: want active, refreshed, no refresh in progress", rec)
	}
	if h.prov.RefreshLive(old.RefreshToken) {
		t.Error("the provider still accepts the used refresh token: the fake is not strict")
	}
	if n := len(h.events.Audits("token.refreshed")); n != 1 {
		t.Errorf("token.refreshed audits = %d, want 1", n)
	}

	// Later, the next refresh presents the rotated token: the strict
	// provider refuses anything else.
	h.expire(t, alice, "acme")
	_, got := h.token(t, h.req(alice, "acme"))
	if h.prov.refreshCall.Load() != 2 {
		t.Errorf("refresh calls = %d, want 2", h.prov.refreshCall.Load())
	}
	if again := h.get(t, alice, "acme"); got != again.AccessToken || again.Status != StatusActive || again.RefreshToken == rec.RefreshToken {
		t.Errorf("second refresh: token %q, record %+v", got, again)
	}
	if len(h.events.Feeds("needs_reauth")) != 0 {
		t.Error("a needs_reauth event was published")
	}
	h.noSecrets(t)
}

func TestTokenRefreshModes(t *testing.T) {
	for _, tc := range []struct {
		mode   providerMode
		style  oauth2.AuthStyle
		rotate bool
	}{
		{modeStrict, oauth2.AuthStyleInHeader, true},
		{modeGrace, oauth2.AuthStyleInHeader, true},
		{modeNonRotating, oauth2.AuthStyleInParams, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			h := mustVault(t, tc.mode, withAuthStyle(tc.style))
			prev := h.link(t, alice, "acme")
			for i := range 3 {
				h.expire(t, alice, "acme")
				_, got := h.token(t, h.req(alice, "acme"))
				rec := h.get(t, alice, "acme")
				if got != rec.AccessToken || got == prev.AccessToken {
					t.Fatalf("refresh %d: token %q, stored %q, before %q", i+1, got, rec.AccessToken, prev.AccessToken)
				}
				if rotated := rec.RefreshToken != prev.RefreshToken; rotated != tc.rotate {
					t.Errorf("refresh %d: refresh token rotated = %v, want %v", i+1, rotated, tc.rotate)
				}
				if !h.prov.RefreshLive(rec.RefreshToken) {
					t.Errorf("refresh %d: the stored refresh token is dead", i+1)
				}
				prev = rec
			}
			if n := h.prov.refreshCall.Load(); n != 3 {
				t.Errorf("refresh calls = %d, want 3", n)
			}
			h.noSecrets(t)
		})
	}
}

func TestTokenNonExpiringNeverRefreshed(t *testing.T) {
	h := mustVault(t, modeNonExpiring)
	rec := h.link(t, alice, "acme")
	if !rec.Expiry.IsZero() || rec.RefreshToken != "" {
		t.Fatalf("record %+v: want no expiry and no refresh token", rec)
	}
	for range 5 {
		h.clock.Advance(30 * 24 * time.Hour)
		if _, got := h.token(t, h.req(alice, "acme")); got != rec.AccessToken {
			t.Errorf("token = %q, want %q", got, rec.AccessToken)
		}
	}
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want 0", n)
	}
}

func TestTokenInvalidGrantNeedsReauth(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	h.prov.SetFault(failInvalidGrant)

	_, err := h.svc.Token(context.Background(), h.req(alice, "acme", "read"))
	wantReauth(t, err, ReasonNeedsReauth)
	rec := h.get(t, alice, "acme")
	if rec.Status != StatusNeedsReauth || !strings.Contains(rec.Reason, "invalid_grant") {
		t.Errorf("record status %q, reason %q: want needs_reauth for invalid_grant", rec.Status, rec.Reason)
	}
	if !rec.Refreshing.IsZero() {
		t.Error("record still marked as refreshing")
	}
	feed := h.events.Feeds("needs_reauth")
	if len(feed) != 1 || feed[0].Agent != h.agent.ID || feed[0].Type != schemas.TypeConnectionNeedsReauth ||
		feed[0].Event.Connection != "acme" || feed[0].Event.Subject != "alice" {
		t.Errorf("needs_reauth feed events = %+v, want one for %s about alice's acme", feed, h.agent.ID)
	}
	if a := h.events.Audits("connection.needs_reauth"); len(a) != 1 || a[0].Connection != "acme" {
		t.Errorf("connection.needs_reauth audits = %+v, want one", a)
	}

	calls := h.prov.calls.Load()
	_, err = h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)
	if n := h.prov.calls.Load(); n != calls {
		t.Errorf("the refused refresh token was presented again (%d provider calls, want %d)", n, calls)
	}
	h.noSecrets(t)
}

// invalid_grant after another writer rotated the token is a race, not a
// dead account.
func TestTokenInvalidGrantRace(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	var theirs atomic.Value
	h.prov.OnToken(func(grant string) {
		if grant != "refresh_token" {
			return
		}
		rec, err := h.store.Get(alice, "acme")
		if err != nil {
			t.Errorf("other writer: %v", err)
			return
		}
		rec.AccessToken, rec.RefreshToken = h.prov.Mint()
		rec.Expiry, rec.RefreshedAt, rec.Refreshing = h.clock.Now().Add(time.Hour), h.clock.Now(), time.Time{}
		if err := h.store.Put(&rec, rec.Version); err != nil {
			t.Errorf("other writer: %v", err)
			return
		}
		theirs.Store(rec)
	})
	h.prov.SetFault(failInvalidGrant)

	_, got := h.token(t, h.req(alice, "acme"))
	want, ok := theirs.Load().(Record)
	if !ok {
		t.Fatal("the provider was not asked to refresh")
	}
	if got != want.AccessToken {
		t.Errorf("token = %q, want the other writer's %q", got, want.AccessToken)
	}
	rec := h.get(t, alice, "acme")
	if rec.Status != StatusActive || rec.RefreshToken != want.RefreshToken {
		t.Errorf("record %+v: want active with the other writer's refresh token", rec)
	}
	if n := len(h.events.Feeds("needs_reauth")) + len(h.events.Audits("connection.needs_reauth")); n != 0 {
		t.Errorf("%d needs_reauth events after a race, want 0", n)
	}
}

func TestTokenProviderFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault providerFault
		// lost: the provider may have used the refresh token (no
		// answer, or an unreadable one), so the attempt stays marked.
		lost bool
	}{
		{"500", fail500, false},
		{"429", fail429, false},
		{"hang", failHang, true},
		{"malformed JSON", failMalformed, true},
		// An error code no one documents, in a success answer: the
		// provider may have used the refresh token.
		{"200 with an unknown error", failUnknown200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustVault(t, modeStrict)
			linked := h.link(t, alice, "acme")
			h.expire(t, alice, "acme")
			h.prov.SetFault(tc.fault)
			h.svc.ProviderTimeout = 300 * time.Millisecond

			done := make(chan error, 1)
			go func() {
				_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second): // a watchdog, not a timing assertion
				t.Fatal("Token did not return: the provider timeout is not applied")
			}
			ve := wantError(t, err, schemas.CodeRetryLater)
			if ve.RetryAfter <= 0 {
				t.Errorf("RetryAfter = %v, want > 0", ve.RetryAfter)
			}
			if tc.fault == fail429 && ve.RetryAfter != 7*time.Second {
				t.Errorf("RetryAfter = %v, want the provider's 7s", ve.RetryAfter)
			}
			rec := h.get(t, alice, "acme")
			if rec.Status != StatusActive || rec.Failures != 1 || !rec.NextAttempt.After(h.clock.Now()) || rec.LastError == "" || rec.Refreshing.IsZero() != !tc.lost {
				t.Errorf("record %+v: want active, 1 failure, next attempt in the future, a last error, the attempt marked %v", rec, tc.lost)
			}
			if rec.RefreshToken != linked.RefreshToken {
				t.Error("the refresh token changed after a failed refresh")
			}
			if a := h.events.Audits("token.refresh_failed"); len(a) != 1 || a[0].Reason == "" {
				t.Errorf("token.refresh_failed audits = %+v, want one with a reason", a)
			}
			if n := len(h.events.Feeds("needs_reauth")) + len(h.events.Audits("connection.needs_reauth")); n != 0 {
				t.Errorf("%d needs_reauth events after a provider fault, want 0", n)
			}

			// Backoff: the next request does not call the provider.
			h.prov.SetFault(failNone)
			calls := h.prov.calls.Load()
			_, err = h.svc.Token(context.Background(), h.req(alice, "acme"))
			wantError(t, err, schemas.CodeRetryLater)
			if n := h.prov.calls.Load(); n != calls {
				t.Errorf("provider calls during backoff = %d, want %d", n, calls)
			}
			// After it, the refresh succeeds with the same refresh token.
			h.clock.Advance(rec.NextAttempt.Sub(h.clock.Now()) + time.Second)
			if _, got := h.token(t, h.req(alice, "acme")); got == linked.AccessToken {
				t.Error("no new token after the backoff")
			}
			if rec := h.get(t, alice, "acme"); rec.Failures != 0 || !rec.NextAttempt.IsZero() {
				t.Errorf("after a good refresh: failures %d, next attempt %v; want reset", rec.Failures, rec.NextAttempt)
			}
		})
	}
}

// A token inside the refresh margin but not yet expired is handed out
// when the provider fails.
func TestTokenRefreshFailsInsideMargin(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.prov.SetExpiresIn(600) // margin: 60 s
	rec := h.link(t, alice, "acme")
	h.clock.Advance(rec.Expiry.Sub(h.clock.Now()).Truncate(time.Second) - 20*time.Second)
	if now := h.clock.Now(); now.Before(rec.RefreshAt()) || !now.Before(rec.Expiry) {
		t.Fatalf("now %v: want inside [%v, %v)", now, rec.RefreshAt(), rec.Expiry)
	}
	h.prov.SetFault(fail500)
	_, got := h.token(t, h.req(alice, "acme"))
	if got != rec.AccessToken {
		t.Errorf("token = %q, want the current %q", got, rec.AccessToken)
	}
	if n := h.prov.refreshCall.Load(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	if n := len(h.events.Audits("token.refresh_failed")); n != 1 {
		t.Errorf("token.refresh_failed audits = %d, want 1", n)
	}
	// During the backoff the current token is still handed out, without
	// calling the provider.
	if _, got := h.token(t, h.req(alice, "acme")); got != rec.AccessToken || h.prov.refreshCall.Load() != 1 {
		t.Errorf("second Token = %q after %d refresh calls; want the current token, 1 call", got, h.prov.refreshCall.Load())
	}
}

// checkNotSilentlyDead fails when the record says active, with no refresh
// in progress, while the provider no longer accepts its refresh token.
func (h *vaultHarness) checkNotSilentlyDead(tb testing.TB, u UserRef, conn string) {
	tb.Helper()
	rec := h.get(tb, u, conn)
	if rec.Status == StatusActive && rec.Refreshing.IsZero() && rec.RefreshToken != "" && !h.prov.RefreshLive(rec.RefreshToken) {
		tb.Errorf("record %+v says active while its refresh token is dead", rec)
	}
}

// The process stops between the provider's answer and the write of the
// new tokens.
func TestTokenRefreshInterrupted(t *testing.T) {
	errStop := errors.New("process stopped")
	for _, tc := range []struct {
		mode   providerMode
		reauth bool
	}{
		{modeStrict, true},
		{modeGrace, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			h := mustVault(t, tc.mode)
			linked := h.link(t, alice, "acme")
			h.expire(t, alice, "acme")
			h.svc.afterProviderAnswer = func() error { return errStop }
			if _, err := h.svc.Token(context.Background(), h.req(alice, "acme")); !errors.Is(err, errStop) {
				t.Fatalf("Token = %v, want the stop", err)
			}
			if n := h.prov.refreshCall.Load(); n != 1 {
				t.Fatalf("refresh calls = %d, want 1", n)
			}
			rec := h.get(t, alice, "acme")
			if rec.RefreshToken != linked.RefreshToken || rec.Refreshing.IsZero() {
				t.Errorf("after the stop: refresh token changed %v, refreshing %v; want the old token marked as refreshing",
					rec.RefreshToken != linked.RefreshToken, rec.Refreshing)
			}
			h.checkNotSilentlyDead(t, alice, "acme")

			h.restart(t)
			if h.svc.afterProviderAnswer != nil {
				t.Fatal("the new Service has the hook")
			}
			_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
			rec = h.get(t, alice, "acme")
			if tc.reauth {
				wantReauth(t, err, ReasonNeedsReauth)
				if rec.Status != StatusNeedsReauth || !strings.Contains(rec.Reason, "interrupted") {
					t.Errorf("record status %q, reason %q: want needs_reauth naming the interrupted refresh", rec.Status, rec.Reason)
				}
				if f := h.events.Feeds("needs_reauth"); len(f) != 1 || f[0].Type != schemas.TypeConnectionNeedsReauth {
					t.Errorf("needs_reauth feed events = %+v, want one", f)
				}
			} else {
				if err != nil {
					t.Fatalf("Token after restart: %v", err)
				}
				if rec.Status != StatusActive || !rec.Refreshing.IsZero() || rec.RefreshToken == linked.RefreshToken {
					t.Errorf("record %+v: want active with a new refresh token", rec)
				}
			}
			h.checkNotSilentlyDead(t, alice, "acme")
		})
	}
}

func TestLinkBadInput(t *testing.T) {
	ctx := context.Background()
	// started returns a link of alice's for acme.
	started := func(t *testing.T, h *vaultHarness) Link {
		l, err := h.svc.Connect(ctx, h.req(alice, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	nothingStored := func(t *testing.T, h *vaultHarness) {
		t.Helper()
		if n := h.count(t); n != 0 {
			t.Errorf("records = %d, want 0", n)
		}
	}

	t.Run("replayed link", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		l := started(t, h)
		if _, err := h.svc.BeginLink(l.ID, alice); err != nil {
			t.Fatal(err)
		}
		_, err := h.svc.BeginLink(l.ID, alice)
		wantLinkError(t, err, 410)
	})
	t.Run("expired link", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		l := started(t, h)
		h.clock.Advance(h.svc.linkTTL() + time.Second)
		_, err := h.svc.BeginLink(l.ID, alice)
		wantLinkError(t, err, 410)
		_, err = h.svc.PeekLink(l.ID)
		wantLinkError(t, err, 410)
	})
	t.Run("link opened by another user", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		l := started(t, h)
		_, err := h.svc.BeginLink(l.ID, bob)
		wantLinkError(t, err, 403)
		to, err := h.svc.BeginLink(l.ID, alice)
		if err != nil {
			t.Fatalf("the right user after a refusal: %v", err)
		}
		if _, err := h.svc.CompleteLink(ctx, visit(t, to), alice); err != nil {
			t.Fatal(err)
		}
		if _, err := h.store.Get(bob, "acme"); !errors.Is(err, ErrNotFound) {
			t.Errorf("bob's record: err = %v, want ErrNotFound", err)
		}
		h.get(t, alice, "acme")
	})
	t.Run("forged state", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		cb := h.begin(t, alice, "acme")
		id, sig, _ := strings.Cut(cb.State, ".")
		for _, forged := range []string{
			id + "." + strings.Map(func(r rune) rune {
				if r == 'A' {
					return 'B'
				}
				return 'A'
			}, sig),
			id, id + ".", "",
		} {
			bad := cb
			bad.State = forged
			_, err := h.svc.CompleteLink(ctx, bad, alice)
			wantLinkError(t, err, 400)
		}
		if n := h.prov.codeCalls.Load(); n != 0 {
			t.Errorf("code exchanges = %d, want 0", n)
		}
		nothingStored(t, h)
		// The genuine state was not used up by the forgeries.
		if _, err := h.svc.CompleteLink(ctx, cb, alice); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reused state", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		cb := h.begin(t, alice, "acme")
		first, err := h.svc.CompleteLink(ctx, cb, alice)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.svc.CompleteLink(ctx, cb, alice)
		wantLinkError(t, err, 400)
		if rec := h.get(t, alice, "acme"); rec.AccessToken != first.AccessToken || rec.Version != first.Version {
			t.Error("the replayed callback changed the record")
		}
		if n := h.prov.codeCalls.Load(); n != 1 {
			t.Errorf("code exchanges = %d, want 1", n)
		}
	})
	t.Run("access denied", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		h.prov.SetDeny(true)
		cb := h.begin(t, alice, "acme")
		if cb.Error != "access_denied" || cb.Code != "" {
			t.Fatalf("callback %+v: want error access_denied", cb)
		}
		_, err := h.svc.CompleteLink(ctx, cb, alice)
		wantLinkError(t, err, 400)
		nothingStored(t, h)
		if n := len(h.events.Feeds("linked")); n != 0 {
			t.Errorf("linked events = %d, want 0", n)
		}
	})
	t.Run("callback for another user", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		cb := h.begin(t, alice, "acme")
		_, err := h.svc.CompleteLink(ctx, cb, bob)
		wantLinkError(t, err, 403)
		nothingStored(t, h)
		if n := h.prov.codeCalls.Load(); n != 0 {
			t.Errorf("code exchanges = %d, want 0", n)
		}
	})
	t.Run("malformed token answer", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		cb := h.begin(t, alice, "acme")
		h.prov.SetFault(failMalformed)
		_, err := h.svc.CompleteLink(ctx, cb, alice)
		wantLinkError(t, err, 502)
		nothingStored(t, h)
		if n := len(h.events.Audits("connection.linked")); n != 0 {
			t.Errorf("connection.linked audits = %d, want 0", n)
		}
	})
	t.Run("wrong PKCE verifier", func(t *testing.T) {
		h := mustVault(t, modeStrict)
		l := started(t, h)
		to, err := h.svc.BeginLink(l.ID, alice)
		if err != nil {
			t.Fatal(err)
		}
		// The provider saw another challenge than the one the vault keeps.
		u, _ := url.Parse(to)
		q := u.Query()
		q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier()))
		u.RawQuery = q.Encode()
		_, err = h.svc.CompleteLink(ctx, visit(t, u.String()), alice)
		wantLinkError(t, err, 502)
		nothingStored(t, h)
	})
}

func TestDisconnect(t *testing.T) {
	h := mustVault(t, modeStrict)
	rec := h.link(t, alice, "acme")
	out, err := h.svc.Disconnect(context.Background(), h.req(alice, "acme"))
	if err != nil || out != Revoked {
		t.Fatalf("Disconnect = %q, %v; want %q", out, err, Revoked)
	}
	want := []revocation{{rec.RefreshToken, "refresh_token"}, {rec.AccessToken, "access_token"}}
	if got := h.prov.Revoked(); !slices.Equal(got, want) {
		t.Errorf("revoked at the provider: %+v, want the refresh then the access token", got)
	}
	if h.prov.RefreshLive(rec.RefreshToken) || h.prov.AccessLive(rec.AccessToken) {
		t.Error("tokens still live at the provider")
	}
	if _, err := h.store.Get(alice, "acme"); !errors.Is(err, ErrNotFound) {
		t.Errorf("record after Disconnect: err = %v, want ErrNotFound", err)
	}
	if a := h.events.Audits("connection.disconnected"); len(a) != 1 || a[0].Connection != "acme" || a[0].Agent != h.agent.ID {
		t.Errorf("connection.disconnected audits = %+v, want one", a)
	}
	if f := h.events.Feeds("disconnected"); len(f) != 1 || f[0].Agent != h.agent.ID || f[0].Type != schemas.TypeConnectionDisconnected {
		t.Errorf("disconnected feed events = %+v, want one for %s", f, h.agent.ID)
	}
	_, err = h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNotConnected)
	_, err = h.svc.Disconnect(context.Background(), h.req(alice, "acme"))
	wantError(t, err, schemas.CodeNotFound)
	h.noSecrets(t)
}

// TestDisconnectRevokesWithClientAuth: the revocation request
// authenticates the client as the token endpoint does; a provider that
// takes credentials only in the form gets them there.
func TestDisconnectRevokesWithClientAuth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		style oauth2.AuthStyle
	}{
		{"form", oauth2.AuthStyleInParams},
		{"basic", oauth2.AuthStyleInHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustVault(t, modeStrict, withAuthStyle(tc.style))
			h.prov.OnlyClientAuth(tc.style)
			rec := h.link(t, alice, "acme")
			out, err := h.svc.DisconnectByUser(context.Background(), alice, "acme")
			if err != nil || out != Revoked {
				t.Fatalf("DisconnectByUser = %q, %v; want %q", out, err, Revoked)
			}
			if got := h.prov.Revoked(); len(got) != 2 {
				t.Errorf("revocations accepted by the provider = %+v, want 2", got)
			}
			if h.prov.RefreshLive(rec.RefreshToken) || h.prov.AccessLive(rec.AccessToken) {
				t.Error("tokens still live at the provider")
			}
		})
	}
}

func TestListHasNoTokens(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.link(t, alice, "other")
	h.link(t, bob, "acme")
	h.expire(t, alice, "acme")
	h.prov.SetFault(failInvalidGrant)
	_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)

	for _, agent := range []*agents.Agent{&h.agent, nil} {
		list, err := h.svc.List(alice, agent)
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]string{}
		for _, c := range list {
			status[c.Connection] = c.Status
		}
		if want := map[string]string{"acme": "needs_reauth", "other": "active"}; !maps.Equal(status, want) {
			t.Errorf("List statuses = %v, want %v", status, want)
		}
		b, err := json.Marshal(list)
		if err != nil {
			t.Fatal(err)
		}
		h.noSecrets(t, string(b))
	}
}

func TestRefreshDue(t *testing.T) {
	h := mustVault(t, modeStrict)
	a := h.link(t, alice, "acme")
	h.link(t, bob, "acme")
	h.expire(t, alice, "acme")
	h.prov.SetFault(failInvalidGrant)
	_, err := h.svc.Token(context.Background(), h.req(bob, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)
	h.prov.SetFault(failNone)
	b := h.get(t, bob, "acme")
	calls := h.prov.refreshCall.Load()

	h.svc.refreshDue(context.Background(), RefresherOptions{Interval: time.Second, Concurrency: 2, PerConnection: 2})
	if n := h.prov.refreshCall.Load() - calls; n != 1 {
		t.Errorf("refresh calls in the round = %d, want 1 (alice's)", n)
	}
	if rec := h.get(t, alice, "acme"); rec.AccessToken == a.AccessToken || rec.RefreshedAt.IsZero() || !rec.Expiry.After(h.clock.Now()) {
		t.Errorf("alice's record was not refreshed: %+v", rec)
	}
	if rec := h.get(t, bob, "acme"); rec.Version != b.Version || rec.Status != StatusNeedsReauth {
		t.Errorf("bob's needs_reauth record was touched: %+v", rec)
	}
	if n := len(h.events.Audits("token.refreshed")); n != 1 {
		t.Errorf("token.refreshed audits = %d, want 1", n)
	}
	// Nothing is due any more (and zero options take the defaults).
	h.svc.refreshDue(context.Background(), RefresherOptions{})
	if n := h.prov.refreshCall.Load() - calls; n != 1 {
		t.Errorf("refresh calls after a second round = %d, want 1", n)
	}
}

func TestTokenCorruptRecord(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	other := h.link(t, alice, "other")
	corrupt(t, h.store, prefixRecord+alice.Key()+"/acme")

	_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
	ve := wantError(t, err, schemas.CodeUnavailable)
	if !strings.Contains(ve.Msg, `"acme"`) {
		t.Errorf("message %q does not name the connection", ve.Msg)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("err = %v, want it to wrap ErrCorrupt", err)
	}
	if _, got := h.token(t, h.req(alice, "other")); got != other.AccessToken {
		t.Errorf("other connection's token = %q, want %q", got, other.AccessToken)
	}
	list, err := h.svc.List(alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(c schemas.VaultConnection) bool { return c.Connection == "acme" }); i < 0 || list[i].Status != "corrupt" {
		t.Errorf("List = %+v, want acme listed as corrupt", list)
	}
	// Linking again replaces the unreadable record.
	h.link(t, alice, "acme")
	h.token(t, h.req(alice, "acme"))
}

// Refresh refreshes a token that is not near expiry, with the same
// persistence as any refresh.
func TestRefreshForced(t *testing.T) {
	h := mustVault(t, modeStrict)
	linked := h.link(t, alice, "acme")
	rec, err := h.svc.Refresh(context.Background(), alice, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := h.prov.refreshCall.Load(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	stored := h.get(t, alice, "acme")
	if rec.AccessToken == linked.AccessToken || stored.AccessToken != rec.AccessToken || stored.RefreshToken != rec.RefreshToken {
		t.Errorf("forced refresh: returned %+v, stored %+v; want new tokens, persisted", rec, stored)
	}
	if a := h.events.Audits("token.refreshed"); len(a) != 1 || a[0].Fingerprint != schemas.Fingerprint(rec.AccessToken) {
		t.Errorf("token.refreshed audits = %+v, want one with the new fingerprint", a)
	}
	if _, got := h.token(t, h.req(alice, "acme")); got != rec.AccessToken || h.prov.refreshCall.Load() != 1 {
		t.Errorf("Token after Refresh = %q (%d refresh calls), want %q without another refresh", got, h.prov.refreshCall.Load(), rec.AccessToken)
	}
	_, err = h.svc.Refresh(context.Background(), alice, "nope")
	wantError(t, err, schemas.CodeNotFound)
	h.noSecrets(t)
}

// TestRefreshNothingToRefresh: a forced refresh of a non-expiring token
// (no refresh token) is not a failure and calls nobody.
func TestRefreshNothingToRefresh(t *testing.T) {
	h := mustVault(t, modeNonExpiring)
	linked := h.link(t, alice, "acme")
	rec, err := h.svc.Refresh(context.Background(), alice, "acme")
	if err != nil || rec.AccessToken != linked.AccessToken {
		t.Fatalf("Refresh = %+v, %v; want the stored token", rec, err)
	}
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want 0", n)
	}
	if got := h.get(t, alice, "acme"); got.Failures != 0 || len(h.events.Audits("token.refresh_failed")) != 0 {
		t.Errorf("a refresh with nothing to refresh counted as a failure: %+v", got)
	}
}

// TestRefreshLostAnswer: the provider used the refresh token but its
// answer was lost. The attempt stays marked; the next refresh's
// invalid_grant is understood: needs_reauth, with an event, never an
// active record with a dead token.
func TestRefreshLostAnswer(t *testing.T) {
	h := mustVault(t, modeStrict)
	linked := h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	h.prov.SetFault(failLostAnswer)
	_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantError(t, err, schemas.CodeRetryLater)
	if h.prov.RefreshLive(linked.RefreshToken) {
		t.Fatal("the fake provider did not use the refresh token")
	}
	if rec := h.get(t, alice, "acme"); rec.Refreshing.IsZero() {
		t.Fatalf("record %+v: the lost attempt is not marked", rec)
	}
	h.prov.SetFault(failNone)
	h.clock.Advance(time.Hour) // past the backoff
	_, err = h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)
	rec := h.get(t, alice, "acme")
	if rec.Status != StatusNeedsReauth || !strings.Contains(rec.Reason, "interrupted") {
		t.Errorf("record %+v: want needs_reauth naming the interrupted refresh", rec)
	}
	if len(h.events.Feeds("needs_reauth")) != 1 {
		t.Error("no needs_reauth event on the agent's feed")
	}
}

// TestRefreshDueAhead: the background refresher refreshes what falls due
// before its next round, not only what is due already (else a token would
// reach the person's request, or expire, before the refresher acts).
func TestRefreshDueAhead(t *testing.T) {
	h := mustVault(t, modeStrict)
	linked := h.link(t, alice, "acme")
	// Due in 30 s; the rounds are a minute apart.
	h.clock.Advance(linked.RefreshAt().Sub(h.clock.Now()) - 30*time.Second)
	h.svc.refreshDue(context.Background(), RefresherOptions{Interval: time.Minute, Jitter: time.Millisecond})
	if rec := h.get(t, alice, "acme"); rec.AccessToken == linked.AccessToken || h.prov.refreshCall.Load() != 1 {
		t.Fatalf("not refreshed ahead of time (%d refresh calls): %+v", h.prov.refreshCall.Load(), rec)
	}
	// A token due after the next round is left alone.
	h.link(t, bob, "acme")
	h.svc.refreshDue(context.Background(), RefresherOptions{Interval: time.Minute, Jitter: time.Millisecond})
	if n := h.prov.refreshCall.Load(); n != 1 {
		t.Fatalf("refresh calls = %d, want still 1 (bob's token is fresh)", n)
	}
}

// TestTokenWhereWaitingIsForbidden: in a context that forbids waiting (a
// request served on a NATS subscription goroutine), Token answers from the
// record cache, and reports blocking.ErrWouldBlock, having done nothing,
// for everything that would wait: a record not cached, a refresh due, a
// connect link to store. Nothing is audited for those attempts.
func TestTokenWhereWaitingIsForbidden(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.store.Close()
	st, err := OpenStore(h.dir, h.kr, StoreOptions{Logger: quiet, CacheRecords: 10})
	if err != nil {
		t.Fatal(err)
	}
	h.store, h.svc.Store = st, st
	forbid := blocking.Forbid(context.Background())
	req := h.req(alice, "acme", "read")
	issued := func() int { return len(h.events.Audits("token.issued")) }

	if _, err := h.svc.Token(forbid, req); !errors.Is(err, blocking.ErrWouldBlock) {
		t.Fatalf("record not cached: got %v, want ErrWouldBlock", err)
	}
	if issued() != 0 {
		t.Fatalf("%d token.issued audited for an attempt that would have waited", issued())
	}
	_, want := h.token(t, req) // where waiting is allowed: reads the store, fills the cache
	iss, err := h.svc.Token(forbid, req)
	if err != nil {
		t.Fatalf("cached record: %v", err)
	}
	if got := h.unseal(t, iss); got != want {
		t.Errorf("token from the cache %q, want %q", got, want)
	}
	if issued() != 2 {
		t.Errorf("token.issued audited %d times, want 2", issued())
	}

	h.expire(t, alice, "acme")
	if _, err := h.svc.Token(forbid, req); !errors.Is(err, blocking.ErrWouldBlock) {
		t.Fatalf("refresh due: got %v, want ErrWouldBlock", err)
	}
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Fatalf("%d refresh calls for an attempt that would have waited", n)
	}
	if _, fresh := h.token(t, req); fresh == want || h.prov.refreshCall.Load() != 1 {
		t.Errorf("after the refresh: token changed %v, provider calls %d", fresh != want, h.prov.refreshCall.Load())
	}

	// Never connected: the interrupt's connect link would be stored.
	if _, err := h.svc.Token(forbid, h.req(bob, "acme", "read")); !errors.Is(err, blocking.ErrWouldBlock) {
		t.Fatalf("never connected: got %v, want ErrWouldBlock", err)
	}
	wantReauth(t, func() error { _, err := h.svc.Token(context.Background(), h.req(bob, "acme", "read")); return err }(), ReasonNotConnected)
}

// TestTokenScopeAliases: a provider that reports a granted scope under
// another name (Google: email is …/auth/userinfo.email) still has it, for
// a connection that names the alias; without the alias it looks missing.
func TestTokenScopeAliases(t *testing.T) {
	const reported = "https://acme.example/auth/write"
	for _, tc := range []struct {
		name    string
		aliases map[string]string
		wantErr bool
	}{
		{"alias", map[string]string{"write": reported}, false},
		{"no alias", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustVault(t, modeStrict, func(c *Connection) { c.ScopeAliases = tc.aliases })
			h.prov.mu.Lock()
			h.prov.renames = map[string]string{"write": reported}
			h.prov.mu.Unlock()
			if rec := h.link(t, alice, "acme", "read", "write"); !slices.Contains(rec.Scopes, reported) {
				t.Fatalf("stored scopes %v: the provider's names expected", rec.Scopes)
			}
			_, err := h.svc.Token(context.Background(), h.req(alice, "acme", "write"))
			if tc.wantErr {
				wantReauth(t, err, ReasonMissingScopes)
				return
			}
			if err != nil {
				t.Fatalf("token for a scope granted under its alias: %v", err)
			}
		})
	}
}

// TestTokenLegacyRecord: a record linked before Requested was kept has
// only the provider's names for its scopes (Google's email is a URL). It
// keeps working for an agent whose policy names them in agentauth's
// vocabulary, and a re-link records what was asked for, not those names.
func TestTokenLegacyRecord(t *testing.T) {
	const reported = "https://acme.example/auth/write"
	h := mustVault(t, modeStrict, func(c *Connection) { c.ScopeAliases = map[string]string{"write": reported} })
	h.link(t, alice, "acme", "read", "write")
	rec := h.get(t, alice, "acme")
	rec.Scopes, rec.Requested = []string{"read", reported}, nil // as stored before session 7
	if err := h.store.Put(&rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Token(context.Background(), h.req(alice, "acme")); err != nil {
		t.Fatalf("a record linked before Requested was kept: %v", err)
	}
	h.link(t, alice, "acme", "read")
	if got := h.get(t, alice, "acme").Requested; !slices.Equal(got, []string{"read", "write"}) {
		t.Errorf("Requested after a re-link = %v, want [read write] (agentauth's names, not the provider's)", got)
	}
	if _, err := h.svc.Token(context.Background(), h.req(alice, "acme")); err != nil {
		t.Fatalf("after the re-link: %v", err)
	}
}
