package approval_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// The service runs on the real store: bus.ApprovalStore on an embedded
// nats-server with JetStream.

const (
	shop = "https://shop.example"
	bank = "https://bank.example"
)

var (
	alice = approval.UserRef{Issuer: "https://idp.example", Subject: "alice"}
	bob   = approval.UserRef{Issuer: "https://idp.example", Subject: "bob"}
)

// clock is a settable clock shared by the service and the minter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder is approval.Events in memory.
type recorder struct {
	mu        sync.Mutex
	notes     []note
	feed      []feedEvent
	audits    []schemas.AuditApproval
	notifyErr error
	feedErr   error
}

type note struct {
	userKey, verb, typ string
	data               schemas.ApprovalNotification
}

type feedEvent struct {
	agent, verb, typ string
	data             schemas.ApprovalDecided
}

func (r *recorder) Notify(_ context.Context, userKey, verb, typ string, d schemas.ApprovalNotification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.notifyErr != nil {
		return r.notifyErr
	}
	r.notes = append(r.notes, note{userKey, verb, typ, d})
	return nil
}

func (r *recorder) Feed(_ context.Context, agent, verb, typ string, d schemas.ApprovalDecided) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.feedErr != nil {
		return r.feedErr
	}
	r.feed = append(r.feed, feedEvent{agent, verb, typ, d})
	return nil
}

func (r *recorder) Audit(object, verb string, a schemas.AuditApproval) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a.Event != object+"."+verb && a.Event != verb {
		panic(fmt.Sprintf("audit %s.%s carries event %q", object, verb, a.Event))
	}
	r.audits = append(r.audits, a)
}

func (r *recorder) notesFor(id string) []note {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []note
	for _, n := range r.notes {
		if n.data.AuthReqID == id {
			out = append(out, n)
		}
	}
	return out
}

func (r *recorder) feedFor(id string) []feedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []feedEvent
	for _, f := range r.feed {
		if f.data.AuthReqID == id {
			out = append(out, f)
		}
	}
	return out
}

// auditsFor lists the audit events of a request, in order.
func (r *recorder) auditsFor(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.audits {
		if a.AuthReqID == id {
			out = append(out, a.Event)
		}
	}
	return out
}

// countingMinter counts minted tokens.
type countingMinter struct {
	m *identity.Minter
	n atomic.Int64
}

func (c *countingMinter) Mint(g identity.Grant) (identity.Minted, error) {
	c.n.Add(1)
	return c.m.Mint(g)
}

type agentMap map[string]agents.Agent

func (m agentMap) Agent(_ context.Context, id string) (agents.Agent, error) {
	a, ok := m[id]
	if !ok {
		return agents.Agent{}, agents.ErrNotFound
	}
	return a, nil
}

type env struct {
	url    string
	store  *bus.ApprovalStore
	events *recorder
	minter *countingMinter
	clock  *clock
	agent  agents.Agent
	seed   []byte // the agent's xkey seed
	other  agents.Agent
	agents agentMap
	sealer *agents.Sealer
	types  *approval.TypeRegistry
	svc    *approval.Service
}

