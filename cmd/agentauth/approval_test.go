package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/internal/testutil"
	"github.com/agentauth/agentauth/schemas"
)

const shop = "https://shop.example"

var coffee = []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"coffee","amount":7.5,"currency":"EUR"}`)}

// approvalAgent registers an agent that may ask for purchases at shop.
func approvalAgent(t *testing.T, m *Main, id string) *client.Client {
	t.Helper()
	creds := MustRegister(t, m, id, agents.Policy{ApprovalAudiences: []string{shop}, ApprovalScopes: []string{"purchase"}, BackgroundAudiences: []string{shop}})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// approvalsClient connects as the development approval app.
func approvalsClient(t *testing.T, m *Main) *client.Client {
	t.Helper()
	creds, err := readCredentials(keyPath(m.Config.DataDir, approvalsApp+".agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	creds.URL = m.NATSURL()
	waitForUser(t, m, creds)
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// verifyApproved verifies an approved token as any API would, against the
// published JWKS, and returns its authorization_details.
func verifyApproved(t *testing.T, m *Main, tok string, agent string) []json.RawMessage {
	t.Helper()
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(httpGet(t, m.PublicURL()+"/.well-known/jwks.json")), &jwks); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		jwt.Claims
		Azp   string `json:"azp"`
		Scope string `json:"scope"`
		Act   struct {
			Sub string `json:"sub"`
		} `json:"act"`
		Details []json.RawMessage `json:"authorization_details"`
	}
	if err := parsed.Claims(jwks, &c); err != nil {
		t.Fatalf("verify against the published JWKS: %v", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: m.PublicURL(), AnyAudience: jwt.Audience{shop}, Time: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	if c.Subject != "dev-alice" || c.Act.Sub != agent || c.Azp != agent || c.Scope != "purchase" || c.ID == "" {
		t.Errorf("claims %+v", c)
	}
	return c.Details
}

func sameJSON(t *testing.T, got, want []json.RawMessage) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	var gv, wv any
	_ = json.Unmarshal(g, &gv)
	_ = json.Unmarshal(w, &wv)
	gb, _ := json.Marshal(gv)
	wb, _ := json.Marshal(wv)
	if string(gb) != string(wb) {
		t.Errorf("authorization_details %s, want exactly %s", gb, wb)
	}
}

// TestApprovalEndToEnd: an agent asks, the person's approval app sees the
// request, approves it with the person's token; the agent receives on its
// feed a token whose authorization_details are exactly what was approved
// and which verifies against the published keys. Polling then follows
// CIBA; denial and expiry reach the agent as clear outcomes; every step
// is in the audit stream.
func TestApprovalEndToEnd(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := approvalAgent(t, m, "shopper")
	app := approvalsClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := devToken(t, m, "alice")

	a, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy 2 coffees for 7.50 EUR", Audience: shop, Scopes: []string{"purchase"}, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.AuthReqID) < 22 || a.Interval != 5*time.Second || time.Until(a.Expires) < 4*time.Minute {
		t.Fatalf("started: %+v", a)
	}
	// Polling: pending, then too fast.
	_, err = agent.ApprovalStatus(ctx, a.AuthReqID)
	var p *client.ApprovalPending
	if !errors.As(err, &p) || p.SlowDown {
		t.Fatalf("first poll: %v", err)
	}
	_, err = agent.ApprovalStatus(ctx, a.AuthReqID)
	if !errors.As(err, &p) || !p.SlowDown || p.Interval != 10*time.Second {
		t.Fatalf("second poll at once: want slow_down with interval 10s, got %v", err)
	}

	waited := make(chan error, 1)
	var got *client.ApprovedToken
	go func() {
		var err error
		got, err = agent.WaitForApproval(ctx, a.AuthReqID)
		waited <- err
	}()
	if _, err := app.Decide(ctx, alice, a.AuthReqID, true, "ok"); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	sameJSON(t, verifyApproved(t, m, got.AccessToken, "shopper"), coffee)
	sameJSON(t, got.AuthorizationDetails, coffee)
	// The token is also handed out once by polling (unless the wait's
	// own poll, after a decision made before it, already did); then the
	// id is spent.
	if tok, err := agent.ApprovalStatus(ctx, a.AuthReqID); err == nil && tok.JTI != got.JTI || err != nil && !errors.Is(err, client.ErrApprovalInvalid) {
		t.Fatalf("poll after approval: %+v %v", tok, err)
	}
	if _, err := agent.ApprovalStatus(ctx, a.AuthReqID); !errors.Is(err, client.ErrApprovalInvalid) {
		t.Fatalf("second redemption: %v", err)
	}

	// Denied.
	d, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy a car", Audience: shop, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Decide(ctx, alice, d.AuthReqID, false, "no"); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, d.AuthReqID); !errors.Is(err, client.ErrApprovalDenied) {
		t.Fatalf("denied: %v", err)
	}
	if _, err := agent.ApprovalStatus(ctx, d.AuthReqID); !errors.Is(err, client.ErrApprovalDenied) {
		t.Fatalf("poll denied: %v", err)
	}

	// Expired: nobody polls, the service expires it and tells the agent.
	e, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy tea", Audience: shop, RequestedExpiry: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, e.AuthReqID); !errors.Is(err, client.ErrApprovalExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := app.Decide(ctx, alice, e.AuthReqID, true, ""); !isCode(err, schemas.CodeExpiredToken) && !isCode(err, schemas.CodeAlreadyDecided) {
		t.Fatalf("decision after expiry: %v", err)
	}

	if err := m.auditor.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	raw := runCLI(t, "replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress", "--subject", "agentauth.audit.approval.>", "--format", "table")
	for _, want := range []string{"requested", "notified", "approved", "token", "denied", "expired", "redeemed"} {
		if !strings.Contains(raw, want) {
			t.Errorf("audit lacks %q:\n%s", want, raw)
		}
	}
	for _, stream := range []string{"audit", "events", "AGENTAUTH_NOTIFY"} {
		if s := runCLI(t, "replay", "--stream", stream, "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress"); strings.Contains(s, got.AccessToken) || strings.Contains(s, alice) {
			t.Errorf("a token appears in the %s stream", stream)
		}
	}
}

func isCode(err error, code schemas.ErrorCode) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == code
}

// TestApprovalBadInput: every bad request and decision the issue lists
// gets its code and creates nothing.
// TestApprovalWaitAfterRestart: a decision whose feed event one process of
// the agent received (and acknowledged) while it waited for something
// else still reaches the agent's next process that waits for it.
func TestApprovalWaitAfterRestart(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "restarter", agents.Policy{ApprovalAudiences: []string{shop}, ApprovalScopes: []string{"purchase"}})
	connect := func() *client.Client {
		c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	app := approvalsClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := devToken(t, m, "alice")

	first := connect()
	var ids []string
	for _, msg := range []string{"Buy coffee", "Buy tea"} {
		a, err := first.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: msg, Audience: shop, Scopes: []string{"purchase"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.AuthReqID)
	}
	wctx, stopWaiting := context.WithCancel(ctx)
	go func() { _, _ = first.WaitForApproval(wctx, ids[0]) }()
	// The first process follows its approvals feed once it waits.
	consumer := agents.ApprovalsConsumer("restarter")
	testutil.WaitUntil(t, "the first process to follow its approvals feed", 10*time.Second, func() bool {
		_, err := m.js.Consumer(ctx, schemas.StreamEvents, consumer)
		return err == nil
	})
	if _, err := app.Decide(ctx, alice, ids[1], true, "ok"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, "the first process to acknowledge the decision", 10*time.Second, func() bool {
		c, err := m.js.Consumer(ctx, schemas.StreamEvents, consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.Delivered.Consumer >= 1 && info.NumAckPending == 0 && info.NumPending == 0
	})
	stopWaiting()
	_ = first.Close()

	second := connect()
	defer second.Close()
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	tok, err := second.WaitForApproval(tctx, ids[1])
	if err != nil {
		t.Fatalf("the next process waiting for the decision: %v", err)
	}
	if tok.AccessToken == "" || tok.Audience != shop {
		t.Fatalf("approved token: %+v", tok)
	}
}

func TestApprovalBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := approvalAgent(t, m, "shopper")
	app := approvalsClient(t, m)
	ctx := context.Background()
	alice, bob := devToken(t, m, "alice"), devToken(t, m, "bob")
	req := func(mod func(*client.ApprovalRequest)) error {
		r := client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop, Scopes: []string{"purchase"}, AuthorizationDetails: coffee}
		mod(&r)
		_, err := agent.RequestApproval(ctx, r)
		return err
	}
	for _, tc := range []struct {
		name string
		mod  func(*client.ApprovalRequest)
		want schemas.ErrorCode
	}{
		{"binding message too long", func(r *client.ApprovalRequest) { r.BindingMessage = strings.Repeat("x", 65) }, schemas.CodeInvalidBindingMessage},
		{"binding message with U+202E", func(r *client.ApprovalRequest) { r.BindingMessage = "Pay \u202Emoc.liame" }, schemas.CodeInvalidBindingMessage},
		{"binding message with a newline", func(r *client.ApprovalRequest) { r.BindingMessage = "Pay\nnow" }, schemas.CodeInvalidBindingMessage},
		{"binding message with a zero-width space", func(r *client.ApprovalRequest) { r.BindingMessage = "Pay\u200Bnow" }, schemas.CodeInvalidBindingMessage},
		{"no binding message", func(r *client.ApprovalRequest) { r.BindingMessage = "" }, schemas.CodeSchemaViolation},
		{"unknown details type", func(r *client.ApprovalRequest) {
			r.AuthorizationDetails = []json.RawMessage{json.RawMessage(`{"type":"wire_transfer","amount":1}`)}
		}, schemas.CodeInvalidAuthorizationDetails},
		{"details failing their schema", func(r *client.ApprovalRequest) {
			r.AuthorizationDetails = []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"coffee","amount":-1,"currency":"euro"}`)}
		}, schemas.CodeInvalidAuthorizationDetails},
		{"expiry too long", func(r *client.ApprovalRequest) { r.RequestedExpiry = 3601 }, schemas.CodeSchemaViolation},
		{"audience outside the policy", func(r *client.ApprovalRequest) { r.Audience = "https://bank.example" }, schemas.CodeDenied},
		{"scope outside the policy", func(r *client.ApprovalRequest) { r.Scopes = []string{"refund"} }, schemas.CodeDenied},
		{"background request for an audience not allowed", func(r *client.ApprovalRequest) {
			r.UserToken, r.LoginHint, r.Audience = "", "dev-alice", "https://bank.example"
		}, schemas.CodeDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := req(tc.mod); !isCode(err, tc.want) {
				t.Fatalf("got %v, want code %s", err, tc.want)
			}
		})
	}
	list := runCLI(t, "approvals", "list", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--json")
	if strings.TrimSpace(list) != "" {
		t.Fatalf("bad requests were stored:\n%s", list)
	}

	a, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}
	// Decisions: another person, the agent itself, a spoofed user field.
	if _, err := app.Decide(ctx, bob, a.AuthReqID, true, ""); !isCode(err, schemas.CodeForbidden) {
		t.Errorf("bob deciding alice's request: %v", err)
	}
	if _, err := agent.Decide(ctx, alice, a.AuthReqID, true, ""); !isCode(err, schemas.CodeForbidden) {
		t.Errorf("the agent deciding with its own credentials: %v", err)
	}
	ev, err := app.NewRequest(schemas.OpApprovalDecide, map[string]any{"user_token": bob, "auth_req_id": a.AuthReqID, "decision": "approve", "subject": "dev-alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Send(ctx, schemas.OpApprovalDecide, ev); !isCode(err, schemas.CodeSchemaViolation) {
		t.Errorf("spoofed user field: %v", err)
	}
	// Replayed 100 times: one decision, 99 already_decided.
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := app.Decide(ctx, alice, a.AuthReqID, true, "")
			k := "ok"
			var ce *client.Error
			if errors.As(err, &ce) {
				k = string(ce.Code)
			} else if err != nil {
				k = err.Error()
			}
			mu.Lock()
			outcomes[k]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if outcomes["ok"] != 1 || outcomes[string(schemas.CodeAlreadyDecided)] != 99 {
		t.Errorf("100 replays: %v, want 1 ok and 99 already_decided", outcomes)
	}
	// Unknown and another agent's ids.
	if _, err := agent.ApprovalStatus(ctx, "nope"); !errors.Is(err, client.ErrApprovalInvalid) {
		t.Errorf("unknown id: %v", err)
	}
	other := approvalAgent(t, m, "other-shopper")
	if _, err := other.ApprovalStatus(ctx, a.AuthReqID); !errors.Is(err, client.ErrApprovalInvalid) {
		t.Errorf("another agent's id: %v", err)
	}
}

