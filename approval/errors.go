package approval

import (
	"errors"
	"fmt"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// Store errors. Implementations return them (wrapped) so that Service can
// tell them apart with errors.Is.
var (
	// ErrNotFound: no request with that id.
	ErrNotFound = errors.New("approval request not found")
	// ErrConflict: the request changed since the revision given to Update.
	ErrConflict = errors.New("approval request changed concurrently")
	// ErrDuplicate: the agent already made a request with that event id;
	// Create returns the stored request with it.
	ErrDuplicate = errors.New("approval request already made with this event id")
)

// Error is an approval outcome with a wire code (CIBA's codes for
// polling), a message a person can act on and, for authorization_pending
// and slow_down, how long to wait before polling again.
type Error struct {
	Code       schemas.ErrorCode
	Msg        string
	RetryAfter time.Duration
	Err        error // cause, never on the wire
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Msg + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Msg
}

func (e *Error) Unwrap() error                 { return e.Err }
func (e *Error) ErrorCode() schemas.ErrorCode  { return e.Code }
func (e *Error) PublicMessage() string         { return e.Msg }
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

func errorf(code schemas.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// unavailable reports a store failure: nothing was decided, try again.
func unavailable(op string, err error) *Error {
	return &Error{Code: schemas.CodeUnavailable, Msg: "approval " + op + ": the approval store is unavailable; try again", Err: err}
}

// CodeOf returns the wire code of an approval error, or "" for another
// error.
func CodeOf(err error) schemas.ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
