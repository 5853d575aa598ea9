package vault

import (
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// Error is a vault outcome with a wire code, a message a person can act
// on and, for authorization_required, the connect link.
type Error struct {
	Code       schemas.ErrorCode
	Msg        string
	RetryAfter time.Duration
	Details    *schemas.ErrorDetails
	Err        error // cause, never on the wire
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Msg + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Msg
}

func (e *Error) Unwrap() error                       { return e.Err }
func (e *Error) ErrorCode() schemas.ErrorCode        { return e.Code }
func (e *Error) PublicMessage() string               { return e.Msg }
func (e *Error) RetryAfterHint() time.Duration       { return e.RetryAfter }
func (e *Error) ErrorDetails() *schemas.ErrorDetails { return e.Details }

func errorf(code schemas.ErrorCode, msg string, err error) *Error {
	return &Error{Code: code, Msg: msg, Err: err}
}

// Reasons for authorization_required.
const (
	ReasonNotConnected  = "not_connected"
	ReasonMissingScopes = "missing_scopes"
	ReasonNeedsReauth   = "needs_reauth"
)
