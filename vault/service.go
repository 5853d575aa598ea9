package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

// Locker serializes refreshes of one connection across agentauth
// instances (the service implements it with JetStream compare-and-set).
// Lock blocks until the lease for key is held or ctx ends; the lease
// expires by itself if its holder dies.
type Locker interface {
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// Events is where the vault reports: the agent's durable feed and the
// audit stream.
type Events interface {
	// Feed stores an event on the agent's feed
	// (agentauth.events.<agent>.vault.connection.<verb>) and returns once
	// JetStream has acknowledged it.
	Feed(ctx context.Context, agent, verb, typ string, e schemas.ConnectionEvent) error
	// Audit records a vault audit event (agentauth.audit.vault.<object>.<verb>).
	Audit(object, verb string, a schemas.AuditVault)
}

// Sealer seals secrets to an agent.
type Sealer interface {
	Seal(a agents.Agent, plaintext []byte) (schemas.Sealed, error)
}

// Service is the Token Vault.
type Service struct {
	Store       *Store
	Connections map[string]Connection
	Locker      Locker // nil: refresh is single-flight within this process only
	Events      Events
	Sealer      Sealer
	// PublicURL is agentauth's HTTP edge as browsers reach it: connect
	// links are PublicURL/connect/<id>, the OAuth redirect URI is
	// PublicURL/connect/callback.
	PublicURL string
	// StateKey signs OAuth state values (32 bytes or more).
	StateKey        []byte
	HTTPClient      *http.Client  // for providers; default: a client with ProviderTimeout
	ProviderTimeout time.Duration // bound on every provider call; default 10 s
	LinkTTL         time.Duration // connect links; default 15 min
	Now             func() time.Time
	Log             *slog.Logger

	sf singleflight.Group
	// configs keeps one x/oauth2 config per connection. Its client
	// authentication is always a concrete style (Connection.ClientAuth),
	// never x/oauth2's auto-detection, which sends a refused request a
	// second time with the same refresh token or code.
	configs sync.Map // name → *oauth2.Config
	// afterProviderAnswer, in tests, runs between the provider's answer
	// and the write of the new tokens; an error stops the refresh there,
	// as if the process had stopped.
	afterProviderAnswer func() error
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// oauth is the connection's x/oauth2 config.
func (s *Service) oauth(c Connection) *oauth2.Config {
	if v, ok := s.configs.Load(c.Name); ok {
		return v.(*oauth2.Config)
	}
	v, _ := s.configs.LoadOrStore(c.Name, c.OAuth2(s.redirectURL(), nil))
	return v.(*oauth2.Config)
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) providerTimeout() time.Duration {
	if s.ProviderTimeout > 0 {
		return s.ProviderTimeout
	}
	return 10 * time.Second
}

// providerContext carries the HTTP client x/oauth2 uses and the bound on
// one provider call. It does not end with the caller's context: a refresh
// that concurrent requests share must not fail because its first caller
// went away.
func (s *Service) providerContext(ctx context.Context) (context.Context, context.CancelFunc) {
	hc := s.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: s.providerTimeout()}
	}
	ctx = context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, hc)
	return context.WithTimeout(ctx, s.providerTimeout())
}

// Request is what an agent asks of the vault on a user's behalf.
type Request struct {
	Agent      agents.Agent
	User       UserRef
	Connection string
	Scopes     []string
	RequestID  string
}

// Issued is an access token handed to an agent, sealed.
type Issued struct {
	Connection  string
	TokenType   string
	Scopes      []string
	Expiry      time.Time
	Fingerprint string
	Sealed      schemas.Sealed
}

// connection finds a configured connection.
func (s *Service) connection(name string) (Connection, error) {
	c, ok := s.Connections[name]
	if !ok {
		names := make([]string, 0, len(s.Connections))
		for n := range s.Connections {
			names = append(names, n)
		}
		sort.Strings(names)
		configured := "none are configured (see `connections:` in the configuration)"
		if len(names) > 0 {
			configured = "configured: " + strings.Join(names, ", ")
		}
		return Connection{}, errorf(schemas.CodeNotFound, fmt.Sprintf("unknown connection %q; %s", name, configured), nil)
	}
	return c, nil
}

