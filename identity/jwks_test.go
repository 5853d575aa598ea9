package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

func TestKeyRotation(t *testing.T) {
	clk := newClock()
	k1, k2 := MustKey(t, "k1", jose.RS256), MustKey(t, "k2", jose.ES256)
	fi := MustFakeIssuer(t, "", k1)
	v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
	ctx := context.Background()

	if _, err := v.Verify(ctx, MustSign(t, k1, fi.Claims(clk.Now()), signOpts{}), identity.VerifyOptions{}); err != nil {
		t.Fatalf("token with k1: %v", err)
	}
	fi.SetKeys(k2) // the issuer rotates, and drops k1

	raw := MustSign(t, k2, fi.Claims(clk.Now()), signOpts{})
	_, err := v.Verify(ctx, raw, identity.VerifyOptions{})
	wantReason(t, err, raw, identity.ReasonUnknownKey, schemas.CodeUnauthenticated)
	if got := fi.JWKSHits.Load(); got != 1 {
		t.Fatalf("JWKS fetches within the cooldown = %d, want 1", got)
	}

	clk.Advance(identity.DefaultJWKSCooldown)
	raw = MustSign(t, k2, fi.Claims(clk.Now()), signOpts{})
	if _, err := v.Verify(ctx, raw, identity.VerifyOptions{}); err != nil {
		t.Fatalf("token with the new key after the cooldown: %v", err)
	}
	if got := fi.JWKSHits.Load(); got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}

	raw = MustSign(t, k1, fi.Claims(clk.Now()), signOpts{})
	_, err = v.Verify(ctx, raw, identity.VerifyOptions{})
	wantReason(t, err, raw, identity.ReasonUnknownKey, schemas.CodeUnauthenticated)
	if got := fi.JWKSHits.Load(); got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}
}

// TestUnknownKidFlood sends many tokens with unknown kids, sequentially and
// at once: at most one JWKS fetch per cooldown.
func TestUnknownKidFlood(t *testing.T) {
	clk := newClock()
	good := MustKey(t, "good", jose.ES256)
	fi := MustFakeIssuer(t, "", good)
	v, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: fi.Issuer, Audience: audience}},
		identity.Options{Now: clk.Now, JWKSCooldown: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, MustSign(t, good, fi.Claims(clk.Now()), signOpts{}), identity.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}

	rogue := MustKey(t, "", jose.ES256)
	flood := func(round int) {
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				k := rogue
				k.kid = fmt.Sprintf("rogue-%d-%d", round, i)
				raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})
				_, err := v.Verify(ctx, raw, identity.VerifyOptions{})
				wantReason(t, err, raw, identity.ReasonUnknownKey, schemas.CodeUnauthenticated)
			})
		}
		wg.Wait()
	}
	for round, step := range []struct {
		advance time.Duration
		want    int64
	}{
		{0, 1},                 // right after the first fetch: none
		{10 * time.Second, 2},  // the first unknown kid after the cooldown refetches
		{9 * time.Second, 2},   // within the cooldown of that refetch
		{time.Second, 3},       // 10 s after it: one more
		{5 * time.Second, 3},   // within the new cooldown
		{5*time.Second - 1, 3}, // 1 ns short
		{time.Nanosecond, 4},   // exactly the cooldown
		{time.Hour, 5},         // long after: one, not one per missed period
	} {
		clk.Advance(step.advance)
		flood(round)
		if got := fi.JWKSHits.Load(); got != step.want {
			t.Fatalf("round %d: JWKS fetches = %d, want %d", round, got, step.want)
		}
	}
	// Known keys keep verifying throughout, without fetching.
	if _, err := v.Verify(ctx, MustSign(t, good, fi.Claims(clk.Now()), signOpts{}), identity.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := fi.JWKSHits.Load(); got != 5 {
		t.Errorf("JWKS fetches = %d, want 5", got)
	}
}

// TestSingleFlight holds the JWKS response until every verification is
// waiting, then checks they all shared one fetch.
func TestSingleFlight(t *testing.T) {
	clk := newClock()
	k := MustKey(t, "k", jose.EdDSA)
	fi := MustFakeIssuer(t, "", k)
	v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
	release := fi.Hold()
	defer release()

	const n = 30
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		raw := MustSign(t, k, fi.Claims(clk.Now(), "sub", fmt.Sprint("user-", i)), signOpts{})
		wg.Go(func() {
			_, err := v.Verify(context.Background(), raw, identity.VerifyOptions{})
			errs <- err
		})
	}
	waitFor(t, "the fetch and every waiter", func() bool {
		return fi.JWKSHits.Load() == 1 && v.Waiters(fi.Issuer) == n-1
	})
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if got := fi.JWKSHits.Load() + fi.DiscoveryHits.Load(); got != 2 {
		t.Errorf("discovery + JWKS fetches = %d, want 2", got)
	}
}

