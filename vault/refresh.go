package vault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/schemas"
)

// Backoff after failed refreshes: 30 s doubling to 30 min, with jitter.
const (
	backoffBase = 30 * time.Second
	backoffMax  = 30 * time.Minute
)

func backoff(failures int) time.Duration {
	d := backoffBase << min(failures-1, 10)
	d = min(d, backoffMax)
	return d/2 + rand.N(d/2+1)
}

// refresh refreshes the user's connection once for every concurrent
// caller in this process (single-flight) and once across instances (the
// Locker's lease), and returns the record as stored afterwards. The new
// tokens are written, synced, before anyone sees them: a rotated refresh
// token is never only in memory.
func (s *Service) refresh(ctx context.Context, c Connection, u UserRef, agent string) (Record, error) {
	return s.refreshOnce(ctx, c, u, agent, 0)
}

// always, as a horizon, refreshes whatever the expiry.
const always time.Duration = -1

// Refresh refreshes the user's connection now, whether or not its token
// is near expiry (operators; the refresh-path benchmark), with the same
// single-flight, lease, persistence and audit as any refresh.
func (s *Service) Refresh(ctx context.Context, u UserRef, connection string) (Record, error) {
	c, err := s.connection(connection)
	if err != nil {
		return Record{}, err
	}
	return s.refreshOnce(ctx, c, u, "", always)
}

// refreshOnce refreshes the record if it is due within horizon (always:
// in any case).
func (s *Service) refreshOnce(ctx context.Context, c Connection, u UserRef, agent string, horizon time.Duration) (Record, error) {
	key := u.Key() + "/" + c.Name
	v, err, _ := s.sf.Do(key, func() (any, error) {
		if s.Locker != nil {
			// The wait for the lease has its own bound: the provider's
			// starts once the lease is held. Like the provider call, it
			// does not end with an agent's request; the background
			// refresher's (agent "") ends it at shutdown, as no provider
			// call has started yet.
			base := context.WithoutCancel(ctx)
			if agent == "" {
				base = ctx
			}
			lctx, cancel := context.WithTimeout(base, s.providerTimeout())
			unlock, err := s.Locker.Lock(lctx, "vault."+key)
			cancel()
			if err != nil {
				return Record{}, &Error{Code: schemas.CodeRetryLater, RetryAfter: time.Second, Err: err,
					Msg: "another agentauth instance is refreshing this connection; try again in a second"}
			}
			defer unlock()
		}
		pctx, cancel := s.providerContext(ctx)
		defer cancel()
		return s.refreshLocked(pctx, c, u, agent, horizon)
	})
	return v.(Record), err
}

