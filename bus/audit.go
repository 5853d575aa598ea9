package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

// maxAuditBatch bounds how many audit events one write takes from the
// queue, and maxAuditMessage the size of one stream message (well under
// NATS's default 1 MiB payload limit).
const (
	maxAuditBatch   = 4096
	maxAuditMessage = 256 << 10
)

// DefaultAuditLinger is how long the audit writer waits for more events
// after the first of a batch: a little audit latency (never request
// latency) for far fewer stream writes, and far fewer goroutine wake-ups,
// under load. Measured in docs/BENCHMARKS.md (session 5).
const DefaultAuditLinger = 10 * time.Millisecond

// AuditorOptions configure an Auditor.
type AuditorOptions struct {
	// Linger (default DefaultAuditLinger) bounds how long a recorded
	// event waits before it is written: the events of the last Linger
	// are lost if the process dies without closing the Auditor.
	Linger time.Duration
}

// Auditor appends audit CloudEvents to the audit stream. The request path
// only enqueues a record; a background writer encodes and publishes them.
// When events queue up faster than one stream write each, the writer
// stores the events of one subject together as one message in the
// CloudEvents JSON batch format (application/cloudevents-batch+json);
// `agentauth replay` unpacks batches, so operators always see single
// events. Order: the events of one subject are stored in the order they
// were recorded; across subjects, events recorded within one batch window
// (the linger) may be stored in another order than recorded, so sort by
// the events' time, which is when each was recorded. A write JetStream
// cannot take at once is waited for, one it refuses or does not
// acknowledge is written again (same Nats-Msg-Id); what still fails is
// counted and logged. Flush waits until everything recorded so far is
// acknowledged by the stream (or failed). Audit data must never
// contain a secret: callers pass facts and fingerprints only. Safe for
// concurrent use.
type Auditor struct {
	js       jetstream.JetStream
	log      *slog.Logger
	metrics  *Metrics
	instance string
	linger   time.Duration

	mu     sync.RWMutex
	closed bool
	ch     chan auditItem
	done   chan struct{}

	// unacked are the writes JetStream has not acknowledged yet (the
	// writer's own: no lock); one it refuses is written again.
	unacked []unackedWrite
}

// unackedWrite is a published audit message awaiting its ack.
type unackedWrite struct {
	f     jetstream.PubAckFuture
	tries int
}

// Audit writes are tried again this many times when JetStream refuses or
// does not acknowledge them (same Nats-Msg-Id, so a write that was stored
// after all is not stored twice), and wait at most this long for JetStream
// to catch up when too many acks are pending.
const (
	auditWriteTries = 4
	auditStallWait  = time.Minute
	auditCloseWait  = 10 * time.Second
)

type auditItem struct {
	subject string
	at      time.Time // when it was recorded: the event's time
	typ     string
	trace   TraceContext
	data    any
	flushed chan struct{} // a flush marker when set
}

// NewAuditor starts an Auditor publishing through js with the default
// options. Close stops it.
func NewAuditor(js jetstream.JetStream, m *Metrics, log *slog.Logger, instance string) *Auditor {
	return NewAuditorWith(js, m, log, instance, AuditorOptions{})
}

// NewAuditorWith is NewAuditor with options.
func NewAuditorWith(js jetstream.JetStream, m *Metrics, log *slog.Logger, instance string, o AuditorOptions) *Auditor {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	if o.Linger <= 0 {
		o.Linger = DefaultAuditLinger
	}
	a := &Auditor{js: js, log: log, metrics: m, instance: instance, linger: o.Linger, ch: make(chan auditItem, 4096), done: make(chan struct{})}
	go a.run()
	return a
}

// Record appends one audit event of type typ on
// agentauth.audit.<area>.<object>.<verb>. It blocks only when the writer
// is more than a queue behind (backpressure, never loss).
func (a *Auditor) Record(area, object, verb, typ string, trace TraceContext, data any) {
	a.record(schemas.AuditSubject(area, object, verb), typ, trace, data, time.Now())
}

