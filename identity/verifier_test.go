package identity_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// env is three issuers and a Verifier trusting them:
//   - a: discovery, path /tenant/Main (so case matters), five key types;
//   - b: explicit JWKS URL, RS256 only;
//   - t: distinguishes token types (typ at+jwt on access tokens).
//
// It also runs an attacker's key server for jku/x5u headers.
type env struct {
	clk                            *clock
	a, b, t                        *fakeIssuer
	aRSA, aPS, aES256, aES384, aEd signingKey
	bRSA, tEC                      signingKey
	attackerRSA, attackerEC        signingKey
	attackerJWKS                   string
	attackerHits                   atomic.Int64
	v                              *identity.Verifier
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{clk: newClock()}
	e.aRSA = MustKey(t, "a-rsa", jose.RS256)
	e.aPS = MustKey(t, "a-ps", jose.PS256)
	e.aES256 = MustKey(t, "a-es256", jose.ES256)
	e.aES384 = MustKey(t, "a-es384", jose.ES384)
	e.aEd = MustKey(t, "a-ed", jose.EdDSA)
	e.bRSA = MustKey(t, "b-rsa", jose.RS256)
	e.tEC = MustKey(t, "t-ec", jose.ES256)
	e.attackerRSA = MustKey(t, "attacker", jose.RS256)
	e.attackerEC = MustKey(t, "attacker-ec", jose.ES256)

	e.a = MustFakeIssuer(t, "/tenant/Main", e.aRSA, e.aPS, e.aES256, e.aES384, e.aEd)
	e.b = MustFakeIssuer(t, "", e.bRSA)
	e.t = MustFakeIssuer(t, "/t", e.tEC)

	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.attackerHits.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{e.attackerRSA.public(), e.attackerEC.public()}})
	}))
	t.Cleanup(attacker.Close)
	e.attackerJWKS = attacker.URL + "/jwks.json"

	e.v = MustVerifier(t, e.clk,
		identity.IssuerConfig{Issuer: e.a.Issuer, Audience: audience},
		identity.IssuerConfig{Issuer: e.b.Issuer, Audience: audience, JWKSURL: e.b.JWKS, Algorithms: []string{"RS256"}},
		identity.IssuerConfig{Issuer: e.t.Issuer, Audience: audience, DistinguishesTokenTypes: true},
	)
	return e
}

func hdr(kv ...any) signOpts {
	o := signOpts{header: map[jose.HeaderKey]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		o.header[jose.HeaderKey(kv[i].(string))] = kv[i+1]
	}
	return o
}