// Authorize checks the agent's policy for a connection and scopes, and
// returns the scopes the agent may ask for on it: the grant's scopes, or
// the connection's default scopes when the grant names none.
func Authorize(a agents.Agent, c Connection, scopes []string) ([]string, error) {
	i := slices.IndexFunc(a.Policy.Connections, func(g agents.ConnectionGrant) bool { return g.Connection == c.Name })
	if i < 0 {
		return nil, errorf(schemas.CodeDenied, fmt.Sprintf("agent %s may not use connection %q (its policy does not name it)", a.ID, c.Name), nil)
	}
	allowed := a.Policy.Connections[i].Scopes
	if len(allowed) == 0 {
		allowed = c.DefaultScopes
	}
	var outside []string
	for _, sc := range scopes {
		if !slices.Contains(allowed, sc) {
			outside = append(outside, sc)
		}
	}
	if len(outside) > 0 {
		return nil, errorf(schemas.CodeDenied, fmt.Sprintf("agent %s may not ask for scopes %s on %q (its policy allows %s)",
			a.ID, strings.Join(outside, " "), c.Name, strings.Join(allowed, " ")), nil)
	}
	return allowed, nil
}

// union is a ∪ b, in order, without duplicates.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// lacking are the scopes of want that granted (as the provider reported
// them) does not have, under their name or their alias.
func (c Connection) lacking(granted, want []string) []string {
	var out []string
	for _, s := range want {
		if !slices.Contains(granted, s) && (c.ScopeAliases[s] == "" || !slices.Contains(granted, c.ScopeAliases[s])) {
			out = append(out, s)
		}
	}
	return out
}

