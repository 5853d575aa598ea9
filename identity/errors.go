package identity

import (
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agentauth/agentauth/schemas"
)

// ErrInvalidConfig is wrapped by every error NewVerifier returns.
var ErrInvalidConfig = errors.New("identity: invalid configuration")

// Reasons carried in TokenError.Reason. They are stable, machine-readable
// and append only: never rename one.
const (
	ReasonTooLarge          = "token_too_large"       // longer than Options.MaxTokenBytes
	ReasonMalformed         = "malformed"             // not a compact JWS with JSON header and claims
	ReasonAlgorithm         = "algorithm_not_allowed" // alg not in the issuer's allow-list
	ReasonHeader            = "unsupported_header"    // crit, b64 or a nested JWT
	ReasonTokenType         = "wrong_token_type"      // typ says another kind of token
	ReasonUnknownIssuer     = "unknown_issuer"        // iss is not a configured issuer
	ReasonUnknownKey        = "unknown_key"           // kid not in the issuer's JWKS, even after a refetch
	ReasonKeyMismatch       = "key_mismatch"          // the kid names a key that cannot verify alg
	ReasonSignature         = "bad_signature"         // signature does not verify
	ReasonMissingClaim      = "missing_claim"         // sub or exp absent
	ReasonExpired           = "expired"               // exp + leeway has passed
	ReasonNotYetValid       = "not_yet_valid"         // nbf - leeway is in the future
	ReasonIssuedInFuture    = "issued_in_future"      // iat - leeway is in the future
	ReasonAudience          = "audience"              // aud does not include the configured audience
	ReasonAuthorizedParty   = "authorized_party"      // azp/client_id differs from VerifyOptions.AuthorizedParty
	ReasonKeysUnavailable   = "keys_unavailable"      // discovery or JWKS could not be fetched or parsed
	ReasonDiscoveryMismatch = "discovery_issuer_mismatch"
	ReasonInvalidKind       = "invalid_kind" // a caller bug: VerifyOptions.Kind is not a known Kind
)

// TokenError is returned for every token Verify rejects. Reason is one of
// the Reason constants. The message never contains the token; values taken
// from the token (issuer, kid, audience) are quoted and shortened.
//
// ErrorCode is schemas.CodeUnauthenticated when the token itself is at fault,
// schemas.CodeUnavailable when the issuer's keys could not be obtained
// (ReasonKeysUnavailable, ReasonDiscoveryMismatch; the cause is available
// through errors.Unwrap), and schemas.CodeInternal for ReasonInvalidKind.
type TokenError struct {
	Reason string

	code       schemas.ErrorCode
	message    string
	retryAfter time.Duration
	err        error
}

func rejectf(reason, message string) *TokenError {
	return &TokenError{Reason: reason, code: schemas.CodeUnauthenticated, message: message}
}

func unavailable(reason, message string, retryAfter time.Duration, cause error) *TokenError {
	return &TokenError{Reason: reason, code: schemas.CodeUnavailable, message: message, retryAfter: retryAfter, err: cause}
}

func (e *TokenError) Error() string {
	s := "identity: " + e.Reason + ": " + e.message
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

// Unwrap returns the cause of a fetch failure, or nil.
func (e *TokenError) Unwrap() error { return e.err }

// ErrorCode is the wire error code (see the type's documentation).
func (e *TokenError) ErrorCode() schemas.ErrorCode { return e.code }

// PublicMessage is a message a person can act on. It never contains the
// token nor the cause of a fetch failure.
func (e *TokenError) PublicMessage() string { return e.message }

// RetryAfterHint is how long to wait before the issuer's keys will be
// fetched again; zero unless ErrorCode is schemas.CodeUnavailable.
func (e *TokenError) RetryAfterHint() time.Duration { return e.retryAfter }

// maxQuoted bounds values from the token copied into messages.
const maxQuoted = 80

// quote returns s quoted for a message, shortened to maxQuoted bytes.
func quote(s string) string {
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// quoteList quotes at most a few elements of l.
func quoteList(l []string) string {
	const max = 5
	s := "["
	for i, e := range l {
		if i == max {
			s += " …"
			break
		}
		if i > 0 {
			s += " "
		}
		s += quote(e)
	}
	return s + "]"
}
