package schemas

import (
	"encoding/json"
	"time"
)

// Asynchronous authorization (CIBA semantics): requests, decisions,
// polling, the person's notifications and the agent's feed events.
const (
	TypeApprovalRequestRequest = "dev.agentauth.approval.request.request"
	TypeApprovalRequestReply   = "dev.agentauth.approval.request.reply"
	TypeApprovalStatusRequest  = "dev.agentauth.approval.status.request"
	TypeApprovalStatusReply    = "dev.agentauth.approval.status.reply"
	TypeApprovalDecideRequest  = "dev.agentauth.approval.decide.request"
	TypeApprovalDecideReply    = "dev.agentauth.approval.decide.reply"

	// TypeApprovalRequested is the person's notification
	// (agentauth.notify.<userkey>.approval.requested).
	TypeApprovalRequested = "dev.agentauth.approval.requested"
	// TypeApprovalResolved tells the person's approval apps a request is
	// no longer pending (agentauth.notify.<userkey>.approval.resolved).
	TypeApprovalResolved = "dev.agentauth.approval.resolved"
	// TypeApprovalDecided is the agent's feed event
	// (agentauth.events.<agent>.approval.decided): approved (with the
	// sealed token), denied or expired.
	TypeApprovalDecided = "dev.agentauth.approval.decided"

	// TypeAuditApproval records the lifecycle: requested, notified,
	// approved, denied, expired, token minted, redeemed
	// (agentauth.audit.approval.<object>.<verb>).
	TypeAuditApproval = "dev.agentauth.audit.approval"
)

// Approval operations: agentauth.<principal>.approval.<op>.
var (
	OpApprovalRequest = Op{Area: "approval", Name: "request", RequestType: TypeApprovalRequestRequest, ReplyType: TypeApprovalRequestReply,
		Summary: "Ask the person to approve an action; the auth_req_id returns once the request is stored in JetStream."}
	OpApprovalStatus = Op{Area: "approval", Name: "status", RequestType: TypeApprovalStatusRequest, ReplyType: TypeApprovalStatusReply,
		Summary: "Poll a request (CIBA): the sealed token once approved, else authorization_pending, slow_down, access_denied, expired_token or invalid_grant."}
	OpApprovalDecide = Op{Area: "approval", Name: "decide", RequestType: TypeApprovalDecideRequest, ReplyType: TypeApprovalDecideReply,
		Summary: "An approval app's decision with the person's own token: approve or deny, exactly once."}
)

// Approval outcomes (states of a request).
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
)

// ApprovalRequestData asks a person to approve an action.
type ApprovalRequestData struct {
	// UserToken proves the person; or LoginHint names them (their subject
	// at the issuer of IssuerHint, default the first configured issuer)
	// when the agent's policy allows background requests for Audience.
	UserToken  string `json:"user_token,omitempty"`
	LoginHint  string `json:"login_hint,omitempty"`
	IssuerHint string `json:"issuer_hint,omitempty"`
	// BindingMessage is shown to the person: at most 64 printable
	// characters, no control, bidi or zero-width characters.
	BindingMessage string   `json:"binding_message"`
	Audience       string   `json:"audience"`
	Scopes         []string `json:"scopes,omitempty"`
	// AuthorizationDetails (RFC 9396): objects with a "type"; registered
	// types are checked against their JSON Schema.
	AuthorizationDetails []json.RawMessage `json:"authorization_details,omitempty"`
	// RequestedExpiry in seconds, 1–3600; default 300.
	RequestedExpiry int `json:"requested_expiry,omitempty"`
}

// ApprovalStarted is CIBA's authentication request acknowledgement.
type ApprovalStarted struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn int    `json:"expires_in"`
	Interval  int    `json:"interval"`
}

// ApprovalStatusRequest polls a request.
type ApprovalStatusRequest struct {
	AuthReqID string `json:"auth_req_id"`
}

// ApprovalToken is the token minted on approval, sealed to the agent.
type ApprovalToken struct {
	TokenType            string            `json:"token_type"`
	ExpiresIn            int64             `json:"expires_in"`
	ExpiresAt            time.Time         `json:"expires_at"`
	Audience             string            `json:"audience"`
	Scopes               []string          `json:"scopes"`
	AuthorizationDetails []json.RawMessage `json:"authorization_details,omitempty"`
	JTI                  string            `json:"jti"`
	Fingerprint          string            `json:"fingerprint"`
	SealedToken          Sealed            `json:"sealed_token"`
}

// ApprovalStatusReply is an approved request's token (other outcomes are
// error replies with CIBA's codes).
type ApprovalStatusReply struct {
	AuthReqID string `json:"auth_req_id"`
	Status    string `json:"status"` // approved
	ApprovalToken
}

// ApprovalDecideRequest is an approval app's decision.
type ApprovalDecideRequest struct {
	UserToken string `json:"user_token"`
	AuthReqID string `json:"auth_req_id"`
	Decision  string `json:"decision"` // approve or deny
	Comment   string `json:"comment,omitempty"`
}

// ApprovalDecideReply confirms the one decision.
type ApprovalDecideReply struct {
	AuthReqID string `json:"auth_req_id"`
	Status    string `json:"status"` // approved or denied
}

// ApprovalNotification is what the person's approval apps show.
type ApprovalNotification struct {
	AuthReqID            string            `json:"auth_req_id"`
	Agent                string            `json:"agent"`
	Subject              string            `json:"subject"`
	Issuer               string            `json:"issuer"`
	BindingMessage       string            `json:"binding_message"`
	Audience             string            `json:"audience"`
	Scopes               []string          `json:"scopes"`
	AuthorizationDetails []json.RawMessage `json:"authorization_details,omitempty"`
	ExpiresAt            time.Time         `json:"expires_at"`
	Status               string            `json:"status"` // pending on requested; the outcome on resolved
}

// ApprovalDecided is the agent's feed event.
type ApprovalDecided struct {
	AuthReqID string         `json:"auth_req_id"`
	Status    string         `json:"status"` // approved, denied, expired
	Comment   string         `json:"comment,omitempty"`
	Token     *ApprovalToken `json:"token,omitempty"` // approved only
}

// AuditApproval is the data of a TypeAuditApproval event.
type AuditApproval struct {
	Event          string    `json:"event"` // requested, notified, approved, denied, expired, token.minted, redeemed
	AuthReqID      string    `json:"auth_req_id"`
	Agent          string    `json:"agent"`
	Subject        string    `json:"subject"`
	Issuer         string    `json:"issuer"`
	Audience       string    `json:"audience,omitempty"`
	Scopes         []string  `json:"scopes,omitempty"`
	BindingMessage string    `json:"binding_message,omitempty"`
	DecidedBy      string    `json:"decided_by,omitempty"` // the approval app (principal) or "web"
	Fingerprint    string    `json:"fingerprint,omitempty"`
	JTI            string    `json:"jti,omitempty"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	RequestID      string    `json:"request_id,omitempty"`
}

// NotifySubject is the prefix of a person's approval notifications.
func NotifySubject(userKey string) string { return SubjectRoot + ".notify." + userKey }

// StreamNotify holds people's approval notifications.
const StreamNotify = "AGENTAUTH_NOTIFY"
