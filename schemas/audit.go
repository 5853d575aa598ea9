package schemas

import "time"

// Audit event types. Append only.
const (
	// TypeAuditRequest records one request handled by a request/reply
	// endpoint, successful or not.
	TypeAuditRequest = "dev.agentauth.audit.request"
)

// AuditRequest is the data of a TypeAuditRequest event. It never carries a
// request or reply payload, only facts about it (secrets never appear).
type AuditRequest struct {
	Agent       string    `json:"agent"`
	Subject     string    `json:"subject"`
	Operation   string    `json:"operation,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
	RequestType string    `json:"request_type,omitempty"`
	Outcome     string    `json:"outcome"` // "ok" or "error"
	Code        ErrorCode `json:"code,omitempty"`
	Message     string    `json:"message,omitempty"`
	DurationUS  int64     `json:"duration_us"`
	Traceparent string    `json:"traceparent,omitempty"`
	Instance    string    `json:"instance"`
	Received    time.Time `json:"received"`
}