// mustServer starts an embedded nats-server with JetStream and returns its
// URL.
func mustServer(tb testing.TB) string {
	tb.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded nats-server: %v", err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

// mustStore opens the approvals bucket on a fresh connection to url, as
// another agentauth instance would.
func mustStore(tb testing.TB, url string) *bus.ApprovalStore {
	tb.Helper()
	nc, err := bus.Connect(bus.ConnOptions{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := bus.JetStream(nc)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := bus.NewApprovalStore(tb.Context(), js, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{url: mustServer(tb), events: &recorder{}, clock: &clock{t: time.Now().UTC()}}
	e.store = mustStore(tb, e.url)
	key, err := identity.NewSigningKey(e.clock.Now())
	if err != nil {
		tb.Fatal(err)
	}
	m, err := identity.NewMinter("https://agentauth.example", []identity.SigningKey{key}, e.clock.Now)
	if err != nil {
		tb.Fatal(err)
	}
	e.minter = &countingMinter{m: m}
	kp, _ := nkeys.CreateCurveKeys()
	sseed, _ := kp.Seed()
	if e.sealer, err = agents.NewSealer(sseed); err != nil {
		tb.Fatal(err)
	}
	p := agents.Policy{ApprovalAudiences: []string{shop, bank}, ApprovalScopes: []string{"purchase", "read"}, BackgroundAudiences: []string{shop}}
	a, creds, err := agents.New("shopper", p, e.clock.Now())
	if err != nil {
		tb.Fatal(err)
	}
	e.agent, e.seed = a, []byte(creds.XKeySeed)
	if e.other, _, err = agents.New("other", p, e.clock.Now()); err != nil {
		tb.Fatal(err)
	}
	e.agents = agentMap{a.ID: a, e.other.ID: e.other}
	e.types = mustDefaultTypes(tb)
	e.svc = e.service(e.store, e.clock.Now)
	return e
}

// service is a Service on st, as one agentauth instance.
func (e *env) service(st approval.Store, now func() time.Time) *approval.Service {
	return &approval.Service{Store: st, Events: e.events, Minter: e.minter, Sealer: e.sealer, Agents: e.agents,
		DefaultIssuer: alice.Issuer, Types: e.types, Now: now, Log: quiet}
}

const purchase = `{"type":"purchase","item":"Go & <friends> \u00e9dition","amount":32.50,"currency":"EUR","merchant":"Shop"}`

// purchaseCanonical is purchase as stored, shown and signed.
const purchaseCanonical = `{"amount":32.50,"currency":"EUR","item":"Go \u0026 \u003cfriends\u003e édition","merchant":"Shop","type":"purchase"}`

func eventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newRequest is a valid request by e.agent for alice; edit adjusts it.
func (e *env) newRequest(edit func(*approval.NewRequest)) approval.NewRequest {
	n := approval.NewRequest{
		Agent: e.agent, User: alice, EventID: eventID(), UserTokenExpiry: e.clock.Now().Add(time.Hour),
		Data: schemas.ApprovalRequestData{
			BindingMessage: "Buy 1 book for 32.50 EUR", Audience: shop, Scopes: []string{"purchase"},
			AuthorizationDetails: raw(purchase),
		},
	}
	if edit != nil {
		edit(&n)
	}
	return n
}

func (e *env) mustRequest(tb testing.TB, edit func(*approval.NewRequest)) approval.Request {
	tb.Helper()
	r, err := e.svc.Request(tb.Context(), e.newRequest(edit))
	if err != nil {
		tb.Fatalf("request: %v", err)
	}
	return r
}

func (e *env) stored(tb testing.TB, id string) approval.Request {
	tb.Helper()
	r, _, err := e.store.Get(tb.Context(), id)
	if err != nil {
		tb.Fatalf("get %s: %v", id, err)
	}
	return r
}

func approve(id string) approval.Decision {
	return approval.Decision{ID: id, User: alice, Approve: true, Comment: "ok", By: "phone"}
}

func deny(id string) approval.Decision {
	return approval.Decision{ID: id, User: alice, Approve: false, Comment: "no", By: "laptop"}
}

var quiet = slog.New(slog.DiscardHandler)

var idPattern = regexp.MustCompile(`^[A-Z2-7]{52}$`)

func TestApprovalRequestStoredAndNotified(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	r := e.mustRequest(t, func(n *approval.NewRequest) {
		n.Data.AuthorizationDetails = raw(`{ "type" : "purchase", "item":"Go & <friends> édition","amount":32.50,"currency":"EUR","merchant":"Shop" }`)
	})
	if !idPattern.MatchString(r.ID) {
		t.Errorf("auth_req_id %q: want 52 base32 characters (a record key and 128 random bits)", r.ID)
	}
	got := e.stored(t, r.ID) // stored before Request returned
	if got.State != schemas.ApprovalPending || got.Interval != 5 || !got.Expires.Equal(now.Add(300*time.Second)) {
		t.Errorf("stored: state %s, interval %d, expires %v; want pending, 5, %v", got.State, got.Interval, got.Expires, now.Add(300*time.Second))
	}
	if got.Agent != "shopper" || got.User != alice || got.Audience != shop || !slices.Equal(got.Scopes, []string{"purchase"}) {
		t.Errorf("stored: %+v", got)
	}
	if len(got.AuthorizationDetails) != 1 || string(got.AuthorizationDetails[0]) != purchaseCanonical {
		t.Errorf("stored details %s, want %s", got.AuthorizationDetails, purchaseCanonical)
	}
	notes := e.events.notesFor(r.ID)
	if len(notes) != 1 {
		t.Fatalf("got %d notifications, want 1", len(notes))
	}
	n := notes[0]
	if n.userKey != alice.Key() || n.verb != "requested" || n.typ != schemas.TypeApprovalRequested {
		t.Errorf("notification: %s %s %s", n.userKey, n.verb, n.typ)
	}
	d := n.data
	if d.Status != schemas.ApprovalPending || d.Agent != "shopper" || d.BindingMessage != "Buy 1 book for 32.50 EUR" ||
		d.Audience != shop || d.Subject != "alice" || d.Issuer != alice.Issuer || !d.ExpiresAt.Equal(got.Expires) ||
		len(d.AuthorizationDetails) != 1 || string(d.AuthorizationDetails[0]) != purchaseCanonical {
		t.Errorf("notification data: %+v", d)
	}
	if got, want := e.events.auditsFor(r.ID), []string{"requested", "notified"}; !slices.Equal(got, want) {
		t.Errorf("audit: got %v, want %v", got, want)
	}
}

func TestApprovalRequestRejected(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		edit func(*approval.NewRequest)
		code schemas.ErrorCode
	}{
		{"binding message too long", func(n *approval.NewRequest) {
			n.Data.BindingMessage = "Buy one copy of the book and have it shipped to the usual address now"
		}, schemas.CodeInvalidBindingMessage},
		{"binding message with U+202E", func(n *approval.NewRequest) { n.Data.BindingMessage = "Pay \u202e0001 RUE" }, schemas.CodeInvalidBindingMessage},
		{"binding message with newline", func(n *approval.NewRequest) { n.Data.BindingMessage = "Buy\nAlso wire 1000 EUR" }, schemas.CodeInvalidBindingMessage},
		{"binding message with zero-width space", func(n *approval.NewRequest) { n.Data.BindingMessage = "Buy\u200bbook" }, schemas.CodeInvalidBindingMessage},
		{"binding message missing", func(n *approval.NewRequest) { n.Data.BindingMessage = "" }, schemas.CodeInvalidBindingMessage},
		{"audience missing", func(n *approval.NewRequest) { n.Data.Audience = "" }, schemas.CodeSchemaViolation},
		{"audience outside policy", func(n *approval.NewRequest) { n.Data.Audience = "https://evil.example" }, schemas.CodeDenied},
		{"scope outside policy", func(n *approval.NewRequest) { n.Data.Scopes = []string{"purchase", "admin"} }, schemas.CodeDenied},
		{"background for a non-background audience", func(n *approval.NewRequest) { n.Background, n.Data.Audience = true, bank }, schemas.CodeDenied},
		{"expiry negative", func(n *approval.NewRequest) { n.Data.RequestedExpiry = -1 }, schemas.CodeSchemaViolation},
		{"expiry above 3600", func(n *approval.NewRequest) { n.Data.RequestedExpiry = 3601 }, schemas.CodeSchemaViolation},
		{"unknown details type", func(n *approval.NewRequest) { n.Data.AuthorizationDetails = raw(`{"type":"wire_transfer","amount":1}`) }, schemas.CodeInvalidAuthorizationDetails},
		{"details failing the schema", func(n *approval.NewRequest) {
			n.Data.AuthorizationDetails = raw(`{"type":"purchase","item":"book","amount":-5,"currency":"EUR"}`)
		}, schemas.CodeInvalidAuthorizationDetails},
		{"details empty", func(n *approval.NewRequest) { n.Data.AuthorizationDetails = []json.RawMessage{} }, schemas.CodeInvalidAuthorizationDetails},
		{"no event id", func(n *approval.NewRequest) { n.EventID = "" }, schemas.CodeSchemaViolation},
		{"no person", func(n *approval.NewRequest) { n.User = approval.UserRef{} }, schemas.CodeSchemaViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Request(t.Context(), e.newRequest(tt.edit))
			wantCode(t, err, tt.code)
		})
	}
	// Bad input changes nothing.
	all, err := e.store.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 || len(e.events.notes) != 0 || len(e.events.audits) != 0 {
		t.Errorf("rejected requests left %d records, %d notifications, %d audit events", len(all), len(e.events.notes), len(e.events.audits))
	}
}

func TestApprovalRequestAccepted(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	tests := []struct {
		name    string
		edit    func(*approval.NewRequest)
		expires time.Duration
	}{
		{"default expiry", nil, 300 * time.Second},
		{"expiry 1", func(n *approval.NewRequest) { n.Data.RequestedExpiry = 1 }, time.Second},
		{"expiry 3600", func(n *approval.NewRequest) { n.Data.RequestedExpiry = 3600 }, time.Hour},
		{"background for a background audience", func(n *approval.NewRequest) { n.Background, n.UserTokenExpiry = true, time.Time{} }, 300 * time.Second},
		{"no scopes, no details", func(n *approval.NewRequest) { n.Data.Scopes, n.Data.AuthorizationDetails = nil, nil }, 300 * time.Second},
		{"64 characters", func(n *approval.NewRequest) {
			n.Data.BindingMessage = "Kaufe 1 Buch für 32,50 € bei Shop — Lieferung an die übliche Adr"
		}, 300 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.mustRequest(t, tt.edit)
			if !r.Expires.Equal(now.Add(tt.expires)) {
				t.Errorf("expires %v, want %v", r.Expires, now.Add(tt.expires))
			}
		})
	}
}

func TestApprovalRequestIdempotent(t *testing.T) {
	e := newEnv(t)
	n := e.newRequest(nil)
	first, err := e.svc.Request(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.svc.Request(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID {
		t.Errorf("retry: got auth_req_id %s, want %s", again.ID, first.ID)
	}
	// Concurrent retries of one event: one request, one notification.
	n2 := e.newRequest(nil)
	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			r, err := e.svc.Request(t.Context(), n2)
			if err != nil {
				t.Error(err)
			}
			ids[i] = r.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent retries got ids %v, want one id", ids)
		}
	}
	for _, id := range []string{first.ID, ids[0]} {
		if got := len(e.events.notesFor(id)); got != 1 {
			t.Errorf("%s: %d notifications, want 1", id, got)
		}
		if got, want := e.events.auditsFor(id), []string{"requested", "notified"}; !slices.Equal(got, want) {
			t.Errorf("audit: got %v, want %v", got, want)
		}
	}
	// The same event id from another agent is another request.
	n3 := n
	n3.Agent = e.other
	r3, err := e.svc.Request(t.Context(), n3)
	if err != nil {
		t.Fatal(err)
	}
	if r3.ID == first.ID {
		t.Error("another agent's event with the same id got the first agent's request")
	}
}

// TestApprovalRequestNotifyFails: the request is stored before the
// notification; when the notification fails the request still stands (the
// person's apps list it from the store) and is not audited as notified.
func TestApprovalRequestNotifyFails(t *testing.T) {
	e := newEnv(t)
	e.events.notifyErr = errors.New("stream unavailable")
	r, err := e.svc.Request(t.Context(), e.newRequest(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.events.auditsFor(r.ID), []string{"requested"}; !slices.Equal(got, want) {
		t.Errorf("audit: got %v, want %v", got, want)
	}
	pending, err := e.svc.Pending(t.Context(), alice)
	if err != nil || len(pending) != 1 || pending[0].ID != r.ID {
		t.Errorf("pending: %+v, %v", pending, err)
	}
}

func TestApprovalDecideApprove(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	got, err := e.svc.Decide(t.Context(), approve(r.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got.State != schemas.ApprovalApproved || got.Token == nil || got.DecidedBy != "phone" || got.Comment != "ok" {
		t.Fatalf("decided: %+v", got)
	}
	st := e.stored(t, r.ID)
	if st.State != schemas.ApprovalApproved || st.Token == nil || st.Token.JTI != got.Token.JTI {
		t.Fatalf("stored: %+v", st)
	}
	// The agent's feed carries the decision and the sealed token.
	feed := e.events.feedFor(r.ID)
	if len(feed) != 1 || feed[0].agent != "shopper" || feed[0].verb != "decided" || feed[0].typ != schemas.TypeApprovalDecided ||
		feed[0].data.Status != schemas.ApprovalApproved || feed[0].data.Comment != "ok" || feed[0].data.Token == nil || feed[0].data.Token.JTI != st.Token.JTI {
		t.Fatalf("feed: %+v", feed)
	}
	if notes := e.events.notesFor(r.ID); len(notes) != 2 || notes[1].verb != "resolved" || notes[1].typ != schemas.TypeApprovalResolved || notes[1].data.Status != schemas.ApprovalApproved {
		t.Errorf("notifications: %+v", notes)
	}
	if got, want := e.events.auditsFor(r.ID), []string{"requested", "notified", "token.minted", "approved"}; !slices.Equal(got, want) {
		t.Errorf("audit: got %v, want %v", got, want)
	}
	// Only the agent can open the token; it verifies against the
	// published keys and says exactly what was approved.
	tok := st.Token
	if _, err := agents.Open(e.seed, tok.SealedToken); err != nil {
		t.Fatalf("the agent cannot open its token: %v", err)
	}
	_, otherCreds, _ := agents.New("x", agents.Policy{}, time.Now())
	if _, err := agents.Open([]byte(otherCreds.XKeySeed), tok.SealedToken); err == nil {
		t.Fatal("another key opened the agent's token")
	}
	plain, _ := agents.Open(e.seed, tok.SealedToken)
	if schemas.Fingerprint(string(plain)) != tok.Fingerprint {
		t.Error("fingerprint does not match the sealed token")
	}
	parsed, err := jwt.ParseSigned(string(plain), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
		Azp   string `json:"azp"`
		Act   struct {
			Sub string `json:"sub"`
		} `json:"act"`
		Details []json.RawMessage `json:"authorization_details"`
	}
	if err := parsed.Claims(e.minter.m.JWKS(), &claims, &extra); err != nil {
		t.Fatalf("verify with the published keys: %v", err)
	}
	if claims.Subject != "alice" || extra.Act.Sub != "shopper" || extra.Azp != "shopper" || len(claims.Audience) != 1 || claims.Audience[0] != shop ||
		extra.Scope != "purchase" || claims.ID != tok.JTI {
		t.Errorf("claims: %+v %+v", claims, extra)
	}
	// What the person was shown, what is stored and what the token says
	// are the same bytes.
	shown := e.events.notesFor(r.ID)[0].data.AuthorizationDetails
	if len(extra.Details) != 1 || string(extra.Details[0]) != purchaseCanonical || string(shown[0]) != purchaseCanonical ||
		string(st.AuthorizationDetails[0]) != purchaseCanonical || string(tok.AuthorizationDetails[0]) != purchaseCanonical {
		t.Errorf("token authorization_details %s, shown %s, want exactly %s", extra.Details, shown, purchaseCanonical)
	}
	if exp := claims.Expiry.Time(); exp.After(e.clock.Now().Add(5*time.Minute)) || !exp.Equal(tok.ExpiresAt.Truncate(time.Second)) {
		t.Errorf("token expiry %v, want ≤ 5 min and = %v", exp, tok.ExpiresAt)
	}
	// The agent redeems the token once.
	red, err := e.svc.Status(t.Context(), e.agent, r.ID)
	if err != nil || red.Token == nil || red.Token.JTI != tok.JTI {
		t.Fatalf("status: %+v, %v", red, err)
	}
	_, err = e.svc.Status(t.Context(), e.agent, r.ID)
	wantCode(t, err, schemas.CodeInvalidGrant)
	if got := e.events.auditsFor(r.ID); got[len(got)-1] != "redeemed" {
		t.Errorf("audit: got %v, want it to end with redeemed", got)
	}
	if e.minter.n.Load() != 1 {
		t.Errorf("minted %d tokens, want 1", e.minter.n.Load())
	}
}

// TestApprovalDecidePolicyNarrowed: the agent's policy is checked again
// when the person approves; an approval it no longer allows mints nothing
// and ends as a denial the agent sees, on its feed and when it polls.
func TestApprovalDecidePolicyNarrowed(t *testing.T) {
	tests := []struct {
		name       string
		background bool
		narrow     func(*agents.Policy)
		reason     string
	}{
		{"audience removed", false, func(p *agents.Policy) { p.ApprovalAudiences = []string{bank} }, "approval_audiences"},
		{"scope removed", false, func(p *agents.Policy) { p.ApprovalScopes = []string{"read"} }, "approval_scopes"},
		{"background audience removed", true, func(p *agents.Policy) { p.BackgroundAudiences = nil }, "background_audiences"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.mustRequest(t, func(n *approval.NewRequest) { n.Background = tt.background })
			a := e.agents[e.agent.ID]
			tt.narrow(&a.Policy)
			e.agents[a.ID] = a
			_, err := e.svc.Decide(t.Context(), approve(r.ID))
			if ae := wantCode(t, err, schemas.CodeDenied); !strings.Contains(ae.Msg, "policy no longer allows") || !strings.Contains(ae.Msg, tt.reason) {
				t.Errorf("message %q: want it to say the policy no longer allows it (%s)", ae.Msg, tt.reason)
			}
			if n := e.minter.n.Load(); n != 0 {
				t.Errorf("minted %d tokens, want 0", n)
			}
			st := e.stored(t, r.ID)
			if st.State != schemas.ApprovalDenied || st.Token != nil || !strings.Contains(st.Comment, "policy no longer allows") {
				t.Errorf("stored %s, token %v, comment %q; want denied, no token, the reason", st.State, st.Token, st.Comment)
			}
			feed := e.events.feedFor(r.ID)
			if len(feed) != 1 || feed[0].data.Status != schemas.ApprovalDenied || feed[0].data.Token != nil || feed[0].data.Comment != st.Comment {
				t.Errorf("feed: %+v, want one denial with the reason", feed)
			}
			if notes := e.events.notesFor(r.ID); len(notes) != 2 || notes[1].verb != "resolved" || notes[1].data.Status != schemas.ApprovalDenied {
				t.Errorf("notifications: %+v, want requested then resolved (denied)", notes)
			}
			if got, want := e.events.auditsFor(r.ID), []string{"requested", "notified", "denied"}; !slices.Equal(got, want) {
				t.Errorf("audit: got %v, want %v", got, want)
			}
			_, err = e.svc.Status(t.Context(), e.agent, r.ID)
			wantCode(t, err, schemas.CodeAccessDenied)
			_, err = e.svc.Decide(t.Context(), approve(r.ID))
			wantCode(t, err, schemas.CodeAlreadyDecided)
		})
	}
}

// TestApprovalTokenUserPerIssuer: the same subject at two issuers is two
// people, and so are their approved tokens: the default issuer's user
// keeps the bare subject, the other's is qualified, and both tokens name
// the user's issuer (user_iss).
func TestApprovalTokenUserPerIssuer(t *testing.T) {
	e := newEnv(t)
	otherAlice := approval.UserRef{Issuer: "https://login.other.example/t", Subject: alice.Subject}
	tests := []struct {
		name string
		user approval.UserRef
		sub  string
	}{
		{"default issuer", alice, "alice"},
		{"another issuer", otherAlice, "login.other.example/t|alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.mustRequest(t, func(n *approval.NewRequest) { n.User = tt.user })
			d := approve(r.ID)
			d.User = tt.user
			got, err := e.svc.Decide(t.Context(), d)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := agents.Open(e.seed, got.Token.SealedToken)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseSigned(string(plain), []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.Claims
			var extra struct {
				UserIssuer *string `json:"user_iss"`
			}
			if err := parsed.Claims(e.minter.m.JWKS(), &claims, &extra); err != nil {
				t.Fatal(err)
			}
			if claims.Subject != tt.sub || extra.UserIssuer == nil || *extra.UserIssuer != tt.user.Issuer {
				t.Errorf("sub %q, user_iss %v; want %q, %q", claims.Subject, extra.UserIssuer, tt.sub, tt.user.Issuer)
			}
		})
	}
}

func TestApprovalTokenNotAfterUserToken(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, func(n *approval.NewRequest) { n.UserTokenExpiry = e.clock.Now().Add(time.Minute) })
	got, err := e.svc.Decide(t.Context(), approve(r.ID))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(time.Minute); got.Token.ExpiresAt.After(want) {
		t.Errorf("token expires %v, after the user token (%v)", got.Token.ExpiresAt, want)
	}
	// The user token expired before the decision: no token can be minted.
	r2 := e.mustRequest(t, func(n *approval.NewRequest) { n.UserTokenExpiry = e.clock.Now().Add(time.Minute) })
	e.clock.Add(2 * time.Minute)
	_, err = e.svc.Decide(t.Context(), approve(r2.ID))
	wantCode(t, err, schemas.CodeExpiredToken)
	if st := e.stored(t, r2.ID); st.State != schemas.ApprovalPending || st.Token != nil {
		t.Errorf("stored: %s, token %v; want pending without a token", st.State, st.Token)
	}
}

func TestApprovalDecideDeny(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	got, err := e.svc.Decide(t.Context(), deny(r.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got.State != schemas.ApprovalDenied || got.Token != nil {
		t.Fatalf("decided: %+v", got)
	}
	feed := e.events.feedFor(r.ID)
	if len(feed) != 1 || feed[0].data.Status != schemas.ApprovalDenied || feed[0].data.Token != nil || feed[0].data.Comment != "no" {
		t.Fatalf("feed: %+v", feed)
	}
	_, err = e.svc.Status(t.Context(), e.agent, r.ID)
	wantCode(t, err, schemas.CodeAccessDenied)
	_, err = e.svc.Decide(t.Context(), approve(r.ID))
	if ae := wantCode(t, err, schemas.CodeAlreadyDecided); ae.Msg != "the approval request was already decided: denied" {
		t.Errorf("message %q should name the outcome", ae.Msg)
	}
	if got, want := e.events.auditsFor(r.ID), []string{"requested", "notified", "denied"}; !slices.Equal(got, want) {
		t.Errorf("audit: got %v, want %v", got, want)
	}
	if e.minter.n.Load() != 0 {
		t.Errorf("minted %d tokens on denial", e.minter.n.Load())
	}
}

func TestApprovalDecideRefused(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	tests := []struct {
		name string
		d    approval.Decision
		code schemas.ErrorCode
	}{
		{"another person", approval.Decision{ID: r.ID, User: bob, Approve: true, By: "phone"}, schemas.CodeForbidden},
		{"same subject, other issuer", approval.Decision{ID: r.ID, User: approval.UserRef{Issuer: "https://other.example", Subject: "alice"}, Approve: true, By: "phone"}, schemas.CodeForbidden},
		{"the agent itself", approval.Decision{ID: r.ID, User: alice, Approve: true, By: "shopper"}, schemas.CodeForbidden},
		{"unknown id", approval.Decision{ID: "nope", User: alice, Approve: true, By: "phone"}, schemas.CodeNotFound},
		{"id with key syntax", approval.Decision{ID: r.ID + ".*", User: alice, Approve: true, By: "phone"}, schemas.CodeNotFound},
		{"comment with control characters", approval.Decision{ID: r.ID, User: alice, Approve: true, By: "phone", Comment: "ok\x1b[2J"}, schemas.CodeSchemaViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Decide(t.Context(), tt.d)
			wantCode(t, err, tt.code)
		})
	}
	if st := e.stored(t, r.ID); st.State != schemas.ApprovalPending || st.Token != nil || len(e.events.feedFor(r.ID)) != 0 || e.minter.n.Load() != 0 {
		t.Errorf("refused decisions changed the request: %+v", st)
	}
}

func TestApprovalDecideReplayed(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	var ok, decided atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			_, err := e.svc.Decide(t.Context(), approve(r.ID))
			switch approval.CodeOf(err) {
			case "":
				if err == nil {
					ok.Add(1)
				} else {
					t.Error(err)
				}
			case schemas.CodeAlreadyDecided:
				decided.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || decided.Load() != 99 {
		t.Errorf("100 replays: %d succeeded, %d already_decided; want 1 and 99", ok.Load(), decided.Load())
	}
	if n := len(e.events.feedFor(r.ID)); n != 1 {
		t.Errorf("%d feed events, want 1", n)
	}
}

// TestApprovalDecideRace races approve against deny 1,000 times: each
// request ends in exactly one decision, one decider wins and the other
// gets already_decided, and at most one token is stored or handed out per
// request. (A losing approver may have minted a token before its write
// lost; that token is discarded unseen, so tokens stored and delivered
// are what is counted, not Mint calls.)
func TestApprovalDecideRace(t *testing.T) {
	e := newEnv(t)
	const trials = 1000
	type outcome struct {
		id             string
		approveErr     error
		denyErr        error
		approvedResult approval.Request
	}
	out := make([]outcome, trials)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				r, err := e.svc.Request(t.Context(), e.newRequest(nil))
				if err != nil {
					t.Error(err)
					continue
				}
				o := &out[i]
				o.id = r.ID
				start := make(chan struct{})
				var pair sync.WaitGroup
				pair.Go(func() { <-start; o.approvedResult, o.approveErr = e.svc.Decide(t.Context(), approve(r.ID)) })
				pair.Go(func() { <-start; _, o.denyErr = e.svc.Decide(t.Context(), deny(r.ID)) })
				close(start)
				pair.Wait()
			}
		})
	}
	for i := range trials {
		work <- i
	}
	close(work)
	wg.Wait()
	var approved, denied int
	for _, o := range out {
		if o.id == "" {
			continue
		}
		st := e.stored(t, o.id)
		feed := e.events.feedFor(o.id)
		if len(feed) != 1 {
			t.Fatalf("%s: %d feed events, want 1", o.id, len(feed))
		}
		switch {
		case o.approveErr == nil && approval.CodeOf(o.denyErr) == schemas.CodeAlreadyDecided:
			approved++
			if st.State != schemas.ApprovalApproved || st.Token == nil || feed[0].data.Token == nil ||
				feed[0].data.Token.JTI != st.Token.JTI || o.approvedResult.Token.JTI != st.Token.JTI {
				t.Fatalf("%s: approve won but stored %s / token %v / feed %+v", o.id, st.State, st.Token, feed[0].data)
			}
		case o.denyErr == nil && approval.CodeOf(o.approveErr) == schemas.CodeAlreadyDecided:
			denied++
			if st.State != schemas.ApprovalDenied || st.Token != nil || feed[0].data.Token != nil {
				t.Fatalf("%s: deny won but stored %s with token %v", o.id, st.State, st.Token)
			}
		default:
			t.Fatalf("%s: approve %v, deny %v; want exactly one to win", o.id, o.approveErr, o.denyErr)
		}
	}
	if approved+denied != trials {
		t.Fatalf("%d trials decided, want %d", approved+denied, trials)
	}
	t.Logf("approve won %d, deny won %d; %d tokens minted, %d stored", approved, denied, e.minter.n.Load(), approved)
}

func TestApprovalDecideAfterExpiry(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, func(n *approval.NewRequest) { n.Data.RequestedExpiry = 60 })
	e.clock.Add(60 * time.Second)
	_, err := e.svc.Decide(t.Context(), approve(r.ID))
	wantCode(t, err, schemas.CodeExpiredToken)
	if st := e.stored(t, r.ID); st.State != schemas.ApprovalExpired || st.Token != nil {
		t.Errorf("stored %s with token %v, want expired without", st.State, st.Token)
	}
	_, err = e.svc.Decide(t.Context(), deny(r.ID))
	wantCode(t, err, schemas.CodeAlreadyDecided)
	feed := e.events.feedFor(r.ID)
	if len(feed) != 1 || feed[0].data.Status != schemas.ApprovalExpired {
		t.Errorf("feed: %+v, want one expired event", feed)
	}
	_, err = e.svc.Status(t.Context(), e.agent, r.ID)
	wantCode(t, err, schemas.CodeExpiredToken)
	if e.minter.n.Load() != 0 {
		t.Errorf("minted %d tokens after expiry", e.minter.n.Load())
	}
}

