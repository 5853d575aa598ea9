package approval

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// Events is where approvals report: the person's notifications, the
// agent's durable feed and the audit stream.
type Events interface {
	// Notify stores a notification for the person's approval apps
	// (agentauth.notify.<userKey>.approval.<verb>) and returns once
	// JetStream has acknowledged it.
	Notify(ctx context.Context, userKey, verb, typ string, data schemas.ApprovalNotification) error
	// Feed stores an event on the agent's feed
	// (agentauth.events.<agent>.approval.<verb>) and returns once
	// JetStream has acknowledged it.
	Feed(ctx context.Context, agent, verb, typ string, data schemas.ApprovalDecided) error
	// Audit records an audit event (agentauth.audit.approval.<object>.<verb>).
	Audit(object, verb string, a schemas.AuditApproval)
}

// Minter mints the delegated token of an approval (identity.Minter).
type Minter interface {
	Mint(identity.Grant) (identity.Minted, error)
}

// Sealer seals a token to an agent (agents.Sealer).
type Sealer interface {
	Seal(a agents.Agent, plaintext []byte) (schemas.Sealed, error)
}

// AgentLookup finds the requesting agent at decision time, to seal the
// token to its current key.
type AgentLookup interface {
	Agent(ctx context.Context, id string) (agents.Agent, error)
}

// Service runs approval requests. Its methods are safe for concurrent use,
// also by several instances sharing one Store: every state change is a
// compare-and-set on the stored request.
type Service struct {
	Store  Store
	Events Events
	Minter Minter
	Sealer Sealer
	Agents AgentLookup
	// DefaultIssuer is the default (first configured) issuer: the tokens
	// approvals mint name its users by their bare subject, any other
	// issuer's by a qualified id (identity.UserID), and always carry the
	// user's issuer (user_iss). Empty: every user is qualified.
	DefaultIssuer string
	// Types checks authorization details; nil refuses every detail.
	Types    *TypeRegistry
	TokenTTL time.Duration // lifetime of minted tokens; default 5 min
	// IDKey derives the record key of a request from the agent and the
	// request's CloudEvent id (HMAC-SHA256; see RecordKey): instances
	// sharing a Store must share it. nil: a random key for this Service
	// alone.
	IDKey []byte
	Now   func() time.Time
	Log   *slog.Logger

	idKeyOnce sync.Once
	idKey     []byte
	index     atomic.Pointer[pendingIndex] // Run's, while its watch runs
}

// maxCAS bounds the read-modify-write rounds of one operation: conflicts
// come from a few concurrent pollers and deciders, not from a crowd.
const maxCAS = 16

// pollWriteGap bounds the writes polls make: at most one per request per
// gap (a faster poll gets slow_down without changing the record).
const pollWriteGap = time.Second

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) newID(agent, eventID string) string {
	return newID(s.recordKey(agent, eventID))
}

func (s *Service) recordKey(agent, eventID string) string {
	s.idKeyOnce.Do(func() {
		s.idKey = s.IDKey
		if len(s.idKey) == 0 {
			s.idKey = make([]byte, 32)
			_, _ = rand.Read(s.idKey) // never fails (crypto/rand, Go ≥ 1.24)
		}
	})
	return recordKeyFor(s.idKey, agent, eventID)
}

func (s *Service) tokenTTL() time.Duration {
	if s.TokenTTL > 0 {
		return s.TokenTTL
	}
	return 5 * time.Minute
}

