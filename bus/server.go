package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	Version       string
	Description   string
	MaxEventBytes int           // cap on header+payload size, checked before decoding
	Timeout       time.Duration // per-request handler timeout
	Logger        *slog.Logger
	// Middleware runs inside the standard chain (recover, tracing, audit,
	// logging, metrics, timeout, validation), just before the handler.
	Middleware []Middleware
	// Workers bounds how many requests of non-inline operations run at
	// once (default 256). Each endpoint's subscription only hands requests
	// to workers, so a slow handler never holds up the others.
	Workers int
	// InlineEndpoints is how many endpoints (subscriptions, each with its
	// own goroutine) serve an Inline operation (default: GOMAXPROCS, at
	// most 4), so that a burst of requests is served on every core.
	InlineEndpoints int
	// SlowInline (default 50ms) is how long a request served on a
	// subscription goroutine may take before it is counted
	// (agentauth_inline_slow_total) and logged as a handler that waits
	// where it must not. Negative: never.
	SlowInline time.Duration
}

// HandleOption configures one operation.
type HandleOption func(*handleOpts)

type handleOpts struct{ inline, inlineFirst bool }

// Inline runs the handler on the endpoints' subscription goroutines, with
// no worker hand-off and no Timeout middleware. Only for handlers that
// never block (in-memory work, no I/O). The operation gets
// ServerOptions.InlineEndpoints endpoints in one queue group, named
// <area>-<op>, <area>-<op>-2, …: their `nats micro stats` add up to the
// operation's.
func Inline() HandleOption { return func(o *handleOpts) { o.inline = true } }

// InlineFirst serves the operation as Inline does, in a context where
// blocking.Check fails. A handler that would wait (network, disk) calls
// it first and returns its error; the request is then served again, from
// the start, on a worker, with the Timeout middleware. Middleware records
// only that second run. For handlers whose common case is in memory
// (vault.token with its record cached) and whose rare case waits (a
// refresh at the provider).
func InlineFirst() HandleOption {
	return func(o *handleOpts) { o.inline, o.inlineFirst = true, true }
}

// inlineCtx is the context of inline runs that must not block.
var inlineCtx = blocking.Forbid(context.Background())

// Server serves request/reply operations as the NATS micro service
// "agentauth": each operation is an endpoint on
// agentauth.*.<area>.<op> in the default queue group, so several
// instances share the load and `nats micro ls|info|stats` show them.
type Server struct {
	svc       micro.Service
	opts      ServerOptions
	validator *schemas.Validator
	metrics   *Metrics
	auditor   *Auditor
	log       *slog.Logger

	nc        *nats.Conn
	jobs      chan func() // hands requests to idle workers
	nworkers  int         // workers started (≤ opts.Workers), under mu
	closeJobs sync.Once
	mu        sync.Mutex
	ops       []schemas.Op
	inflight  *gate
	// workerStats, by endpoint name, count the requests its workers
	// answered (under mu).
	workerStats map[string]*workerStats
	// slowLogged: when a slow inline request of an operation was last
	// logged (under mu).
	slowLogged map[string]time.Time
}

