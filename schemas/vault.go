package schemas

import (
	"encoding/base64"
	"time"
)

// The Token Vault's requests, replies, feed events and audit events.
const (
	TypeVaultTokenRequest       = "dev.agentauth.vault.token.request"
	TypeVaultTokenReply         = "dev.agentauth.vault.token.reply"
	TypeVaultConnectRequest     = "dev.agentauth.vault.connect.request"
	TypeVaultConnectReply       = "dev.agentauth.vault.connect.reply"
	TypeVaultConnectionsRequest = "dev.agentauth.vault.connections.request"
	TypeVaultConnectionsReply   = "dev.agentauth.vault.connections.reply"
	TypeVaultDisconnectRequest  = "dev.agentauth.vault.disconnect.request"
	TypeVaultDisconnectReply    = "dev.agentauth.vault.disconnect.reply"

	// Events on the agent's durable feed (agentauth.events.<agent>.vault.connection.<verb>).
	TypeConnectionLinked       = "dev.agentauth.vault.connection.linked"
	TypeConnectionNeedsReauth  = "dev.agentauth.vault.connection.needs_reauth"
	TypeConnectionDisconnected = "dev.agentauth.vault.connection.disconnected"

	// TypeAuditVault records every credential event of the vault: token
	// issued (every read of a stored token for an agent), refreshed,
	// refresh failed, needs re-auth, linked, disconnected. The audit
	// subject names which (agentauth.audit.vault.<object>.<verb>).
	TypeAuditVault = "dev.agentauth.audit.vault"
)

// Vault operations: agentauth.<agent>.vault.<op>.
var (
	OpVaultToken = Op{Area: "vault", Name: "token", RequestType: TypeVaultTokenRequest, ReplyType: TypeVaultTokenReply,
		Summary: "A valid access token for one of the user's connected accounts, refreshed if needed, sealed to the agent."}
	OpVaultConnect = Op{Area: "vault", Name: "connect", RequestType: TypeVaultConnectRequest, ReplyType: TypeVaultConnectReply,
		Summary: "A single-use link on agentauth's HTTP edge where the user connects an account."}
	OpVaultConnections = Op{Area: "vault", Name: "connections", RequestType: TypeVaultConnectionsRequest, ReplyType: TypeVaultConnectionsReply,
		Summary: "The user's connected accounts the agent may use: scopes, status, expiry; never tokens."}
	OpVaultDisconnect = Op{Area: "vault", Name: "disconnect", RequestType: TypeVaultDisconnectRequest, ReplyType: TypeVaultDisconnectReply,
		Summary: "Revoke a connected account at the provider (when it supports revocation) and delete it."}
)

// VaultTokenRequest asks for the user's token of a connection.
type VaultTokenRequest struct {
	UserToken  string   `json:"user_token"`
	Connection string   `json:"connection"`
	Scopes     []string `json:"scopes,omitempty"`
}

// VaultToken is a connected account's access token, sealed to the agent.
type VaultToken struct {
	Connection  string    `json:"connection"`
	TokenType   string    `json:"token_type"`
	Scopes      []string  `json:"scopes"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"` // absent: the token does not expire
	Fingerprint string    `json:"fingerprint"`
	SealedToken Sealed    `json:"sealed_token"`
}

// VaultConnectRequest asks for a connect link.
type VaultConnectRequest struct {
	UserToken  string   `json:"user_token"`
	Connection string   `json:"connection"`
	Scopes     []string `json:"scopes,omitempty"`
}

// VaultConnectLink is where the user connects an account.
type VaultConnectLink struct {
	Connection string    `json:"connection"`
	Scopes     []string  `json:"scopes"` // what the link asks for: the union of what is connected and what was requested
	ConnectURL string    `json:"connect_url"`
	LinkID     string    `json:"link_id"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// VaultConnectionsRequest lists the user's connections.
type VaultConnectionsRequest struct {
	UserToken string `json:"user_token"`
}

// VaultConnections lists connected accounts, never their tokens.
type VaultConnections struct {
	Connections []VaultConnection `json:"connections"`
}

// VaultConnection describes one connected account.
type VaultConnection struct {
	Connection  string    `json:"connection"`
	Title       string    `json:"title,omitempty"`
	Scopes      []string  `json:"scopes"`
	Status      string    `json:"status"` // active, needs_reauth, corrupt
	Reason      string    `json:"reason,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	LinkedAt    time.Time `json:"linked_at,omitzero"`
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
}