// ours names scopes as agentauth does: a provider's name for a scope the
// connection has an alias for becomes the alias. Never nil.
func (c Connection) ours(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		for k, v := range c.ScopeAliases {
			if v == s {
				s = k
				break
			}
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// missing is b \ a.
func missing(have, want []string) []string {
	var out []string
	for _, s := range want {
		if !slices.Contains(have, s) {
			out = append(out, s)
		}
	}
	return out
}

// Token answers vault.token: the policy check, then a valid access token
// for the connection, refreshed if it is expired or close to it, sealed to
// the agent. When the person must connect (never connected, scopes
// missing, refresh token refused) the error is authorization_required
// with a connect link; when the provider fails, retry_later.
func (s *Service) Token(ctx context.Context, r Request) (Issued, error) {
	c, err := s.connection(r.Connection)
	if err != nil {
		return Issued{}, err
	}
	allowed, err := Authorize(r.Agent, c, r.Scopes)
	if err != nil {
		return Issued{}, err
	}
	rec, err := s.record(ctx, r.User, c.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		return Issued{}, s.authorizationRequired(ctx, r, c, ReasonNotConnected, r.Scopes)
	case errors.Is(err, ErrCorrupt):
		return Issued{}, s.corrupt(c, err)
	case err != nil:
		return Issued{}, err
	}
	// The token carries every scope it was granted: an agent whose
	// policy allows fewer (another agent widened the link) does not get
	// it. Requested scopes, not the provider's names for them, are
	// compared; a record linked before they were kept (Requested nil)
	// has only the provider's names, so it is let through as before,
	// until its next link records them.
	if wider := missing(allowed, rec.Requested); rec.Requested != nil && len(wider) > 0 {
		return Issued{}, errorf(schemas.CodeDenied, fmt.Sprintf("the user's %s account (connection %q) was connected with scopes %s, which the policy of agent %s does not allow (it allows %s), so its token would give the agent more than its policy: the operator can add those scopes to the agent's policy, or the user can disconnect %q on the connected accounts page and connect it again with fewer scopes",
			c.Title, c.Name, strings.Join(wider, " "), r.Agent.ID, strings.Join(allowed, " "), c.Name), nil)
	}
	if rec.Status == StatusNeedsReauth {
		return Issued{}, s.authorizationRequired(ctx, r, c, ReasonNeedsReauth, union(rec.requested(), r.Scopes))
	}
	if lacking := c.lacking(rec.Scopes, r.Scopes); len(lacking) > 0 {
		return Issued{}, s.authorizationRequired(ctx, r, c, ReasonMissingScopes, union(rec.requested(), r.Scopes), lacking...)
	}
	if s.due(&rec) {
		if err := blocking.Check(ctx); err != nil { // the provider and the store
			return Issued{}, err
		}
		if rec, err = s.refresh(ctx, c, r.User, r.Agent.ID); err != nil {
			var ve *Error
			switch {
			case errors.Is(err, ErrNotFound): // disconnected meanwhile
				return Issued{}, s.authorizationRequired(ctx, r, c, ReasonNotConnected, r.Scopes)
			case errors.As(err, &ve) && ve.Code == schemas.CodeAuthorizationRequired:
				return Issued{}, s.authorizationRequired(ctx, r, c, ReasonNeedsReauth, union(rec.requested(), r.Scopes))
			}
			return Issued{}, err
		}
	}
	sealed, err := s.Sealer.Seal(r.Agent, []byte(rec.AccessToken))
	if err != nil {
		return Issued{}, err
	}
	fp := rec.Fingerprint()
	s.Events.Audit("token", "issued", schemas.AuditVault{
		Event: "token.issued", Agent: r.Agent.ID, Subject: r.User.Subject, Issuer: r.User.Issuer, Connection: c.Name,
		Scopes: rec.Scopes, Fingerprint: fp, ExpiresAt: rec.Expiry, RequestID: r.RequestID,
	})
	return Issued{Connection: c.Name, TokenType: tokenType(rec.TokenType), Scopes: rec.Scopes, Expiry: rec.Expiry, Fingerprint: fp, Sealed: sealed}, nil
}

// due reports whether rec must go through refresh before it is handed
// out: its refresh time has come, or its access token expired and there
// is no refresh token (refresh marks that needs_reauth).
func (s *Service) due(rec *Record) bool {
	now := s.now()
	if at := rec.RefreshAt(); !at.IsZero() {
		return !now.Before(at)
	}
	return rec.RefreshToken == "" && !rec.Expiry.IsZero() && !now.Before(rec.Expiry)
}

// record reads u's record of conn from the store's cache or, where
// waiting is allowed, from the store.
func (s *Service) record(ctx context.Context, u UserRef, conn string) (Record, error) {
	if rec, ok := s.Store.Cached(u, conn); ok {
		return rec, nil
	}
	if err := blocking.Check(ctx); err != nil {
		return Record{}, err
	}
	return s.Store.Get(u, conn)
}

func tokenType(t string) string {
	if t == "" || strings.EqualFold(t, "bearer") {
		return "Bearer"
	}
	return t
}

func (s *Service) corrupt(c Connection, err error) error {
	return &Error{Code: schemas.CodeUnavailable, Err: err,
		Msg: fmt.Sprintf("the stored account for connection %q cannot be read (the record is corrupted or sealed with another key): the user can disconnect and connect it again; the operator should check the service log", c.Name)}
}

// authorizationRequired makes a connect link and returns the interrupt
// that carries it.
// lacking names the scopes a missing_scopes interrupt is about.
func (s *Service) authorizationRequired(ctx context.Context, r Request, c Connection, reason string, scopes []string, lacking ...string) error {
	if err := blocking.Check(ctx); err != nil { // the link is stored
		return err
	}
	if len(scopes) == 0 {
		scopes = c.DefaultScopes
	}
	l, err := s.newLink(r.Agent.ID, r.User, c, scopes)
	if err != nil {
		return err
	}
	msg := map[string]string{
		ReasonNotConnected:  "the user has not connected " + c.Title,
		ReasonMissingScopes: "the user's " + c.Title + " connection lacks scopes " + strings.Join(lacking, " "),
		ReasonNeedsReauth:   c.Title + " no longer accepts the stored authorization",
	}[reason]
	return &Error{Code: schemas.CodeAuthorizationRequired, Msg: msg + "; send them the connect link and wait for the connection.linked event",
		Details: &schemas.ErrorDetails{Connection: c.Name, RequiredScopes: scopes, ConnectURL: l.URL, LinkID: l.ID, LinkExpiresAt: l.Expires, Reason: reason,
			Subject: r.User.Subject, Issuer: r.User.Issuer}}
}