// NewServer registers the micro service on nc. It serves nothing until
// Handle is called.
func NewServer(nc *nats.Conn, v *schemas.Validator, m *Metrics, a *Auditor, opts ServerOptions) (*Server, error) {
	if opts.MaxEventBytes <= 0 {
		opts.MaxEventBytes = 64 << 10
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = 256
	}
	if opts.InlineEndpoints <= 0 {
		opts.InlineEndpoints = min(runtime.GOMAXPROCS(0), 4)
	}
	if opts.SlowInline == 0 {
		opts.SlowInline = 50 * time.Millisecond
	}
	s := &Server{opts: opts, validator: v, metrics: m, auditor: a, log: opts.Logger, nc: nc, jobs: make(chan func()), workerStats: map[string]*workerStats{}, inflight: newGate(), slowLogged: map[string]time.Time{}}
	svc, err := micro.AddService(nc, micro.Config{
		Name:         schemas.ServiceName,
		Version:      opts.Version,
		Description:  opts.Description,
		StatsHandler: s.endpointData,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: add micro service: %w", err)
	}
	s.svc = svc
	return s, nil
}

// Handle serves op with h behind the standard middleware chain: recover,
// tracing, audit, logging, metrics, timeout (not for Inline operations),
// validation, then ServerOptions.Middleware.
func (s *Server) Handle(op schemas.Op, h Handler, opts ...HandleOption) error {
	var ho handleOpts
	for _, o := range opts {
		o(&ho)
	}
	chain := func(timed bool) Handler {
		mws := []Middleware{Recover(s.log), Tracing(), AuditRequests(s.auditor), Logging(s.log), Instrument(s.metrics)}
		if timed {
			// Timeout runs what follows on another goroutine, out of
			// reach of the Recover above: recover there too.
			mws = append(mws, timeout(s.opts.Timeout, s.inflight), Recover(s.log))
		}
		mws = append(mws, Validate(s.validator))
		return Chain(h, append(mws, s.opts.Middleware...)...)
	}
	// Requests answered on a worker are counted in the endpoint's
	// worker stats (ws), which `nats micro stats` shows as its data:
	// micro counts only what its callback answered before returning.
	var handler func(ws *workerStats) func(micro.Request)
	switch {
	case ho.inlineFirst:
		inline, pooled := chain(false), chain(true)
		handler = func(ws *workerStats) func(micro.Request) {
			return func(r micro.Request) {
				if !s.admit(op, r) {
					return
				}
				defer s.inflight.leave()
				req, ok := s.decode(op, r, responder{r: r})
				if ok && !s.answer(inlineCtx, op, inline, req, responder{r: r}, true) {
					// The handler would block: a worker serves the
					// request again. The decoded request holds no
					// reference to the micro request.
					reply := r.Reply()
					s.inflight.hold()
					s.dispatch(func() {
						defer s.inflight.leave()
						s.answer(context.Background(), op, pooled, req, responder{nc: s.nc, reply: reply, ws: ws}, false)
						ws.served(time.Since(req.Received))
					})
				}
			}
		}
	case ho.inline:
		inline := chain(false)
		handler = func(*workerStats) func(micro.Request) {
			return func(r micro.Request) {
				if !s.admit(op, r) {
					return
				}
				defer s.inflight.leave()
				s.serve(op, inline, r, responder{r: r})
			}
		}
	default:
		pooled := chain(true)
		handler = func(ws *workerStats) func(micro.Request) {
			return func(r micro.Request) {
				if !s.admit(op, r) {
					return
				}
				start := time.Now()
				// Copy what the worker needs: the micro request is not
				// used after this callback returns.
				pr := pooledRequest{subject: r.Subject(), reply: r.Reply(), header: r.Headers(), data: r.Data()}
				s.dispatch(func() {
					defer s.inflight.leave()
					s.serve(op, pooled, pr, responder{nc: s.nc, reply: pr.reply, ws: ws})
					ws.served(time.Since(start))
				})
			}
		}
	}
	// micro delivers an endpoint's requests on one goroutine. An inline
	// operation runs its handler there, so it gets several endpoints in
	// the queue group: a burst of requests is then served on every core
	// instead of queueing behind one goroutine.
	n := 1
	if ho.inline {
		n = s.opts.InlineEndpoints
	}
	for i := range n {
		name := op.Endpoint()
		if i > 0 {
			name += "-" + strconv.Itoa(i+1)
		}
		var ws *workerStats
		if !ho.inline || ho.inlineFirst {
			ws = new(workerStats)
			s.mu.Lock()
			s.workerStats[name] = ws
			s.mu.Unlock()
		}
		err := s.svc.AddEndpoint(name, micro.HandlerFunc(handler(ws)),
			micro.WithEndpointSubject(op.SubjectPattern()),
			micro.WithEndpointMetadata(map[string]string{"request_type": op.RequestType, "reply_type": op.ReplyType, "summary": op.Summary}),
		)
		if err != nil {
			return fmt.Errorf("bus: add endpoint %s: %w", name, err)
		}
	}
	// Once Handle returns, the server knows the subscription: a request
	// from another connection reaches it.
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("bus: add endpoint %s: %w", op.Endpoint(), err)
	}
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
	return nil
}