func TestVerifyGivesUpWhenContextEnds(t *testing.T) {
	clk := newClock()
	k := MustKey(t, "k", jose.ES256)
	fi := MustFakeIssuer(t, "", k)
	v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
	release := fi.Hold()
	defer release()

	raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, raw, identity.VerifyOptions{})
		done <- err
	}()
	waitFor(t, "the JWKS request", func() bool { return fi.JWKSHits.Load() == 1 })
	cancel()
	err := <-done
	wantReason(t, err, raw, identity.ReasonKeysUnavailable, schemas.CodeUnavailable)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", err)
	}

	// The shared fetch was not cancelled with the caller: it completes and
	// serves the next verification.
	release()
	if _, err := v.Verify(context.Background(), raw, identity.VerifyOptions{}); err != nil {
		t.Fatalf("Verify after the fetch completed: %v", err)
	}
	if got := fi.JWKSHits.Load(); got != 1 {
		t.Errorf("JWKS fetches = %d, want 1", got)
	}
}

func TestKeyFetchFailures(t *testing.T) {
	k := MustKey(t, "k", jose.ES256)
	cases := []struct {
		name  string
		setup func(fi *fakeIssuer)
	}{
		{"JWKS 503", func(fi *fakeIssuer) { fi.SetStatus(http.StatusServiceUnavailable) }},
		{"JWKS 500", func(fi *fakeIssuer) { fi.SetStatus(http.StatusInternalServerError) }},
		{"JWKS 404", func(fi *fakeIssuer) { fi.SetStatus(http.StatusNotFound) }},
		{"JWKS not JSON", func(fi *fakeIssuer) { fi.SetBody("<html>maintenance</html>") }},
		{"JWKS without keys", func(fi *fakeIssuer) { fi.SetBody(`{"kids":[]}`) }},
		{"JWKS with no usable key", func(fi *fakeIssuer) {
			fi.SetBody(`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"k"},{"kty":"NOPE","kid":"k"}]}`)
		}},
		{"JWKS larger than 1 MiB", func(fi *fakeIssuer) { fi.SetBody(`{"keys":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`) }},
		{"issuer down", func(fi *fakeIssuer) { fi.srv.Close() }},
		{"discovery without jwks_uri", func(fi *fakeIssuer) { fi.SetDiscovery(fi.Issuer, "") }},
		{"discovery with plain http jwks_uri", func(fi *fakeIssuer) { fi.SetDiscovery(fi.Issuer, "http://keys.example/jwks") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			fi := MustFakeIssuer(t, "", k)
			c.setup(fi)
			v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
			raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})
			_, err := v.Verify(context.Background(), raw, identity.VerifyOptions{})
			te := wantReason(t, err, raw, identity.ReasonKeysUnavailable, schemas.CodeUnavailable)
			if errors.Unwrap(err) == nil {
				t.Errorf("error %v has no cause", err)
			}
			if te.RetryAfterHint() <= 0 {
				t.Errorf("RetryAfterHint() = %v, want > 0", te.RetryAfterHint())
			}
		})
	}
}

// TestKeyFetchFailureRecovers checks that a failed fetch counts against the
// cooldown and that keys arrive once the issuer recovers.
func TestKeyFetchFailureRecovers(t *testing.T) {
	clk := newClock()
	k := MustKey(t, "k", jose.ES256)
	fi := MustFakeIssuer(t, "", k)
	fi.SetStatus(http.StatusBadGateway)
	v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
	ctx := context.Background()
	raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})

	for range 5 {
		_, err := v.Verify(ctx, raw, identity.VerifyOptions{})
		wantReason(t, err, raw, identity.ReasonKeysUnavailable, schemas.CodeUnavailable)
	}
	if got := fi.JWKSHits.Load(); got != 1 {
		t.Fatalf("JWKS fetches while down = %d, want 1", got)
	}
	clk.Advance(10 * time.Second)
	_, err := v.Verify(ctx, raw, identity.VerifyOptions{})
	te := wantReason(t, err, raw, identity.ReasonKeysUnavailable, schemas.CodeUnavailable)
	if got, want := te.RetryAfterHint(), 20*time.Second; got != want {
		t.Errorf("RetryAfterHint() = %v, want %v", got, want)
	}

	fi.SetStatus(http.StatusOK)
	clk.Advance(20 * time.Second)
	if _, err := v.Verify(ctx, raw, identity.VerifyOptions{}); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
	if got := fi.JWKSHits.Load(); got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}

	// Down again: cached keys keep working, an unknown kid says unavailable.
	fi.SetStatus(http.StatusServiceUnavailable)
	clk.Advance(time.Minute)
	other := MustKey(t, "other", jose.ES256)
	raw2 := MustSign(t, other, fi.Claims(clk.Now()), signOpts{})
	_, err = v.Verify(ctx, raw2, identity.VerifyOptions{})
	wantReason(t, err, raw2, identity.ReasonKeysUnavailable, schemas.CodeUnavailable)
	if _, err := v.Verify(ctx, MustSign(t, k, fi.Claims(clk.Now()), signOpts{}), identity.VerifyOptions{}); err != nil {
		t.Fatalf("cached key while the issuer is down: %v", err)
	}
}

