package vault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/schemas"
)

// List describes the person's connected accounts, never their tokens.
// With an agent, only the connections its policy names; without one (the
// person's own page), all.
func (s *Service) List(u UserRef, agent *agents.Agent) ([]schemas.VaultConnection, error) {
	recs, bad, err := s.Store.List(u)
	if err != nil {
		return nil, err
	}
	allowed := func(name string) bool {
		return agent == nil || slices.ContainsFunc(agent.Policy.Connections, func(g agents.ConnectionGrant) bool { return g.Connection == name })
	}
	out := []schemas.VaultConnection{}
	for _, r := range recs {
		if !allowed(r.Connection) {
			continue
		}
		out = append(out, schemas.VaultConnection{
			Connection: r.Connection, Title: s.Connections[r.Connection].Title, Scopes: r.Scopes, Status: string(r.Status),
			Reason: r.Reason, ExpiresAt: r.Expiry, LinkedAt: r.LinkedAt, RefreshedAt: r.RefreshedAt,
		})
	}
	for _, e := range bad {
		var ce *CorruptError
		if errors.As(e, &ce) && allowed(ce.Connection) {
			out = append(out, schemas.VaultConnection{Connection: ce.Connection, Title: s.Connections[ce.Connection].Title, Status: "corrupt",
				Reason: "the stored record cannot be read; disconnect and connect again"})
		}
	}
	return out, nil
}

// Revocation outcomes of Disconnect.
const (
	Revoked           = "revoked"
	RevokeUnsupported = "unsupported"
	RevocationFailed  = "failed"
)

// Disconnect revokes the account's tokens at the provider when it has a
// revocation endpoint (RFC 7009), then deletes the record, whatever the
// provider said: the person asked for it to be gone.
func (s *Service) Disconnect(ctx context.Context, r Request) (string, error) {
	c, err := s.connection(r.Connection)
	if err != nil {
		return "", err
	}
	if _, err := Authorize(r.Agent, c, nil); err != nil {
		return "", err
	}
	return s.disconnect(ctx, c, r.User, r.Agent.ID, r.RequestID)
}

// DisconnectByUser is Disconnect from the person's own page.
func (s *Service) DisconnectByUser(ctx context.Context, u UserRef, connection string) (string, error) {
	c, err := s.connection(connection)
	if err != nil {
		return "", err
	}
	return s.disconnect(ctx, c, u, "", "")
}

func (s *Service) disconnect(ctx context.Context, c Connection, u UserRef, agent, requestID string) (string, error) {
	rec, err := s.Store.Get(u, c.Name)
	outcome := RevokeUnsupported
	switch {
	case errors.Is(err, ErrNotFound):
		return "", errorf(schemas.CodeNotFound, fmt.Sprintf("the user has not connected %q", c.Name), nil)
	case errors.Is(err, ErrCorrupt):
		outcome = RevocationFailed // nothing readable to revoke
	case err != nil:
		return "", err
	case c.RevocationURL != "":
		outcome = Revoked
		for _, t := range []struct{ token, hint string }{{rec.RefreshToken, "refresh_token"}, {rec.AccessToken, "access_token"}} {
			if t.token == "" {
				continue
			}
			if err := s.revoke(ctx, c, t.token, t.hint); err != nil {
				outcome = RevocationFailed
				s.log().Warn("revocation at the provider failed; deleting the connection anyway", "connection", c.Name, "error", err)
			}
		}
	}
	if err := s.Store.Delete(u, c.Name, 0); err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	s.Events.Audit("connection", "disconnected", schemas.AuditVault{
		Event: "connection.disconnected", Agent: agent, Subject: u.Subject, Issuer: u.Issuer, Connection: c.Name, Reason: "revocation " + outcome, RequestID: requestID,
	})
	ev := schemas.ConnectionEvent{Connection: c.Name, Subject: u.Subject, Issuer: u.Issuer, Scopes: rec.Scopes, Reason: "revocation " + outcome}
	for _, a := range union(nonEmpty(agent), nonEmpty(rec.LinkedBy)) {
		if err := s.Events.Feed(ctx, a, "disconnected", schemas.TypeConnectionDisconnected, ev); err != nil {
			s.log().Error("disconnected event not stored", "agent", a, "connection", c.Name, "error", err)
		}
	}
	return outcome, nil
}

