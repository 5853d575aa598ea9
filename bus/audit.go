package bus

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/schemas"
)

// Auditor appends audit CloudEvents to the audit stream. Publishing is
// asynchronous (the request path never waits for the stream), failures are
// counted and logged, and Flush waits for every outstanding acknowledgement.
// Audit data must never contain a secret: callers pass facts and
// fingerprints only. Safe for concurrent use.
type Auditor struct {
	js       jetstream.JetStream
	log      *slog.Logger
	metrics  *Metrics
	instance string
}

// NewAuditor returns an Auditor publishing through js.
func NewAuditor(js jetstream.JetStream, m *Metrics, log *slog.Logger, instance string) *Auditor {
	return &Auditor{js: js, log: log, metrics: m, instance: instance}
}

// Record appends one audit event of type typ on
// agentauth.audit.<area>.<object>.<verb>.
func (a *Auditor) Record(area, object, verb, typ string, trace TraceContext, data any) {
	e, err := NewEvent(typ, data)
	if err != nil {
		a.log.Error("audit event not encoded", "type", typ, "error", err)
		a.metrics.AuditFailures.Inc()
		return
	}
	if tp := trace.Traceparent(); tp != "" {
		e.SetExtension(ExtTraceparent, tp)
	}
	h, body, err := Encode(e)
	if err != nil {
		a.log.Error("audit event not encoded", "type", typ, "error", err)
		a.metrics.AuditFailures.Inc()
		return
	}
	h[HeaderMsgID] = []string{e.ID()}
	msg := &nats.Msg{Subject: schemas.AuditSubject(area, object, verb), Header: h, Data: body}
	if _, err := a.js.PublishMsgAsync(msg); err != nil {
		a.log.Error("audit event not published", "subject", msg.Subject, "error", err)
		a.metrics.AuditFailures.Inc()
	}
}

// Flush waits until JetStream has acknowledged (or failed) every audit
// event published so far, or ctx ends.
func (a *Auditor) Flush(ctx context.Context) error {
	select {
	case <-a.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AuditRequests records every request — served, rejected as bad input, or
// failed — on the audit stream (agentauth.audit.<area>.<op>.ok|rejected|failed), after the reply is decided. Only facts go
// in: agent, subject, event id and type, outcome code, public message,
// duration, trace.
func AuditRequests(a *Auditor) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			reply, err := next.ServeEvent(ctx, req)
			rec := schemas.AuditRequest{
				Agent:       req.Agent,
				Subject:     req.Subject,
				Operation:   req.Op.Area + "." + req.Op.Name,
				Outcome:     "ok",
				DurationUS:  time.Since(req.Received).Microseconds(),
				Traceparent: req.Trace.Traceparent(),
				Instance:    a.instance,
				Received:    req.Received.UTC(),
			}
			if req.Event != nil {
				rec.RequestID = req.Event.ID()
				rec.RequestType = req.Event.Type()
			}
			if err != nil {
				f := Classify(err)
				rec.Outcome, rec.Code, rec.Message = "error", f.Code, f.Message
			}
			verb := "ok"
			if err != nil {
				verb = "rejected"
				if f := Classify(err); f.Internal || f.Status >= 500 {
					verb = "failed"
				}
			}
			a.Record(req.Op.Area, req.Op.Name, verb, schemas.TypeAuditRequest, req.Trace, rec)
			return reply, err
		})
	}
}

// DecodeData unmarshals an event's JSON data into v.
func DecodeData(e *event.Event, v any) error {
	if len(e.Data()) == 0 {
		return nil
	}
	return json.Unmarshal(e.Data(), v)
}