// dispatch hands job to an idle worker, starts a worker while fewer than
// Workers run, or waits for one to become idle (backpressure). Workers
// live as long as the server, so their stacks stay grown.
func (s *Server) dispatch(job func()) {
	select {
	case s.jobs <- job:
		return
	default:
	}
	s.mu.Lock()
	if s.nworkers < s.opts.Workers {
		s.nworkers++
		s.mu.Unlock()
		go worker(s.jobs, job)
		return
	}
	s.mu.Unlock()
	s.jobs <- job
}

func worker(jobs <-chan func(), job func()) {
	for {
		job()
		var ok bool
		if job, ok = <-jobs; !ok {
			return
		}
	}
}

// Operations lists the operations served, in registration order.
func (s *Server) Operations() []schemas.Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]schemas.Op(nil), s.ops...)
}

// Stop stops taking requests and waits for those in flight (and handlers
// still running past their timeout) to finish, or ctx to end. Requests
// NATS delivered before the endpoints unsubscribed are served as long as
// micro keeps handing them over (a pause of 50 ms ends that); any
// straggler after that gets a retryable unavailable error, never a panic
// or silence.
func (s *Server) Stop(ctx context.Context) error {
	if err := s.svc.Stop(); err != nil {
		return err
	}
	// Once the server has the unsubscribes (the flush's round trip),
	// every request it will deliver is in the subscriptions' queues,
	// which micro drains through the callbacks one after the other: serve
	// them until the callbacks fall quiet.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second) // FlushWithContext needs a deadline
	err := s.nc.FlushWithContext(fctx)
	cancel()
	if err == nil {
		_ = s.inflight.quiet(ctx, 50*time.Millisecond)
	}
	s.inflight.close()
	select {
	case <-s.inflight.idle:
		s.closeJobs.Do(func() { close(s.jobs) }) // idle workers exit
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bus: in-flight requests did not finish: %w", ctx.Err())
	}
}

func headerSize(h micro.Headers) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// inbound is the part of a request serve reads.
type inbound interface {
	Subject() string
	Headers() micro.Headers
	Data() []byte
}

type pooledRequest struct {
	subject, reply string
	header         micro.Headers
	data           []byte
}

func (p pooledRequest) Subject() string        { return p.subject }
func (p pooledRequest) Headers() micro.Headers { return p.header }
func (p pooledRequest) Data() []byte           { return p.data }

// responder answers through the micro request (inline operations, so that
// `nats micro stats` counts errors) or by publishing to the reply subject
// (worker goroutines, which must not touch the micro request after its
// callback returned).
type responder struct {
	r     micro.Request
	nc    *nats.Conn
	reply string
	ws    *workerStats // counts the errors answered by publishing
}

func (w responder) respond(h nats.Header, body []byte) error {
	if w.r != nil {
		return w.r.Respond(body, micro.WithHeaders(micro.Headers(h)))
	}
	return w.nc.PublishMsg(&nats.Msg{Subject: w.reply, Header: h, Data: body})
}

func (w responder) fail(status, desc string, h nats.Header, body []byte) error {
	if w.r != nil {
		return w.r.Error(status, desc, body, micro.WithHeaders(micro.Headers(h)))
	}
	if h == nil {
		h = nats.Header{}
	}
	h[micro.ErrorHeader] = []string{desc}
	h[micro.ErrorCodeHeader] = []string{status}
	w.ws.failed(status, desc)
	return w.nc.PublishMsg(&nats.Msg{Subject: w.reply, Header: h, Data: body})
}

// serve runs one request through the chain and answers it.
func (s *Server) serve(op schemas.Op, chain Handler, r inbound, w responder) {
	if req, ok := s.decode(op, r, w); ok {
		s.answer(context.Background(), op, chain, req, w, false)
	}
}

// decode reads the request. Bad input is not an error here: the Validate
// middleware returns it, so that it is logged, counted and audited.
func (s *Server) decode(op schemas.Op, r inbound, w responder) (req *Request, ok bool) {
	defer s.guard(r.Subject(), w, &ok)
	req = &Request{Subject: r.Subject(), Op: op, Received: time.Now(), Agent: agentOf(r.Subject()), stampsTrace: true}
	hdr := nats.Header(r.Headers())
	req.Size = len(r.Data()) + headerSize(r.Headers())
	if req.Size > s.opts.MaxEventBytes {
		req.decodeErr = &DecodeError{Code: schemas.CodeEventTooLarge, Reason: fmt.Sprintf("the event is %d bytes; the limit is %d bytes", req.Size, s.opts.MaxEventBytes)}
		req.Trace = childOf(traceHeader(hdr))
	} else if e, err := Decode(hdr, r.Data()); err != nil {
		req.decodeErr = err
		req.Trace = childOf(traceHeader(hdr))
	} else {
		req.Event = e
	}
	return req, true
}

