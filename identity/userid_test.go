package identity_test

import (
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/identity"
)

func TestUserID(t *testing.T) {
	const deflt = "https://idp.example"
	tests := []struct {
		name, issuer, subject, want string
	}{
		{"default issuer: the bare subject", deflt, "alice", "alice"},
		{"default issuer, subject with '|'", deflt, "auth0|5f7c", "auth0|5f7c"},
		{"another issuer: host", "https://login.example.com", "00u1abc", "login.example.com|00u1abc"},
		{"host and path", "https://login.example.com/tenant/v2.0", "00u1abc", "login.example.com/tenant/v2.0|00u1abc"},
		{"trailing slash is another issuer", "https://login.example.com/", "00u1abc", "login.example.com/|00u1abc"},
		{"port", "http://127.0.0.1:8080/idp", "alice", "127.0.0.1%3A8080/idp|alice"},
		{"'|', '#', '%' and spaces in the issuer", "https://x.example/a|b#c%d e", "s", "x.example/a%7Cb%23c%25d%20e|s"},
		{"the default issuer with another scheme", "http://idp.example", "alice", "idp.example|alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := identity.UserID(deflt, tt.issuer, tt.subject); got != tt.want {
				t.Errorf("UserID(%q, %q) = %q, want %q", tt.issuer, tt.subject, got, tt.want)
			}
		})
	}
	if got := identity.UserID("", deflt, "alice"); got != "idp.example|alice" {
		t.Errorf("without a default issuer: %q, want the qualified id", got)
	}
}

// TestUserIDPerIssuer: two trusted issuers issue the same subject to two
// people. Verify tells them apart (the first issuer's user keeps the bare
// subject), and so do the tokens minted for them: sub and user_iss.
func TestUserIDPerIssuer(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now()
	k, err := identity.NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	m, err := identity.NewMinter("https://agentauth.example", []identity.SigningKey{k}, e.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	bot := agents.Agent{ID: "bot", Policy: agents.Policy{Audiences: []string{"https://api"}}}
	tests := []struct {
		name   string
		issuer string
		key    signingKey
		want   string
	}{
		{"default (first) issuer", e.a.Issuer, e.aES256, "user-1"},
		{"second issuer", e.b.Issuer, e.bRSA, qualified(t, e.b.Issuer, "user-1")},
		{"third issuer, with a path", e.t.Issuer, e.tEC, qualified(t, e.t.Issuer, "user-1")},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := claimsFor(tt.issuer, now, "sub", "user-1")
			u, err := e.v.Verify(t.Context(), MustSign(t, tt.key, claims, hdr("typ", "at+jwt")), identity.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if u.Subject != "user-1" || u.Issuer != tt.issuer || u.ID != tt.want {
				t.Fatalf("user: subject %q, issuer %q, id %q; want user-1, %q, %q", u.Subject, u.Issuer, u.ID, tt.issuer, tt.want)
			}
			if other, dup := seen[u.ID]; dup {
				t.Fatalf("id %q names users of %s and %s", u.ID, other, tt.issuer)
			}
			seen[u.ID] = tt.issuer
			g, err := identity.AuthorizeExchange(u, bot, identity.ExchangeRequest{Audience: "https://api"})
			if err != nil {
				t.Fatal(err)
			}
			minted, err := m.Mint(g)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.ParseSigned(minted.Token, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var c jwt.Claims
			var extra struct {
				UserIssuer *string `json:"user_iss"`
			}
			if err := tok.Claims(m.JWKS(), &c, &extra); err != nil {
				t.Fatal(err)
			}
			if c.Subject != tt.want || extra.UserIssuer == nil || *extra.UserIssuer != tt.issuer {
				t.Errorf("minted sub %q, user_iss %v; want %q, %q", c.Subject, extra.UserIssuer, tt.want, tt.issuer)
			}
		})
	}
}

// qualified is the id of subject at a fake issuer (http://127.0.0.1:port…):
// "127.0.0.1%3Aport…|subject".
func qualified(t *testing.T, issuer, subject string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(issuer, "http://127.0.0.1:")
	if !ok {
		t.Fatalf("fake issuer %q is not on 127.0.0.1", issuer)
	}
	return "127.0.0.1%3A" + rest + "|" + subject
}
