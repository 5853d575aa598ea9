package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/schemas"
)

// approvalsApp is the development approval app (`agentauth approvals`):
// a principal whose policy says approver, its credentials in the data dir.
const approvalsApp = "approvals"

// setupApproval opens the approvals store and starts expiry enforcement.
func (m *Main) setupApproval(ctx, bg context.Context) error {
	store, err := bus.NewApprovalStore(ctx, m.js, m.Config.StreamReplicas)
	if err != nil {
		return err
	}
	types, err := approval.NewTypeRegistry(approval.DefaultTypes())
	if err != nil {
		return err
	}
	m.approval = &approval.Service{
		Store:  store,
		Events: &approvalEvents{m: m, pub: bus.NewPublisher(m.js, m.metrics)},
		Minter: m.minter,
		Sealer: m.sealer,
		Agents: m.cache,
		Types:  types,
		IDKey:  m.approvalIDKey,
		Log:    m.Log,
		// Its users keep their bare subject in the tokens minted.
		DefaultIssuer: m.defaultIssuer,
	}
	go func() {
		if err := m.approval.Run(bg); err != nil && bg.Err() == nil {
			m.Log.Error("approval expiry enforcement stopped", "error", err)
		}
	}()
	if m.Embedded() {
		if err := m.ensurePrincipal(ctx, approvalsApp, agents.Policy{Approver: true}); err != nil {
			return err
		}
		return m.ensurePrincipal(ctx, ingestPrincipal, agents.Policy{IngestCollections: []string{"default"}})
	}
	return nil
}

// ensurePrincipal registers a development principal (the approval app,
// the ingest principal) on first start and keeps its credentials in the
// data dir for the commands that act as it.
func (m *Main) ensurePrincipal(ctx context.Context, id string, p agents.Policy) error {
	path := keyPath(m.Config.DataDir, id+".agent.json")
	creds, err := loadOrCreateCredentials(m.Log, path, id, p, m.sealer.PublicKey())
	if err != nil {
		return err
	}
	a, err := agents.FromCredentials(creds, p, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := m.agents.Create(ctx, a); err != nil && !errors.Is(err, agents.ErrExists) {
		return err
	}
	return nil
}

func (m *Main) registerApproval() error {
	h := &handlers.Approval{User: m.user, Service: m.approval, DefaultIssuer: m.defaultIssuer}
	for op, hf := range map[*schemas.Op]func() bus.Handler{
		&schemas.OpApprovalRequest: h.Request, &schemas.OpApprovalStatus: h.Status, &schemas.OpApprovalDecide: h.Decide,
	} {
		if err := m.srv.Handle(*op, hf()); err != nil {
			return err
		}
	}
	return nil
}

// approvalEvents publishes notifications, feed events and audit records.
type approvalEvents struct {
	m   *Main
	pub *bus.Publisher
}

// publish stores an event whose id is derived from what it says (the
// request and its outcome), so that announcing again (after a crash, or
// from two instances) is dropped by JetStream's duplicate window.
func (e *approvalEvents) publish(ctx context.Context, subject, typ, id string, data any) error {
	ev, err := bus.NewEvent(typ, data)
	if err != nil {
		return err
	}
	ev.SetID(id)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err = e.pub.Publish(ctx, subject, ev)
	return err
}

func (e *approvalEvents) Notify(ctx context.Context, userKey, verb, typ string, n schemas.ApprovalNotification) error {
	return e.publish(ctx, schemas.NotifySubject(userKey)+".approval."+verb, typ, "approval-"+n.AuthReqID+"-"+verb+"-"+n.Status, n)
}

func (e *approvalEvents) Feed(ctx context.Context, agent, verb, typ string, d schemas.ApprovalDecided) error {
	return e.publish(ctx, schemas.EventsSubject(agent)+".approval."+verb, typ, "approval-"+d.AuthReqID+"-"+verb+"-"+d.Status, d)
}

func (e *approvalEvents) Audit(object, verb string, a schemas.AuditApproval) {
	e.m.auditor.Record("approval", object, verb, schemas.TypeAuditApproval, bus.TraceContext{}, a)
}
