package vault

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/schemas"
)

var carol = UserRef{Issuer: "https://idp.example", Subject: "carol"}

// watch waits for ch; the bound is a watchdog, not a timing assertion.
func watch[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not happen", what)
		panic("unreachable")
	}
}

// blockRefreshes makes every refresh at the provider wait until the
// returned release is called (also at the end of the test); entered
// receives one value per refresh that arrived.
func blockRefreshes(t *testing.T, p *fakeProvider) (entered <-chan struct{}, release func()) {
	t.Helper()
	in := make(chan struct{}, 100)
	gate := make(chan struct{})
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the provider closes
	p.OnToken(func(grant string) {
		if grant == "refresh_token" {
			in <- struct{}{}
			<-gate
		}
	})
	return in, release
}

// TestRefresherStopsAtShutdown: once the background refresher's context
// ends, no refresh starts — those waiting for a slot give up — while the
// one already at the provider finishes and is stored (its rotated refresh
// token must not be lost).
func TestRefresherStopsAtShutdown(t *testing.T) {
	h := mustVault(t, modeStrict)
	users := []UserRef{alice, bob, carol}
	for _, u := range users {
		h.link(t, u, "acme")
	}
	h.expire(t, alice, "acme") // all three were linked together
	entered, release := blockRefreshes(t, h.prov)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.svc.refreshDue(ctx, RefresherOptions{Interval: time.Minute, Concurrency: 1, PerConnection: 1, Jitter: time.Nanosecond})
	}()
	watch(t, entered, "the first background refresh")
	cancel()
	release()
	watch(t, done, "the end of the round")

	if n := h.prov.refreshCall.Load(); n != 1 {
		t.Errorf("refresh calls at the provider = %d, want 1 (none may start after the context ended)", n)
	}
	refreshed := 0
	for _, u := range users {
		rec := h.get(t, u, "acme")
		if !rec.Refreshing.IsZero() {
			t.Errorf("%s: the attempt is still marked: %+v", u.Subject, rec)
		}
		if !rec.RefreshedAt.IsZero() {
			refreshed++
			if !h.prov.RefreshLive(rec.RefreshToken) || !h.prov.AccessLive(rec.AccessToken) {
				t.Errorf("%s: the refreshed tokens stored are not the provider's live ones", u.Subject)
			}
		}
		h.checkNotSilentlyDead(t, u, "acme")
	}
	if refreshed != 1 {
		t.Errorf("records refreshed and stored = %d, want 1 (the one in flight)", refreshed)
	}
}

// TestTokenDeadRefreshTokenCodes: GitHub answers a dead refresh token
// with 200 {"error":"bad_refresh_token"}; like invalid_grant, the record
// needs the person again, with the event and the audit.
func TestTokenDeadRefreshTokenCodes(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	h.prov.SetFault(failGitHubDead)

	_, err := h.svc.Token(context.Background(), h.req(alice, "acme", "read"))
	wantReauth(t, err, ReasonNeedsReauth)
	rec := h.get(t, alice, "acme")
	if rec.Status != StatusNeedsReauth || !strings.Contains(rec.Reason, "bad_refresh_token") || !rec.Refreshing.IsZero() {
		t.Errorf("record status %q, reason %q, refreshing %v: want needs_reauth naming bad_refresh_token, no attempt marked", rec.Status, rec.Reason, rec.Refreshing)
	}
	if f := h.events.Feeds("needs_reauth"); len(f) != 1 || f[0].Agent != h.agent.ID || f[0].Type != schemas.TypeConnectionNeedsReauth {
		t.Errorf("needs_reauth feed events = %+v, want one for %s", f, h.agent.ID)
	}
	if a := h.events.Audits("connection.needs_reauth"); len(a) != 1 {
		t.Errorf("connection.needs_reauth audits = %+v, want one", a)
	}
	calls := h.prov.calls.Load()
	_, err = h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)
	if n := h.prov.calls.Load(); n != calls {
		t.Errorf("the refused refresh token was presented again (%d provider calls, want %d)", n, calls)
	}
	h.noSecrets(t)
}

