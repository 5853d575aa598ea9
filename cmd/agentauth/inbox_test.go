package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
)

// chromiumPath is Debian's chromium, which scripts/install-chromium.sh
// (run by ./test.sh) installs.
const chromiumPath = "/usr/bin/chromium"

// headless is a headless chromium tab whose console is recorded.
type headless struct {
	ctx    context.Context
	mu     sync.Mutex
	output bytes.Buffer // the browser's stdout and stderr
	lines  []string     // console messages and uncaught exceptions
	faults []string     // uncaught exceptions and CSP violations
}

// mustChromium starts chromium for the rest of the test, bounded by
// timeout so that a stuck browser fails the test instead of hanging it.
// The browser closes when the test ends, before MustMain's cleanup, so
// no event stream keeps the HTTP server's shutdown waiting.
func mustChromium(t *testing.T, timeout time.Duration) *headless {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the web inbox test needs Debian's chromium at %s (%v): run ./test.sh, which installs it with scripts/install-chromium.sh", chromiumPath, err)
	}
	h := &headless{}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(&lockedWriter{mu: &h.mu, w: &h.output}),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	h.ctx, _ = chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		if t.Failed() {
			h.mu.Lock()
			t.Logf("browser console:\n%s\nbrowser output:\n%s", strings.Join(h.lines, "\n"), h.output.String())
			h.mu.Unlock()
		}
		acancel()
		cancel()
	})
	if err := chromedp.Do(h.ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	h.record(h.ctx)
	return h
}

// tab opens another tab in the same browser (same cookies: another
// window of the same person).
func (h *headless) tab(t *testing.T) context.Context {
	t.Helper()
	ctx, _ := chromedp.NewContext(h.ctx)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	h.record(ctx)
	return ctx
}

func (h *headless) record(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			h.mu.Lock()
			h.lines = append(h.lines, m.String())
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				h.faults = append(h.faults, m.String())
			}
			h.mu.Unlock()
		}
	}()
}