// guard answers an internal error for a panic outside the chain (which has
// its own Recover): in decoding or encoding.
func (s *Server) guard(subject string, w responder, ok *bool) {
	if p := recover(); p != nil {
		s.log.Error("panic serving request", "subject", subject, "panic", fmt.Sprint(p))
		_ = w.fail("500", "internal error", nil, nil)
		*ok = false
	}
}

// answer runs req through the chain and sends the reply. With mayDefer, a
// chain that reports blocking.ErrWouldBlock sends nothing and answer
// returns false: the caller serves the request elsewhere.
func (s *Server) answer(ctx context.Context, op schemas.Op, chain Handler, req *Request, w responder, mayDefer bool) (answered bool) {
	answered = true
	defer s.guard(req.Subject, w, new(bool))
	reply, err := chain.ServeEvent(ctx, req)
	if mayDefer && errors.Is(err, blocking.ErrWouldBlock) {
		return false
	}
	if w.r != nil && s.opts.SlowInline > 0 && req.took > s.opts.SlowInline {
		s.slowInline(op, req)
	}
	if err == nil && reply == nil {
		err = fmt.Errorf("handler for %s returned neither a reply nor an error", op.Endpoint())
	}
	if err != nil {
		s.respondError(w, req, err)
		return
	}
	h, body := nats.Header(nil), reply.Data()
	if ec, ok := reply.Context.(*event.EventContextV1); ok {
		// The reply's header is written into a pooled block, free again
		// once respond has returned: nats.go has copied it by then.
		hb := headerBlocks.Get().(*headerBlock)
		defer headerBlocks.Put(hb)
		h = encodeV1(ec, hb, req.Trace.Traceparent())
	} else {
		setExtension(reply, ExtTraceparent, req.Trace.Traceparent())
		if h, body, err = Encode(reply); err != nil {
			s.respondError(w, req, fmt.Errorf("encode reply: %w", err))
			return
		}
	}
	if err := w.respond(h, body); err != nil {
		s.log.Warn("reply not sent", "subject", req.Subject, "error", err)
	}
	return answered
}

// admit lets r in: its reply subject allowed, the server not stopping
// (else r is refused, retryably). The caller leaves s.inflight once done.
func (s *Server) admit(op schemas.Op, r micro.Request) bool {
	if !s.replyAllowed(op, r) {
		return false
	}
	if !s.inflight.enter() {
		s.refuse(op, r)
		return false
	}
	return true
}

// replyAllowed says whether the service may answer r on its reply
// subject: the requesting agent's own inbox (agents.InboxPrefix), or the
// default _INBOX., which no agent may subscribe to (operators' tools).
// NATS checks the subject a client publishes to, never its reply subject,
// and the service may publish anywhere: without this an agent could have
// its answer written into another agent's feed or inbox, a person's
// notifications, the audit stream or a KV bucket. Such a request is not
// answered, and is audited as rejected.
func (s *Server) replyAllowed(op schemas.Op, r micro.Request) bool {
	reply, subject := r.Reply(), r.Subject()
	if strings.HasPrefix(reply, "_INBOX.") {
		return true
	}
	agent := agentOf(subject)
	if agents.InInbox(agent, reply) {
		return true
	}
	s.metrics.ReplyRefused.Inc()
	s.auditor.Record(op.Area, op.Name, "rejected", schemas.TypeAuditRequest, childOf(traceHeader(nats.Header(r.Headers()))), schemas.AuditRequest{
		Agent: agent, Subject: subject, Operation: op.Endpoint(), Outcome: "error", Code: schemas.CodeDenied,
		Message:  fmt.Sprintf("not answered: its reply subject %q is not the agent's inbox (%s.…)", reply, agents.InboxPrefix(agent)),
		Received: time.Now(),
	})
	return false
}

