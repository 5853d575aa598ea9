package identity_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz/FuzzVerify")

const (
	fuzzIssuer  = "https://issuer.fuzz.example"
	fuzzIssuer2 = "https://typed.fuzz.example"
)

var fuzzNow = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// fuzzKey returns a deterministic Ed25519 key (Ed25519 signatures are
// deterministic too), so the seed corpus holds tokens that verify.
func fuzzKey(kid string, seed byte) signingKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return signingKey{kid: kid, alg: jose.EdDSA, priv: ed25519.NewKeyFromSeed(s)}
}

// fuzzSeeds is the seed corpus: file name → token.
func fuzzSeeds(tb testing.TB) map[string]string {
	k1, k2 := fuzzKey("fuzz-1", 1), fuzzKey("fuzz-2", 2)
	attacker := fuzzKey("fuzz-1", 3)
	c := func(kv ...any) map[string]any { return claimsFor(fuzzIssuer, fuzzNow, kv...) }
	pub := k1.public().Key.(ed25519.PublicKey)
	return map[string]string{
		"valid":            MustSign(tb, k1, c("scope", "openid email", "azp", "web", "email", "u@example.com"), signOpts{}),
		"valid-at-jwt":     MustSign(tb, k2, claimsFor(fuzzIssuer2, fuzzNow, "scp", []string{"a", "b"}), hdr("typ", "at+jwt")),
		"valid-id-token":   MustSign(tb, k2, claimsFor(fuzzIssuer2, fuzzNow, "aud", []string{"x", audience}), hdr("typ", "JWT")),
		"no-kid":           MustSign(tb, k1, c(), signOpts{noKid: true}),
		"expired":          MustSign(tb, k1, c("exp", fuzzNow.Add(-time.Hour).Unix()), signOpts{}),
		"nbf-future":       MustSign(tb, k1, c("nbf", fuzzNow.Add(time.Hour).Unix()), signOpts{}),
		"wrong-aud":        MustSign(tb, k1, c("aud", "other"), signOpts{}),
		"unknown-issuer":   MustSign(tb, k1, c("iss", fuzzIssuer+"/"), signOpts{}),
		"other-issuer-kid": MustSign(tb, k2, c(), signOpts{}),
		"unknown-kid":      MustSign(tb, fuzzKey("nobody", 4), c(), signOpts{}),
		"bad-signature":    MustSign(tb, attacker, c(), signOpts{}),
		"embedded-jwk":     MustSign(tb, attacker, c(), signOpts{embedJWK: true}),
		"jku":              MustSign(tb, attacker, c(), hdr("jku", "https://attacker.example/jwks", "x5u", "https://attacker.example/x5u")),
		"crit":             MustSign(tb, k1, c(), hdr("crit", []string{"b64"}, "b64", false)),
		"typ-logout":       MustSign(tb, k1, c(), hdr("typ", "logout+jwt")),
		"claims-array":     MustSign(tb, k1, []byte(`[1,2,3]`), signOpts{}),
		"claims-deep":      MustSign(tb, k1, []byte(strings.Repeat(`{"a":`, 200)+"1"+strings.Repeat("}", 200)), signOpts{}),
		"claims-floats":    MustSign(tb, k1, []byte(`{"iss":"`+fuzzIssuer+`","sub":"s","aud":"`+audience+`","exp":1e300,"nbf":-1e300,"iat":1.5}`), signOpts{}),
		"alg-none":         unsigned(map[string]any{"alg": "none", "kid": "fuzz-1"}, c(), nil),
		"hs256-confusion": func() string {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(pub)}, nil)
			if err != nil {
				tb.Fatal(err)
			}
			jws, err := signer.Sign([]byte(`{"iss":"` + fuzzIssuer + `","sub":"admin","aud":"` + audience + `","exp":` + strconv.FormatInt(fuzzNow.Add(time.Hour).Unix(), 10) + `}`))
			if err != nil {
				tb.Fatal(err)
			}
			s, _ := jws.CompactSerialize()
			return s
		}(),
		"dots":     strings.Repeat(".", 100),
		"segments": strings.Repeat("a.", 500) + "a",
		"garbage":  "eyJ.eyJ.eyJ",
		"empty":    "",
	}
}