func TestClassifyProviderCodes(t *testing.T) {
	answer := func(status int, code string) error {
		return &oauth2.RetrieveError{Response: &http.Response{StatusCode: status, Header: http.Header{}}, ErrorCode: code}
	}
	for _, tc := range []struct {
		name string
		err  error
		want fault
	}{
		{"invalid_grant", answer(400, "invalid_grant"), faultInvalidGrant},
		{"GitHub bad_refresh_token", answer(200, "bad_refresh_token"), faultInvalidGrant},
		{"Slack invalid_refresh_token", answer(200, "invalid_refresh_token"), faultInvalidGrant},
		{"Slack token_revoked", answer(200, "token_revoked"), faultInvalidGrant},
		{"Slack token_expired", answer(200, "token_expired"), faultInvalidGrant},
		{"unknown code in a 200", answer(200, "something_unexpected"), faultLost},
		{"unknown code in a 400", answer(400, "invalid_client"), faultClient},
		{"500", answer(500, ""), faultRetry},
		{"429", answer(429, ""), faultRetry},
		{"temporarily_unavailable", answer(400, "temporarily_unavailable"), faultRetry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, why, _ := classify(tc.err); got != tc.want || why == "" {
				t.Errorf("classify = %d (%q), want %d with a reason", got, why, tc.want)
			}
		})
	}
}

// TestTokenExpiredWithoutRefreshToken: a provider that gave an expiring
// access token and no refresh token; once it expires it is not handed
// out: the person must connect again (marked, announced, audited).
func TestTokenExpiredWithoutRefreshToken(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.prov.SetNoRefreshToken()
	linked := h.link(t, alice, "acme")
	if linked.RefreshToken != "" || linked.Expiry.IsZero() {
		t.Fatalf("linked record %+v: want an expiring token without a refresh token", linked)
	}
	if _, got := h.token(t, h.req(alice, "acme")); got != linked.AccessToken {
		t.Fatalf("before expiry: token %q, want %q", got, linked.AccessToken)
	}
	h.clock.Advance(2 * time.Hour)

	iss, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
	wantReauth(t, err, ReasonNeedsReauth)
	if len(iss.Sealed.Ciphertext) != 0 || iss.Fingerprint != "" {
		t.Errorf("an expired token was handed out: %+v", iss)
	}
	rec := h.get(t, alice, "acme")
	if rec.Status != StatusNeedsReauth || !strings.Contains(rec.Reason, "no refresh token") {
		t.Errorf("record status %q, reason %q: want needs_reauth saying there is no refresh token", rec.Status, rec.Reason)
	}
	if f := h.events.Feeds("needs_reauth"); len(f) != 1 || f[0].Agent != h.agent.ID {
		t.Errorf("needs_reauth feed events = %+v, want one for %s", f, h.agent.ID)
	}
	if a := h.events.Audits("connection.needs_reauth"); len(a) != 1 {
		t.Errorf("connection.needs_reauth audits = %+v, want one", a)
	}
	if n := len(h.events.Audits("token.issued")); n != 1 {
		t.Errorf("token.issued audits = %d, want 1 (before expiry only)", n)
	}
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want 0 (there is nothing to refresh with)", n)
	}
	h.noSecrets(t)
}

// lateLocker grants every lease only when the wait's context ends: the
// other holder's lease ran out just as the waiter's bound did.
type lateLocker struct{ locks atomic.Int64 }

var _ Locker = (*lateLocker)(nil)

func (l *lateLocker) Lock(ctx context.Context, key string) (func(), error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("lateLocker: the lease wait has no bound")
	}
	<-ctx.Done()
	l.locks.Add(1)
	return func() {}, nil
}

// TestRefreshLockWaitHasItsOwnBound: the time spent waiting for another
// instance's lease is not taken from the provider call's bound.
func TestRefreshLockWaitHasItsOwnBound(t *testing.T) {
	h := mustVault(t, modeStrict)
	linked := h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	lk := &lateLocker{}
	h.svc.Locker = lk
	h.svc.ProviderTimeout = 200 * time.Millisecond

	_, got := h.token(t, h.req(alice, "acme"))
	if got == linked.AccessToken || lk.locks.Load() != 1 || h.prov.refreshCall.Load() != 1 {
		t.Errorf("token is the linked one %v, leases %d, refresh calls %d: want a refreshed token after one lease and one call",
			got == linked.AccessToken, lk.locks.Load(), h.prov.refreshCall.Load())
	}
	if rec := h.get(t, alice, "acme"); rec.AccessToken != got || rec.Failures != 0 || !rec.Refreshing.IsZero() {
		t.Errorf("stored record %+v: want the new token, no failure, no attempt marked", rec)
	}
}