// Request checks n against the agent's policy, stores the request, and
// notifies the person. The request is in the Store before Request returns.
// A retry with the same event id returns the stored request and notifies
// nobody again. Errors are *Error: schema_violation for bad input, denied
// for what the policy does not allow, unavailable when the store fails.
// A failed notification is logged (and not audited as notified) but does
// not fail the request: it is stored, and Pending lists it for the
// person's apps when they load.
func (s *Service) Request(ctx context.Context, n NewRequest) (Request, error) {
	d := n.Data
	if err := ValidBindingMessage(d.BindingMessage); err != nil {
		return Request{}, err
	}
	if d.Audience == "" {
		return Request{}, errorf(schemas.CodeSchemaViolation, "audience is required: the API the approved token is for")
	}
	if why := disallowed(n.Agent.Policy, d.Audience, d.Scopes, n.Background); why != "" {
		return Request{}, errorf(schemas.CodeDenied, "agent %s may not %s", n.Agent.ID, why)
	}
	expiry := DefaultExpiry
	if d.RequestedExpiry != 0 {
		expiry = time.Duration(d.RequestedExpiry) * time.Second
		if d.RequestedExpiry < 1 || expiry > MaxExpiry {
			return Request{}, errorf(schemas.CodeSchemaViolation, "requested_expiry %d is out of range: give 1 to %d seconds, or omit it for %d", d.RequestedExpiry, int(MaxExpiry/time.Second), int(DefaultExpiry/time.Second))
		}
	}
	details, err := s.Types.Check(d.AuthorizationDetails)
	if err != nil {
		return Request{}, err
	}
	if n.User.Issuer == "" || n.User.Subject == "" {
		return Request{}, errorf(schemas.CodeSchemaViolation, "the person is not named: present their token or a login_hint")
	}
	if n.EventID == "" {
		return Request{}, errorf(schemas.CodeSchemaViolation, "the request event has no id")
	}
	now := s.now()
	r := Request{
		ID: s.newID(n.Agent.ID, n.EventID), Agent: n.Agent.ID, User: n.User, BindingMessage: d.BindingMessage,
		Audience: d.Audience, Scopes: slices.Clone(d.Scopes), AuthorizationDetails: details,
		Created: now, Expires: now.Add(expiry), Interval: DefaultInterval,
		State: schemas.ApprovalPending, EventID: n.EventID, Background: n.Background,
	}
	if r.Scopes == nil {
		r.Scopes = []string{}
	}
	if !n.UserTokenExpiry.IsZero() {
		r.NotAfter = n.UserTokenExpiry.UTC()
	}
	stored, err := s.Store.Create(ctx, r)
	if errors.Is(err, ErrDuplicate) {
		return stored, nil
	}
	if err != nil {
		return Request{}, unavailable("request", err)
	}
	s.audit("request", "requested", stored, nil)
	if err := s.Events.Notify(ctx, stored.User.Key(), "requested", schemas.TypeApprovalRequested, notification(stored)); err != nil {
		s.log().Error("approval request stored but the person's apps were not notified", "auth_req_id_fp", schemas.Fingerprint(stored.ID), "agent", stored.Agent, "error", err)
		return stored, nil
	}
	s.audit("request", "notified", stored, nil)
	return stored, nil
}

// disallowed says what of an approval for audience and scopes the policy
// p does not allow, as the end of a sentence ("ask for scope …"); "" when
// it allows all of it. background: the person was named by login_hint.
// Request and the decision (mint) both check through it, so an approval
// is minted only while the agent's current policy still allows it.
func disallowed(p agents.Policy, audience string, scopes []string, background bool) string {
	if !slices.Contains(p.ApprovalAudiences, audience) {
		return fmt.Sprintf("ask for approvals for audience %q (its policy's approval_audiences)", audience)
	}
	for _, sc := range scopes {
		if !slices.Contains(p.ApprovalScopes, sc) {
			return fmt.Sprintf("ask for scope %q in approvals (its policy's approval_scopes)", sc)
		}
	}
	if background && !slices.Contains(p.BackgroundAudiences, audience) {
		return fmt.Sprintf("name the person by login_hint for audience %q: present the person's token (or add the audience to background_audiences)", audience)
	}
	return ""
}