func fuzzVerifier(tb testing.TB) (*identity.Verifier, []*fakeIssuer) {
	fi1 := MustFakeIssuer(tb, "", fuzzKey("fuzz-1", 1))
	fi2 := MustFakeIssuer(tb, "", fuzzKey("fuzz-2", 2))
	v, err := identity.NewVerifier([]identity.IssuerConfig{
		{Issuer: fuzzIssuer, Audience: audience, JWKSURL: fi1.JWKS},
		{Issuer: fuzzIssuer2, Audience: audience, JWKSURL: fi2.JWKS, DistinguishesTokenTypes: true, Algorithms: []string{"EdDSA", "ES256"}},
	}, identity.Options{Now: func() time.Time { return fuzzNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return v, []*fakeIssuer{fi1, fi2}
}

// FuzzVerify checks that Verify never panics, rejects with a *TokenError
// that does not echo the token, accepts only complete users, and never
// fetches keys more than once per cooldown (the clock stands still).
func FuzzVerify(f *testing.F) {
	for _, raw := range fuzzSeeds(f) {
		f.Add(raw)
	}
	v, servers := fuzzVerifier(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw string) {
		for _, o := range []identity.VerifyOptions{{}, {Kind: identity.IDToken, AuthorizedParty: "web"}} {
			u, err := v.Verify(ctx, raw, o)
			if err == nil {
				if u == nil || u.Subject == "" || (u.Issuer != fuzzIssuer && u.Issuer != fuzzIssuer2) ||
					u.Expiry.IsZero() || !slices.Contains(u.Audience, audience) {
					t.Fatalf("accepted an incomplete user %+v", u)
				}
				continue
			}
			var te *identity.TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %v (%T) is not a *TokenError", err, err)
			}
			if c := te.ErrorCode(); c != schemas.CodeUnauthenticated {
				t.Fatalf("ErrorCode() = %q for %v", c, err)
			}
			if te.PublicMessage() == "" {
				t.Fatalf("empty message for %v", err)
			}
			if len(raw) >= 64 && strings.Contains(err.Error(), raw) {
				t.Fatalf("error echoes the token: %v", err)
			}
		}
		for _, s := range servers {
			if n := s.JWKSHits.Load(); n > 1 {
				t.Fatalf("JWKS fetched %d times with a stopped clock, want at most 1", n)
			}
		}
	})
}

// TestFuzzCorpus keeps testdata/fuzz/FuzzVerify equal to fuzzSeeds
// (go test -run TestFuzzCorpus -update rewrites it) and checks that the
// seeds still mean what their names say.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	seeds := fuzzSeeds(t)
	for name, raw := range seeds {
		want := "go test fuzz v1\nstring(" + strconv.Quote(raw) + ")\n"
		path := filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestFuzzCorpus -update)", err)
		}
		if string(got) != want {
			t.Errorf("%s is stale (run go test -run TestFuzzCorpus -update)", path)
		}
	}

	v, _ := fuzzVerifier(t)
	for name, raw := range seeds {
		_, err := v.Verify(context.Background(), raw, identity.VerifyOptions{})
		if name == "valid" || name == "valid-at-jwt" || name == "no-kid" {
			if err != nil {
				t.Errorf("seed %s: %v", name, err)
			}
		} else if err == nil {
			t.Errorf("seed %s accepted", name)
		}
	}
	_, err := v.Verify(context.Background(), seeds["valid-id-token"], identity.VerifyOptions{Kind: identity.IDToken})
	if err != nil {
		t.Errorf("seed valid-id-token: %v", err)
	}
}