func TestApprovalStatusPolling(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	poll := func(code schemas.ErrorCode, wait time.Duration) {
		t.Helper()
		_, err := e.svc.Status(t.Context(), e.agent, r.ID)
		if ae := wantCode(t, err, code); ae.RetryAfter != wait {
			t.Fatalf("%s: retry after %v, want %v", code, ae.RetryAfter, wait)
		}
	}
	poll(schemas.CodeAuthorizationPending, 5*time.Second)
	e.clock.Add(5 * time.Second)
	poll(schemas.CodeAuthorizationPending, 5*time.Second)
	e.clock.Add(time.Second)
	poll(schemas.CodeSlowDown, 10*time.Second) // too fast: +5 s
	e.clock.Add(6 * time.Second)
	poll(schemas.CodeSlowDown, 15*time.Second) // still faster than the new interval
	e.clock.Add(100 * time.Millisecond)
	poll(schemas.CodeSlowDown, 15*time.Second) // hammering: the stored interval, without a write
	if st := e.stored(t, r.ID); st.Interval != 15 {
		t.Errorf("stored interval %d after a poll within a second, want 15", st.Interval)
	}
	e.clock.Add(15 * time.Second)
	poll(schemas.CodeAuthorizationPending, 15*time.Second) // the raised interval is kept
	if st := e.stored(t, r.ID); st.Interval != 15 || !st.LastPoll.Equal(e.clock.Now()) {
		t.Errorf("stored interval %d, last poll %v", st.Interval, st.LastPoll)
	}
	// Unknown and other agents' ids look the same.
	for name, c := range map[string]struct {
		a  agents.Agent
		id string
	}{"another agent's": {e.other, r.ID}, "unknown": {e.agent, "AAAA"}, "empty": {e.agent, ""}, "wildcard": {e.agent, "*"}} {
		_, err := e.svc.Status(t.Context(), c.a, c.id)
		if ae := wantCode(t, err, schemas.CodeInvalidGrant); ae.Msg != "unknown auth_req_id" {
			t.Errorf("%s: message %q", name, ae.Msg)
		}
	}
	// Expiry reached while polling.
	e.clock.Add(300 * time.Second)
	_, err := e.svc.Status(t.Context(), e.agent, r.ID)
	wantCode(t, err, schemas.CodeExpiredToken)
	if st := e.stored(t, r.ID); st.State != schemas.ApprovalExpired {
		t.Errorf("stored %s, want expired", st.State)
	}
	if feed := e.events.feedFor(r.ID); len(feed) != 1 || feed[0].data.Status != schemas.ApprovalExpired {
		t.Errorf("feed: %+v, want one expired event", feed)
	}
}

