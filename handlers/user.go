package handlers

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// TokenVerifier verifies user tokens.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string, o identity.VerifyOptions) (*identity.User, error)
}

// AgentLookup finds a registered agent.
type AgentLookup interface {
	Agent(ctx context.Context, id string) (agents.Agent, error)
}

// TokenMinter mints delegated tokens.
type TokenMinter interface {
	Mint(g identity.Grant) (identity.Minted, error)
}

// Sealer seals secrets to agents.
type Sealer interface {
	Seal(a agents.Agent, plaintext []byte) (schemas.Sealed, error)
}

// AuditFunc records an audit event about req.
type AuditFunc func(req *bus.Request, area, object, verb, typ string, data any)

// User serves user.whoami and user.exchange.
type User struct {
	Verifier TokenVerifier
	Agents   AgentLookup
	Minter   TokenMinter
	Sealer   Sealer
	Audit    AuditFunc
}

// verify authenticates the user token an agent presents, holding it to
// the agent's client binding when the policy sets one.
func (h *User) verify(ctx context.Context, req *bus.Request, raw string) (*identity.User, agents.Agent, error) {
	a, err := h.Agents.Agent(ctx, req.Agent)
	if err != nil {
		return nil, agents.Agent{}, err
	}
	u, err := h.Verifier.Verify(ctx, raw, identity.VerifyOptions{Kind: identity.AccessToken, AuthorizedParty: a.Policy.ClientID})
	if err != nil {
		return nil, agents.Agent{}, err
	}
	return u, a, nil
}

// WhoAmI answers user.whoami.
func (h *User) WhoAmI() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.WhoAmIRequest
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		u, _, err := h.verify(ctx, req, in.UserToken)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, &schemas.WhoAmI{
			Subject: u.Subject, Issuer: u.Issuer, Email: u.Email, EmailVerified: u.EmailVerified, Name: u.Name,
			AuthorizedParty: u.AuthorizedParty, Audience: u.Audience, Scopes: u.Scopes, ExpiresAt: u.Expiry.UTC(),
		})
	})
}

// Exchange answers user.exchange: verify the user, check the agent's
// policy, mint, seal to the agent, audit the fingerprint.
func (h *User) Exchange() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.ExchangeRequest
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		u, a, err := h.verify(ctx, req, in.UserToken)
		if err != nil {
			return nil, err
		}
		g, err := identity.AuthorizeExchange(u, a, identity.ExchangeRequest{Audience: in.Audience, Scopes: in.Scopes, TTL: time.Duration(in.TTLSeconds) * time.Second})
		if err != nil {
			return nil, err
		}
		t, err := h.Minter.Mint(g)
		if err != nil {
			return nil, err
		}
		sealed, err := h.Sealer.Seal(a, []byte(t.Token))
		if err != nil {
			return nil, err
		}
		h.Audit(req, "user", "token", "issued", schemas.TypeAuditTokenIssued, schemas.AuditTokenIssued{
			Agent: a.ID, Subject: u.Subject, Issuer: u.Issuer, Audience: t.Audience, Scopes: t.Scopes,
			JTI: t.JTI, Fingerprint: t.Fingerprint, ExpiresAt: t.Expiry.UTC(), RequestID: req.Event.ID(),
		})
		return bus.Reply(req, schemas.ExchangeReply{
			IssuedTokenType: schemas.TokenTypeAccessToken, TokenType: "Bearer",
			ExpiresIn: int64(time.Until(t.Expiry).Seconds()), ExpiresAt: t.Expiry.UTC(),
			Audience: t.Audience, Scopes: t.Scopes, JTI: t.JTI, Fingerprint: t.Fingerprint, SealedToken: sealed,
		})
	})
}