// TestApprovalIdempotent: a retried request (same CloudEvent id) returns
// the same auth_req_id and notifies once.
func TestApprovalIdempotent(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := approvalAgent(t, m, "shopper")
	alice := devToken(t, m, "alice")
	ev, err := agent.NewRequest(schemas.OpApprovalRequest, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		reply, err := agent.Send(context.Background(), schemas.OpApprovalRequest, ev)
		if err != nil {
			t.Fatal(err)
		}
		var s schemas.ApprovalStarted
		if err := reply.DataAs(&s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.AuthReqID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("retries got %v, want one auth_req_id", ids)
	}
	if n := streamMsgs(t, m, schemas.StreamNotify); n != 1 {
		t.Errorf("%d notifications for one request", n)
	}
}

// TestApprovalSurvivesRestart: agentauth (and its embedded NATS) stops
// between the request and the decision; the request survives and
// completes, and expiry is still enforced by the service alone.
func TestApprovalSurvivesRestart(t *testing.T) {
	m := MustMain(t, restartableConfig(t))
	creds := MustRegister(t, m, "shopper", agents.Policy{ApprovalAudiences: []string{shop}, ApprovalScopes: []string{"purchase"}})
	alice := devToken(t, m, "alice")
	connect := func(m *Main) *client.Client {
		creds.URL = m.NATSURL()
		waitForUser(t, m, creds)
		c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	agent := connect(m)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop, Scopes: []string{"purchase"}, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}
	short, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy tea", Audience: shop, RequestedExpiry: 3})
	if err != nil {
		t.Fatal(err)
	}
	_ = agent.Close()
	m2 := restart(t, m)
	agent = connect(m2)
	app := approvalsClient(t, m2)
	// The user token was issued by the first run's development provider,
	// whose key persists in the data dir: it still verifies.
	if _, err := app.Decide(ctx, alice, a.AuthReqID, true, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := agent.WaitForApproval(ctx, a.AuthReqID)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, verifyApproved(t, m2, tok.AccessToken, "shopper"), coffee)
	if _, err := agent.WaitForApproval(ctx, short.AuthReqID); !errors.Is(err, client.ErrApprovalExpired) {
		t.Fatalf("the short request after the restart: %v, want expired", err)
	}
}

// TestApprovalsTerminal: `agentauth approvals` shows a request that
// arrived while it was not running, and a new one live; keystrokes
// approve and deny them; the agent gets each outcome.
func TestApprovalsTerminal(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := approvalAgent(t, m, "shopper")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := devToken(t, m, "alice")
	first, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}

	in, keys := io.Pipe()
	out := &testutil.SyncBuffer{}
	root := newRoot(out, io.Discard)
	root.SetIn(in)
	root.SetArgs([]string{"approvals", "--token", alice, "--data-dir", m.Config.DataDir, "--nats-url", m.NATSURL()})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	out.WaitFor(t, `"Buy coffee"`, 20*time.Second)
	if !strings.Contains(out.String(), "shopper") || !strings.Contains(out.String(), `"item":"coffee"`) {
		t.Errorf("the request is not shown with its agent and details:\n%s", out.String())
	}
	if _, err := io.WriteString(keys, "a\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, first.AuthReqID); err != nil {
		t.Fatalf("approved in the terminal: %v", err)
	}

	second, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy tea", Audience: shop})
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, `"Buy tea"`, 20*time.Second)
	if _, err := io.WriteString(keys, "d\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, second.AuthReqID); !errors.Is(err, client.ErrApprovalDenied) {
		t.Fatalf("denied in the terminal: %v", err)
	}
	_, _ = io.WriteString(keys, "q\n")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	list := runCLI(t, "approvals", "list", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir)
	if !strings.Contains(list, "approved") || !strings.Contains(list, "denied") || !strings.Contains(list, "Buy tea") {
		t.Errorf("approvals list:\n%s", list)
	}
	show := runCLI(t, "approvals", "show", first.AuthReqID, "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir)
	if !strings.Contains(show, `"state": "approved"`) || strings.Contains(show, "ciphertext\": \"") {
		t.Errorf("approvals show (no sealed token, its fingerprint only):\n%s", show)
	}
}