// TestApprovalSlowDownHolds: a too-fast poll within a second of the last
// recorded one still raises the interval for good (SECURITY.md: "for this
// and all later polls"); only a burst after a raise is answered without a
// write.
func TestApprovalSlowDownHolds(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	poll := func(code schemas.ErrorCode, wait time.Duration) {
		t.Helper()
		_, err := e.svc.Status(t.Context(), e.agent, r.ID)
		if ae := wantCode(t, err, code); ae.RetryAfter != wait {
			t.Fatalf("%s: retry after %v, want %v", code, ae.RetryAfter, wait)
		}
	}
	poll(schemas.CodeAuthorizationPending, 5*time.Second)
	e.clock.Add(500 * time.Millisecond)
	poll(schemas.CodeSlowDown, 10*time.Second)
	if st := e.stored(t, r.ID); st.Interval != 10 {
		t.Errorf("stored interval %d after slow_down, want 10", st.Interval)
	}
	e.clock.Add(5 * time.Second) // 5.5 s after the first poll, 5 s after the slow_down
	poll(schemas.CodeSlowDown, 15*time.Second)
	// A burst right after a raise: answered with the stored interval,
	// and nothing written.
	_, before, err := e.store.Get(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		e.clock.Add(10 * time.Millisecond)
		poll(schemas.CodeSlowDown, 15*time.Second)
	}
	if st, after, err := e.store.Get(t.Context(), r.ID); err != nil || after != before || st.Interval != 15 {
		t.Errorf("after a burst of polls: revision %d (was %d), interval %d, %v; want unchanged, 15", after, before, st.Interval, err)
	}
	e.clock.Add(15 * time.Second)
	poll(schemas.CodeAuthorizationPending, 15*time.Second)
}