// refuse answers a request delivered after Stop closed the gate: this
// instance is going away, another (or this one restarted) will answer.
func (s *Server) refuse(op schemas.Op, r micro.Request) {
	req := &Request{Subject: r.Subject(), Op: op, Received: time.Now(), Agent: agentOf(r.Subject())}
	s.respondError(responder{r: r}, req, &Error{Code: schemas.CodeUnavailable, RetryAfter: time.Second,
		Message: "this agentauth instance is shutting down; send the request again"})
}

// slowInline reports a request that held up its subscription goroutine:
// counted each time, logged at most once a minute per operation.
func (s *Server) slowInline(op schemas.Op, req *Request) {
	s.metrics.SlowInline.WithLabelValues(op.Endpoint()).Inc()
	now := time.Now()
	s.mu.Lock()
	last := s.slowLogged[op.Endpoint()]
	due := now.Sub(last) >= time.Minute
	if due {
		s.slowLogged[op.Endpoint()] = now
	}
	s.mu.Unlock()
	if due {
		s.log.Warn("a request served inline took long: its handler waits without calling blocking.Check first, and every request of its endpoint waits behind it",
			"op", op.Endpoint(), "took", req.took, "bound", s.opts.SlowInline, "trace", req.Trace.Traceparent())
	}
}

// respondError answers with an error CloudEvent; the micro error headers
// carry the table's status so `nats req` and `nats micro stats` see it.
func (s *Server) respondError(w responder, req *Request, err error) {
	f := Classify(err)
	data := schemas.ErrorData{Code: f.Code, Message: f.Message, RetryAfterMS: f.RetryAfter.Milliseconds(), Details: f.Details}
	if req.Event != nil {
		data.RequestID = req.Event.ID()
	}
	e, encErr := NewEvent(schemas.ErrorType, data)
	if encErr != nil {
		_ = w.fail("500", "internal error", nil, nil)
		return
	}
	if tp := req.Trace.Traceparent(); tp != "" {
		setExtension(e, ExtTraceparent, tp)
	}
	h, body, encErr := Encode(e)
	if encErr != nil {
		_ = w.fail("500", "internal error", nil, nil)
		return
	}
	desc := string(f.Code) + ": " + oneLine(f.Message)
	if err := w.fail(strconv.Itoa(f.Status), desc, h, body); err != nil {
		s.log.Warn("error reply not sent", "subject", req.Subject, "error", err)
	}
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// agentOf returns the agent token of agentauth.<agent>.<area>.<op>.
func agentOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, schemas.SubjectRoot+".")
	if !ok {
		return ""
	}
	agent, _, _ := strings.Cut(rest, ".")
	return agent
}

// traceHeader finds a traceparent in raw headers (ce-traceparent or a plain
// traceparent header), for messages that could not be decoded.
func traceHeader(h nats.Header) string {
	for k, v := range h {
		if len(v) > 0 && (strings.EqualFold(k, "ce-traceparent") || strings.EqualFold(k, "traceparent")) {
			return v[0]
		}
	}
	return ""
}

// ReplyError is the typed error a client gets from an error reply.
type ReplyError struct {
	schemas.ErrorData
	Status int
}

func (e *ReplyError) Error() string {
	return string(e.Code) + ": " + e.Message
}

// ErrorCode returns the wire code.
func (e *ReplyError) ErrorCode() schemas.ErrorCode { return e.Code }

// ParseReply decodes a reply message: the reply event, or a *ReplyError
// when the service answered with an error event.
func ParseReply(msg *nats.Msg) (*event.Event, error) {
	if st := msg.Header.Get("Status"); st == "503" {
		return nil, &ReplyError{ErrorData: schemas.ErrorData{Code: schemas.CodeUnavailable, Message: "no agentauth instance is serving this subject; is `agentauth serve` running?"}, Status: 503}
	}
	e, err := Decode(msg.Header, msg.Data)
	if err != nil {
		return nil, fmt.Errorf("bus: reply is not a CloudEvent: %w", err)
	}
	if e.Type() == schemas.ErrorType {
		re := &ReplyError{}
		if err := json.Unmarshal(e.Data(), &re.ErrorData); err != nil {
			return nil, fmt.Errorf("bus: error reply unreadable: %w", err)
		}
		re.Status, _ = strconv.Atoi(msg.Header.Get(micro.ErrorCodeHeader))
		return nil, re
	}
	return e, nil
}
