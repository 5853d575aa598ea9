package vault

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/schemas"
)

// Link is a connect link: single use, expiring, for one person.
type Link struct {
	ID         string    `json:"id"`
	URL        string    `json:"-"`
	User       UserRef   `json:"user"`
	Connection string    `json:"connection"`
	Scopes     []string  `json:"scopes"`
	Agent      string    `json:"agent"`
	Expires    time.Time `json:"expires"`
}

// flow is the state of one authorization in progress at a provider.
type flow struct {
	Link     Link      `json:"link"`
	Verifier string    `json:"verifier"`
	Started  time.Time `json:"started"`
}

// stateTTL bounds the time a person has at the provider.
const stateTTL = 15 * time.Minute

// LinkError is a refusal of the browser part of linking, with the HTTP
// status and a message for the person in front of the page.
type LinkError struct {
	Status int
	Msg    string
	Err    error
}

func (e *LinkError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *LinkError) Unwrap() error { return e.Err }

func random32() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Service) linkTTL() time.Duration {
	if s.LinkTTL > 0 {
		return s.LinkTTL
	}
	return 15 * time.Minute
}

func (s *Service) redirectURL() string {
	return strings.TrimSuffix(s.PublicURL, "/") + "/connect/callback"
}

// Connect answers vault.connect: a connect link for the person, asking
// for the union of what is connected (as requested before, in agentauth's
// vocabulary) and what the agent needs.
func (s *Service) Connect(ctx context.Context, r Request) (Link, error) {
	c, err := s.connection(r.Connection)
	if err != nil {
		return Link{}, err
	}
	allowed, err := Authorize(r.Agent, c, r.Scopes)
	if err != nil {
		return Link{}, err
	}
	scopes := r.Scopes
	if len(scopes) == 0 {
		scopes = allowed
	}
	if rec, err := s.Store.Get(r.User, c.Name); err == nil && rec.Status == StatusActive {
		scopes = union(rec.requested(), scopes)
	}
	return s.newLink(r.Agent.ID, r.User, c, scopes)
}

func (s *Service) newLink(agent string, u UserRef, c Connection, scopes []string) (Link, error) {
	l := Link{ID: random32(), User: u, Connection: c.Name, Scopes: scopes, Agent: agent, Expires: s.now().Add(s.linkTTL()).UTC()}
	b, err := json.Marshal(l)
	if err != nil {
		return Link{}, err
	}
	if err := s.Store.PutTemp("link", l.ID, b, s.linkTTL()); err != nil {
		return Link{}, err
	}
	l.URL = strings.TrimSuffix(s.PublicURL, "/") + "/connect/" + l.ID
	return l, nil
}

// PeekLink reads a connect link without using it (for the page that
// asks the person to log in first).
func (s *Service) PeekLink(id string) (Link, error) {
	b, err := s.Store.PeekTemp("link", id)
	if err != nil {
		return Link{}, linkGone(err)
	}
	var l Link
	if err := json.Unmarshal(b, &l); err != nil {
		return Link{}, err
	}
	if !s.now().Before(l.Expires) {
		return Link{}, linkGone(ErrNotFound)
	}
	return l, nil
}

func linkGone(err error) error {
	if errors.Is(err, ErrNotFound) {
		return &LinkError{Status: 410, Msg: "This connect link has expired or was already used. Ask the agent for a new one.", Err: err}
	}
	return err
}

// BeginLink follows a connect link for the logged-in person: the link
// must be theirs (a forwarded link cannot attach someone else's account)
// and unused; it is used up, and the returned URL sends the browser to
// the provider with PKCE S256 and a signed, single-use, expiring state.
func (s *Service) BeginLink(id string, who UserRef) (string, error) {
	l, err := s.PeekLink(id)
	if err != nil {
		return "", err
	}
	if l.User != who {
		return "", &LinkError{Status: 403, Msg: "This connect link was made for another account. Log out and log in as the person the agent acts for."}
	}
	c, err := s.connection(l.Connection)
	if err != nil {
		return "", err
	}
	if _, err := s.Store.TakeTemp("link", id); err != nil {
		return "", linkGone(err)
	}
	f := flow{Link: l, Started: s.now()}
	var opts []oauth2.AuthCodeOption
	if c.PKCE {
		f.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(f.Verifier))
	}
	b, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	sid := random32()
	if err := s.Store.PutTemp("state", sid, b, stateTTL); err != nil {
		return "", err
	}
	opts = append(opts, c.AuthCodeOptions(l.Scopes)...)
	return s.oauth(c).AuthCodeURL(s.signState(sid), opts...), nil
}

// signState is id.HMAC(id): a state that did not come from us fails
// before any lookup.
func (s *Service) signState(id string) string {
	m := hmac.New(sha256.New, s.StateKey)
	m.Write([]byte("agentauth connect state\x00" + id))
	return id + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Service) checkState(state string) (string, bool) {
	id, _, ok := strings.Cut(state, ".")
	if !ok || len(s.StateKey) == 0 {
		return "", false
	}
	return id, hmac.Equal([]byte(s.signState(id)), []byte(state))
}

func stateGone(err error) error {
	return &LinkError{Status: 400, Msg: "This authorization was already completed or has expired. Ask the agent for a new connect link.", Err: err}
}

// Callback is what the provider sent back to /connect/callback.
type Callback struct {
	State, Code             string
	Error, ErrorDescription string
}