func TestApprovalStatusRedeemedOnce(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	if _, err := e.svc.Decide(t.Context(), approve(r.ID)); err != nil {
		t.Fatal(err)
	}
	var tokens, invalid atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			got, err := e.svc.Status(t.Context(), e.agent, r.ID)
			switch {
			case err == nil && got.Token != nil:
				tokens.Add(1)
			case approval.CodeOf(err) == schemas.CodeInvalidGrant:
				invalid.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if tokens.Load() != 1 || invalid.Load() != 19 {
		t.Errorf("20 concurrent polls: %d tokens, %d invalid_grant; want 1 and 19", tokens.Load(), invalid.Load())
	}
}

// TestApprovalDecideWhilePolling: polls move the revision (last poll,
// interval); a decision racing an agent polling in a tight loop still
// lands.
func TestApprovalDecideWhilePolling(t *testing.T) {
	e := newEnv(t)
	e.svc = e.service(e.store, time.Now)
	for range 30 {
		r := e.mustRequest(t, nil)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for ctx.Err() == nil {
					_, _ = e.svc.Status(ctx, e.agent, r.ID)
				}
			})
		}
		_, err := e.svc.Decide(t.Context(), approve(r.ID))
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("decide while polling: %v", err)
		}
	}
}

func TestApprovalPending(t *testing.T) {
	e := newEnv(t)
	first := e.mustRequest(t, nil)
	e.clock.Add(time.Second)
	second := e.mustRequest(t, nil)
	e.clock.Add(time.Second)
	decided := e.mustRequest(t, nil)
	short := e.mustRequest(t, func(n *approval.NewRequest) { n.Data.RequestedExpiry = 1 })
	e.mustRequest(t, func(n *approval.NewRequest) { n.User = bob })
	if _, err := e.svc.Decide(t.Context(), deny(decided.ID)); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Second) // short has expired, though nothing marked it yet
	got, err := e.svc.Pending(t.Context(), alice)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	if want := []string{first.ID, second.ID}; !slices.Equal(ids, want) {
		t.Errorf("pending: got %v, want %v (short %s, decided %s)", ids, want, short.ID, decided.ID)
	}
	if r, err := e.svc.Get(t.Context(), first.ID); err != nil || r.ID != first.ID {
		t.Errorf("get: %v", err)
	}
	_, err = e.svc.Get(t.Context(), "nope")
	wantCode(t, err, schemas.CodeNotFound)
}