// Decide records the person's decision, exactly once per request: the
// first decision to win the compare-and-set stands, any other gets
// already_decided. On approval one token is minted and sealed to the
// agent before the write, and stored with the decision; a decider that
// loses the write discards its token unused, so at most one token per
// request is ever stored or handed out. An approval the agent's current
// policy no longer allows (it was narrowed after the request) mints
// nothing: the request is stored as denied, with the reason as its
// comment, and announced like any denial, and Decide returns denied.
// Errors are *Error: not_found, forbidden (another person, or the agent
// itself), already_decided, denied, expired_token, schema_violation
// (comment), unavailable.
func (s *Service) Decide(ctx context.Context, d Decision) (Request, error) {
	if err := printable(schemas.CodeSchemaViolation, "comment", d.Comment, MaxComment); err != nil {
		return Request{}, err
	}
	r, rev, err := s.Store.Get(ctx, d.ID)
	if errors.Is(err, ErrNotFound) {
		return Request{}, errorf(schemas.CodeNotFound, "no approval request with that auth_req_id")
	}
	if err != nil {
		return Request{}, unavailable("decide", err)
	}
	if r.User != d.User {
		return Request{}, errorf(schemas.CodeForbidden, "only the person the request names can decide it")
	}
	if d.By == r.Agent {
		return Request{}, errorf(schemas.CodeForbidden, "an agent cannot decide its own approval request")
	}
	var minted *identity.Minted
	var token *schemas.ApprovalToken
	var refused *Error // the policy no longer allows the approval
	for range maxCAS {
		if r.State != schemas.ApprovalPending {
			return Request{}, alreadyDecided(r)
		}
		now := s.now()
		if !now.Before(r.Expires) {
			s.expire(ctx, r, rev)
			return Request{}, errorf(schemas.CodeExpiredToken, "the approval request expired before the decision")
		}
		if d.Approve && token == nil && refused == nil {
			m, t, err := s.mint(ctx, r)
			switch {
			case CodeOf(err) == schemas.CodeDenied:
				errors.As(err, &refused)
			case err != nil:
				return Request{}, err
			default:
				minted, token = &m, t
			}
		}
		next := r
		next.DecidedAt, next.DecidedBy, next.Comment = now, d.By, d.Comment
		next.State = schemas.ApprovalDenied
		switch {
		case refused != nil:
			next.Comment = refused.Msg
		case d.Approve:
			next.State, next.Token = schemas.ApprovalApproved, token
		}
		nrev, err := s.Store.Update(ctx, next, rev)
		if err == nil {
			if minted != nil {
				s.audit("token", "minted", next, minted)
			}
			if refused != nil {
				s.log().Warn("approval refused at decision: the agent's policy no longer allows it; stored as denied",
					"auth_req_id_fp", schemas.Fingerprint(next.ID), "agent", next.Agent, "reason", refused.Msg)
			}
			s.audit("request", next.State, next, nil)
			s.announce(ctx, next, nrev)
			if refused != nil {
				return Request{}, refused
			}
			return next, nil
		}
		if !errors.Is(err, ErrConflict) {
			return Request{}, unavailable("decide", err)
		}
		// Someone decided, or a poll moved the revision: read it again.
		if r, rev, err = s.Store.Get(ctx, d.ID); err != nil {
			return Request{}, unavailable("decide", err)
		}
	}
	return Request{}, errorf(schemas.CodeUnavailable, "the approval request is changing too often; try again")
}

// mint mints and seals the token of an approval, after checking it
// against the agent's current policy as Request did; denied, minting
// nothing, when the policy no longer allows it.
func (s *Service) mint(ctx context.Context, r Request) (identity.Minted, *schemas.ApprovalToken, error) {
	a, err := s.Agents.Agent(ctx, r.Agent)
	if agents.IsNotFound(err) {
		return identity.Minted{}, nil, &Error{Code: schemas.CodeInternal, Msg: "the requesting agent is no longer registered; the approval cannot be delivered", Err: err}
	}
	if err != nil {
		return identity.Minted{}, nil, unavailable("decide", err)
	}
	if why := disallowed(a.Policy, r.Audience, r.Scopes, r.Background); why != "" {
		return identity.Minted{}, nil, errorf(schemas.CodeDenied, "the agent's policy no longer allows this approval: agent %s may not %s; nothing was minted and the request is denied", r.Agent, why)
	}
	var details any
	if len(r.AuthorizationDetails) > 0 {
		details = r.AuthorizationDetails
	}
	m, err := s.Minter.Mint(identity.Grant{
		Subject: identity.UserID(s.DefaultIssuer, r.User.Issuer, r.User.Subject), Issuer: r.User.Issuer,
		Actor: r.Agent, Audience: r.Audience, Scopes: r.Scopes,
		TTL: s.tokenTTL(), NotAfter: notAfter(r), AuthorizationDetails: details,
	})
	if err != nil {
		if !r.NotAfter.IsZero() && !s.now().Before(r.NotAfter) {
			return identity.Minted{}, nil, &Error{Code: schemas.CodeExpiredToken, Msg: "the user token the agent presented has expired; the agent must ask again", Err: err}
		}
		return identity.Minted{}, nil, &Error{Code: schemas.CodeInternal, Msg: "the token could not be minted", Err: err}
	}
	sealed, err := s.Sealer.Seal(a, []byte(m.Token))
	if err != nil {
		return identity.Minted{}, nil, &Error{Code: schemas.CodeInternal, Msg: "the token could not be sealed to the agent", Err: err}
	}
	t := &schemas.ApprovalToken{
		TokenType: "Bearer", ExpiresIn: int64(m.Expiry.Sub(s.now()) / time.Second), ExpiresAt: m.Expiry.UTC(),
		Audience: m.Audience, Scopes: m.Scopes, AuthorizationDetails: r.AuthorizationDetails,
		JTI: m.JTI, Fingerprint: m.Fingerprint, SealedToken: sealed,
	}
	return m, t, nil
}

