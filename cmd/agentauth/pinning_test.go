package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
)

// TestForgedApprovalRefused: an agent's xkey is public, so whoever can
// publish to its feed can seal a token to it. The credentials `agent add`
// writes pin agentauth's sealing key, and the SDK refuses a forged
// "approved" decision sealed with another key instead of returning it.
func TestForgedApprovalRefused(t *testing.T) {
	m := MustMain(t, testConfig(t))
	out := t.TempDir()
	runCLI(t, "agent", "add", "shopper", "--out", out, "--approval-audience", shop, "--approval-scope", "purchase",
		"--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir)
	path := filepath.Join(out, "shopper.agent.json")
	if got, want := mustCreds(t, path).ServiceXKey, m.sealer.PublicKey(); got != want {
		t.Fatalf("credentials written by agent add pin %q, want the instance's sealing key %q", got, want)
	}
	c, err := client.Connect(context.Background(), client.Options{CredsFile: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, _, err := m.Agents().Get(context.Background(), "shopper")
	if err != nil {
		t.Fatal(err)
	}

	kp, _ := nkeys.CreateCurveKeys()
	seed, _ := kp.Seed()
	forger, err := agents.NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	publishDecision(t, m, forger, a, "forged-req", "forged-token")
	publishDecision(t, m, m.sealer, a, "genuine-req", "genuine-token")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.WaitForApproval(ctx, "forged-req")
	if !errors.Is(err, agents.ErrUnknownSender) {
		t.Fatalf("forged decision: got token %+v, %v, want ErrUnknownSender", tok, err)
	}
	if !strings.Contains(err.Error(), "not this agentauth instance's") {
		t.Errorf("error %q does not say the sealing key is not agentauth's", err)
	}
	tok, err = c.WaitForApproval(ctx, "genuine-req")
	if err != nil || tok.AccessToken != "genuine-token" {
		t.Fatalf("decision sealed by agentauth: got %+v, %v, want genuine-token", tok, err)
	}
}

// publishDecision publishes, as the operator, an approval decided on
// agent a's feed, its token sealed by s.
func publishDecision(t *testing.T, m *Main, s *agents.Sealer, a agents.Agent, id, token string) {
	t.Helper()
	sealed, err := s.Seal(a, []byte(token))
	if err != nil {
		t.Fatal(err)
	}
	d := schemas.ApprovalDecided{AuthReqID: id, Status: schemas.ApprovalApproved, Token: &schemas.ApprovalToken{
		TokenType: "Bearer", ExpiresIn: 300, ExpiresAt: time.Now().Add(5 * time.Minute), Audience: shop, Scopes: []string{"purchase"}, SealedToken: sealed}}
	e, err := bus.NewEvent(schemas.TypeApprovalDecided, d)
	if err != nil {
		t.Fatal(err)
	}
	js, err := bus.JetStream(MustConn(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewPublisher(js, nil).Publish(context.Background(), agents.ApprovalsFilter(a.ID), e); err != nil {
		t.Fatalf("publish decision %s: %v", id, err)
	}
}

// TestCredentialsPinSealingKey: the credentials files the instance keeps
// pin its sealing key, also files written before the key was pinned (they
// are rewritten at start); `agent add` pins --service-xkey, and warns when
// it has no key to pin.
func TestCredentialsPinSealingKey(t *testing.T) {
	m := MustMain(t, restartableConfig(t))
	want := m.sealer.PublicKey()
	files := []string{"demo", approvalsApp, ingestPrincipal}
	for _, id := range files {
		if got := mustCreds(t, keyPath(m.Config.DataDir, id+".agent.json")).ServiceXKey; got != want {
			t.Errorf("%s's credentials pin %q, want %q", id, got, want)
		}
	}
	// Files from before: no service_xkey.
	var seeds []string
	for _, id := range files {
		path := keyPath(m.Config.DataDir, id+".agent.json")
		c := mustCreds(t, path)
		seeds = append(seeds, c.XKeySeed)
		c.ServiceXKey = ""
		if err := replaceCredentials(path, c); err != nil {
			t.Fatal(err)
		}
	}
	m = restart(t, m)
	for i, id := range files {
		c := mustCreds(t, keyPath(m.Config.DataDir, id+".agent.json"))
		if c.ServiceXKey != want || c.XKeySeed != seeds[i] {
			t.Errorf("%s's credentials after restart: pin %q, want %q; same seed %v", id, c.ServiceXKey, want, c.XKeySeed == seeds[i])
		}
	}

	kp, _ := nkeys.CreateCurveKeys()
	other, _ := kp.PublicKey()
	out := t.TempDir()
	base := []string{"--nats-url", m.NATSURL(), "--out", out}
	runCLI(t, append([]string{"agent", "add", "flagged", "--service-xkey", other, "--data-dir", m.Config.DataDir}, base...)...)
	if got := mustCreds(t, filepath.Join(out, "flagged.agent.json")).ServiceXKey; got != other {
		t.Errorf("--service-xkey: credentials pin %q, want %q", got, other)
	}
	got := runCLI(t, append([]string{"agent", "add", "unpinned", "--data-dir", t.TempDir(), "--nats-nkey", keyPath(m.Config.DataDir, adminKeyFile)}, base...)...)
	if !strings.Contains(got, "WARNING") || mustCreds(t, filepath.Join(out, "unpinned.agent.json")).ServiceXKey != "" {
		t.Errorf("agent add without a sealing key to pin: want a warning and no service_xkey:\n%s", got)
	}
	root := newRoot(io.Discard, io.Discard)
	root.SetArgs(append([]string{"agent", "add", "bad-key", "--service-xkey", "UNOTACURVEKEY", "--data-dir", m.Config.DataDir}, base...))
	if err := root.Execute(); err == nil {
		t.Error("agent add accepted a --service-xkey that is not an X25519 public key")
	}
}