// countingStore is the real store, counting full reads, with a watch
// that delivers each change late (an instance whose watch lags).
type countingStore struct {
	*bus.ApprovalStore
	lists atomic.Int64
	lag   time.Duration
}

func (c *countingStore) Watch(ctx context.Context, fn func(approval.Request, uint64)) error {
	return c.ApprovalStore.Watch(ctx, func(r approval.Request, rev uint64) {
		time.Sleep(c.lag)
		fn(r, rev)
	})
}

func (c *countingStore) List(ctx context.Context) ([]approval.Request, error) {
	c.lists.Add(1)
	return c.ApprovalStore.List(ctx)
}

// TestApprovalPendingFromIndex: while Run watches the store, Pending
// answers from its index without reading every stored request, and
// includes what another instance stored just before the call, even when
// the watch lags; it agrees
// with the full read, and falls back to it once Run has stopped.
func TestApprovalPendingFromIndex(t *testing.T) {
	e := newEnv(t)
	// Its watch lags 50 ms behind the store: an answer from the index
	// before it caught up would miss what was just stored.
	counting := &countingStore{ApprovalStore: mustStore(t, e.url), lag: 50 * time.Millisecond}
	a := e.service(counting, e.clock.Now)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()
	ids := func(rs []approval.Request) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	// Another instance (e.svc, its own connection) stores and decides;
	// a asks right after each write.
	first := e.mustRequest(t, nil)
	got, err := a.Pending(t.Context(), alice)
	if err != nil || !slices.Equal(ids(got), []string{first.ID}) {
		t.Fatalf("pending right after the first request: %v, %v", ids(got), err)
	}
	e.clock.Add(time.Second)
	second := e.mustRequest(t, nil)
	e.mustRequest(t, func(n *approval.NewRequest) { n.User = bob })
	decided := e.mustRequest(t, nil)
	if _, err := e.svc.Decide(t.Context(), deny(decided.ID)); err != nil {
		t.Fatal(err)
	}
	got, err = a.Pending(t.Context(), alice)
	if err != nil || !slices.Equal(ids(got), []string{first.ID, second.ID}) {
		t.Fatalf("pending after more requests and a decision: %v, %v; want %v", ids(got), err, []string{first.ID, second.ID})
	}
	if n := counting.lists.Load(); n != 0 {
		t.Errorf("Pending read every stored request %d times while the index was live", n)
	}
	full, err := e.svc.Pending(t.Context(), alice) // no Run: the full read
	if err != nil || !slices.Equal(ids(full), ids(got)) {
		t.Errorf("the full read gives %v, %v; the index %v", ids(full), err, ids(got))
	}
	if got, _ := a.Pending(t.Context(), bob); len(got) != 1 {
		t.Errorf("bob's pending: %v", ids(got))
	}

	stop()
	got, err = a.Pending(t.Context(), alice)
	if err != nil || !slices.Equal(ids(got), []string{first.ID, second.ID}) {
		t.Errorf("pending after Run stopped: %v, %v", ids(got), err)
	}
	if counting.lists.Load() == 0 {
		t.Error("after Run stopped, Pending did not read the store")
	}
}

