package handlers

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// Approval serves approval.request, approval.status and approval.decide.
type Approval struct {
	User    *User // verifies user tokens for the principal in the subject
	Service *approval.Service
	// DefaultIssuer is the issuer a login_hint names a subject at when
	// the request has no issuer_hint.
	DefaultIssuer string
}

// Request answers approval.request: the person proven by their token, or
// named by login_hint when the policy allows background requests; the
// request is stored before the reply.
func (h *Approval) Request() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.ApprovalRequestData
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		n := approval.NewRequest{EventID: req.Event.ID(), Data: in}
		if in.UserToken != "" {
			u, a, err := h.User.verify(ctx, req, in.UserToken)
			if err != nil {
				return nil, err
			}
			n.Agent, n.User, n.UserTokenExpiry = a, approval.UserRef{Issuer: u.Issuer, Subject: u.Subject}, u.Expiry
		} else {
			a, err := h.User.Agents.Agent(ctx, req.Agent)
			if err != nil {
				return nil, err
			}
			iss := in.IssuerHint
			if iss == "" {
				iss = h.DefaultIssuer
			}
			n.Agent, n.User, n.Background = a, approval.UserRef{Issuer: iss, Subject: in.LoginHint}, true
		}
		r, err := h.Service.Request(ctx, n)
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, schemas.ApprovalStarted{AuthReqID: r.ID, ExpiresIn: max(1, int(time.Until(r.Expires).Seconds())), Interval: r.Interval})
	})
}

// Status answers approval.status (CIBA's token request in poll mode).
func (h *Approval) Status() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.ApprovalStatusRequest
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		a, err := h.User.Agents.Agent(ctx, req.Agent)
		if err != nil {
			return nil, err
		}
		r, err := h.Service.Status(ctx, a, in.AuthReqID)
		if err != nil {
			return nil, err
		}
		out := schemas.ApprovalStatusReply{AuthReqID: r.ID, Status: r.State}
		if r.Token != nil {
			out.ApprovalToken = *r.Token
			out.ExpiresIn = max(0, int64(time.Until(r.Token.ExpiresAt).Seconds()))
		}
		return bus.Reply(req, out)
	})
}

// Decide answers approval.decide: only an approval app (a principal whose
// policy says approver) may send it, with the person's own token; the
// service allows one decision, by the person the request names, never by
// the agent that asked.
func (h *Approval) Decide() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.ApprovalDecideRequest
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		u, app, err := h.User.verify(ctx, req, in.UserToken)
		if err != nil {
			return nil, err
		}
		if !app.Policy.Approver {
			return nil, bus.Errorf(schemas.CodeForbidden, "%s is not an approval app (its policy does not say approver): agents cannot decide approvals", app.ID)
		}
		r, err := h.Service.Decide(ctx, approval.Decision{ID: in.AuthReqID, User: approval.UserRef{Issuer: u.Issuer, Subject: u.Subject},
			Approve: in.Decision == "approve", Comment: in.Comment, By: app.ID})
		if err != nil {
			return nil, err
		}
		return bus.Reply(req, schemas.ApprovalDecideReply{AuthReqID: r.ID, Status: r.State})
	})
}