// refreshLocked runs with the refresh lease held.
func (s *Service) refreshLocked(ctx context.Context, c Connection, u UserRef, agent string, horizon time.Duration) (Record, error) {
	rec, err := s.Store.Get(u, c.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		return Record{}, err
	case errors.Is(err, ErrCorrupt):
		return Record{}, s.corrupt(c, err)
	case err != nil:
		return Record{}, err
	}
	now := s.now()
	if rec.Status == StatusNeedsReauth {
		return rec, errorf(schemas.CodeAuthorizationRequired, rec.Reason, nil)
	}
	if rec.RefreshToken == "" {
		if rec.Expiry.IsZero() || now.Before(rec.Expiry) {
			return rec, nil // nothing to refresh with (non-expiring tokens)
		}
		// Expired, and nothing to refresh it with: only the person can
		// make it valid again.
		rec.Status = StatusNeedsReauth
		rec.Reason = c.Title + " gave no refresh token and the access token expired at " + rec.Expiry.UTC().Format(time.RFC3339) + ": the person must connect again"
		rec.Refreshing = time.Time{}
		if err := s.Store.Put(&rec, rec.Version); err != nil {
			return rec, err
		}
		s.needsReauth(ctx, c, rec, agent)
		return rec, errorf(schemas.CodeAuthorizationRequired, rec.Reason, nil)
	}
	// Someone refreshed while we waited for the lease: use theirs.
	if at := rec.RefreshAt(); horizon != always && (at.IsZero() || now.Add(horizon).Before(at)) {
		return rec, nil
	}
	usable := !rec.Expiry.IsZero() && now.Before(rec.Expiry)
	if now.Before(rec.NextAttempt) {
		if usable {
			return rec, nil
		}
		return rec, &Error{Code: schemas.CodeRetryLater, RetryAfter: rec.NextAttempt.Sub(now),
			Msg: fmt.Sprintf("%s failed recently (%s); agentauth retries after %s", c.Title, rec.LastError, rec.NextAttempt.UTC().Format(time.RFC3339))}
	}
	interrupted := !rec.Refreshing.IsZero()
	// Mark the attempt (synced) before the provider can consume the
	// refresh token: if the process stops before the answer is stored,
	// the next attempt knows why the token may be refused.
	used := rec.RefreshToken
	rec.Refreshing = now
	if err := s.Store.Put(&rec, rec.Version); err != nil {
		return rec, err
	}
	tok, err := s.oauth(c).TokenSource(ctx, &oauth2.Token{RefreshToken: used, Expiry: now.Add(-time.Hour)}).Token()
	if err == nil && s.afterProviderAnswer != nil {
		if herr := s.afterProviderAnswer(); herr != nil {
			return rec, herr
		}
	}
	if err != nil {
		return s.refreshFailed(ctx, c, u, agent, rec, used, interrupted, err)
	}
	rec.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		rec.RefreshToken = tok.RefreshToken
	}
	rec.TokenType = tok.TokenType
	rec.Expiry = tok.Expiry
	if sc := grantedScopes(c, tok); sc != nil {
		rec.Scopes = sc
	}
	rec.RefreshedAt, rec.Refreshing = s.now(), time.Time{}
	rec.Failures, rec.NextAttempt, rec.LastError = 0, time.Time{}, ""
	if err := s.Store.Put(&rec, rec.Version); err != nil {
		return rec, err
	}
	s.Events.Audit("token", "refreshed", schemas.AuditVault{
		Event: "token.refreshed", Agent: agent, Subject: u.Subject, Issuer: u.Issuer, Connection: c.Name,
		Scopes: rec.Scopes, Fingerprint: rec.Fingerprint(), ExpiresAt: rec.Expiry,
	})
	return rec, nil
}

// fault is what a provider's refusal means.
type fault int

const (
	faultRetry        fault = iota // 5xx, 429, timeouts, network, unreadable answers: back off, try again
	faultInvalidGrant              // the refresh token is dead
	faultClient                    // the provider refuses our client or request: the operator must act
	// faultLost: retry, but the provider may have used the refresh token
	// (a timeout, a dropped connection, an unreadable answer).
	faultLost
)

// deadTokenCodes are the error codes that mean the refresh token is
// dead: RFC 6749's invalid_grant and the codes of providers that answer
// otherwise — GitHub (bad_refresh_token, in a 200 answer) and Slack
// (invalid_refresh_token, token_revoked, token_expired).
var deadTokenCodes = map[string]bool{
	"invalid_grant":         true,
	"bad_refresh_token":     true,
	"invalid_refresh_token": true,
	"token_revoked":         true,
	"token_expired":         true,
}