// notAfter caps the token (SECURITY.md): the user token's expiry, when
// the agent presented one, and the approval's own expiry.
func notAfter(r Request) time.Time {
	if !r.NotAfter.IsZero() && r.NotAfter.Before(r.Expires) {
		return r.NotAfter
	}
	return r.Expires
}

func alreadyDecided(r Request) *Error {
	if r.State == schemas.ApprovalExpired {
		return errorf(schemas.CodeAlreadyDecided, "the approval request already expired")
	}
	return errorf(schemas.CodeAlreadyDecided, "the approval request was already decided: %s", r.State)
}

// Status is the agent's poll (CIBA): the approved request with its token,
// once; otherwise an *Error with CIBA's code — authorization_pending or
// slow_down (with RetryAfter, the interval to keep), access_denied,
// expired_token, or invalid_grant for an unknown id, another agent's, or
// one already redeemed. A poll sooner than the interval after the last
// one raises the stored interval by IntervalStep, and the raise is stored
// before slow_down is answered, so it holds for every later poll. The one
// poll not written is a too-fast poll within pollWriteGap of a recorded
// poll that was itself answered slow_down: its raise is already stored,
// and it is answered slow_down with that interval, so a client polling in
// a tight loop causes at most about one write per pollWriteGap.
func (s *Service) Status(ctx context.Context, agent agents.Agent, id string) (Request, error) {
	for range maxCAS {
		r, rev, err := s.Store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) || (err == nil && r.Agent != agent.ID) {
			return Request{}, errorf(schemas.CodeInvalidGrant, "unknown auth_req_id")
		}
		if err != nil {
			return Request{}, unavailable("status", err)
		}
		now := s.now()
		switch r.State {
		case schemas.ApprovalPending:
			if !now.Before(r.Expires) {
				s.expire(ctx, r, rev)
				return Request{}, errorf(schemas.CodeExpiredToken, "the approval request expired before the person decided")
			}
			since := now.Sub(r.LastPoll)
			tooFast := !r.LastPoll.IsZero() && since < time.Duration(r.Interval)*time.Second
			if tooFast && since < pollWriteGap && r.Slowed {
				// Hammering: the last recorded poll raised the interval
				// already; answer with it without writing, so that polls
				// cannot crowd out a decision's compare-and-set.
				return Request{}, &Error{Code: schemas.CodeSlowDown, Msg: "polling too fast: wait the interval between polls",
					RetryAfter: time.Duration(r.Interval) * time.Second}
			}
			next := r
			next.LastPoll, next.Slowed = now, tooFast
			if tooFast {
				next.Interval += IntervalStep
			}
			_, err := s.Store.Update(ctx, next, rev)
			if errors.Is(err, ErrConflict) {
				continue
			}
			wait := time.Duration(next.Interval) * time.Second
			if tooFast {
				if err != nil {
					return Request{}, unavailable("status", err)
				}
				return Request{}, &Error{Code: schemas.CodeSlowDown, Msg: "polling too fast: wait the interval between polls", RetryAfter: wait}
			}
			if err != nil { // the poll time is best effort
				s.log().Warn("approval poll time not recorded", "agent", r.Agent, "error", err)
			}
			return Request{}, &Error{Code: schemas.CodeAuthorizationPending, Msg: "the person has not decided yet", RetryAfter: wait}
		case schemas.ApprovalDenied:
			return Request{}, errorf(schemas.CodeAccessDenied, "the person denied the request")
		case schemas.ApprovalExpired:
			return Request{}, errorf(schemas.CodeExpiredToken, "the approval request expired before the person decided")
		case schemas.ApprovalApproved:
			if r.Redeemed {
				return Request{}, errorf(schemas.CodeInvalidGrant, "the auth_req_id was already redeemed")
			}
			next := r
			next.Redeemed = true
			_, err := s.Store.Update(ctx, next, rev)
			if errors.Is(err, ErrConflict) {
				continue
			}
			if err != nil {
				return Request{}, unavailable("status", err)
			}
			s.audit("request", "redeemed", next, nil)
			return next, nil
		default:
			return Request{}, &Error{Code: schemas.CodeInternal, Msg: "the approval request is in an unknown state"}
		}
	}
	return Request{}, errorf(schemas.CodeUnavailable, "the approval request is changing too often; try again")
}

