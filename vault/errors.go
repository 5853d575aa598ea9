package vault

import "github.com/agentauth/agentauth/schemas"

// Error is a vault outcome with a wire code, a message a person can act
// on and, for authorization_required, the connect link (Details).
type Error = schemas.Error

func errorf(code schemas.ErrorCode, msg string, err error) *Error {
	return &Error{Code: code, Msg: msg, Err: err}
}

// Reasons for authorization_required.
const (
	ReasonNotConnected  = "not_connected"
	ReasonMissingScopes = "missing_scopes"
	ReasonNeedsReauth   = "needs_reauth"
)
