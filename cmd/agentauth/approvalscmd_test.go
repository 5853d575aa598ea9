package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/internal/testutil"
	"github.com/agentauth/agentauth/schemas"
)

// TestApprovalsTerminalEscapesControls: a detail (and agent, audience,
// scopes) carrying a C1 CSI (U+009B) or a bidi override (U+202E) reaches
// the terminal as [U+XXXX], never as the control itself.
func TestApprovalsTerminalEscapesControls(t *testing.T) {
	n := schemas.ApprovalNotification{
		AuthReqID:            "id",
		Agent:                "shop\u009b2Jper",
		BindingMessage:       "Buy coffee",
		Audience:             "https://shop.example/\u202e",
		Scopes:               []string{"read\u202e", "\u009b31m"},
		ExpiresAt:            time.Now().Add(time.Minute),
		AuthorizationDetails: []json.RawMessage{json.RawMessage("{\"type\":\"order\",\"item\":\"\u009b2J\u202eeeffoc\"}")},
	}
	var b strings.Builder
	printRequest(&b, n, 1)
	got := b.String()
	for i, r := range got {
		if r != '\n' && unicode.In(r, unicode.Cc, unicode.Cf) {
			t.Fatalf("output holds %U at byte %d:\n%q", r, i, got)
		}
	}
	for _, want := range []string{"[U+009B]2J[U+202E]eeffoc", "shop[U+009B]2Jper", "read[U+202E]"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestApprovalsTerminalKeyBoundToShownRequest: "a" pressed twice while
// the first decision is in flight approves the first request only; the
// second key was read before the second request was shown and is
// dropped.
func TestApprovalsTerminalKeyBoundToShownRequest(t *testing.T) {
	m := MustMain(t, testConfig(t))
	agent := approvalAgent(t, m, "shopper")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := devToken(t, m, "alice")
	first, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy coffee", Audience: shop, AuthorizationDetails: coffee})
	if err != nil {
		t.Fatal(err)
	}
	second, err := agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: alice, BindingMessage: "Buy tea", Audience: shop})
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
	if _, err := io.WriteString(keys, "a\na\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, first.AuthReqID); err != nil {
		t.Fatalf("the first request: %v, want approved", err)
	}
	// Keys are handled in order: once q ends the app, the second a has
	// been handled (and a decision it caused has been answered).
	if _, err := io.WriteString(keys, "q\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	show := runCLI(t, "approvals", "show", second.AuthReqID, "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir)
	if !strings.Contains(show, `"state": "pending"`) {
		t.Errorf("the second request, never acted on while shown, is not pending:\n%s", show)
	}
}