// TestApprovalRunExpiresAfterRestart: requests made by an instance that
// then stopped expire by themselves, with nobody polling, once any
// instance runs; with two instances running there is still one outcome
// and one feed event per request.
func TestApprovalRunExpiresAfterRestart(t *testing.T) {
	e := newEnv(t)
	real := &approval.Service{Store: e.store, Events: e.events, Minter: e.minter, Sealer: e.sealer, Agents: e.agents, Types: e.types, Log: quiet}
	// Already past its expiry when the instances start.
	pastDue, err := e.service(e.store, func() time.Time { return time.Now().Add(-time.Hour) }).Request(t.Context(), e.newRequest(func(n *approval.NewRequest) { n.Data.RequestedExpiry = 60 }))
	if err != nil {
		t.Fatal(err)
	}
	// Expires a second from now; the instance that made it stops.
	soon, err := real.Request(t.Context(), e.newRequest(func(n *approval.NewRequest) { n.Data.RequestedExpiry = 1 }))
	if err != nil {
		t.Fatal(err)
	}
	// Decided: must stay decided.
	kept, err := real.Request(t.Context(), e.newRequest(func(n *approval.NewRequest) { n.Data.RequestedExpiry = 1 }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Decide(t.Context(), deny(kept.ID)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 2)
	for range 2 { // two instances, each on its own connection
		st := mustStore(t, e.url)
		svc := &approval.Service{Store: st, Events: e.events, Minter: e.minter, Sealer: e.sealer, Agents: e.agents, Types: e.types, Log: quiet}
		go func() { done <- svc.Run(ctx) }()
	}
	for _, id := range []string{pastDue.ID, soon.ID} {
		deadline := time.Now().Add(10 * time.Second)
		for e.stored(t, id).State != schemas.ApprovalExpired {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not expire by itself", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond) // room for a second outcome, if there were one
	cancel()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}
	for _, id := range []string{pastDue.ID, soon.ID} {
		feed := e.events.feedFor(id)
		if len(feed) != 1 || feed[0].data.Status != schemas.ApprovalExpired {
			t.Errorf("%s: feed %+v, want exactly one expired event", id, feed)
		}
		notes := e.events.notesFor(id)
		if len(notes) != 2 || notes[1].verb != "resolved" || notes[1].data.Status != schemas.ApprovalExpired {
			t.Errorf("%s: notifications %+v, want requested then resolved (expired)", id, notes)
		}
		if got := e.events.auditsFor(id); got[len(got)-1] != "expired" || slices.Index(got, "expired") != len(got)-1 {
			t.Errorf("%s: audit %v, want one expired at the end", id, got)
		}
	}
	if st := e.stored(t, kept.ID); st.State != schemas.ApprovalDenied {
		t.Errorf("decided request: %s, want denied", st.State)
	}
}

// TestApprovalAnnouncedAgain: a decision whose announcement failed (the
// feed was down, or the process stopped right after the decision) is
// announced by Run once the feed works, and recorded as announced.
func TestApprovalAnnouncedAgain(t *testing.T) {
	e := newEnv(t)
	r := e.mustRequest(t, nil)
	e.events.mu.Lock()
	e.events.feedErr = errors.New("feed down")
	e.events.mu.Unlock()
	if _, err := e.svc.Decide(t.Context(), approve(r.ID)); err != nil {
		t.Fatalf("the decision stands whatever the feed: %v", err)
	}
	if got := e.stored(t, r.ID); got.State != schemas.ApprovalApproved || got.Announced {
		t.Fatalf("stored %+v: want approved, not announced", got)
	}
	e.events.mu.Lock()
	e.events.feedErr = nil
	e.events.mu.Unlock()
	// Another instance starts (or this one restarts) a little later.
	e.clock.Add(10 * time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.service(e.store, e.clock.Now).Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(e.events.feedFor(r.ID)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run never announced the decision")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for !e.stored(t, r.ID).Announced {
		if time.Now().After(deadline) {
			t.Fatal("the announcement was not recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if f := e.events.feedFor(r.ID); len(f) != 1 || f[0].data.Status != schemas.ApprovalApproved || f[0].data.Token == nil {
		t.Fatalf("feed: %+v", f)
	}
}
