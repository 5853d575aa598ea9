package identity

import (
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// User is the person a verified token speaks for.
type User struct {
	Subject string // sub; never empty
	Issuer  string // iss; one of the configured issuers
	// ID names the user where one string must (the sub of tokens
	// agentauth mints, the OpenFGA user): UserID of the verifier's default
	// issuer (its first), Issuer and Subject. Set by Verify.
	ID string
	// Email is the email claim as the issuer states it. It is not an
	// identifier: key users by (Issuer, Subject).
	Email           string
	EmailVerified   bool // email_verified (true or "true")
	Name            string
	AuthorizedParty string // azp, or client_id when azp is absent
	Audience        []string
	Scopes          []string // scope, or scp when scope is absent
	Expiry          time.Time
	IssuedAt        time.Time // zero when the token has no iat
}

// claims is what Verify reads from a token. It is decoded with go-jose's
// JSON package: member names match case-sensitively and duplicate members
// are rejected.
type claims struct {
	Issuer          string           `json:"iss"`
	Subject         string           `json:"sub"`
	Audience        jwt.Audience     `json:"aud"`
	Expiry          *jwt.NumericDate `json:"exp"`
	NotBefore       *jwt.NumericDate `json:"nbf"`
	IssuedAt        *jwt.NumericDate `json:"iat"`
	AuthorizedParty string           `json:"azp"`
	ClientID        string           `json:"client_id"`
	Email           string           `json:"email"`
	EmailVerified   looseBool        `json:"email_verified"`
	Name            string           `json:"name"`
	Scope           *stringList      `json:"scope"`
	Scp             *stringList      `json:"scp"`
}

// stringList is a space-separated string or an array of strings (issuers
// disagree: Okta sends scp as an array, Entra ID as a string).
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
		*l = nil
	case string:
		*l = strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return errNotStrings
			}
			if s != "" {
				out = append(out, s)
			}
		}
		*l = out
	default:
		return errNotStrings
	}
	return nil
}

// looseBool is true for JSON true and the string "true" (some issuers
// send email_verified as a string); anything else is false.
type looseBool bool

func (b *looseBool) UnmarshalJSON(data []byte) error {
	s := string(data)
	*b = looseBool(s == "true" || s == `"true"`)
	return nil
}

type claimsError string

func (e claimsError) Error() string { return string(e) }

const errNotStrings = claimsError("expected a string or an array of strings")