// Get returns a request; not_found.
func (s *Service) Get(ctx context.Context, id string) (Request, error) {
	r, _, err := s.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Request{}, errorf(schemas.CodeNotFound, "no approval request with that auth_req_id")
	}
	if err != nil {
		return Request{}, unavailable("get", err)
	}
	return r, nil
}

// Pending returns the person's pending, unexpired requests, oldest first.
// While Run watches the store, the answer comes from its index once the
// index has caught up with the store's latest revision (so a request
// stored before the call is in it, whichever instance stored it);
// otherwise every stored request is read.
func (s *Service) Pending(ctx context.Context, u UserRef) ([]Request, error) {
	if x := s.index.Load(); x != nil {
		if last, err := s.Store.LastRevision(ctx); err == nil {
			if out, ok := x.pending(ctx, last, u, s.now()); ok {
				return out, nil
			}
		}
	}
	all, err := s.Store.List(ctx)
	if err != nil {
		return nil, unavailable("list", err)
	}
	now := s.now()
	var out []Request
	for _, r := range all {
		if r.User == u && r.State == schemas.ApprovalPending && now.Before(r.Expires) {
			out = append(out, r)
		}
	}
	SortOldestFirst(out)
	return out, nil
}

// expire moves a pending request past its expiry to expired. Of all the
// callers racing on it (pollers, deciders, every instance's Run) the one
// whose compare-and-set wins reports it; the others do nothing.
func (s *Service) expire(ctx context.Context, r Request, rev uint64) {
	for range maxCAS {
		if r.State != schemas.ApprovalPending || s.now().Before(r.Expires) {
			return
		}
		next := r
		next.State, next.DecidedAt = schemas.ApprovalExpired, s.now()
		nrev, err := s.Store.Update(ctx, next, rev)
		if err == nil {
			s.audit("request", next.State, next, nil)
			s.announce(ctx, next, nrev)
			return
		}
		if !errors.Is(err, ErrConflict) {
			s.log().Warn("approval expiry not recorded; it will be retried", "agent", r.Agent, "error", err)
			return
		}
		if r, rev, err = s.Store.Get(ctx, r.ID); err != nil {
			return
		}
	}
}

// announce reports a decision (or expiry) that was just stored: audit,
// the agent's feed, the person's apps. Failures are logged: the decision
// stands and Status reports it.
func (s *Service) announce(ctx context.Context, r Request, rev uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	fe := schemas.ApprovalDecided{AuthReqID: r.ID, Status: r.State, Comment: r.Comment, Token: r.Token}
	if err := s.Events.Feed(ctx, r.Agent, "decided", schemas.TypeApprovalDecided, fe); err != nil {
		s.log().Error("approval decision not yet on the agent's feed; it will be announced again", "agent", r.Agent, "status", r.State, "error", err)
		return
	}
	if err := s.Events.Notify(ctx, r.User.Key(), "resolved", schemas.TypeApprovalResolved, notification(r)); err != nil {
		s.log().Error("approval resolution not yet delivered to the person's apps; it will be announced again", "agent", r.Agent, "status", r.State, "error", err)
		return
	}
	// Record it (a lost race with a poll is retried: the flag must stick).
	for range maxCAS {
		if r.Announced {
			return
		}
		r.Announced = true
		_, err := s.Store.Update(ctx, r, rev)
		if !errors.Is(err, ErrConflict) {
			if err != nil {
				s.log().Warn("approval announced but not recorded as such; it may be announced again", "error", err)
			}
			return
		}
		if r, rev, err = s.Store.Get(ctx, r.ID); err != nil {
			return
		}
	}
}

// reannounceAfter is how long an outcome may stay unannounced before Run
// announces it again (the deciding instance normally does within
// milliseconds). Events carry deterministic ids, so JetStream drops a
// duplicate within its window.
const reannounceAfter = 5 * time.Second

func notification(r Request) schemas.ApprovalNotification {
	return schemas.ApprovalNotification{
		AuthReqID: r.ID, Agent: r.Agent, Subject: r.User.Subject, Issuer: r.User.Issuer,
		BindingMessage: r.BindingMessage, Audience: r.Audience, Scopes: r.Scopes,
		AuthorizationDetails: r.AuthorizationDetails, ExpiresAt: r.Expires, Status: r.State,
	}
}