// hs256 signs claims with HS256 using secret.
func hs256(t *testing.T, kid string, secret []byte, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := json.Marshal(claims)
	jws, err := signer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerify(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now()
	rsaPub := e.aRSA.public().Key
	der, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkBytes, _ := json.Marshal(e.aRSA.public())

	type tc struct {
		name   string
		token  func(t *testing.T) string
		opts   identity.VerifyOptions
		reason string            // "" means accepted
		code   schemas.ErrorCode // default CodeUnauthenticated
		msg    string            // substring of PublicMessage
		check  func(t *testing.T, u *identity.User)
		hits   func() int64 // must not change during the case
	}
	a := func(k signingKey, o signOpts, kv ...any) func(*testing.T) string {
		return func(t *testing.T) string { return MustSign(t, k, e.a.Claims(now, kv...), o) }
	}
	tt := func(k signingKey, o signOpts, kv ...any) func(*testing.T) string {
		return func(t *testing.T) string { return MustSign(t, k, e.t.Claims(now, kv...), o) }
	}
	fixed := func(s string) func(*testing.T) string { return func(*testing.T) string { return s } }
	id := identity.VerifyOptions{Kind: identity.IDToken}
	at := identity.VerifyOptions{Kind: identity.AccessToken}

	cases := []tc{
		// Accepted tokens, one per algorithm and issuer style.
		{name: "RS256 accepted", token: a(e.aRSA, signOpts{}), check: func(t *testing.T, u *identity.User) {
			if u.Subject != "user-1" || u.Issuer != e.a.Issuer {
				t.Errorf("got %q from %q, want user-1 from %q", u.Subject, u.Issuer, e.a.Issuer)
			}
			if got, want := u.Expiry, now.Add(5*time.Minute); !got.Equal(want) {
				t.Errorf("Expiry = %v, want %v", got, want)
			}
			if !u.IssuedAt.Equal(now) {
				t.Errorf("IssuedAt = %v, want %v", u.IssuedAt, now)
			}
			if !slices.Equal(u.Audience, []string{audience}) {
				t.Errorf("Audience = %q", u.Audience)
			}
		}},
		{name: "PS256 accepted", token: a(e.aPS, signOpts{})},
		{name: "ES256 accepted", token: a(e.aES256, signOpts{})},
		{name: "ES384 accepted", token: a(e.aES384, signOpts{})},
		{name: "EdDSA accepted", token: a(e.aEd, signOpts{})},
		{name: "issuer with explicit JWKS URL accepted", token: func(t *testing.T) string {
			return MustSign(t, e.bRSA, e.b.Claims(now), signOpts{})
		}},
		{name: "token without kid verified by the issuer's compatible key", token: a(e.aES256, signOpts{noKid: true})},
		{name: "profile claims", token: a(e.aRSA, signOpts{}, "email", "u@example.com", "email_verified", true, "name", "U Ser"),
			check: func(t *testing.T, u *identity.User) {
				if u.Email != "u@example.com" || !u.EmailVerified || u.Name != "U Ser" {
					t.Errorf("got %+v", u)
				}
			}},
		{name: "email_verified as string", token: a(e.aRSA, signOpts{}, "email_verified", "true"),
			check: func(t *testing.T, u *identity.User) {
				if !u.EmailVerified {
					t.Error("EmailVerified = false, want true")
				}
			}},

		// Algorithms come from configuration.
		{name: "alg none rejected", reason: identity.ReasonAlgorithm, token: fixed(unsigned(
			map[string]any{"alg": "none", "kid": "a-rsa"}, e.a.Claims(now), nil))},
		{name: "alg none with a signature rejected", reason: identity.ReasonAlgorithm, token: fixed(unsigned(
			map[string]any{"alg": "none"}, e.a.Claims(now), []byte("sig"))), msg: `"none" is not accepted`},
		{name: "HS256 with the RSA public key PEM as secret rejected", reason: identity.ReasonAlgorithm,
			token: func(t *testing.T) string { return hs256(t, "a-rsa", pemBytes, e.a.Claims(now)) }},
		{name: "HS256 with the RSA public key DER as secret rejected", reason: identity.ReasonAlgorithm,
			token: func(t *testing.T) string { return hs256(t, "a-rsa", der, e.a.Claims(now)) }},
		{name: "HS256 with the public JWK as secret rejected", reason: identity.ReasonAlgorithm,
			token: func(t *testing.T) string { return hs256(t, "a-rsa", jwkBytes, e.a.Claims(now)) }},
		{name: "algorithm allowed for another issuer only rejected", reason: identity.ReasonAlgorithm, msg: "allowed: RS256",
			token: func(t *testing.T) string {
				k := e.bRSA
				k.alg = jose.PS256
				return MustSign(t, k, e.b.Claims(now), signOpts{})
			}},
		{name: "kid of an RSA key with an ES256 signature rejected", reason: identity.ReasonKeyMismatch,
			token: func(t *testing.T) string {
				k := e.attackerEC
				k.kid = "a-rsa"
				return MustSign(t, k, e.a.Claims(now), signOpts{})
			}},

		// Keys only from the JWKS of the token's issuer.
		{name: "kid of another configured issuer rejected", reason: identity.ReasonUnknownKey, hits: e.b.JWKSHits.Load,
			token: func(t *testing.T) string { return MustSign(t, e.bRSA, e.a.Claims(now), signOpts{}) }},
		{name: "jku header ignored and never fetched", reason: identity.ReasonUnknownKey, hits: e.attackerHits.Load,
			token: func(t *testing.T) string {
				return MustSign(t, e.attackerRSA, e.a.Claims(now), hdr("jku", e.attackerJWKS))
			}},
		{name: "x5u header ignored and never fetched", reason: identity.ReasonUnknownKey, hits: e.attackerHits.Load,
			token: func(t *testing.T) string {
				return MustSign(t, e.attackerRSA, e.a.Claims(now), hdr("x5u", e.attackerJWKS+"/cert.pem"))
			}},
		{name: "jku header on a genuine token ignored", hits: e.attackerHits.Load,
			token: a(e.aRSA, hdr("jku", e.attackerJWKS, "x5u", e.attackerJWKS))},
		{name: "embedded jwk with the issuer's kid rejected", reason: identity.ReasonSignature,
			token: func(t *testing.T) string {
				k := e.attackerRSA
				k.kid = "a-rsa"
				return MustSign(t, k, e.a.Claims(now), signOpts{embedJWK: true})
			}},
		{name: "embedded jwk without kid rejected", reason: identity.ReasonSignature,
			token: func(t *testing.T) string {
				return MustSign(t, e.attackerRSA, e.a.Claims(now), signOpts{embedJWK: true, noKid: true})
			}},
		{name: "embedded jwk with its own kid rejected", reason: identity.ReasonUnknownKey,
			token: func(t *testing.T) string {
				return MustSign(t, e.attackerEC, e.a.Claims(now), signOpts{embedJWK: true})
			}},
		{name: "signature by another key under the issuer's kid rejected", reason: identity.ReasonSignature,
			token: func(t *testing.T) string {
				k := e.attackerRSA
				k.kid = "a-rsa"
				return MustSign(t, k, e.a.Claims(now), signOpts{})
			}},
		{name: "payload swapped after signing rejected", reason: identity.ReasonSignature,
			token: func(t *testing.T) string {
				good := strings.Split(MustSign(t, e.aRSA, e.a.Claims(now), signOpts{}), ".")
				p, _ := json.Marshal(e.a.Claims(now, "sub", "admin"))
				return good[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + good[2]
			}},

		// iss and aud.
		{name: "issuer with trailing slash rejected", reason: identity.ReasonUnknownIssuer,
			token: a(e.aRSA, signOpts{}, "iss", e.a.Issuer+"/")},
		{name: "issuer in another case rejected", reason: identity.ReasonUnknownIssuer,
			token: a(e.aRSA, signOpts{}, "iss", strings.Replace(e.a.Issuer, "/tenant/Main", "/tenant/main", 1))},
		{name: "unknown issuer rejected", reason: identity.ReasonUnknownIssuer, msg: "https://evil.example",
			token: a(e.aRSA, signOpts{}, "iss", "https://evil.example")},
		{name: "missing issuer rejected", reason: identity.ReasonMissingClaim, token: a(e.aRSA, signOpts{}, "iss", nil)},
		{name: "missing audience rejected", reason: identity.ReasonAudience, token: a(e.aRSA, signOpts{}, "aud", nil)},
		{name: "wrong audience rejected", reason: identity.ReasonAudience, msg: `audience ["api://other"] does not include "api://agentauth"`,
			token: a(e.aRSA, signOpts{}, "aud", "api://other")},
		{name: "audience array without us rejected", reason: identity.ReasonAudience,
			token: a(e.aRSA, signOpts{}, "aud", []string{"api://x", "api://y"})},
		{name: "audience array with us accepted", token: a(e.aRSA, signOpts{}, "aud", []string{"api://x", audience}),
			check: func(t *testing.T, u *identity.User) {
				if !slices.Equal(u.Audience, []string{"api://x", audience}) {
					t.Errorf("Audience = %q", u.Audience)
				}
			}},
		{name: "missing subject rejected", reason: identity.ReasonMissingClaim, token: a(e.aRSA, signOpts{}, "sub", nil)},

		// Times, leeway 60 s.
		{name: "expired by 61s rejected", reason: identity.ReasonExpired, msg: "(leeway 60s)",
			token: a(e.aRSA, signOpts{}, "exp", now.Add(-61*time.Second).Unix())},
		{name: "expired by 59s accepted", token: a(e.aRSA, signOpts{}, "exp", now.Add(-59*time.Second).Unix())},
		{name: "missing exp rejected", reason: identity.ReasonMissingClaim, token: a(e.aRSA, signOpts{}, "exp", nil)},
		{name: "nbf 61s in the future rejected", reason: identity.ReasonNotYetValid,
			token: a(e.aRSA, signOpts{}, "nbf", now.Add(61*time.Second).Unix())},
		{name: "nbf 59s in the future accepted", token: a(e.aRSA, signOpts{}, "nbf", now.Add(59*time.Second).Unix())},
		{name: "iat 61s in the future rejected", reason: identity.ReasonIssuedInFuture,
			token: a(e.aRSA, signOpts{}, "iat", now.Add(61*time.Second).Unix())},
		{name: "iat 59s in the future accepted", token: a(e.aRSA, signOpts{}, "iat", now.Add(59*time.Second).Unix())},
		{name: "exp as a string rejected", reason: identity.ReasonMalformed, token: a(e.aRSA, signOpts{}, "exp", "tomorrow")},

		// Token types.
		{name: "access token with at+jwt accepted", opts: at, token: tt(e.tEC, hdr("typ", "at+jwt"))},
		{name: "access token with application/at+jwt accepted", opts: at, token: tt(e.tEC, hdr("typ", "application/at+jwt"))},
		{name: "ID token where an access token is required rejected", opts: at, reason: identity.ReasonTokenType,
			token: tt(e.tEC, hdr("typ", "JWT"))},
		{name: "untyped token where an access token is required rejected", opts: at, reason: identity.ReasonTokenType,
			token: tt(e.tEC, signOpts{})},
		{name: "access token where an ID token is required rejected", opts: id, reason: identity.ReasonTokenType,
			token: tt(e.tEC, hdr("typ", "at+jwt"))},
		{name: "ID token accepted", opts: id, token: tt(e.tEC, hdr("typ", "JWT"))},
		{name: "at+jwt as an ID token rejected even when the issuer does not distinguish", opts: id,
			reason: identity.ReasonTokenType, token: a(e.aRSA, hdr("typ", "at+jwt"))},
		{name: "logout token rejected", reason: identity.ReasonTokenType, token: a(e.aRSA, hdr("typ", "logout+jwt"))},
		{name: "crit header rejected", reason: identity.ReasonHeader, token: a(e.aRSA, hdr("crit", []string{"exp"}, "exp", 1))},
		{name: "nested JWT rejected", reason: identity.ReasonHeader, token: a(e.aRSA, hdr("cty", "JWT"))},
		{name: "unknown Kind is a caller bug", opts: identity.VerifyOptions{Kind: 7}, reason: identity.ReasonInvalidKind,
			code: schemas.CodeInternal, token: a(e.aRSA, signOpts{})},

		// Authorized party.
		{name: "azp matches", opts: identity.VerifyOptions{AuthorizedParty: "web"}, token: a(e.aRSA, signOpts{}, "azp", "web"),
			check: func(t *testing.T, u *identity.User) {
				if u.AuthorizedParty != "web" {
					t.Errorf("AuthorizedParty = %q, want web", u.AuthorizedParty)
				}
			}},
		{name: "client_id matches", opts: identity.VerifyOptions{AuthorizedParty: "web"}, token: a(e.aRSA, signOpts{}, "client_id", "web")},
		{name: "azp of another client rejected", opts: identity.VerifyOptions{AuthorizedParty: "web"}, reason: identity.ReasonAuthorizedParty,
			msg: `issued to client "mobile", not "web"`, token: a(e.aRSA, signOpts{}, "azp", "mobile")},
		{name: "client_id of another client rejected", opts: identity.VerifyOptions{AuthorizedParty: "web"}, reason: identity.ReasonAuthorizedParty,
			token: a(e.aRSA, signOpts{}, "client_id", "mobile")},
		{name: "azp wins over client_id", opts: identity.VerifyOptions{AuthorizedParty: "web"}, reason: identity.ReasonAuthorizedParty,
			token: a(e.aRSA, signOpts{}, "azp", "mobile", "client_id", "web")},
		{name: "no azp rejected when a party is required", opts: identity.VerifyOptions{AuthorizedParty: "web"},
			reason: identity.ReasonAuthorizedParty, token: a(e.aRSA, signOpts{})},

		// Scopes.
		{name: "scope string", token: a(e.aRSA, signOpts{}, "scope", "openid  email docs:read"), check: wantScopes("openid", "email", "docs:read")},
		{name: "scp array", token: a(e.aRSA, signOpts{}, "scp", []string{"docs:read", "docs:write"}), check: wantScopes("docs:read", "docs:write")},
		{name: "scp string", token: a(e.aRSA, signOpts{}, "scp", "User.Read Mail.Send"), check: wantScopes("User.Read", "Mail.Send")},
		{name: "scope wins over scp", token: a(e.aRSA, signOpts{}, "scope", "a", "scp", []string{"b"}), check: wantScopes("a")},
		{name: "no scopes", token: a(e.aRSA, signOpts{}), check: wantScopes()},
		{name: "scope of numbers rejected", reason: identity.ReasonMalformed, token: a(e.aRSA, signOpts{}, "scope", []int{1})},

		// Shape.
		{name: "empty token rejected", reason: identity.ReasonMalformed, token: fixed("")},
		{name: "two segments rejected", reason: identity.ReasonMalformed, token: fixed("eyJhbGciOiJSUzI1NiJ9.e30")},
		{name: "four segments rejected", reason: identity.ReasonMalformed, token: func(t *testing.T) string {
			return MustSign(t, e.aRSA, e.a.Claims(now), signOpts{}) + ".x"
		}},
		{name: "JWE rejected", reason: identity.ReasonMalformed, token: fixed("a.b.c.d.e")},
		{name: "oversized token rejected", reason: identity.ReasonTooLarge, token: fixed(strings.Repeat("a", 8193))},
		{name: "token of exactly the size cap parsed", reason: identity.ReasonMalformed, token: fixed("a.b." + strings.Repeat("a", 8188))},
		{name: "bad base64 rejected", reason: identity.ReasonMalformed, token: fixed("!!!.@@@.###")},
		{name: "claims not JSON rejected", reason: identity.ReasonMalformed,
			token: func(t *testing.T) string { return MustSign(t, e.aRSA, []byte("not json"), signOpts{}) }},
		{name: "duplicate claim rejected", reason: identity.ReasonMalformed, token: func(t *testing.T) string {
			c, _ := json.Marshal(e.a.Claims(now))
			dup := strings.Replace(string(c), "{", `{"sub":"admin",`, 1)
			return MustSign(t, e.aRSA, []byte(dup), signOpts{})
		}},
		{name: "claim in another case does not count", reason: identity.ReasonMissingClaim, token: a(e.aRSA, signOpts{}, "sub", nil, "SUB", "admin")},
	}

	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			raw := c.token(t)
			var before int64
			if c.hits != nil {
				before = c.hits()
			}
			u, err := e.v.Verify(context.Background(), raw, c.opts)
			if c.hits != nil {
				if got := c.hits(); got != before {
					t.Errorf("server hits went from %d to %d, want no fetch", before, got)
				}
			}
			if c.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.check != nil {
					c.check(t, u)
				}
				return
			}
			code := c.code
			if code == "" {
				code = schemas.CodeUnauthenticated
			}
			te := wantReason(t, err, raw, c.reason, code)
			if u != nil {
				t.Errorf("rejected token returned user %+v", u)
			}
			if c.msg != "" && !strings.Contains(te.PublicMessage(), c.msg) {
				t.Errorf("PublicMessage() = %q, want it to contain %q", te.PublicMessage(), c.msg)
			}
		})
	}
	if got := e.attackerHits.Load(); got != 0 {
		t.Errorf("attacker's key server got %d requests, want 0", got)
	}
	if got := e.b.DiscoveryHits.Load(); got != 0 {
		t.Errorf("issuer with an explicit JWKS URL was discovered %d times, want 0", got)
	}
}

