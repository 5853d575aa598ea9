package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// Coder is implemented by errors that carry a wire error code. Domain
// packages give their sentinel errors an ErrorCode method; the table below
// decides what each code does.
type Coder interface {
	ErrorCode() schemas.ErrorCode
}

// Error is an error with a wire code and a message a person can act on.
type Error struct {
	Code       schemas.ErrorCode
	Message    string
	RetryAfter time.Duration
	Err        error // wrapped cause, never shown on the wire
}

// Errorf returns an *Error with a formatted message.
func Errorf(code schemas.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Message + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Message
}

func (e *Error) Unwrap() error                 { return e.Err }
func (e *Error) ErrorCode() schemas.ErrorCode  { return e.Code }
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }
func (e *Error) PublicMessage() string         { return e.Message }

// Action is what a JetStream consumer does with a message after its
// handler returns.
type Action int

// Actions.
const (
	Ack  Action = iota // done (including "already done")
	Nak                // redeliver after a backoff
	Term               // never redeliver: the message itself is bad
)

func (a Action) String() string { return [...]string{"ack", "nak", "term"}[a] }

// rule is one row of the error table.
type rule struct {
	status  int    // micro service error code (HTTP-like), for `nats req` and `nats micro`
	action  Action // for JetStream consumers
	message string // default message when the error has none
}

// table is the one place where an error becomes an outcome.
var table = map[schemas.ErrorCode]rule{
	schemas.CodeEventTooLarge:               {413, Term, "the event is larger than the configured limit"},
	schemas.CodeInvalidEvent:                {400, Term, "the message is not a valid CloudEvent"},
	schemas.CodeUnsupportedVersion:          {400, Term, "only CloudEvents specversion 1.0 is supported"},
	schemas.CodeInvalidHeaderEncoding:       {400, Term, "a ce- header is not valid percent-encoded UTF-8"},
	schemas.CodeUnknownType:                 {400, Term, "this subject does not accept that event type"},
	schemas.CodeUnsupportedContent:          {415, Term, "data must be application/json"},
	schemas.CodeSchemaViolation:             {400, Term, "data does not match its schema"},
	schemas.CodeSourceMismatch:              {403, Term, "the event source does not match the agent in the subject"},
	schemas.CodeUnauthenticated:             {401, Term, "authentication is required"},
	schemas.CodeForbidden:                   {403, Term, "the agent's policy does not allow this"},
	schemas.CodeNotFound:                    {404, Term, "not found"},
	schemas.CodeConflict:                    {409, Ack, "the request conflicts with the current state"},
	schemas.CodeTimeout:                     {504, Nak, "the request timed out; try again"},
	schemas.CodeUnavailable:                 {503, Nak, "the service is temporarily unavailable; try again"},
	schemas.CodeInternal:                    {500, Nak, "internal error; the operator can find this request id in the service log"},
	schemas.CodeAuthorizationRequired:       {403, Term, "the user must connect this account first"},
	schemas.CodeRetryLater:                  {503, Nak, "a third-party provider is unavailable; try again later"},
	schemas.CodeDenied:                      {403, Term, "the agent's policy does not allow this"},
	schemas.CodeAuthorizationPending:        {400, Nak, "the person has not decided yet; poll again after the interval"},
	schemas.CodeSlowDown:                    {400, Nak, "polling too fast; the interval is now longer"},
	schemas.CodeAccessDenied:                {403, Term, "the person denied the request"},
	schemas.CodeExpiredToken:                {400, Term, "the request expired before the person decided"},
	schemas.CodeInvalidGrant:                {400, Term, "unknown, another agent's, or already redeemed auth_req_id"},
	schemas.CodeAlreadyDecided:              {409, Term, "the request was already decided"},
	schemas.CodeInvalidBindingMessage:       {400, Term, "binding_message must be 1 to 64 printable characters"},
	schemas.CodeInvalidAuthorizationDetails: {400, Term, "authorization_details must be objects of registered types that satisfy their schemas"},
}

// Failure is the decided outcome of an error.
type Failure struct {
	Code       schemas.ErrorCode
	Message    string
	Status     int
	Action     Action
	RetryAfter time.Duration
	Details    *schemas.ErrorDetails
	Internal   bool // the cause is not shown to the caller; log it
}

// ServerFault reports a failure that is the service's, not the caller's
// (internal, or a 5xx status): logged as an error, audited as "failed".
func (f Failure) ServerFault() bool { return f.Internal || f.Status >= 500 }

// Classify maps err to its outcome through the table. Errors without a
// code become internal errors whose cause is never put on the wire.
func Classify(err error) Failure {
	var code schemas.ErrorCode
	var msg string
	var retry time.Duration
	var details *schemas.ErrorDetails
	var c Coder
	switch {
	case errors.As(err, &c):
		code = c.ErrorCode()
		if m, ok := c.(interface{ PublicMessage() string }); ok {
			msg = m.PublicMessage()
		} else if de, ok := c.(*DecodeError); ok {
			msg = de.Reason
		} else {
			msg = err.Error()
		}
		if r, ok := c.(interface{ RetryAfterHint() time.Duration }); ok {
			retry = r.RetryAfterHint()
		}
		if d, ok := c.(interface{ ErrorDetails() *schemas.ErrorDetails }); ok {
			details = d.ErrorDetails()
		}
	case errors.Is(err, context.DeadlineExceeded):
		code = schemas.CodeTimeout
	case errors.Is(err, context.Canceled):
		code = schemas.CodeUnavailable
		msg = "the service is shutting down; try again"
	default:
		r := table[schemas.CodeInternal]
		return Failure{Code: schemas.CodeInternal, Message: r.message, Status: r.status, Action: r.action, Internal: true}
	}
	r, ok := table[code]
	if !ok {
		r = rule{500, Nak, "error"}
	}
	if msg == "" {
		msg = r.message
	}
	return Failure{Code: code, Message: msg, Status: r.status, Action: r.action, RetryAfter: retry, Details: details}
}
