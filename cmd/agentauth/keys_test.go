package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
)

func jwksOf(t *testing.T, m *Main) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(httpGet(t, m.PublicURL()+"/.well-known/jwks.json")), &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Headers[0].KeyID
}

// TestKeysRotate: `agentauth keys rotate` against a running instance: new
// tokens use the new key, and a token signed before still verifies
// against the published JWKS.
func TestKeysRotate(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "bot", agents.Policy{Audiences: []string{"https://api"}})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	user := devToken(t, m, "alice")
	before, err := c.Exchange(context.Background(), user, "https://api")
	if err != nil {
		t.Fatal(err)
	}
	oldKid := kidOf(t, before.AccessToken)

	out := runCLI(t, "keys", "rotate", "--data-dir", m.Config.DataDir)
	if !strings.Contains(out, oldKid+"  retired") || !strings.Contains(out, "current") {
		t.Fatalf("rotate output:\n%s", out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(jwksOf(t, m).Keys) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the running instance did not publish the new key")
		}
		time.Sleep(100 * time.Millisecond)
	}
	after, err := c.Exchange(context.Background(), user, "https://api")
	if err != nil {
		t.Fatal(err)
	}
	if kidOf(t, after.AccessToken) == oldKid {
		t.Error("tokens are still signed with the retired key")
	}
	set := jwksOf(t, m)
	for _, raw := range []string{before.AccessToken, after.AccessToken} {
		tok, _ := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
		var claims jwt.Claims
		if err := tok.Claims(set, &claims); err != nil {
			t.Errorf("token with kid %s does not verify against the JWKS: %v", kidOf(t, raw), err)
		}
	}
}