func wantScopes(want ...string) func(*testing.T, *identity.User) {
	return func(t *testing.T, u *identity.User) {
		t.Helper()
		if !slices.Equal(u.Scopes, want) {
			t.Errorf("Scopes = %q, want %q", u.Scopes, want)
		}
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	ok := identity.IssuerConfig{Issuer: "https://issuer.example", Audience: audience}
	with := func(f func(*identity.IssuerConfig)) []identity.IssuerConfig {
		c := ok
		f(&c)
		return []identity.IssuerConfig{c}
	}
	cases := []struct {
		name    string
		issuers []identity.IssuerConfig
		opts    identity.Options
	}{
		{"no issuers", nil, identity.Options{}},
		{"alg none", with(func(c *identity.IssuerConfig) { c.Algorithms = []string{"RS256", "none"} }), identity.Options{}},
		{"HS256", with(func(c *identity.IssuerConfig) { c.Algorithms = []string{"HS256"} }), identity.Options{}},
		{"HS384", with(func(c *identity.IssuerConfig) { c.Algorithms = []string{"HS384"} }), identity.Options{}},
		{"HS512", with(func(c *identity.IssuerConfig) { c.Algorithms = []string{"ES256", "HS512"} }), identity.Options{}},
		{"unknown algorithm", with(func(c *identity.IssuerConfig) { c.Algorithms = []string{"rs256"} }), identity.Options{}},
		{"empty issuer", with(func(c *identity.IssuerConfig) { c.Issuer = "" }), identity.Options{}},
		{"empty audience", with(func(c *identity.IssuerConfig) { c.Audience = "" }), identity.Options{}},
		{"issuer twice", []identity.IssuerConfig{ok, ok}, identity.Options{}},
		{"undiscoverable issuer", with(func(c *identity.IssuerConfig) { c.Issuer = "issuer.example" }), identity.Options{}},
		{"plain http issuer", with(func(c *identity.IssuerConfig) { c.Issuer = "http://issuer.example" }), identity.Options{}},
		{"plain http JWKS", with(func(c *identity.IssuerConfig) { c.JWKSURL = "http://issuer.example/keys" }), identity.Options{}},
		{"leeway above 60s", []identity.IssuerConfig{ok}, identity.Options{Leeway: 61 * time.Second}},
		{"negative leeway", []identity.IssuerConfig{ok}, identity.Options{Leeway: -time.Second}},
		{"negative cooldown", []identity.IssuerConfig{ok}, identity.Options{JWKSCooldown: -time.Second}},
		{"negative size cap", []identity.IssuerConfig{ok}, identity.Options{MaxTokenBytes: -1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := identity.NewVerifier(c.issuers, c.opts)
			if !errors.Is(err, identity.ErrInvalidConfig) {
				t.Fatalf("NewVerifier = %v, %v; want ErrInvalidConfig", v, err)
			}
		})
	}

	accepted := []struct {
		name    string
		issuers []identity.IssuerConfig
		opts    identity.Options
	}{
		{"defaults", []identity.IssuerConfig{ok}, identity.Options{}},
		{"leeway 60s", []identity.IssuerConfig{ok}, identity.Options{Leeway: 60 * time.Second}},
		{"http to loopback", with(func(c *identity.IssuerConfig) { c.Issuer = "http://127.0.0.1:5556/dex" }), identity.Options{}},
		{"non-URL issuer with JWKS URL", with(func(c *identity.IssuerConfig) { c.Issuer = "issuer"; c.JWKSURL = "https://x.example/keys" }), identity.Options{}},
		{"every asymmetric algorithm", with(func(c *identity.IssuerConfig) {
			c.Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
		}), identity.Options{}},
	}
	for _, c := range accepted {
		t.Run(c.name, func(t *testing.T) {
			if _, err := identity.NewVerifier(c.issuers, c.opts); err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
		})
	}
}

// TestShapeChecksBeforeParsing rejects huge and dotted tokens before any
// parsing, with a handful of small allocations at most.
func TestShapeChecksBeforeParsing(t *testing.T) {
	clk := newClock()
	fi := MustFakeIssuer(t, "", MustKey(t, "k", jose.ES256))
	cfg := identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience}
	small := MustVerifier(t, clk, cfg)
	big, err := identity.NewVerifier([]identity.IssuerConfig{cfg}, identity.Options{Now: clk.Now, MaxTokenBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	megDots := strings.Repeat(".", 1<<20)
	segments := strings.Repeat("a.", 9999) + "a" // 10,000 segments, 19,999 bytes
	cases := []struct {
		name   string
		v      *identity.Verifier
		raw    string
		reason string
	}{
		{"1 MB of dots over the size cap", small, megDots, identity.ReasonTooLarge},
		{"10,000 segments over the size cap", small, segments, identity.ReasonTooLarge},
		{"1 MB of dots under a large size cap", big, megDots, identity.ReasonMalformed},
		{"10,000 segments under a large size cap", big, segments, identity.ReasonMalformed},
		{"4,000 segments under the default size cap", small, strings.Repeat("a.", 3999) + "a", identity.ReasonMalformed},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.v.Verify(ctx, c.raw, identity.VerifyOptions{})
			te := wantReason(t, err, "", c.reason, schemas.CodeUnauthenticated)
			if c.reason == identity.ReasonMalformed && !strings.Contains(te.PublicMessage(), "three dot-separated parts") {
				t.Errorf("PublicMessage() = %q; want the segment check to reject it", te.PublicMessage())
			}
			allocs := testing.AllocsPerRun(100, func() {
				_, _ = c.v.Verify(ctx, c.raw, identity.VerifyOptions{})
			})
			t.Logf("%v allocations", allocs)
			if allocs > 3 {
				t.Errorf("rejecting allocated %v objects per run, want at most 3", allocs)
			}
		})
	}
	if got := fi.JWKSHits.Load() + fi.DiscoveryHits.Load(); got != 0 {
		t.Errorf("issuer got %d requests, want 0", got)
	}
}