// VaultDisconnectRequest disconnects an account.
type VaultDisconnectRequest struct {
	UserToken  string `json:"user_token"`
	Connection string `json:"connection"`
}

// VaultDisconnected reports a disconnection.
type VaultDisconnected struct {
	Connection string `json:"connection"`
	// Revocation at the provider: "revoked", "unsupported" (the provider
	// has no revocation endpoint) or "failed" (deleted here anyway).
	Revocation string `json:"revocation"`
}

// ConnectionEvent is the data of the vault's feed events.
type ConnectionEvent struct {
	Connection string   `json:"connection"`
	Subject    string   `json:"subject"`
	Issuer     string   `json:"issuer"`
	Scopes     []string `json:"scopes"`
	LinkID     string   `json:"link_id,omitempty"` // linked: the link the user followed
	Reason     string   `json:"reason,omitempty"`  // needs_reauth: why
}

// AuditVault is the data of a TypeAuditVault event: facts and
// fingerprints, never a token.
type AuditVault struct {
	Event       string    `json:"event"` // token.issued, token.refreshed, token.refresh_failed, connection.needs_reauth, connection.linked, connection.disconnected
	Agent       string    `json:"agent,omitempty"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Connection  string    `json:"connection"`
	Scopes      []string  `json:"scopes,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"` // of the access token handed out or obtained
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
}

// AppendJSON appends the JSON encoding of t, equal to json.Marshal's (a
// test holds it to that): every vault.token reply carries one.
func (t *VaultToken) AppendJSON(b []byte) []byte {
	b = append(b, `{"connection":`...)
	b = appendString(b, t.Connection)
	b = append(b, `,"token_type":`...)
	b = appendString(b, t.TokenType)
	b = append(b, `,"scopes":`...)
	b = appendStrings(b, t.Scopes)
	if !t.ExpiresAt.IsZero() {
		b = append(b, `,"expires_at":"`...)
		b = t.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"fingerprint":`...)
	b = appendString(b, t.Fingerprint)
	b = append(b, `,"sealed_token":`...)
	b = t.SealedToken.AppendJSON(b)
	return append(b, '}')
}

// AppendJSON appends the JSON encoding of s, equal to json.Marshal's.
func (s *Sealed) AppendJSON(b []byte) []byte {
	b = append(b, `{"alg":`...)
	b = appendString(b, s.Alg)
	b = append(b, `,"sender":`...)
	b = appendString(b, s.Sender)
	b = append(b, `,"recipient":`...)
	b = appendString(b, s.Recipient)
	b = append(b, `,"ciphertext":`...)
	if s.Ciphertext == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, s.Ciphertext)
		b = append(b, '"')
	}
	return append(b, '}')
}

// AppendJSON appends the JSON encoding of r, equal to json.Marshal's.
func (r *VaultTokenRequest) AppendJSON(b []byte) []byte {
	b = append(b, `{"user_token":`...)
	b = appendString(b, r.UserToken)
	b = append(b, `,"connection":`...)
	b = appendString(b, r.Connection)
	if len(r.Scopes) > 0 {
		b = append(b, `,"scopes":`...)
		b = appendStrings(b, r.Scopes)
	}
	return append(b, '}')
}

// AppendJSON appends the JSON encoding of a, equal to json.Marshal's: one
// is written for every token handed out.
func (a *AuditVault) AppendJSON(b []byte) []byte {
	b = append(b, `{"event":`...)
	b = appendString(b, a.Event)
	if a.Agent != "" {
		b = append(b, `,"agent":`...)
		b = appendString(b, a.Agent)
	}
	b = append(b, `,"subject":`...)
	b = appendString(b, a.Subject)
	b = append(b, `,"issuer":`...)
	b = appendString(b, a.Issuer)
	b = append(b, `,"connection":`...)
	b = appendString(b, a.Connection)
	if len(a.Scopes) > 0 {
		b = append(b, `,"scopes":`...)
		b = appendStrings(b, a.Scopes)
	}
	if a.Fingerprint != "" {
		b = append(b, `,"fingerprint":`...)
		b = appendString(b, a.Fingerprint)
	}
	if !a.ExpiresAt.IsZero() {
		b = append(b, `,"expires_at":"`...)
		b = a.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if a.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, a.Reason)
	}
	if a.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, a.RequestID)
	}
	return append(b, '}')
}
