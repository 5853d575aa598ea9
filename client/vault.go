package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// VaultToken is a connected account's access token, opened.
type VaultToken struct {
	AccessToken string
	TokenType   string
	Connection  string
	Scopes      []string
	Expiry      time.Time // zero: it does not expire
	Fingerprint string
}

// AuthorizationRequired is the Token Vault's interrupt: the person must
// connect (or reconnect) an account, at URL, before the agent can go on.
// Show them the link, then WaitForConnection.
type AuthorizationRequired struct {
	Connection     string
	RequiredScopes []string
	URL            string
	LinkID         string
	LinkExpires    time.Time
	Reason         string // not_connected, missing_scopes, needs_reauth
	Message        string
	Received       time.Time // when the interrupt arrived (for WaitForConnection)
	// Subject and Issuer are the person it is for.
	Subject, Issuer string
}

func (e *AuthorizationRequired) Error() string {
	return fmt.Sprintf("agentauth: authorization required for %s (%s): %s: open %s", e.Connection, e.Reason, e.Message, e.URL)
}

// Token returns an access token for one of the user's connected accounts
// (connection, with at least scopes), sealed by agentauth to this agent
// and opened here. When the person must connect first the error is an
// *AuthorizationRequired with the link; a provider outage is an *Error
// with code retry_later and a RetryAfter; a policy refusal, code denied.
func (c *Client) Token(ctx context.Context, userToken, connection string, scopes ...string) (*VaultToken, error) {
	var out schemas.VaultToken
	err := c.Do(ctx, schemas.OpVaultToken, &schemas.VaultTokenRequest{UserToken: userToken, Connection: connection, Scopes: scopes}, &out) // a pointer: its AppendJSON, not reflection
	if err != nil {
		return nil, interrupt(err)
	}
	raw, err := c.Open(out.SealedToken)
	if err != nil {
		return nil, err
	}
	return &VaultToken{AccessToken: string(raw), TokenType: out.TokenType, Connection: out.Connection, Scopes: out.Scopes, Expiry: out.ExpiresAt, Fingerprint: out.Fingerprint}, nil
}

// interrupt turns an authorization_required error reply into the typed
// interrupt.
func interrupt(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.Code != schemas.CodeAuthorizationRequired || e.Details == nil {
		return err
	}
	d := e.Details
	return &AuthorizationRequired{Connection: d.Connection, RequiredScopes: d.RequiredScopes, URL: d.ConnectURL, LinkID: d.LinkID, LinkExpires: d.LinkExpiresAt, Reason: d.Reason, Message: e.Message, Received: time.Now(), Subject: d.Subject, Issuer: d.Issuer}
}

// ConnectLink asks for a link where the person connects an account.
func (c *Client) ConnectLink(ctx context.Context, userToken, connection string, scopes ...string) (*schemas.VaultConnectLink, error) {
	var out schemas.VaultConnectLink
	if err := c.Do(ctx, schemas.OpVaultConnect, schemas.VaultConnectRequest{UserToken: userToken, Connection: connection, Scopes: scopes}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Connections lists the person's connected accounts this agent may use.
func (c *Client) Connections(ctx context.Context, userToken string) ([]schemas.VaultConnection, error) {
	var out schemas.VaultConnections
	if err := c.Do(ctx, schemas.OpVaultConnections, schemas.VaultConnectionsRequest{UserToken: userToken}, &out); err != nil {
		return nil, err
	}
	return out.Connections, nil
}

// Disconnect revokes and deletes one of the person's connected accounts.
func (c *Client) Disconnect(ctx context.Context, userToken, connection string) (*schemas.VaultDisconnected, error) {
	var out schemas.VaultDisconnected
	if err := c.Do(ctx, schemas.OpVaultDisconnect, schemas.VaultDisconnectRequest{UserToken: userToken, Connection: connection}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WaitForConnection blocks until the person finished linking what ar
// asked for (the same link, or the same connection with the required
// scopes linked after ar was received), or ctx ends. Nothing is polled:
// the "connection linked" event arrives on the agent's durable links
// consumer, so one that arrived while nobody waited is still delivered.
// Waits of one Client share one subscription; run them from one Client
// per agent.
func (c *Client) WaitForConnection(ctx context.Context, ar *AuthorizationRequired) (*schemas.ConnectionEvent, error) {
	var found schemas.ConnectionEvent
	err := c.links.wait(ctx, c, "", func(e *event.Event) bool {
		var ev schemas.ConnectionEvent
		if e.Type() != schemas.TypeConnectionLinked || bus.DecodeData(e, &ev) != nil || ev.Connection != ar.Connection {
			return false
		}
		if ar.Subject != "" && (ev.Subject != ar.Subject || ev.Issuer != ar.Issuer) {
			return false // another person's account
		}
		if ev.LinkID == ar.LinkID || (!e.Time().Before(ar.Received.Add(-time.Minute)) && len(missingScopes(ev.Scopes, ar.RequiredScopes)) == 0) {
			found = ev
			return true
		}
		return false
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("agentauth: waiting for %s to be connected: %w", ar.Connection, err)
	}
	return &found, nil
}

func missingScopes(have, want []string) []string {
	var out []string
	for _, s := range want {
		if !slices.Contains(have, s) {
			out = append(out, s)
		}
	}
	return out
}
