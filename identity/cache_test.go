package identity

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentauth/agentauth/internal/blocking"
)

type countingVerifier struct {
	calls int
	exp   time.Time
	fail  bool
}

func (v *countingVerifier) Verify(_ context.Context, raw string, o VerifyOptions) (*User, error) {
	v.calls++
	if v.fail {
		return nil, errors.New("bad token")
	}
	return &User{Subject: raw, Expiry: v.exp, AuthorizedParty: o.AuthorizedParty}, nil
}

func TestCachingVerifier(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	next := &countingVerifier{exp: now.Add(time.Minute)}
	c := &CachingVerifier{Next: next, Max: 4, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		u, err := c.Verify(ctx, "tok-a", VerifyOptions{})
		if err != nil || u.Subject != "tok-a" {
			t.Fatal(u, err)
		}
	}
	if next.calls != 1 {
		t.Errorf("verified %d times, want once", next.calls)
	}
	// Other options are another entry (an azp binding must be checked).
	if _, err := c.Verify(ctx, "tok-a", VerifyOptions{AuthorizedParty: "web"}); err != nil || next.calls != 2 {
		t.Errorf("different options reused a cached result (calls %d)", next.calls)
	}
	// Expired: verified again (and rejected by the real verifier).
	now = now.Add(2 * time.Minute)
	next.fail = true
	if _, err := c.Verify(ctx, "tok-a", VerifyOptions{}); err == nil {
		t.Error("an expired cached token was accepted")
	}
	// Failures are not cached.
	next.fail, next.exp = false, now.Add(time.Minute)
	if _, err := c.Verify(ctx, "tok-a", VerifyOptions{}); err != nil {
		t.Errorf("after a failure: %v", err)
	}
	// Bounded.
	for _, tok := range []string{"b", "c", "d", "e", "f", "g"} {
		if _, err := c.Verify(ctx, tok, VerifyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.entries) > 4 {
		t.Errorf("%d entries, want at most 4", len(c.entries))
	}
}

// TestCachingVerifierWhereWaitingIsForbidden: a cached token is verified
// without waiting; a token not cached (whose keys may have to be fetched)
// reports blocking.ErrWouldBlock without reaching the verifier.
func TestCachingVerifierWhereWaitingIsForbidden(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	next := &countingVerifier{exp: now.Add(time.Minute)}
	c := &CachingVerifier{Next: next, Now: func() time.Time { return now }}
	forbid := blocking.Forbid(context.Background())
	if _, err := c.Verify(forbid, "tok-a", VerifyOptions{}); !errors.Is(err, blocking.ErrWouldBlock) || next.calls != 0 {
		t.Fatalf("not cached: got %v after %d verifications, want ErrWouldBlock after none", err, next.calls)
	}
	if _, err := c.Verify(context.Background(), "tok-a", VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if u, err := c.Verify(forbid, "tok-a", VerifyOptions{}); err != nil || u.Subject != "tok-a" || next.calls != 1 {
		t.Errorf("cached: got %v, %v after %d verifications", u, err, next.calls)
	}
}