func TestJWKSSkipsKeysItCannotRead(t *testing.T) {
	clk := newClock()
	k := MustKey(t, "k", jose.ES256)
	fi := MustFakeIssuer(t, "", k)
	pub, _ := k.public().MarshalJSON()
	fi.SetBody(`{"keys":[{"kty":"AKP","alg":"ML-DSA-99","kid":"future"},{"kty":"oct","k":"c2VjcmV0","kid":"k"},` + string(pub) + `]}`)
	v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
	if _, err := v.Verify(context.Background(), MustSign(t, k, fi.Claims(clk.Now()), signOpts{}), identity.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestDiscovery(t *testing.T) {
	k := MustKey(t, "k", jose.ES256)
	t.Run("issuer mismatch rejected at first use", func(t *testing.T) {
		clk := newClock()
		fi := MustFakeIssuer(t, "/realm", k)
		fi.SetDiscovery(fi.Issuer+"/", fi.JWKS)
		v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
		if got := fi.DiscoveryHits.Load(); got != 0 {
			t.Fatalf("NewVerifier fetched discovery %d times, want 0", got)
		}
		raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})
		_, err := v.Verify(context.Background(), raw, identity.VerifyOptions{})
		te := wantReason(t, err, raw, identity.ReasonDiscoveryMismatch, schemas.CodeUnavailable)
		for _, want := range []string{fi.Issuer + `/"`, `"` + fi.Issuer + `"`, "match it exactly"} {
			if !strings.Contains(te.PublicMessage(), want) {
				t.Errorf("PublicMessage() = %q, want it to contain %q", te.PublicMessage(), want)
			}
		}
		if got := fi.JWKSHits.Load(); got != 0 {
			t.Errorf("JWKS fetched %d times after a mismatched discovery, want 0", got)
		}
	})
	t.Run("issuer with trailing slash", func(t *testing.T) {
		clk := newClock()
		fi := MustFakeIssuer(t, "/realm", k)
		iss := fi.Issuer + "/"
		fi.SetDiscovery(iss, fi.JWKS)
		v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: iss, Audience: audience})
		u, err := v.Verify(context.Background(), MustSign(t, k, claimsFor(iss, clk.Now()), signOpts{}), identity.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if u.Issuer != iss {
			t.Errorf("Issuer = %q, want %q", u.Issuer, iss)
		}
		if got := fi.DiscoveryHits.Load(); got != 1 {
			t.Errorf("discovery fetches = %d, want 1", got)
		}
	})
	t.Run("discovery failure is retried after the cooldown", func(t *testing.T) {
		clk := newClock()
		fi := MustFakeIssuer(t, "", k)
		fi.SetDiscovery("https://someone.else", fi.JWKS)
		v := MustVerifier(t, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
		raw := MustSign(t, k, fi.Claims(clk.Now()), signOpts{})
		for range 3 {
			_, err := v.Verify(context.Background(), raw, identity.VerifyOptions{})
			wantReason(t, err, raw, identity.ReasonDiscoveryMismatch, schemas.CodeUnavailable)
		}
		fi.SetDiscovery(fi.Issuer, fi.JWKS)
		clk.Advance(identity.DefaultJWKSCooldown)
		if _, err := v.Verify(context.Background(), raw, identity.VerifyOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := fi.DiscoveryHits.Load(); got != 2 {
			t.Errorf("discovery fetches = %d, want 2", got)
		}
	})
}

// TestConcurrentUse runs verifications of every kind on several issuers at
// once while the clock moves and keys rotate (run with -race).
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	extra := MustKey(t, "a-extra", jose.ES256)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				now := e.clk.Now()
				switch (g + i) % 5 {
				case 0:
					if _, err := e.v.Verify(ctx, MustSign(t, e.aEd, e.a.Claims(now), signOpts{}), identity.VerifyOptions{}); err != nil {
						t.Errorf("a: %v", err)
					}
				case 1:
					if _, err := e.v.Verify(ctx, MustSign(t, e.bRSA, e.b.Claims(now), signOpts{}), identity.VerifyOptions{}); err != nil {
						t.Errorf("b: %v", err)
					}
				case 2:
					raw := MustSign(t, e.tEC, e.t.Claims(now), hdr("typ", "at+jwt"))
					if _, err := e.v.Verify(ctx, raw, identity.VerifyOptions{Kind: identity.AccessToken}); err != nil {
						t.Errorf("t: %v", err)
					}
				case 3:
					k := e.attackerEC
					k.kid = fmt.Sprint("unknown-", g, "-", i)
					raw := MustSign(t, k, e.a.Claims(now), signOpts{})
					if _, err := e.v.Verify(ctx, raw, identity.VerifyOptions{}); err == nil {
						t.Error("unknown kid accepted")
					}
				case 4:
					e.clk.Advance(time.Second)
					if i == 10 {
						e.a.SetKeys(e.aRSA, e.aPS, e.aES256, e.aES384, e.aEd, extra)
					}
				}
			}
		})
	}
	wg.Wait()
}
