package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// ApprovalRequest is what an agent asks a person to approve (the seed's
// with_async_authorization): the person by their token (UserToken) or,
// when the agent's policy allows background requests for the audience,
// by subject (LoginHint).
type ApprovalRequest = schemas.ApprovalRequestData

// Approval is a started request: resume it by AuthReqID, also after a
// restart.
type Approval struct {
	AuthReqID string
	Expires   time.Time
	Interval  time.Duration
}

// ApprovedToken is the token minted when the person approved, opened.
type ApprovedToken struct {
	AccessToken          string
	Audience             string
	Scopes               []string
	AuthorizationDetails []json.RawMessage // exactly as approved
	Expiry               time.Time
	JTI                  string
	Fingerprint          string
}

// Approval outcomes other than approved.
var (
	ErrApprovalDenied  = errors.New("agentauth: the person denied the request")
	ErrApprovalExpired = errors.New("agentauth: the request expired before the person decided")
	// ErrApprovalInvalid: unknown, another agent's, or already redeemed.
	ErrApprovalInvalid = errors.New("agentauth: unknown or already redeemed auth_req_id")
)

// ApprovalPending is the interrupt of a request the person has not
// decided yet: poll again after Interval (Status), or wait on the feed
// (WaitForApproval).
type ApprovalPending struct {
	AuthReqID string
	Interval  time.Duration
	SlowDown  bool // the poll came too early; Interval was raised
}

func (e *ApprovalPending) Error() string {
	return fmt.Sprintf("agentauth: approval %s is pending; ask again in %s", e.AuthReqID, e.Interval)
}

// RequestApproval asks the person; the request is stored in JetStream
// before this returns.
func (c *Client) RequestApproval(ctx context.Context, r ApprovalRequest) (*Approval, error) {
	var out schemas.ApprovalStarted
	if err := c.Do(ctx, schemas.OpApprovalRequest, r, &out); err != nil {
		return nil, err
	}
	return &Approval{AuthReqID: out.AuthReqID, Expires: time.Now().Add(time.Duration(out.ExpiresIn) * time.Second), Interval: time.Duration(out.Interval) * time.Second}, nil
}

// ApprovalStatus polls once (CIBA poll mode): the token once approved
// (handed out once), *ApprovalPending while pending, or
// ErrApprovalDenied, ErrApprovalExpired, ErrApprovalInvalid.
func (c *Client) ApprovalStatus(ctx context.Context, authReqID string) (*ApprovedToken, error) {
	var out schemas.ApprovalStatusReply
	if err := c.Do(ctx, schemas.OpApprovalStatus, schemas.ApprovalStatusRequest{AuthReqID: authReqID}, &out); err != nil {
		return nil, approvalError(authReqID, err)
	}
	return c.openApproval(out.ApprovalToken)
}

func approvalError(id string, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case schemas.CodeAuthorizationPending, schemas.CodeSlowDown:
		return &ApprovalPending{AuthReqID: id, Interval: e.RetryAfter, SlowDown: e.Code == schemas.CodeSlowDown}
	case schemas.CodeAccessDenied:
		return fmt.Errorf("%w: %s", ErrApprovalDenied, e.Message)
	case schemas.CodeExpiredToken:
		return fmt.Errorf("%w: %s", ErrApprovalExpired, e.Message)
	case schemas.CodeInvalidGrant:
		return fmt.Errorf("%w: %s", ErrApprovalInvalid, e.Message)
	}
	return err
}

func (c *Client) openApproval(t schemas.ApprovalToken) (*ApprovedToken, error) {
	raw, err := c.Open(t.SealedToken)
	if err != nil {
		return nil, err
	}
	return &ApprovedToken{AccessToken: string(raw), Audience: t.Audience, Scopes: t.Scopes, AuthorizationDetails: t.AuthorizationDetails,
		Expiry: t.ExpiresAt, JTI: t.JTI, Fingerprint: t.Fingerprint}, nil
}

// WaitForApproval blocks until the decision on authReqID arrives on the
// agent's feed (a decision made while the agent was away is delivered
// when it waits), or ctx ends: the opened token on approval,
// ErrApprovalDenied or ErrApprovalExpired otherwise. When the feed has
// not answered within a second it polls once (ApprovalStatus), for a
// decision whose feed event an earlier process of this agent received and
// acknowledged; like any poll, that hands the token out, so a later
// ApprovalStatus of the same id may find it spent.
func (c *Client) WaitForApproval(ctx context.Context, authReqID string) (*ApprovedToken, error) {
	var got schemas.ApprovalDecided
	var polled *ApprovedToken
	err := c.approvals.wait(ctx, c, authReqID, func(e *event.Event) bool {
		var d schemas.ApprovalDecided
		if e.Type() != schemas.TypeApprovalDecided || bus.DecodeData(e, &d) != nil || d.AuthReqID != authReqID {
			return false
		}
		got = d
		return true
	}, func(ctx context.Context) (bool, error) {
		// A decision whose feed event an earlier process of this agent
		// acknowledged is only in the store: poll once. Pending (or a
		// spent id, whose event may still come) means wait for the feed.
		// Anything else (a service error too) is left to the feed.
		tok, err := c.ApprovalStatus(ctx, authReqID)
		if err == nil || errors.Is(err, ErrApprovalDenied) || errors.Is(err, ErrApprovalExpired) {
			polled = tok
			return true, err
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("agentauth: waiting for approval %s: %w", authReqID, err)
	}
	if polled != nil {
		return polled, nil
	}
	switch got.Status {
	case schemas.ApprovalApproved:
		if got.Token == nil {
			return nil, errors.New("agentauth: approved without a token")
		}
		return c.openApproval(*got.Token)
	case schemas.ApprovalDenied:
		msg := "denied"
		if got.Comment != "" {
			msg += ": " + got.Comment
		}
		return nil, fmt.Errorf("%w (%s)", ErrApprovalDenied, msg)
	default:
		return nil, ErrApprovalExpired
	}
}

// Decide sends a person's decision, as an approval app (its policy must
// say approver) with the person's own token.
func (c *Client) Decide(ctx context.Context, userToken, authReqID string, approve bool, comment string) (*schemas.ApprovalDecideReply, error) {
	d := "deny"
	if approve {
		d = "approve"
	}
	var out schemas.ApprovalDecideReply
	if err := c.Do(ctx, schemas.OpApprovalDecide, schemas.ApprovalDecideRequest{UserToken: userToken, AuthReqID: authReqID, Decision: d, Comment: comment}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// decisionKey is the auth_req_id a feed event answers.
func decisionKey(e *event.Event) string {
	var d struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if e.Type() != schemas.TypeApprovalDecided || json.Unmarshal(e.Data(), &d) != nil {
		return ""
	}
	return d.AuthReqID
}
