package schemas

import (
	"encoding/json"
	"strconv"
	"time"
)

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

// AppendJSON appends the JSON encoding of a, equal to json.Marshal's (a
// test holds it to that). Audit records are written for every request, so
// they skip reflection.
func (a *AuditRequest) AppendJSON(b []byte) []byte {
	b = append(b, `{"agent":`...)
	b = appendString(b, a.Agent)
	b = append(b, `,"subject":`...)
	b = appendString(b, a.Subject)
	if a.Operation != "" {
		b = append(b, `,"operation":`...)
		b = appendString(b, a.Operation)
	}
	if a.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, a.RequestID)
	}
	if a.RequestType != "" {
		b = append(b, `,"request_type":`...)
		b = appendString(b, a.RequestType)
	}
	b = append(b, `,"outcome":`...)
	b = appendString(b, a.Outcome)
	if a.Code != "" {
		b = append(b, `,"code":`...)
		b = appendString(b, string(a.Code))
	}
	if a.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, a.Message)
	}
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, a.DurationUS, 10)
	if a.Traceparent != "" {
		b = append(b, `,"traceparent":`...)
		b = appendString(b, a.Traceparent)
	}
	b = append(b, `,"instance":`...)
	b = appendString(b, a.Instance)
	b = append(b, `,"received":"`...)
	b = a.Received.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// plainJSON[c] reports whether encoding/json writes byte c of a string as
// it is: printable ASCII but '"', '\\' and the HTML-escaped '<', '>', '&'.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	for _, c := range `"\\<>&` {
		t[c] = false
	}
	return t
}()

// appendString appends s as a JSON string the way encoding/json writes it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSON[s[i]] {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
