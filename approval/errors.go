package approval

import (
	"errors"
	"fmt"

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
// and slow_down, how long to wait before polling again (RetryAfter).
type Error = schemas.Error

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