// checkPages fails the test if a page threw or broke its CSP.
func (h *headless) checkPages(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.faults {
		t.Errorf("page fault: %s", f)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func cdpDo(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func cdpRun[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitLive waits until the inbox page in ctx has its event stream open:
// the server has subscribed to the person's notifications by then.
func waitLive(t *testing.T, ctx context.Context) {
	t.Helper()
	cdpDo(t, ctx, "the inbox's live updates",
		chromedp.Poll[chromedp.Void](`document.getElementById("live").textContent.startsWith("Live:")`, chromedp.WithPollingInterval(20*time.Millisecond)))
}

// card is what an inbox card shows.
type inboxCard struct {
	Binding, Agent, Audience, Scopes, Status, Expires string
	DetailTypes                                       []string
	Fields                                            [][2]string
	Buttons                                           int
}

func readCard(t *testing.T, ctx context.Context, id string) inboxCard {
	t.Helper()
	return cdpRun(t, ctx, "read card "+id, chromedp.Evaluate[inboxCard](`(() => {
		const c = document.getElementById("req-" + `+jsString(id)+`);
		const text = (sel) => { const e = c.querySelector(sel); return e ? e.textContent : ""; };
		return {
			Binding: document.getElementById("binding-" + `+jsString(id)+`).textContent,
			Agent: text(".agent"), Audience: text(".audience"), Scopes: text(".scopes"),
			Status: document.getElementById("status-" + `+jsString(id)+`).textContent,
			Expires: c.querySelector("time").getAttribute("datetime"),
			DetailTypes: Array.from(c.querySelectorAll(".detail h3"), (h) => h.textContent),
			Fields: Array.from(c.querySelectorAll(".detail dt"), (dt) => [dt.textContent, dt.nextElementSibling.textContent]),
			Buttons: c.querySelectorAll("button:not([disabled])").length,
		};
	})()`))
}

// TestApprovalInbox is the web inbox in a real browser: alice logs in in
// chromium and opens her inbox in two tabs; an agent asks for approval of
// a purchase and the card appears live in both, with the binding message
// and the details; she approves in one tab, the other tab shows it
// decided, and the agent's token carries exactly the approved details
// (verified against the published keys); a second request is denied with
// a reason and the agent learns it; agentauth shuts down promptly with
// both inboxes still open.
func TestApprovalInbox(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "shop-bot", agents.Policy{ApprovalAudiences: []string{"https://shop.example"}, ApprovalScopes: []string{"purchase"}})
	agent, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	aliceToken := devToken(t, m, "alice")

	b := mustChromium(t, 60*time.Second)
	ctx := b.ctx
	base := m.PublicURL()

	// Log in inside chromium at the development provider.
	cdpDo(t, ctx, "log in",
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "alice-dev-password"),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("subject")),
	)
	if sub := cdpRun(t, ctx, "whoami", chromedp.Text(chromedp.ID("subject"))); sub != "dev-alice" {
		t.Fatalf("logged in as %q, want dev-alice", sub)
	}

	// The inbox, in this tab and in a second one.
	other := b.tab(t)
	for _, tab := range []context.Context{ctx, other} {
		cdpDo(t, tab, "open the inbox", chromedp.Navigate(base+"/approvals"), chromedp.WaitVisible(chromedp.ID("empty")))
		waitLive(t, tab)
	}
	// Marks this document: if the card came with a reload, it is gone.
	cdpDo(t, ctx, "mark the page", chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))

	details := `{"type":"purchase","item":"coffee","amount":7.5,"currency":"EUR"}`
	start := time.Now()
	ap, err := agent.RequestApproval(ctx, client.ApprovalRequest{
		UserToken: aliceToken, BindingMessage: "Buy 2 coffees for 7.50 EUR", Audience: "https://shop.example", Scopes: []string{"purchase"},
		AuthorizationDetails: []json.RawMessage{json.RawMessage(details)},
	})
	if err != nil {
		t.Fatalf("request approval: %v", err)
	}
	for _, tab := range []context.Context{ctx, other} {
		cdpDo(t, tab, "the card appears live", chromedp.WaitVisible(chromedp.ID("req-"+ap.AuthReqID)))
	}
	t.Logf("the card appeared %v after the request", time.Since(start).Round(time.Millisecond))
	if !cdpRun(t, ctx, "check for a reload", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the page reloaded: the card must appear live")
	}
	c := readCard(t, ctx, ap.AuthReqID)
	want := inboxCard{Binding: "Buy 2 coffees for 7.50 EUR", Agent: "shop-bot", Audience: "https://shop.example", Scopes: "purchase",
		Status: "Waiting for your decision", Expires: c.Expires, DetailTypes: []string{"purchase"},
		Fields: [][2]string{{"amount", "7.5"}, {"currency", "EUR"}, {"item", "coffee"}}, Buttons: 2} // canonical order, as signed
	if g, w := mustJSONString(t, c), mustJSONString(t, want); g != w {
		t.Errorf("card:\ngot  %s\nwant %s", g, w)
	}
	if exp, err := time.Parse(time.RFC3339, c.Expires); err != nil || exp.Before(time.Now()) || exp.After(time.Now().Add(6*time.Minute)) {
		t.Errorf("card expiry %q (%v), want about 5 minutes from now", c.Expires, err)
	}

	// Approve in the first tab; the second shows it decided.
	cdpDo(t, ctx, "approve",
		chromedp.Click(chromedp.ID("approve-"+ap.AuthReqID)),
		chromedp.WaitVisible(chromedp.ID("notice")),
		chromedp.WaitNotPresent(chromedp.ID("req-"+ap.AuthReqID)),
	)
	if n := cdpRun(t, ctx, "notice", chromedp.Text(chromedp.ID("notice"))); !strings.HasPrefix(n, "Approved") {
		t.Errorf("notice after approving: %q", n)
	}
	cdpDo(t, other, "the other tab shows the decision", chromedp.Poll[chromedp.Void](`document.getElementById("status-" + `+jsString(ap.AuthReqID)+`).textContent === "Approved"`))
	if c := readCard(t, other, ap.AuthReqID); c.Buttons != 0 {
		t.Errorf("the decided card in the other tab still has %d enabled buttons", c.Buttons)
	}

	tok, err := agent.WaitForApproval(ctx, ap.AuthReqID)
	if err != nil {
		t.Fatalf("wait for approval: %v", err)
	}
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		jwt.Claims
		Scope                string            `json:"scope"`
		AuthorizationDetails []json.RawMessage `json:"authorization_details"`
	}
	if err := parsed.Claims(jwksOf(t, m), &claims); err != nil {
		t.Fatalf("verify the approved token against the published JWKS: %v", err)
	}
	// Exactly the details asked for and shown (in canonical form: members
	// sorted, as the signer encodes them).
	if len(claims.AuthorizationDetails) != 1 || !equalJSONValue(t, claims.AuthorizationDetails[0], details) {
		t.Errorf("token authorization_details: got %s, want [%s]", claims.AuthorizationDetails, details)
	}
	if claims.Subject != "dev-alice" || claims.Scope != "purchase" || len(claims.Audience) != 1 || claims.Audience[0] != "https://shop.example" {
		t.Errorf("token claims: %+v", claims)
	}
	if len(tok.AuthorizationDetails) != 1 || string(tok.AuthorizationDetails[0]) != string(claims.AuthorizationDetails[0]) {
		t.Errorf("SDK authorization_details: got %s, the token says %s", tok.AuthorizationDetails, claims.AuthorizationDetails)
	}

	// A second request, denied from the page with a reason.
	waitLive(t, ctx) // the page reloaded after the decision
	ap2, err := agent.RequestApproval(ctx, client.ApprovalRequest{
		UserToken: aliceToken, BindingMessage: "Buy 1 tea for 3.20 EUR", Audience: "https://shop.example", Scopes: []string{"purchase"},
		AuthorizationDetails: []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"tea","amount":3.2,"currency":"EUR"}`)},
	})
	if err != nil {
		t.Fatalf("request approval: %v", err)
	}
	cdpDo(t, ctx, "deny",
		chromedp.WaitVisible(chromedp.ID("req-"+ap2.AuthReqID)),
		chromedp.SendKeys(chromedp.ID("comment-"+ap2.AuthReqID), "not today"),
		chromedp.Click(chromedp.ID("deny-"+ap2.AuthReqID)),
		chromedp.WaitVisible(chromedp.ID("notice")),
		chromedp.WaitNotPresent(chromedp.ID("req-"+ap2.AuthReqID)),
	)
	cdpDo(t, other, "the other tab shows the denial", chromedp.Poll[chromedp.Void](`document.getElementById("status-" + `+jsString(ap2.AuthReqID)+`).textContent === "Denied"`))
	_, err = agent.WaitForApproval(ctx, ap2.AuthReqID)
	if !errors.Is(err, client.ErrApprovalDenied) || !strings.Contains(err.Error(), "not today") {
		t.Errorf("wait for the denied request: got %v, want %v with the reason", err, client.ErrApprovalDenied)
	}
	b.checkPages(t)

	// Both tabs still have their inbox open: shutting down must not wait
	// for them.
	start = time.Now()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("close with open inboxes: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
}

// equalJSONValue reports whether a and b are the same JSON value: the same
// members with the same values, numbers compared as written.
func equalJSONValue(t *testing.T, a json.RawMessage, b string) bool {
	t.Helper()
	var va, vb any
	for _, x := range []struct {
		raw []byte
		v   *any
	}{{a, &va}, {[]byte(b), &vb}} {
		dec := json.NewDecoder(bytes.NewReader(x.raw))
		dec.UseNumber()
		if err := dec.Decode(x.v); err != nil {
			t.Fatalf("%s: %v", x.raw, err)
		}
	}
	return reflect.DeepEqual(va, vb)
}

func mustJSONString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