// record queues an event that happened at at.
func (a *Auditor) record(subject, typ string, trace TraceContext, data any, at time.Time) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.log.Error("audit event after the auditor closed", "type", typ, "subject", subject)
		a.metrics.AuditFailures.Inc()
		return
	}
	a.ch <- auditItem{subject: subject, at: at, typ: typ, trace: trace, data: data}
}

// Flush waits until JetStream has acknowledged (or failed) every audit
// event recorded before the call, or ctx ends.
func (a *Auditor) Flush(ctx context.Context) error {
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return nil
	}
	marker := make(chan struct{})
	a.ch <- auditItem{flushed: marker}
	a.mu.RUnlock()
	select {
	case <-marker:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-a.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close flushes and stops the writer, waiting for its last writes'
// acknowledgements until ctx ends.
func (a *Auditor) Close(ctx context.Context) error {
	err := a.Flush(ctx)
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.ch)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("bus: audit writes still unacknowledged at shutdown: %w", ctx.Err())
		}
	}
	return err
}

func (a *Auditor) run() {
	defer close(a.done)
	batch := make([]auditItem, 0, maxAuditBatch)
	for {
		var first auditItem
		var ok bool
		if len(a.unacked) > 0 {
			// Look at the acks again soon even when nothing is recorded.
			select {
			case first, ok = <-a.ch:
			case <-time.After(a.linger):
				a.settle(false)
				continue
			}
		} else {
			first, ok = <-a.ch
		}
		if !ok {
			a.settle(true)
			return
		}
		batch = append(batch[:0], first)
		if first.flushed == nil {
			// Sleep rather than wait on the channel: senders then only
			// enqueue, and no request pays for waking this goroutine.
			time.Sleep(a.linger)
		}
	drain:
		for len(batch) < maxAuditBatch {
			select {
			case it, ok := <-a.ch:
				if !ok {
					break drain
				}
				batch = append(batch, it)
			default:
				break drain
			}
		}
		a.write(batch)
		a.settle(false)
	}
}

// settle drops the acknowledged writes and writes again those JetStream
// refused or did not acknowledge in time; with wait (closing) it waits for
// every ack, trying again as often as allowed, for auditCloseWait at most.
func (a *Auditor) settle(wait bool) {
	deadline := time.Now().Add(auditCloseWait)
	for len(a.unacked) > 0 {
		keep := a.unacked[:0]
		var retry []unackedWrite
		for _, u := range a.unacked {
			var err error
			if wait {
				select {
				case <-u.f.Ok():
					continue
				case err = <-u.f.Err():
				case <-time.After(time.Until(deadline)):
					err = errors.New("no acknowledgement before the auditor closed")
				}
			} else {
				select {
				case <-u.f.Ok():
					continue
				case err = <-u.f.Err():
				default:
					keep = append(keep, u)
					continue
				}
			}
			if u.tries >= auditWriteTries || wait && !time.Now().Before(deadline) {
				a.fail(u.f.Msg().Subject, err)
				continue
			}
			a.log.Warn("audit write not acknowledged; writing it again", "subject", u.f.Msg().Subject, "try", u.tries+1, "error", err)
			retry = append(retry, u)
		}
		a.unacked = keep
		for _, u := range retry {
			a.send(u.f.Msg(), u.tries+1)
		}
		if !wait {
			return
		}
	}
}

