package handlers

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

// Vault serves vault.token, vault.connect, vault.connections and
// vault.disconnect: the user is proven by their token, the agent by the
// subject, the rest is the vault's.
type Vault struct {
	User    *User // verifies the user token for the agent
	Service *vault.Service
}

// request decodes the data into in, verifies the user token it carries
// and builds the vault request.
func request[T any](ctx context.Context, h *Vault, req *bus.Request, in *T, token func(*T) string) (vault.Request, error) {
	if err := bus.DecodeData(req.Event, in); err != nil {
		return vault.Request{}, err
	}
	u, a, err := h.User.verify(ctx, req, token(in))
	if err != nil {
		return vault.Request{}, err
	}
	return vault.Request{Agent: a, User: userRef(u), RequestID: req.Event.ID()}, nil
}

func userRef(u *identity.User) vault.UserRef {
	return vault.UserRef{Issuer: u.Issuer, Subject: u.Subject}
}

// Token answers vault.token.
func (h *Vault) Token() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.VaultTokenRequest
		r, err := request(ctx, h, req, &in, func(in *schemas.VaultTokenRequest) string { return in.UserToken })
		if err != nil {
			return nil, err
		}
		r.Connection, r.Scopes = in.Connection, in.Scopes
		t, err := h.Service.Token(ctx, r)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, &schemas.VaultToken{Connection: t.Connection, TokenType: t.TokenType, Scopes: t.Scopes,
			ExpiresAt: t.Expiry.UTC(), Fingerprint: t.Fingerprint, SealedToken: t.Sealed})
	})
}

// Connect answers vault.connect.
func (h *Vault) Connect() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.VaultConnectRequest
		r, err := request(ctx, h, req, &in, func(in *schemas.VaultConnectRequest) string { return in.UserToken })
		if err != nil {
			return nil, err
		}
		r.Connection, r.Scopes = in.Connection, in.Scopes
		l, err := h.Service.Connect(ctx, r)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, schemas.VaultConnectLink{Connection: l.Connection, Scopes: l.Scopes, ConnectURL: l.URL, LinkID: l.ID, ExpiresAt: l.Expires})
	})
}

// Connections answers vault.connections.
func (h *Vault) Connections() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.VaultConnectionsRequest
		r, err := request(ctx, h, req, &in, func(in *schemas.VaultConnectionsRequest) string { return in.UserToken })
		if err != nil {
			return nil, err
		}
		list, err := h.Service.List(r.User, &r.Agent)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, schemas.VaultConnections{Connections: list})
	})
}

// Disconnect answers vault.disconnect.
func (h *Vault) Disconnect() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.VaultDisconnectRequest
		r, err := request(ctx, h, req, &in, func(in *schemas.VaultDisconnectRequest) string { return in.UserToken })
		if err != nil {
			return nil, err
		}
		r.Connection = in.Connection
		outcome, err := h.Service.Disconnect(ctx, r)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, schemas.VaultDisconnected{Connection: r.Connection, Revocation: outcome})
	})
}