func (s *Service) audit(object, verb string, r Request, m *identity.Minted) {
	a := schemas.AuditApproval{
		Event: verb, AuthReqID: r.ID, Agent: r.Agent, Subject: r.User.Subject, Issuer: r.User.Issuer,
		Audience: r.Audience, Scopes: r.Scopes, DecidedBy: r.DecidedBy, ExpiresAt: r.Expires, RequestID: r.EventID,
	}
	if verb == "requested" {
		a.BindingMessage = r.BindingMessage
	}
	if r.Token != nil { // approved, redeemed: which token
		a.Fingerprint, a.JTI = r.Token.Fingerprint, r.Token.JTI
	}
	if m != nil {
		a.Event = object + "." + verb
		a.Fingerprint, a.JTI, a.ExpiresAt = m.Fingerprint, m.JTI, m.Expiry
	}
	s.Events.Audit(object, verb, a)
}

// Run enforces expiry until ctx ends: it watches the store and keeps a
// timer per pending request; when one fires, the request is expired (once,
// whichever instance wins) and the agent and the person are told. The
// watch starts with every stored request, so expiry survives restarts and
// requests made on other instances. A failed watch is restarted with
// backoff. Run returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	e := &expirer{s: s, ctx: ctx, timers: map[string]*time.Timer{}, sem: make(chan struct{}, 16)}
	defer e.stop()
	const first = 250 * time.Millisecond
	backoff := first
	for {
		began := time.Now()
		x := newPendingIndex()
		s.index.Store(x)
		err := s.Store.Watch(ctx, func(r Request, rev uint64) {
			x.seen(r, rev)
			e.seen(r)
		})
		s.index.CompareAndSwap(x, nil)
		x.stop()
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Minute { // it worked for a while
			backoff = first
		}
		s.log().Warn("approval expiry: the store watch ended; watching again", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// expirer keeps Run's timers.
type expirer struct {
	s      *Service
	ctx    context.Context
	mu     sync.Mutex
	timers map[string]*time.Timer // pending requests by id
	wg     sync.WaitGroup         // timers that fired and still run
	sem    chan struct{}          // bounds concurrent expiries
}

// seen (re)schedules r's expiry, or drops it once r is no longer pending.
func (e *expirer) seen(r Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.timers[r.ID]; t != nil {
		t.Stop()
		delete(e.timers, r.ID)
	}
	if e.ctx.Err() != nil {
		return
	}
	if r.State != schemas.ApprovalPending {
		if !r.Announced {
			e.schedule(r.ID, r.DecidedAt.Add(reannounceAfter).Sub(e.s.now()))
		}
		return
	}
	e.schedule(r.ID, r.Expires.Sub(e.s.now()))
}

// schedule arms id's timer; e.mu is held.
func (e *expirer) schedule(id string, d time.Duration) {
	var t *time.Timer
	t = time.AfterFunc(max(d, 0), func() {
		e.mu.Lock()
		if e.timers[id] != t { // replaced or stopped meanwhile
			e.mu.Unlock()
			return
		}
		delete(e.timers, id)
		e.wg.Add(1)
		e.mu.Unlock()
		defer e.wg.Done()
		e.fire(id)
	})
	e.timers[id] = t
}

func (e *expirer) fire(id string) {
	select {
	case e.sem <- struct{}{}:
		defer func() { <-e.sem }()
	case <-e.ctx.Done():
		return
	}
	r, rev, err := e.s.Store.Get(e.ctx, id)
	if err != nil {
		return
	}
	if r.State != schemas.ApprovalPending {
		if r.Announced {
			return
		}
		// Decided a moment ago (an expiry timer that fired as another
		// instance expired it): that instance is announcing it.
		if wait := r.DecidedAt.Add(reannounceAfter).Sub(e.s.now()); wait > 0 {
			e.reschedule(id, wait)
			return
		}
		e.s.log().Warn("approval outcome was not announced; announcing it now", "agent", r.Agent, "status", r.State)
		e.s.announce(e.ctx, r, rev)
		return
	}
	if left := r.Expires.Sub(e.s.now()); left > 0 { // clocks disagree a little
		e.reschedule(id, left)
		return
	}
	e.s.expire(e.ctx, r, rev)
}

// reschedule arms id's timer again, unless the watch did meanwhile.
func (e *expirer) reschedule(id string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.timers[id]; !ok && e.ctx.Err() == nil {
		e.schedule(id, d)
	}
}

// stop cancels every timer and waits for those that fired.
func (e *expirer) stop() {
	e.mu.Lock()
	for id, t := range e.timers {
		t.Stop()
		delete(e.timers, id)
	}
	e.mu.Unlock()
	e.wg.Wait()
}
