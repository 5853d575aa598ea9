// Package approval is agentauth's asynchronous authorization (OpenID CIBA
// semantics): an agent asks a person to approve an action, the person's
// approval apps are notified, the person approves or denies exactly once,
// and only on approval is a token minted, scoped to that action and sealed
// to the agent. State lives behind Store (JetStream KV in production), so
// that decisions are compare-and-set across instances and expiry survives
// restarts.
package approval

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/schemas"
)

// Limits.
const (
	// MaxBindingMessage is the longest binding message, in characters.
	MaxBindingMessage = 64
	// MaxComment is the longest decision comment, in characters.
	MaxComment = 256
	// DefaultExpiry applies when a request names none.
	DefaultExpiry = 300 * time.Second
	// MaxExpiry is the longest requested_expiry.
	MaxExpiry = 3600 * time.Second
	// DefaultInterval is the polling interval in seconds; each slow_down
	// raises a request's interval by IntervalStep for good.
	DefaultInterval = 5
	IntervalStep    = 5
)

// UserRef names a person: subject at issuer; its Key (the same as the
// vault's) names their notification subjects.
type UserRef = schemas.UserRef

// Request is one approval request as stored (JSON). It holds no secret
// except the token, which is sealed so that only the agent can open it.
type Request struct {
	// ID is the auth_req_id: a record key and 128 random bits, 52
	// characters of base32 (see RecordKey).
	ID             string   `json:"id"`
	Agent          string   `json:"agent"`
	User           UserRef  `json:"user"`
	BindingMessage string   `json:"binding_message"`
	Audience       string   `json:"audience"`
	Scopes         []string `json:"scopes"`
	// AuthorizationDetails are in canonical form once checked (members
	// sorted, no spaces): the same bytes are stored, shown to the person
	// and put in the token.
	AuthorizationDetails []json.RawMessage `json:"authorization_details,omitempty"`
	Created              time.Time         `json:"created"`
	Expires              time.Time         `json:"expires"`
	// Interval is the polling interval in seconds: DefaultInterval, raised
	// by IntervalStep on each slow_down and kept.
	Interval int       `json:"interval"`
	LastPoll time.Time `json:"last_poll,omitzero"`
	// Slowed: the poll at LastPoll was answered slow_down, and Interval
	// holds its raise.
	Slowed bool `json:"slowed,omitempty"`
	// State is schemas.ApprovalPending, Approved, Denied or Expired.
	State     string    `json:"state"`
	DecidedAt time.Time `json:"decided_at,omitzero"` // or expired at
	DecidedBy string    `json:"decided_by,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	// Token is minted on approval, sealed to the agent.
	Token *schemas.ApprovalToken `json:"token,omitempty"`
	// Redeemed: Status has handed the token out (once).
	Redeemed bool `json:"redeemed"`
	// Announced: the outcome is on the agent's feed and the person's
	// notifications. Until it is, Run announces it again (after a crash
	// between the decision and its announcement, for instance).
	Announced bool `json:"announced,omitempty"`
	// EventID is the CloudEvent id of the request: a retry with the same
	// id is the same request.
	EventID string `json:"event_id"`
	// NotAfter is the expiry of the user token the agent presented, if
	// any; the minted token does not outlive it.
	NotAfter time.Time `json:"not_after,omitzero"`
	// Background: the agent named the person by login_hint. The decision
	// checks it against the agent's policy again (background_audiences).
	// Requests stored before the field existed read as false.
	Background bool `json:"background,omitempty"`
}

// Store keeps requests with compare-and-set. Implementations:
// bus.ApprovalStore (JetStream KV). All methods are safe for concurrent
// use, also from several agentauth instances.
type Store interface {
	// Create stores a new request under RecordKey(r.ID), which the
	// Service derives from (r.Agent, r.EventID): a retried request has
	// the same record key. If a request is stored under it already,
	// Create stores nothing and returns the stored request and
	// ErrDuplicate (an error if the stored one is another agent's or
	// event's). For each record key exactly one call returns nil.
	Create(ctx context.Context, r Request) (Request, error)
	// Get returns the request stored under RecordKey(id) if its ID is
	// id, and its revision; ErrNotFound otherwise.
	Get(ctx context.Context, id string) (Request, uint64, error)
	// Update replaces a request if its revision is still revision and
	// returns the new revision; ErrConflict when it moved.
	Update(ctx context.Context, r Request, revision uint64) (uint64, error)
	// Watch calls fn, from one goroutine, with every request as stored
	// now and then as it changes, each with its revision, until ctx ends
	// (it returns nil then) or the watch fails.
	Watch(ctx context.Context, fn func(r Request, revision uint64)) error
	// LastRevision is the revision of the latest change to the store: a
	// watch that delivered it has seen everything stored before.
	LastRevision(ctx context.Context) (uint64, error)
	// List returns every stored request (operators; O(n)).
	List(ctx context.Context) ([]Request, error)
}

// NewRequest is an agent's request for approval, authenticated by the
// caller.
type NewRequest struct {
	Agent agents.Agent
	User  UserRef
	// Background: the person was named by login_hint, without their token.
	Background bool
	// UserTokenExpiry is the expiry of the user token presented, if any.
	UserTokenExpiry time.Time
	// EventID is the CloudEvent id of the request (idempotency key).
	EventID string
	Data    schemas.ApprovalRequestData
}

// Decision is a person's decision, sent by an approval app with their own
// token.
type Decision struct {
	ID      string
	User    UserRef // from the person's verified token, never the payload
	Approve bool
	Comment string
	By      string // the approval app's principal id, or "web"
}

// An auth_req_id is 52 characters of unpadded base32 (A–Z, 2–7: none
// starts with "-", which would read as a flag to `agentauth approvals
// show ID`): the request's record key, 128 bits of HMAC-SHA256 under the
// service's key of the agent id and the request's CloudEvent id, then 128
// bits from crypto/rand. A retry of the request derives the same record
// key, so one create-if-absent write makes requests idempotent (the
// retry gets the stored id back); the random half makes every id
// unguessable by itself, as SECURITY.md asks.
const (
	idKeyLen = 26 // base32 of 16 bytes
	idLen    = 2 * idKeyLen
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// recordKeyFor is the record key of the agent's request event.
func recordKeyFor(key []byte, agent, eventID string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(agent))
	m.Write([]byte{0}) // agent ids have no NUL: the pair is unambiguous
	m.Write([]byte(eventID))
	return idEncoding.EncodeToString(m.Sum(nil)[:16])
}

// newID returns a new auth_req_id under the given record key.
func newID(recordKey string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return recordKey + idEncoding.EncodeToString(b[:])
}

// RecordKey is the key an auth_req_id's request is stored under: its
// first half (ids of earlier versions, which are not 52 characters, are
// their own key). A Store must check that the stored request's ID is the
// whole id asked for.
func RecordKey(id string) string {
	if len(id) == idLen {
		return id[:idKeyLen]
	}
	return id
}

// ValidBindingMessage checks a binding message: required, at most
// MaxBindingMessage characters, valid UTF-8, and only graphic characters
// (letters, marks, numbers, punctuation, symbols, spaces) — no control
// characters (newline, tab, …), no line or paragraph separators, no
// private-use or unassigned code points, and nothing Invisible (bidi
// controls such as U+202E, zero-width characters such as U+200B and
// U+FEFF, variation selectors, the combining grapheme joiner, Hangul
// fillers). A message of spaces and invisible characters only is blank.
func ValidBindingMessage(m string) error {
	if err := printable(schemas.CodeInvalidBindingMessage, "binding_message", m, MaxBindingMessage); err != nil {
		return err
	}
	if len(m) == 0 || isBlank(m) {
		return errorf(schemas.CodeInvalidBindingMessage, "binding_message is required: a short text the person recognises (at most %d characters)", MaxBindingMessage)
	}
	return nil
}

// printable checks that s is at most max characters of graphic text; its
// errors carry code.
func printable(code schemas.ErrorCode, field, s string, max int) error {
	if len(s) > utf8.UTFMax*max {
		return errorf(code, "%s is too long: at most %d characters are allowed", field, max)
	}
	n := 0
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return errorf(code, "%s is not valid UTF-8", field)
			}
		}
		if !unicode.IsGraphic(r) || Invisible(r) {
			return errorf(code, "%s may hold only printable characters: %U at character %d is a control, separator or invisible (bidi, zero-width, variation selector, filler) character", field, r, n+1)
		}
		n++
	}
	if n > max {
		return errorf(code, "%s has %d characters; at most %d are allowed", field, n, max)
	}
	return nil
}

// isBlank: s shows nothing (spaces and invisible characters only).
func isBlank(s string) bool {
	for _, r := range s {
		if !unicode.IsSpace(r) && !Invisible(r) {
			return false
		}
	}
	return true
}

// Invisible reports whether r is one of Unicode's default-ignorable code
// points (Default_Ignorable_Code_Point), which render as nothing or change
// how their neighbours render: format characters (Cf: bidi controls,
// zero-width characters, U+FEFF, soft hyphen), variation selectors
// (U+FE00–FE0F, U+E0100–E01EF, the Mongolian free variation selectors),
// and the other default-ignorables (the combining grapheme joiner U+034F,
// Hangul fillers U+115F, U+1160, U+3164, U+FFA0, …). A binding message
// must hold none; the inbox shows them as [U+XXXX].
func Invisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// Reveal writes every rune of s for which hide is true as [U+XXXX], so
// that what a person is shown cannot disguise itself or what follows it.
func Reveal(s string, hide func(rune) bool) string {
	if !strings.ContainsFunc(s, hide) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hide(r) {
			fmt.Fprintf(&b, "[U+%04X]", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
