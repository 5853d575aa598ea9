// Package vault is the Token Vault's domain: the catalog of connections
// (third-party OAuth providers), the encrypted Badger store of the tokens
// people have connected, refresh (golang.org/x/oauth2) that is
// single-flight per connection and persists a rotated refresh token
// before the new access token leaves, the linking flow's state, and the
// policy check of an agent's request. It never imports the bus: the
// service wires it to NATS through the interfaces it declares.
package vault

import (
	"time"
	"unsafe"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/schemas"
)

// RefreshBehaviour says what a provider does with refresh tokens.
type RefreshBehaviour string

// Refresh behaviours.
const (
	// RefreshRotating: a new refresh token on every refresh; the used one
	// dies at once (Slack, Atlassian, GitHub Apps, Xero, QuickBooks…).
	RefreshRotating RefreshBehaviour = "rotating"
	// RefreshRotatingGrace: a new refresh token on every refresh; the used
	// one stays valid for a grace window (Auth0, Okta, Microsoft, Xero…).
	RefreshRotatingGrace RefreshBehaviour = "rotating-grace"
	// RefreshNonRotating: the refresh token stays the same (Google…).
	RefreshNonRotating RefreshBehaviour = "non-rotating"
	// RefreshNonExpiring: access tokens do not expire and there is no
	// refresh token (Notion, classic GitHub OAuth apps…).
	RefreshNonExpiring RefreshBehaviour = "non-expiring"
)

// Valid reports whether b is one of the behaviours.
func (b RefreshBehaviour) Valid() bool {
	switch b {
	case RefreshRotating, RefreshRotatingGrace, RefreshNonRotating, RefreshNonExpiring:
		return true
	}
	return false
}

// Connection is one third-party provider agentauth can link accounts of:
// a catalog entry or a custom connection from configuration, with the
// client credentials from configuration (never from the catalog).
type Connection struct {
	Name           string            // key, [a-z0-9-]+ (e.g. "google", "jira")
	Title          string            // for people ("Google")
	AuthURL        string            // authorization endpoint
	TokenURL       string            // token endpoint
	RevocationURL  string            // RFC 7009 revocation endpoint; "" when the provider has none
	DefaultScopes  []string          // asked for when a request names none
	ScopeSeparator string            // how scopes are joined in the authorize URL; " " unless the provider wants ","
	PKCE           bool              // the provider supports PKCE S256
	AuthParams     map[string]string // extra authorize parameters a provider needs for a refresh token (access_type=offline…)
	Refresh        RefreshBehaviour
	AuthStyle      oauth2.AuthStyle // client authentication at the token endpoint; 0: Basic (see ClientAuth)
	// ScopeAliases: scopes the provider grants under another name, as
	// its token answer reports them (Google: email is
	// https://www.googleapis.com/auth/userinfo.email).
	ScopeAliases map[string]string
	Docs         string // where the provider documents its OAuth app setup

	// From configuration only.
	ClientID     string
	ClientSecret string
	Custom       bool // defined in configuration, not in the catalog
}

// UserRef names a person: a verified subject at an issuer; its Key is
// the person's part of a record's store key.
type UserRef = schemas.UserRef

// Status of a stored connection.
type Status string

// Statuses.
const (
	StatusActive      Status = "active"
	StatusNeedsReauth Status = "needs_reauth" // the refresh token was refused; the person must connect again
)

// Record is one person's connected account: the tokens and their state.
// The store seals it whole; only Store methods see it in plaintext.
type Record struct {
	User         UserRef   `json:"user"`
	Connection   string    `json:"connection"`
	Scopes       []string  `json:"scopes"` // as the provider reported them (its vocabulary), else as requested
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"` // zero: the access token does not expire
	Status       Status    `json:"status"`
	Reason       string    `json:"reason,omitempty"` // why the status is needs_reauth
	LinkedAt     time.Time `json:"linked_at"`
	LinkedBy     string    `json:"linked_by,omitempty"` // the agent that asked for the link
	RefreshedAt  time.Time `json:"refreshed_at,omitzero"`
	// Requested is every scope agentauth's connect links asked the
	// provider for, in agentauth's vocabulary, since the person last
	// linked the account from scratch: what policies are checked
	// against. nil for records linked before it was kept (Scopes then
	// stands in); empty when the links asked for no scopes.
	Requested []string `json:"requested,omitzero"`
	// Backoff after failed refreshes (provider 5xx, 429, timeouts).
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Refreshing is set (synced) before a refresh call to the provider and
	// cleared with the write of its answer: if the process stops between
	// the two, the next refresh knows the stored refresh token may have
	// been consumed.
	Refreshing time.Time `json:"refreshing,omitzero"`
	// Version is set by the store: 1 on creation, +1 on every write.
	Version uint64 `json:"version"`

	// fp is the fingerprint of fpOf, the access token it was computed
	// for: records in the store's cache carry it, so that issuing a token
	// does not hash it every time.
	fp, fpOf string
}

// Fingerprint is schemas.Fingerprint of the access token.
func (r *Record) Fingerprint() string {
	// The same string (same bytes in memory), not merely equal: O(1),
	// and a reassigned token never matches.
	if r.fp != "" && len(r.fpOf) == len(r.AccessToken) && unsafe.StringData(r.fpOf) == unsafe.StringData(r.AccessToken) {
		return r.fp
	}
	return schemas.Fingerprint(r.AccessToken)
}

// withFingerprint returns r carrying its access token's fingerprint.
func (r Record) withFingerprint() Record {
	r.fp, r.fpOf = schemas.Fingerprint(r.AccessToken), r.AccessToken
	return r
}

// requested is Requested, or Scopes for a record linked before
// Requested was kept.
func (r *Record) requested() []string {
	if r.Requested != nil {
		return r.Requested
	}
	return r.Scopes
}

// RefreshAt is when the record's access token should be refreshed:
// min(5 min, 10% of its lifetime) before it expires; zero when it does
// not expire or cannot be refreshed.
func (r *Record) RefreshAt() time.Time {
	if r.Expiry.IsZero() || r.RefreshToken == "" || r.Status != StatusActive {
		return time.Time{}
	}
	start := r.RefreshedAt
	if start.IsZero() {
		start = r.LinkedAt
	}
	margin := min(5*time.Minute, r.Expiry.Sub(start)/10)
	return r.Expiry.Add(-max(margin, 0))
}
