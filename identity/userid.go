package identity

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// UserID is the one string that names the user subject of issuer where
// agentauth must name a user by one string: the sub of the tokens it
// mints and the OpenFGA user it asks about. DESIGN.md keys a user by
// (issuer, subject), and two issuers may well issue the same subject to
// two people, so:
//
//   - a user of the default issuer (the first configured one) keeps the
//     bare subject, as before (existing OpenFGA tuples, sample stores and
//     documentation name them so);
//   - a user of any other issuer gets a qualified id: the issuer without
//     its scheme (its host, port and path), then "|", then the subject, as
//     in "login.example.com|00u1abc" for the issuer
//     "https://login.example.com". In the issuer part '%', ':', '|', '#',
//     spaces and control characters are percent-encoded (%3A for a port's
//     colon), so that the id is a valid OpenFGA object id ("user:<id>":
//     one ':' only, no '#' or space) and the first '|' ends the issuer.
//
// An empty defaultIssuer makes every user qualified. Two (issuer, subject)
// pairs get the same id only if their issuers differ in the scheme alone,
// or if a subject of the default issuer is itself another issuer's
// qualified id (it would contain '|' after that issuer's host).
func UserID(defaultIssuer, issuer, subject string) string {
	if issuer == defaultIssuer && defaultIssuer != "" {
		return subject
	}
	return issuerPart(issuer) + "|" + subject
}

// issuerPart is issuer without its scheme, escaped as UserID says.
func issuerPart(issuer string) string {
	s := issuer
	if i := strings.Index(s, "://"); i > 0 {
		s = s[i+len("://"):]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if strings.ContainsRune("%:|#", r) || unicode.IsSpace(r) || unicode.IsControl(r) || (r == utf8.RuneError && n <= 1) {
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
