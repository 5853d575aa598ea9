package schemas

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
)

// ErrorData is the data of an error reply (type ErrorType).
type ErrorData struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// RetryAfterMS, when set, says how long to wait before trying again.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// RequestID is the id of the request event, when it could be read.
	RequestID string `json:"request_id,omitempty"`
}
