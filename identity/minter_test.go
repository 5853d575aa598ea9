package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/schemas"
)

type mintedClaims struct {
	jwt.Claims
	UserIssuer string `json:"user_iss"`
	Scope      string `json:"scope"`
	Azp        string `json:"azp"`
	Act        struct {
		Sub string `json:"sub"`
	} `json:"act"`
}

// verifyMinted checks a minted token the way any API would: the JWKS,
// ES256 only, and the standard claims.
func verifyMinted(t *testing.T, m *Minter, raw string, now time.Time) mintedClaims {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if typ, _ := tok.Headers[0].ExtraHeaders["typ"].(string); typ != "at+jwt" {
		t.Errorf("typ %q, want at+jwt", typ)
	}
	jwks := m.JWKS()
	keys := jwks.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s not in the JWKS", tok.Headers[0].KeyID)
	}
	var c mintedClaims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: m.Issuer(), AnyAudience: jwt.Audience{c.Audience[0]}, Time: now}, 0); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMint(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	k, err := NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMinter("https://agentauth.example", []SigningKey{k}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Mint(Grant{Subject: "alice", Issuer: "https://idp.example", Actor: "billing-bot", Audience: "https://api", Scopes: []string{"orders:read", "orders:write"}, NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c := verifyMinted(t, m, got.Token, now)
	if c.Subject != "alice" || c.UserIssuer != "https://idp.example" || c.Act.Sub != "billing-bot" || c.Azp != "billing-bot" || len(c.Audience) != 1 || c.Audience[0] != "https://api" {
		t.Errorf("claims %+v", c)
	}
	if c.Scope != "orders:read orders:write" || c.ID != got.JTI || got.JTI == "" {
		t.Errorf("scope %q jti %q/%q", c.Scope, c.ID, got.JTI)
	}
	if !c.Expiry.Time().Equal(now.Add(MaxTTL)) || !got.Expiry.Equal(now.Add(MaxTTL)) {
		t.Errorf("exp %v, want now+%v", c.Expiry.Time(), MaxTTL)
	}
	if got.Fingerprint != schemas.Fingerprint(got.Token) || strings.Contains(got.Fingerprint, got.Token[10:30]) {
		t.Errorf("fingerprint %q", got.Fingerprint)
	}
	// Never outlives the user's token, never more than MaxTTL, unique jti.
	short, _ := m.Mint(Grant{Subject: "alice", Issuer: "i", Actor: "a", Audience: "x", NotAfter: now.Add(time.Minute), TTL: time.Hour})
	if !short.Expiry.Equal(now.Add(time.Minute)) {
		t.Errorf("exp %v, want the user's token's", short.Expiry)
	}
	if short.JTI == got.JTI {
		t.Error("jti repeated")
	}
	if _, err := m.Mint(Grant{Subject: "alice", Issuer: "i", Actor: "a", Audience: "x", NotAfter: now.Add(-time.Second)}); err == nil {
		t.Error("minted for an expired user token")
	}
	for _, g := range []Grant{{Issuer: "i", Actor: "a", Audience: "x"}, {Subject: "s", Actor: "a", Audience: "x"}, {Subject: "s", Issuer: "i", Audience: "x"}, {Subject: "s", Issuer: "i", Actor: "a"}} {
		if _, err := m.Mint(g); err == nil {
			t.Errorf("Mint(%+v): want an error", g)
		}
	}
}

func TestRotate(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	k1, _ := NewSigningKey(now)
	m1, _ := NewMinter("iss", []SigningKey{k1}, func() time.Time { return now })
	old, _ := m1.Mint(Grant{Subject: "s", Issuer: "i", Actor: "a", Audience: "x"})

	keys, err := Rotate([]SigningKey{k1}, now.Add(time.Minute), MaxTTL)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := NewMinter("iss", keys, func() time.Time { return now.Add(time.Minute) })
	if err != nil {
		t.Fatal(err)
	}
	if m2.KeyID() == k1.KID || len(m2.JWKS().Keys) != 2 {
		t.Fatalf("after rotation: kid %s, %d published keys", m2.KeyID(), len(m2.JWKS().Keys))
	}
	// A token signed before the rotation still verifies against the new JWKS.
	verifyMinted(t, m2, old.Token, now.Add(time.Minute))
	fresh, _ := m2.Mint(Grant{Subject: "s", Issuer: "i", Actor: "a", Audience: "x"})
	if tok, _ := jwt.ParseSigned(fresh.Token, []jose.SignatureAlgorithm{jose.ES256}); tok.Headers[0].KeyID != m2.KeyID() {
		t.Error("new tokens are not signed with the new key")
	}
	// Much later, a second rotation drops the first key.
	keys, _ = Rotate(keys, now.Add(time.Hour), MaxTTL)
	for _, k := range keys {
		if k.KID == k1.KID {
			t.Error("a key retired an hour ago is still published")
		}
	}
	if _, err := NewMinter("iss", nil, nil); err == nil {
		t.Error("NewMinter without keys")
	}
	two := []SigningKey{k1, k1}
	if _, err := NewMinter("iss", two, nil); err == nil {
		t.Error("NewMinter with two current keys")
	}
}

func TestAuthorizeExchange(t *testing.T) {
	u := &User{Subject: "00u1abc", Issuer: "https://login.example.com", ID: "login.example.com|00u1abc", Expiry: time.Now().Add(time.Hour)}
	a := agents.Agent{ID: "bot", Policy: agents.Policy{Audiences: []string{"https://api"}, Scopes: []string{"read"}}}
	g, err := AuthorizeExchange(u, a, ExchangeRequest{Audience: "https://api", Scopes: []string{"read"}})
	if err != nil || g.Subject != u.ID || g.Issuer != u.Issuer || g.Actor != "bot" || !g.NotAfter.Equal(u.Expiry) {
		t.Fatalf("%+v %v", g, err)
	}
	for name, r := range map[string]ExchangeRequest{
		"audience outside policy": {Audience: "https://other"},
		"scope outside policy":    {Audience: "https://api", Scopes: []string{"read", "write"}},
	} {
		_, err := AuthorizeExchange(u, a, r)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.ErrorCode() != schemas.CodeForbidden {
			t.Errorf("%s: got %v, want a forbidden PolicyError", name, err)
		}
	}
}
