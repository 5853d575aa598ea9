package identity

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/schemas"
)

// PolicyError is a request the agent's policy does not allow.
type PolicyError struct{ Message string }

func (e *PolicyError) Error() string                { return e.Message }
func (e *PolicyError) ErrorCode() schemas.ErrorCode { return schemas.CodeForbidden }
func (e *PolicyError) PublicMessage() string        { return e.Message }

// ExchangeRequest is what an agent asks for in a token exchange.
type ExchangeRequest struct {
	Audience string
	Scopes   []string
	TTL      time.Duration
}

// AuthorizeExchange decides an RFC 8693 exchange: the agent presenting
// the verified user u's token gets a token for one audience its policy
// names, with scopes its policy allows, never outliving u's token. The
// token's subject is u.ID (qualified unless u is of the default issuer),
// and it names u's issuer (user_iss).
func AuthorizeExchange(u *User, a agents.Agent, r ExchangeRequest) (Grant, error) {
	if !a.Policy.AllowsAudience(r.Audience) {
		allowed := "none"
		if len(a.Policy.Audiences) > 0 {
			allowed = strings.Join(a.Policy.Audiences, ", ")
		}
		return Grant{}, &PolicyError{fmt.Sprintf("agent %s may not get tokens for audience %q; its policy allows: %s (change it with `agentauth agent policy %s --audience …`)", a.ID, r.Audience, allowed, a.ID)}
	}
	var denied []string
	for _, s := range r.Scopes {
		if !slices.Contains(a.Policy.Scopes, s) {
			denied = append(denied, s)
		}
	}
	if len(denied) > 0 {
		return Grant{}, &PolicyError{fmt.Sprintf("agent %s may not ask for scopes %s; its policy allows: %s", a.ID, strings.Join(denied, ", "), strings.Join(a.Policy.Scopes, ", "))}
	}
	return Grant{Subject: u.ID, Issuer: u.Issuer, Actor: a.ID, Audience: r.Audience, Scopes: r.Scopes, TTL: r.TTL, NotAfter: u.Expiry}, nil
}