// TestRefreshDueSkipsUnconfigured: records of a connection no longer
// configured cannot be refreshed, and do not take the places of those
// that can, however early they fall due.
func TestRefreshDueSkipsUnconfigured(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "other")
	h.clock.Advance(time.Second)
	h.link(t, bob, "other")
	h.clock.Advance(time.Second)
	linked := h.link(t, carol, "acme")
	h.expire(t, carol, "acme") // all three are due, carol's last
	conns := maps.Clone(h.conns)
	delete(conns, "other") // removed from the configuration
	h.svc.Connections = conns

	h.svc.refreshDue(context.Background(), RefresherOptions{Interval: time.Minute, Batch: 2, Jitter: time.Nanosecond})
	if n := h.prov.refreshCall.Load(); n != 1 {
		t.Errorf("refresh calls = %d, want 1 (carol's)", n)
	}
	if rec := h.get(t, carol, "acme"); rec.AccessToken == linked.AccessToken || rec.RefreshedAt.IsZero() {
		t.Errorf("carol's record was not refreshed: %+v", rec)
	}
	for _, u := range []UserRef{alice, bob} {
		if rec := h.get(t, u, "other"); !rec.RefreshedAt.IsZero() || rec.Failures != 0 {
			t.Errorf("%s's record of the unconfigured connection was touched: %+v", u.Subject, rec)
		}
	}
}

// TestRefreshNeverAutoDetectsClientAuth: a connection without a client
// authentication style, in a fresh process (nothing learnt yet), sends a
// refused refresh once — x/oauth2's auto-detection would send the same
// refresh token a second time with the credentials in the form.
func TestRefreshNeverAutoDetectsClientAuth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault providerFault
		code  schemas.ErrorCode
	}{
		{"500", fail500, schemas.CodeRetryLater},
		{"invalid_grant", failInvalidGrant, schemas.CodeAuthorizationRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustVault(t, modeStrict, withAuthStyle(oauth2.AuthStyleAutoDetect))
			h.link(t, alice, "acme")
			h.restart(t) // a new Service: no client authentication learnt
			h.expire(t, alice, "acme")
			h.prov.SetFault(tc.fault)
			calls := h.prov.calls.Load()

			_, err := h.svc.Token(context.Background(), h.req(alice, "acme"))
			wantError(t, err, tc.code)
			if n := h.prov.calls.Load() - calls; n != 1 {
				t.Errorf("token endpoint calls = %d, want 1 (the refresh token presented once)", n)
			}
		})
	}
}

// heldLocker is a lease another instance holds: Lock waits until its
// context ends, then fails.
type heldLocker struct{ waiting chan struct{} }

func (l *heldLocker) Lock(ctx context.Context, key string) (func(), error) {
	select {
	case l.waiting <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRefresherLeaseWaitEndsAtShutdown: the background refresher waiting
// for another instance's lease stops waiting when it is stopped (no
// provider call has started, so there is nothing to finish), instead of
// holding up the shutdown for the whole lease bound.
func TestRefresherLeaseWaitEndsAtShutdown(t *testing.T) {
	h := mustVault(t, modeStrict)
	h.link(t, alice, "acme")
	h.expire(t, alice, "acme")
	lk := &heldLocker{waiting: make(chan struct{}, 1)}
	h.svc.Locker = lk
	h.svc.ProviderTimeout = time.Hour // the lease bound: far beyond this test

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.svc.refreshDue(ctx, RefresherOptions{Interval: time.Minute, Jitter: time.Nanosecond})
	}()
	watch(t, lk.waiting, "the refresher to wait for the lease")
	cancel()
	watch(t, done, "the refresher to return once stopped")
	if n := h.prov.refreshCall.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want none", n)
	}
}