// send publishes msg, waiting while JetStream has too many writes to
// acknowledge (backpressure: the queue fills and Record blocks) rather
// than dropping it, and keeps its ack to check.
func (a *Auditor) send(msg *nats.Msg, tries int) {
	deadline := time.Now().Add(auditStallWait)
	for {
		f, err := a.js.PublishMsgAsync(msg)
		if err == nil {
			a.unacked = append(a.unacked, unackedWrite{f: f, tries: tries})
			return
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || time.Now().After(deadline) {
			a.fail(msg.Subject, err)
			return
		}
		select {
		case <-a.js.PublishAsyncComplete():
		case <-time.After(time.Second):
		}
	}
}

// write publishes a drained batch: one message per subject, in order;
// flush markers are released once everything before them is published.
func (a *Auditor) write(batch []auditItem) {
	groups := map[string][]auditItem{}
	var order []string
	publish := func() {
		for _, subj := range order {
			a.publish(subj, groups[subj])
		}
		clear(groups)
		order = order[:0]
	}
	for _, it := range batch {
		if it.flushed != nil {
			publish()
			close(it.flushed)
			continue
		}
		if _, ok := groups[it.subject]; !ok {
			order = append(order, it.subject)
		}
		groups[it.subject] = append(groups[it.subject], it)
	}
	publish()
}

// publish writes the events of one subject: a lone event as a binary-mode
// message, several as one CloudEvents JSON batch written straight from the
// records (no event objects: this runs for every request).
func (a *Auditor) publish(subject string, items []auditItem) {
	var msg *nats.Msg
	var rest []auditItem
	if len(items) == 1 {
		e, err := NewEvent(items[0].typ, items[0].data)
		if err != nil {
			a.fail(subject, err)
			return
		}
		e.SetTime(items[0].at)
		if tp := items[0].trace.Traceparent(); tp != "" {
			setExtension(e, ExtTraceparent, tp)
		}
		h, body, err := Encode(e)
		if err != nil {
			a.fail(subject, err)
			return
		}
		h[HeaderMsgID] = []string{e.ID()}
		msg = &nats.Msg{Subject: subject, Header: h, Data: body}
	} else {
		var first string
		n := 0
		buf := make([]byte, 0, 640*len(items))
		buf = append(buf, '[')
		for i, it := range items {
			if n > 0 && len(buf) >= maxAuditMessage {
				rest = items[i:] // full: the rest follows in messages of their own
				break
			}
			mark := len(buf)
			if n > 0 {
				buf = append(buf, ',')
			}
			id := newID()
			var err error
			if buf, err = appendAuditEvent(buf, id, it.typ, it.at, it.trace.Traceparent(), it.data); err != nil {
				a.fail(subject, err) // this event only: the others are stored
				buf = buf[:mark]
				continue
			}
			if n == 0 {
				first = id
			}
			n++
		}
		if n == 0 {
			return
		}
		buf = append(buf, ']')
		msg = &nats.Msg{Subject: subject, Header: nats.Header{
			HeaderContentType: []string{mediaBatch},
			HeaderMsgID:       []string{first + "+" + strconv.Itoa(n)},
		}, Data: buf}
	}
	a.send(msg, 1)
	if len(rest) > 0 {
		a.publish(subject, rest)
	}
}

func (a *Auditor) fail(subject string, err error) {
	a.log.Error("audit event not published", "subject", subject, "error", err)
	a.metrics.AuditFailures.Inc()
}

// appendAuditEvent writes one of agentauth's own events (source
// /agentauth, JSON data, an optional traceparent) in the CloudEvents JSON
// format, as NewEvent and the structured encoding would.
func appendAuditEvent(buf []byte, id, typ string, t time.Time, traceparent string, data any) ([]byte, error) {
	buf = append(buf, `{"specversion":"1.0","id":`...)
	buf = appendJSONString(buf, id)
	buf = append(buf, `,"source":`...)
	buf = appendJSONString(buf, schemas.ServiceSource)
	buf = append(buf, `,"type":`...)
	buf = appendJSONString(buf, typ)
	buf = append(buf, `,"time":"`...)
	buf = t.UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","datacontenttype":"application/json"`...)
	if traceparent != "" {
		buf = append(buf, `,"traceparent":`...)
		buf = appendJSONString(buf, traceparent)
	}
	buf = append(buf, `,"data":`...)
	if ap, ok := data.(jsonAppender); ok {
		buf = ap.AppendJSON(buf)
	} else {
		b, err := json.Marshal(data)
		if err != nil {
			return buf, err // the caller drops what was appended
		}
		buf = append(buf, b...)
	}
	return append(buf, '}'), nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// DecodeBatch reads a CloudEvents JSON batch (as the audit writer stores
// them), each event checked as strictly as a single structured event.
func DecodeBatch(data []byte) ([]*event.Event, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, invalid(schemas.CodeInvalidEvent, "batch is not a JSON array: %v", err)
	}
	out := make([]*event.Event, 0, len(raw))
	for i, r := range raw {
		e, err := decodeStructured(r)
		if err != nil {
			return nil, invalid(schemas.CodeInvalidEvent, "batch event %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// AuditRequests records every request — served, rejected as bad input, or
// failed — on the audit stream (agentauth.audit.<area>.<op>.ok|rejected|failed),
// after the reply is decided. Only facts go in: agent, subject, event id
// and type, outcome code, public message, duration, trace.
func AuditRequests(a *Auditor) Middleware {
	return func(next Handler) Handler {
		// A chain serves one operation: its name and three subjects are
		// built once, not per request.
		var names struct {
			sync.Once
			op       schemas.Op
			name     string
			subjects [3]string // ok, rejected, failed
		}
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			reply, err := next.ServeEvent(ctx, req)
			if errors.Is(err, blocking.ErrWouldBlock) {
				return reply, err // served again where it may wait; audited then
			}
			names.Do(func() { names.op, names.name, names.subjects = req.Op, opName(req.Op), auditSubjects(req.Op) })
			op, subjects := names.name, names.subjects
			if req.Op.Area != names.op.Area || req.Op.Name != names.op.Name { // a chain not built by Server.Handle
				op, subjects = opName(req.Op), auditSubjects(req.Op)
			}
			now := time.Now()
			rec := &req.audit // part of the request's allocation
			*rec = schemas.AuditRequest{
				Agent:       req.Agent,
				Subject:     req.Subject,
				Operation:   op,
				Outcome:     "ok",
				DurationUS:  now.Sub(req.Received).Microseconds(),
				Traceparent: req.Trace.Traceparent(),
				Instance:    a.instance,
				Received:    req.Received.UTC(),
			}
			if req.Event != nil {
				rec.RequestID = req.Event.ID()
				rec.RequestType = req.Event.Type()
			}
			subject := subjects[0]
			if err != nil {
				f := Classify(err)
				rec.Outcome, rec.Code, rec.Message = "error", f.Code, f.Message
				subject = subjects[1]
				if f.ServerFault() {
					subject = subjects[2]
				}
			}
			a.record(subject, schemas.TypeAuditRequest, req.Trace, rec, now)
			return reply, err
		})
	}
}

func opName(op schemas.Op) string { return op.Area + "." + op.Name }

func auditSubjects(op schemas.Op) [3]string {
	return [3]string{schemas.AuditSubject(op.Area, op.Name, "ok"), schemas.AuditSubject(op.Area, op.Name, "rejected"), schemas.AuditSubject(op.Area, op.Name, "failed")}
}

// DecodeData unmarshals an event's JSON data into v.
func DecodeData(e *event.Event, v any) error { return decodeJSONData(e.Data(), v) }

// decodeJSONData unmarshals JSON data (none: nothing) into v. The hot
// payloads decode themselves when their data is simple (schemas holds them
// equal to encoding/json); otherwise, and for everything else,
// encoding/json.
func decodeJSONData(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if d, ok := v.(interface{ DecodeJSON([]byte) error }); ok && d.DecodeJSON(data) == nil {
		return nil
	}
	err := json.Unmarshal(data, v)
	// JSON Schema's integer takes 60.0 and 1e2, Go's int does not: bad
	// input, said so (it was an internal error).
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return Errorf(schemas.CodeSchemaViolation, "data: field %s: a %s where a %s is needed (write whole numbers without a fraction or exponent)", te.Field, te.Value, te.Type)
	}
	return err
}