// classify reads a provider error.
func classify(err error) (fault, string, time.Duration) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		var retryAfter time.Duration
		if re.Response != nil {
			status = re.Response.StatusCode
			retryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"))
		}
		code := re.ErrorCode
		switch {
		case deadTokenCodes[code]:
			return faultInvalidGrant, code, 0
		case status == http.StatusTooManyRequests:
			return faultRetry, "rate limited (429)", retryAfter
		case status >= 500 || code == "temporarily_unavailable" || code == "server_error" || code == "slow_down":
			return faultRetry, fmt.Sprintf("provider error %d %s", status, code), retryAfter
		case code != "" && status >= 200 && status < 300:
			// An error in a success answer (GitHub, Slack): not a
			// refusal we recognise, so the provider may have used the
			// refresh token.
			return faultLost, fmt.Sprintf("provider answered %d with error %s", status, code), 0
		case code != "":
			return faultClient, code, 0
		}
		return faultRetry, fmt.Sprintf("provider answered %d", status), retryAfter
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return faultLost, "the provider did not answer in time", 0
	case strings.Contains(err.Error(), "cannot parse"), strings.Contains(err.Error(), "server response missing access_token"):
		return faultLost, "the provider's answer was unreadable", 0
	}
	return faultLost, "the provider could not be reached", 0
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// refreshFailed records a failed refresh. invalid_grant is a race when the
// stored refresh token changed meanwhile (use the stored one), otherwise
// the account needs the person again: marked, announced, audited. Provider
// faults back off and never become needs_reauth.
func (s *Service) refreshFailed(ctx context.Context, c Connection, u UserRef, agent string, rec Record, used string, interrupted bool, cause error) (Record, error) {
	kind, why, retryAfter := classify(cause)
	now := s.now()
	if kind == faultInvalidGrant {
		cur, err := s.Store.Get(u, c.Name)
		if err == nil && cur.RefreshToken != used && cur.Status == StatusActive {
			return cur, nil // another writer rotated it: theirs is the live one
		}
		rec.Status = StatusNeedsReauth
		rec.Reason = c.Title + " refused the stored refresh token (" + why + "): it was revoked, expired or already used"
		if interrupted {
			rec.Reason += "; an earlier refresh was interrupted before its answer was stored"
		}
		rec.Refreshing = time.Time{}
		if err := s.Store.Put(&rec, rec.Version); err != nil {
			return rec, err
		}
		s.needsReauth(ctx, c, rec, agent)
		return rec, errorf(schemas.CodeAuthorizationRequired, rec.Reason, cause)
	}
	rec.Failures++
	if retryAfter <= 0 {
		retryAfter = backoff(rec.Failures)
	}
	rec.NextAttempt = now.Add(retryAfter)
	rec.LastError = why
	if kind != faultLost {
		// The provider refused: the refresh token was not used. After
		// a lost answer the mark stays, so that an invalid_grant next
		// time is understood.
		rec.Refreshing = time.Time{}
	}
	if err := s.Store.Put(&rec, rec.Version); err != nil {
		return rec, err
	}
	s.Events.Audit("token", "refresh_failed", schemas.AuditVault{
		Event: "token.refresh_failed", Agent: agent, Subject: u.Subject, Issuer: u.Issuer, Connection: c.Name, Reason: why,
	})
	s.log().Warn("vault refresh failed", "connection", c.Name, "user", u.Key(), "failures", rec.Failures, "retry_after", retryAfter, "reason", why)
	if !rec.Expiry.IsZero() && now.Before(rec.Expiry) {
		return rec, nil // still valid: hand it out, refresh again later
	}
	if kind == faultClient {
		return rec, &Error{Code: schemas.CodeUnavailable, RetryAfter: retryAfter, Err: cause,
			Msg: fmt.Sprintf("%s refused agentauth's refresh request (%s): the operator must check the connection's client id, secret and scopes", c.Title, why)}
	}
	return rec, &Error{Code: schemas.CodeRetryLater, RetryAfter: retryAfter, Err: cause,
		Msg: fmt.Sprintf("%s is not answering properly (%s); try again in %s", c.Title, why, retryAfter.Round(time.Second))}
}

// needsReauth announces that a connection needs the person again: on the
// feed of the agent that asked (or that linked it) and in the audit.
func (s *Service) needsReauth(ctx context.Context, c Connection, rec Record, agent string) {
	s.Events.Audit("connection", "needs_reauth", schemas.AuditVault{
		Event: "connection.needs_reauth", Agent: agent, Subject: rec.User.Subject, Issuer: rec.User.Issuer, Connection: c.Name, Reason: rec.Reason,
	})
	ev := schemas.ConnectionEvent{Connection: c.Name, Subject: rec.User.Subject, Issuer: rec.User.Issuer, Scopes: rec.Scopes, Reason: rec.Reason}
	for _, a := range union(nonEmpty(agent), nonEmpty(rec.LinkedBy)) {
		if err := s.Events.Feed(ctx, a, "needs_reauth", schemas.TypeConnectionNeedsReauth, ev); err != nil {
			s.log().Error("needs_reauth event not stored", "agent", a, "connection", c.Name, "error", err)
		}
	}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// grantedScopes reads the scopes a token response granted, when it says.
func grantedScopes(c Connection, tok *oauth2.Token) []string {
	raw, _ := tok.Extra("scope").(string)
	if raw == "" {
		return nil
	}
	sep := c.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	return strings.FieldsFunc(raw, func(r rune) bool { return strings.ContainsRune(sep, r) || r == ' ' })
}
