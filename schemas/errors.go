package schemas

import "time"

// ErrorType is the CloudEvent type of every error reply.
const ErrorType = "dev.agentauth.error"

// ErrorCode is a stable, machine-readable error code carried in error
// replies, audit events and metrics. Append only: never rename a code.
type ErrorCode string

// Error codes.
const (
	CodeEventTooLarge         ErrorCode = "event_too_large"
	CodeInvalidEvent          ErrorCode = "invalid_event"
	CodeUnsupportedVersion    ErrorCode = "unsupported_specversion"
	CodeInvalidHeaderEncoding ErrorCode = "invalid_header_encoding"
	CodeUnknownType           ErrorCode = "unknown_type"
	CodeUnsupportedContent    ErrorCode = "unsupported_content_type"
	CodeSchemaViolation       ErrorCode = "schema_violation"
	CodeSourceMismatch        ErrorCode = "source_mismatch"
	CodeUnauthenticated       ErrorCode = "unauthenticated"
	CodeForbidden             ErrorCode = "forbidden"
	CodeNotFound              ErrorCode = "not_found"
	CodeConflict              ErrorCode = "conflict"
	CodeTimeout               ErrorCode = "timeout"
	CodeUnavailable           ErrorCode = "unavailable"
	CodeInternal              ErrorCode = "internal"
	// CodeAuthorizationRequired: the user must connect (or reconnect) an
	// account first; the details carry the connect link.
	CodeAuthorizationRequired ErrorCode = "authorization_required"
	// CodeRetryLater: a third party (an OAuth provider) failed or rate
	// limited us; nothing is wrong with the request or the account.
	CodeRetryLater ErrorCode = "retry_later"
	// CodeDenied: the agent's policy does not allow the request.
	CodeDenied ErrorCode = "denied"

	// CIBA's outcomes of polling (OpenID CIBA Core §11) and of deciding.
	CodeAuthorizationPending ErrorCode = "authorization_pending"
	CodeSlowDown             ErrorCode = "slow_down"
	CodeAccessDenied         ErrorCode = "access_denied"
	CodeExpiredToken         ErrorCode = "expired_token"
	CodeInvalidGrant         ErrorCode = "invalid_grant"
	CodeAlreadyDecided       ErrorCode = "already_decided"
	// Refusals of an approval request's content (SECURITY.md).
	CodeInvalidBindingMessage       ErrorCode = "invalid_binding_message"
	CodeInvalidAuthorizationDetails ErrorCode = "invalid_authorization_details"
)

// ErrorData is the data of an error reply (type ErrorType).
type ErrorData struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// RetryAfterMS, when set, says how long to wait before trying again.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// RequestID is the id of the request event, when it could be read.
	RequestID string `json:"request_id,omitempty"`
	// Details say what to do next, for the codes that have a next step
	// (authorization_required: the connect link).
	Details *ErrorDetails `json:"details,omitempty"`
}

// ErrorDetails are the next step of an error.
type ErrorDetails struct {
	Connection     string    `json:"connection,omitempty"`
	RequiredScopes []string  `json:"required_scopes,omitempty"`
	ConnectURL     string    `json:"connect_url,omitempty"`
	LinkID         string    `json:"link_id,omitempty"`
	LinkExpiresAt  time.Time `json:"link_expires_at,omitzero"`
	// Reason: not_connected, missing_scopes or needs_reauth.
	Reason string `json:"reason,omitempty"`
	// Subject and Issuer are the person the link is for (the user token's):
	// a wait for the link matches their linked event only.
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
}

// Error is a domain outcome with a wire code: the domain packages (vault,
// approval) return it, the bus's error table turns it into a reply. Msg
// is for the person reading the reply; Err, the cause, is never on the
// wire.
type Error struct {
	Code       ErrorCode
	Msg        string
	RetryAfter time.Duration // when to try again, for the codes that have a later
	Details    *ErrorDetails // the next step, for the codes that have one
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Msg + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Msg
}

func (e *Error) Unwrap() error                 { return e.Err }
func (e *Error) ErrorCode() ErrorCode          { return e.Code }
func (e *Error) PublicMessage() string         { return e.Msg }
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }
func (e *Error) ErrorDetails() *ErrorDetails   { return e.Details }