// revoke calls the provider's RFC 7009 endpoint with the client's
// credentials, sent as at the token endpoint (Connection.ClientAuth): in
// the form for client_secret_post, else in a Basic header.
func (s *Service) revoke(ctx context.Context, c Connection, token, hint string) error {
	pctx, cancel := s.providerContext(ctx)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	inForm := c.ClientAuth() == oauth2.AuthStyleInParams
	if inForm {
		form.Set("client_id", c.ClientID)
		if c.ClientSecret != "" {
			form.Set("client_secret", c.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, c.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !inForm {
		req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	}
	hc := s.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: s.providerTimeout()}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revocation endpoint answered %s", resp.Status)
	}
	return nil
}

// RefresherOptions tune the background refresher.
type RefresherOptions struct {
	Interval      time.Duration // how often to look for tokens near expiry; default 30 s
	Concurrency   int           // refreshes at once; default 8
	PerConnection int           // refreshes at once per connection (token endpoints rate-limit bursts); default 2
	Batch         int           // records per look; default 1000
	Jitter        time.Duration // largest random delay before a refresh; default Interval/4
}

// RunRefresher refreshes tokens before they expire, in the background,
// until ctx ends: every Interval it takes the records due within the next
// interval from the store's expiry index, and refreshes them with bounded
// concurrency and a random delay (jitter) so same-age tokens do not hit a
// provider together. Failures back off (the record's NextAttempt) and
// invalid_grant marks needs_reauth with an event, as on the request path.
//
// Once ctx ends no new refresh starts, but one already at the provider
// runs to its end and stores its answer (a rotated refresh token must not
// be lost); RunRefresher returns after that. Close the Store only once it
// has returned.
func (s *Service) RunRefresher(ctx context.Context, o RefresherOptions) {
	o = o.withDefaults()
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		s.refreshDue(ctx, o)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (o RefresherOptions) withDefaults() RefresherOptions {
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.PerConnection <= 0 {
		o.PerConnection = 2
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.Jitter <= 0 {
		o.Jitter = o.Interval / 4
	}
	return o
}

// refreshDue runs one round of the background refresher.
func (s *Service) refreshDue(ctx context.Context, o RefresherOptions) {
	o = o.withDefaults()
	due, err := s.Store.DueMatching(s.now().Add(o.Interval), o.Batch, func(conn string) bool {
		_, ok := s.Connections[conn] // a connection no longer configured cannot be refreshed
		return ok
	})
	if err != nil {
		s.log().Error("background refresh: reading the expiry index failed", "error", err)
		return
	}
	all := make(chan struct{}, o.Concurrency)
	var mu sync.Mutex
	per := map[string]chan struct{}{}
	var wg sync.WaitGroup
	for _, d := range due {
		c, ok := s.Connections[d.Connection]
		if !ok {
			continue // a connection no longer configured
		}
		mu.Lock()
		sem, ok := per[c.Name]
		if !ok {
			sem = make(chan struct{}, o.PerConnection)
			per[c.Name] = sem
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Jitter: spread the round over part of the interval, never
			// past the token's own refresh time.
			delay := rand.N(o.Jitter + 1)
			if until := d.At.Sub(s.now()); until < delay {
				delay = max(until, 0)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			// Waiting for a slot ends with ctx: after shutdown begins no
			// refresh starts (one in flight finishes and is stored, see
			// refreshOnce), so that the store can close after the round.
			select {
			case all <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-all }()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if ctx.Err() != nil { // a slot and the end can be ready together
				return
			}
			// Whatever falls due before the next round is refreshed now.
			if _, err := s.refreshOnce(ctx, c, d.User, "", o.Interval); err != nil && ctx.Err() == nil {
				s.log().Debug("background refresh did not succeed", "connection", c.Name, "error", err)
			}
		}()
	}
	wg.Wait()
}