// CompleteLink finishes linking: the state must be ours, unused, unexpired
// and the logged-in person's; the code is exchanged (with the PKCE
// verifier), the tokens stored (synced), the agent told on its feed.
func (s *Service) CompleteLink(ctx context.Context, cb Callback, who UserRef) (Record, error) {
	sid, ok := s.checkState(cb.State)
	if !ok {
		return Record{}, &LinkError{Status: 400, Msg: "This callback's state was not issued by agentauth. Start again from the agent's connect link."}
	}
	b, err := s.Store.PeekTemp("state", sid)
	if errors.Is(err, ErrNotFound) {
		return Record{}, stateGone(err)
	} else if err != nil {
		return Record{}, err
	}
	var f flow
	if err := json.Unmarshal(b, &f); err != nil {
		return Record{}, err
	}
	// Another person's browser cannot use up this person's flow.
	if f.Link.User != who {
		return Record{}, &LinkError{Status: 403, Msg: "This authorization was started by another account. Log in as the person the agent acts for and use a new connect link."}
	}
	if _, err := s.Store.TakeTemp("state", sid); errors.Is(err, ErrNotFound) {
		return Record{}, stateGone(err)
	} else if err != nil {
		return Record{}, err
	}
	if !s.now().Before(f.Started.Add(stateTTL)) {
		return Record{}, &LinkError{Status: 400, Msg: "This authorization took too long and expired. Ask the agent for a new connect link."}
	}
	c, err := s.connection(f.Link.Connection)
	if err != nil {
		return Record{}, err
	}
	if cb.Error != "" {
		return Record{}, &LinkError{Status: 400, Msg: fmt.Sprintf("%s did not authorize the connection: %s %s. Ask the agent for a new connect link to try again.", c.Title, cb.Error, cb.ErrorDescription)}
	}
	if cb.Code == "" {
		return Record{}, &LinkError{Status: 400, Msg: "The provider sent no authorization code. Ask the agent for a new connect link."}
	}
	pctx, cancel := s.providerContext(ctx)
	defer cancel()
	var opts []oauth2.AuthCodeOption
	if f.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(f.Verifier))
	}
	tok, err := s.oauth(c).Exchange(pctx, cb.Code, opts...)
	if err != nil {
		_, why, _ := classify(err)
		return Record{}, &LinkError{Status: 502, Msg: fmt.Sprintf("%s did not exchange the authorization code (%s); nothing was stored. Ask the agent for a new connect link.", c.Title, why), Err: err}
	}
	now := s.now()
	rec := Record{
		User: who, Connection: c.Name, Scopes: f.Link.Scopes, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: tok.TokenType, Expiry: tok.Expiry, Status: StatusActive, LinkedAt: now, LinkedBy: f.Link.Agent,
	}
	if sc := grantedScopes(c, tok); sc != nil {
		rec.Scopes = sc
	}
	// What was asked for, in agentauth's vocabulary (providers report
	// grants in theirs: Google's email is a URL). A re-link may keep
	// what the provider granted before, so the earlier requests count too.
	// (Never nil: nil marks a record linked before Requested was kept.)
	// A link for a record kept before Requested asks for its scopes
	// under the provider's names: the aliases the connection knows are
	// recorded under agentauth's.
	asked := c.ours(f.Link.Scopes)
	rec.Requested = asked
	if err := s.replace(&rec, func(prev Record) {
		// prev.Requested, not prev.Scopes: an older record's scopes
		// are in the provider's vocabulary.
		rec.Requested = union(prev.Requested, asked)
	}); err != nil {
		return Record{}, err
	}
	s.Events.Audit("connection", "linked", schemas.AuditVault{
		Event: "connection.linked", Agent: f.Link.Agent, Subject: who.Subject, Issuer: who.Issuer, Connection: c.Name,
		Scopes: rec.Scopes, Fingerprint: rec.Fingerprint(), ExpiresAt: rec.Expiry,
	})
	if f.Link.Agent != "" {
		ev := schemas.ConnectionEvent{Connection: c.Name, Subject: who.Subject, Issuer: who.Issuer, Scopes: rec.Scopes, LinkID: f.Link.ID}
		if err := s.Events.Feed(ctx, f.Link.Agent, "linked", schemas.TypeConnectionLinked, ev); err != nil {
			// The account is stored; the agent finds it on its next request.
			s.log().Error("connection linked but the agent's feed event was not stored", "agent", f.Link.Agent, "connection", c.Name, "error", err)
		}
	}
	return rec, nil
}

// replace stores rec over whatever is stored for its key (a new link
// replaces an old or unreadable one). prev, when not nil, is shown the
// readable record being replaced before rec is written.
func (s *Service) replace(rec *Record, prev func(Record)) error {
	for range 5 {
		cur, err := s.Store.Get(rec.User, rec.Connection)
		switch {
		case errors.Is(err, ErrNotFound):
			err = s.Store.Put(rec, 0)
		case errors.Is(err, ErrCorrupt):
			if err = s.Store.Delete(rec.User, rec.Connection, 0); err == nil {
				err = s.Store.Put(rec, 0)
			}
		case err == nil:
			if prev != nil {
				prev(cur)
			}
			err = s.Store.Put(rec, cur.Version)
		}
		if !errors.Is(err, ErrVersionConflict) {
			return err
		}
	}
	return ErrVersionConflict
}
