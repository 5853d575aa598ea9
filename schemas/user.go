package schemas

import (
	"strconv"
	"time"
)

// user.whoami and user.exchange.
const (
	TypeWhoAmIRequest   = "dev.agentauth.user.whoami.request"
	TypeWhoAmIReply     = "dev.agentauth.user.whoami.reply"
	TypeExchangeRequest = "dev.agentauth.user.exchange.request"
	TypeExchangeReply   = "dev.agentauth.user.exchange.reply"
	// TypeAuditTokenIssued records a token handed to an agent
	// (fingerprint only).
	TypeAuditTokenIssued = "dev.agentauth.audit.token.issued"
)

// OpWhoAmI is agentauth.<agent>.user.whoami.
var OpWhoAmI = Op{Area: "user", Name: "whoami", RequestType: TypeWhoAmIRequest, ReplyType: TypeWhoAmIReply,
	Summary: "The verified identity behind a user token."}

// OpExchange is agentauth.<agent>.user.exchange.
var OpExchange = Op{Area: "user", Name: "exchange", RequestType: TypeExchangeRequest, ReplyType: TypeExchangeReply,
	Summary: "RFC 8693 token exchange: a short-lived first-party token for the user, sealed to the agent."}

// WhoAmIRequest carries the user's token.
type WhoAmIRequest struct {
	UserToken string `json:"user_token"`
}

// WhoAmI is the verified identity behind a user token.
type WhoAmI struct {
	Subject         string    `json:"subject"`
	Issuer          string    `json:"issuer"`
	Email           string    `json:"email,omitempty"`
	EmailVerified   bool      `json:"email_verified"`
	Name            string    `json:"name,omitempty"`
	AuthorizedParty string    `json:"authorized_party,omitempty"`
	Audience        []string  `json:"audience"`
	Scopes          []string  `json:"scopes"`
	ExpiresAt       time.Time `json:"expires_at"`
}

// ExchangeRequest asks for a first-party token for the user.
type ExchangeRequest struct {
	UserToken  string   `json:"user_token"`
	Audience   string   `json:"audience"`
	Scopes     []string `json:"scopes,omitempty"`
	TTLSeconds int      `json:"ttl_seconds,omitempty"`
}

// Token types of RFC 8693.
const TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"

// ExchangeReply carries the minted token, sealed to the agent.
type ExchangeReply struct {
	IssuedTokenType string    `json:"issued_token_type"`
	TokenType       string    `json:"token_type"`
	ExpiresIn       int64     `json:"expires_in"`
	ExpiresAt       time.Time `json:"expires_at"`
	Audience        string    `json:"audience"`
	Scopes          []string  `json:"scopes"`
	JTI             string    `json:"jti"`
	Fingerprint     string    `json:"fingerprint"`
	SealedToken     Sealed    `json:"sealed_token"`
}

// AuditTokenIssued is the audit record of a token handed to an agent.
type AuditTokenIssued struct {
	Agent       string    `json:"agent"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Audience    string    `json:"audience"`
	Scopes      []string  `json:"scopes"`
	JTI         string    `json:"jti"`
	Fingerprint string    `json:"fingerprint"`
	ExpiresAt   time.Time `json:"expires_at"`
	RequestID   string    `json:"request_id"`
}

// AppendJSON appends the JSON encoding of r, equal to json.Marshal's (a
// test holds it to that): the token is most of every request.
func (r *WhoAmIRequest) AppendJSON(b []byte) []byte {
	b = append(b, `{"user_token":`...)
	b = appendString(b, r.UserToken)
	return append(b, '}')
}

// AppendJSON appends the JSON encoding of w, equal to json.Marshal's.
func (w *WhoAmI) AppendJSON(b []byte) []byte {
	b = append(b, `{"subject":`...)
	b = appendString(b, w.Subject)
	b = append(b, `,"issuer":`...)
	b = appendString(b, w.Issuer)
	if w.Email != "" {
		b = append(b, `,"email":`...)
		b = appendString(b, w.Email)
	}
	b = append(b, `,"email_verified":`...)
	b = strconv.AppendBool(b, w.EmailVerified)
	if w.Name != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, w.Name)
	}
	if w.AuthorizedParty != "" {
		b = append(b, `,"authorized_party":`...)
		b = appendString(b, w.AuthorizedParty)
	}
	b = append(b, `,"audience":`...)
	b = appendStrings(b, w.Audience)
	b = append(b, `,"scopes":`...)
	b = appendStrings(b, w.Scopes)
	b = append(b, `,"expires_at":"`...)
	b = w.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}
