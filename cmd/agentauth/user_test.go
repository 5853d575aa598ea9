package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
	"github.com/agentauth/agentauth/schemas"
)

// devToken logs a development user in through the running instance's
// provider, as `agentauth dev token` does.
func devToken(t *testing.T, m *Main, user string) string {
	t.Helper()
	out := runCLI(t, "dev", "token", user, "--url", m.PublicURL())
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("dev token %s: %q is not a JWT", user, tok)
	}
	return tok
}

// TestWhoAmIAndExchange: a user logs in at the development provider, an
// agent gets whoami and an exchanged token, and a standard JWT library
// verifies that token against the published JWKS.
func TestWhoAmIAndExchange(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "billing-bot", agents.Policy{Audiences: []string{"https://api.example.com"}, Scopes: []string{"orders:read"}})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	info, err := c.SysInfo(ctx)
	if err != nil || !info.Capabilities.User {
		t.Fatalf("sys.info: %+v %v: the user capability must be on with the development provider", info, err)
	}
	alice, bob := devToken(t, m, "alice"), devToken(t, m, "bob")

	me, err := c.WhoAmI(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if me.Subject != "dev-alice" || me.Issuer != devIdPIssuer(m.PublicURL()) || me.Email != "alice@example.com" {
		t.Errorf("whoami alice: %+v", me)
	}
	if other, err := c.WhoAmI(ctx, bob); err != nil || other.Subject != "dev-bob" {
		t.Errorf("whoami bob: %+v %v", other, err)
	}

	tok, err := c.Exchange(ctx, alice, "https://api.example.com", "orders:read")
	if err != nil {
		t.Fatal(err)
	}
	// Verify as any API would: fetch the JWKS over HTTP, ES256 only.
	resp, err := http.Get(m.PublicURL() + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		jwt.Claims
		Azp   string `json:"azp"`
		Scope string `json:"scope"`
		Act   struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := parsed.Claims(jwks, &claims); err != nil {
		t.Fatalf("verify against the published JWKS: %v", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: m.PublicURL(), AnyAudience: jwt.Audience{"https://api.example.com"}, Time: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "dev-alice" || claims.Act.Sub != "billing-bot" || claims.Azp != "billing-bot" || len(claims.Audience) != 1 || claims.Scope != "orders:read" || claims.ID != tok.JTI {
		t.Errorf("claims %+v", claims)
	}
	if exp := claims.Expiry.Time(); time.Until(exp) > 5*time.Minute+time.Second {
		t.Errorf("exp %v is more than 5 minutes away", exp)
	}
	var disc map[string]any
	if err := json.Unmarshal([]byte(httpGet(t, m.PublicURL()+"/.well-known/openid-configuration")), &disc); err != nil || disc["issuer"] != m.PublicURL() {
		t.Errorf("discovery: %v %v", disc, err)
	}

	// The audit stream records the issue by fingerprint, never the token.
	if err := m.auditor.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	raw := runCLI(t, "replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress", "--subject", "agentauth.audit.user.>")
	if strings.Contains(raw, tok.AccessToken) || strings.Contains(raw, alice) {
		t.Fatal("a token appears in the audit stream")
	}
	if !strings.Contains(raw, schemas.TypeAuditTokenIssued) || !strings.Contains(raw, tok.Fingerprint) {
		t.Errorf("no token.issued audit event with the fingerprint:\n%s", raw)
	}
}

// TestUserBadInput: each rejection is a clear error reply.
func TestUserBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "bot", agents.Policy{Audiences: []string{"https://api"}, Scopes: []string{"read"}})
	bound := MustRegister(t, m, "bound-bot", agents.Policy{Audiences: []string{"https://api"}, ClientID: "some-other-client"})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cb, err := client.Connect(context.Background(), client.Options{Credentials: &bound})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	ctx := context.Background()
	alice := devToken(t, m, "alice")
	for _, tc := range []struct {
		name string
		call func() error
		want schemas.ErrorCode
	}{
		{"garbage token", func() error { _, err := c.WhoAmI(ctx, "not-a-jwt"); return err }, schemas.CodeUnauthenticated},
		{"token of dots", func() error { _, err := c.WhoAmI(ctx, strings.Repeat(".", 8000)); return err }, schemas.CodeUnauthenticated},
		{"oversized token", func() error { _, err := c.WhoAmI(ctx, strings.Repeat("a", 9000)); return err }, schemas.CodeSchemaViolation},
		{"empty token", func() error { _, err := c.WhoAmI(ctx, ""); return err }, schemas.CodeSchemaViolation},
		{"tampered token", func() error { _, err := c.WhoAmI(ctx, alice[:len(alice)-4]+"AAAA"); return err }, schemas.CodeUnauthenticated},
		{"audience outside policy", func() error { _, err := c.Exchange(ctx, alice, "https://other"); return err }, schemas.CodeForbidden},
		{"scope outside policy", func() error { _, err := c.Exchange(ctx, alice, "https://api", "write"); return err }, schemas.CodeForbidden},
		{"token not issued to the agent's client", func() error { _, err := cb.WhoAmI(ctx, alice); return err }, schemas.CodeUnauthenticated},
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
}

func TestDevTokenCommand(t *testing.T) {
	m := MustMain(t, testConfig(t))
	root := newRoot(io.Discard, io.Discard)
	root.SetArgs([]string{"dev", "token", "alice", "--password", "wrong", "--url", m.PublicURL()})
	if err := root.Execute(); err == nil || !errors.Is(err, devidp.ErrLoginFailed) {
		t.Errorf("wrong password: %v", err)
	}
	id := strings.TrimSpace(runCLI(t, "dev", "token", "bob", "--id-token", "--url", m.PublicURL()))
	if strings.Count(id, ".") != 2 {
		t.Errorf("id token %q", id)
	}
}

func TestDevIdPRefusesNonLoopback(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPListen = "0.0.0.0:0"
	m := NewMain(cfg, MustMain(t, testConfig(t)).Log)
	err := m.Run(context.Background())
	_ = m.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--dev-idp-force") {
		t.Errorf("got %v, want a refusal naming --dev-idp-force", err)
	}
}

// TestDevIdPRefusesPublicURL: behind a reverse proxy the edge listens on
// loopback but is published at --public-url; the development provider
// (published passwords) is refused there too, unless forced.
func TestDevIdPRefusesPublicURL(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name, publicURL, devIdP string
		force, wantErr          bool
	}{
		{name: "auto, public", publicURL: "https://auth.example.com", devIdP: "auto", wantErr: true},
		{name: "on, public address", publicURL: "http://192.0.2.10:8080/", devIdP: "on", wantErr: true},
		{name: "forced", publicURL: "https://auth.example.com", devIdP: "auto", force: true},
		{name: "localhost", publicURL: "http://localhost:8080", devIdP: "auto"},
		{name: "loopback address", publicURL: "http://[::1]:8080", devIdP: "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.PublicURL, cfg.DevIdP, cfg.DevIdPForce = tc.publicURL, tc.devIdP, tc.force
			m := NewMain(cfg, log)
			err := m.Run(context.Background())
			if cerr := m.Close(context.Background()); cerr != nil && err == nil {
				t.Errorf("close: %v", cerr)
			}
			if !tc.wantErr {
				if err != nil {
					t.Errorf("run: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "--dev-idp-force") || !strings.Contains(err.Error(), "--oidc-issuers") {
				t.Errorf("got %v, want a refusal naming --dev-idp-force and --oidc-issuers", err)
			}
		})
	}
}

// TestAccessTokenTypRequired: with --oidc-access-token-typ at+jwt, a
// token of an --oidc-issuers issuer that is not typ at+jwt (an ID token
// with our audience, or an access token of an issuer that does not mark
// them) is refused where an access token is expected, and an at+jwt
// access token still passes; without it, nothing changes. The issuers
// are another agentauth: its development provider (typ JWT on both kinds
// of token) and its own token endpoint (typ at+jwt).
func TestAccessTokenTypRequired(t *testing.T) {
	ext := MustMain(t, testConfig(t))
	ctx := context.Background()
	idToken := strings.TrimSpace(runCLI(t, "dev", "token", "alice", "--id-token", "--url", ext.PublicURL()))
	access := devToken(t, ext, "alice")
	creds := MustRegister(t, ext, "minting-bot", agents.Policy{Audiences: []string{"agentauth"}})
	minter, err := client.Connect(ctx, client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	defer minter.Close()
	typed, err := minter.Exchange(ctx, access, "agentauth")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, token, typ string }{
		{"ID token", idToken, "JWT"},
		{"development access token", access, "JWT"},
		{"exchanged token", typed.AccessToken, "at+jwt"},
	} {
		if got := joseHeader(t, tt.token)["typ"]; got != tt.typ {
			t.Fatalf("%s: typ %v, want %s", tt.name, got, tt.typ)
		}
	}

	for _, tc := range []struct {
		typ                  string
		idToken, accessToken bool // accepted?
	}{
		{typ: "", idToken: true, accessToken: true},
		{typ: "at+jwt", idToken: false, accessToken: false},
	} {
		t.Run("typ="+tc.typ, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.DevIdP = "off"
			cfg.OIDCIssuers = devIdPIssuer(ext.PublicURL()) + "," + ext.PublicURL()
			cfg.OIDCAccessTokenTyp = tc.typ
			m := MustMain(t, cfg)
			c := MustAgent(t, m, "bot")
			for _, tt := range []struct {
				name   string
				token  string
				accept bool
			}{
				{"ID token", idToken, tc.idToken},
				{"typ JWT access token", access, tc.accessToken},
				{"at+jwt access token", typed.AccessToken, true},
			} {
				me, err := c.WhoAmI(ctx, tt.token)
				if tt.accept {
					if err != nil || me.Subject != "dev-alice" {
						t.Errorf("%s: got %+v, %v; want dev-alice", tt.name, me, err)
					}
					continue
				}
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Code != schemas.CodeUnauthenticated || !strings.Contains(ce.Message, "marks access tokens with typ at+jwt") {
					t.Errorf("%s: got %+v, %v; want code %s, wrong token type", tt.name, me, err, schemas.CodeUnauthenticated)
				}
			}
		})
	}
}

// joseHeader decodes the JOSE header of a compact JWS.
func joseHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}
