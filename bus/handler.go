package bus

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nuid"

	"github.com/agentauth/agentauth/schemas"
)

// Request is one request event as a handler sees it. Agent is proven by the
// subject the server delivered the message on; the rest comes from the
// sender.
type Request struct {
	Event    *event.Event // nil when the message could not be decoded
	Agent    string
	Subject  string
	Op       schemas.Op
	Received time.Time
	Size     int
	Trace    TraceContext

	// decodeErr is the reason Event is nil; the Validate middleware
	// returns it so that bad input flows through logging, metrics and
	// audit like any other outcome.
	decodeErr error
	// stampsTrace: the server writes Trace on the reply as it encodes it,
	// so Tracing leaves the reply alone.
	stampsTrace bool
	// audit is the request's audit record (AuditRequests), allocated
	// with the request.
	audit schemas.AuditRequest
	// took is set by Instrument: from receipt to the handler's answer.
	took time.Duration
}

// Handler serves one request event and returns the reply event, or an
// error that the error table turns into an error reply.
type Handler interface {
	ServeEvent(ctx context.Context, req *Request) (*event.Event, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (*event.Event, error)

// ServeEvent calls f.
func (f HandlerFunc) ServeEvent(ctx context.Context, req *Request) (*event.Event, error) {
	return f(ctx, req)
}

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Chain wraps h in mws; the first middleware is the outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// NewEvent builds an event emitted by agentauth: a fresh id, the service
// source, the current time and data encoded as JSON.
func NewEvent(typ string, data any) (*event.Event, error) {
	return NewEventFrom(serviceSource, typ, data)
}

var serviceSource = MustSource(schemas.ServiceSource)

// MustSource parses a CloudEvent source once, for NewEventFrom.
func MustSource(s string) types.URIRef {
	u := types.ParseURIRef(s)
	if u == nil || s == "" {
		panic("bus: invalid event source " + s)
	}
	return *u
}

// jsonAppender is implemented by payloads that encode themselves without
// reflection (the audit records written for every request).
type jsonAppender interface{ AppendJSON([]byte) []byte }

// NewEventFrom builds an event with a fresh id, the given (pre-parsed)
// source, the current time and data encoded as JSON. The context is built
// directly: this runs on every request and reply.
func NewEventFrom(source types.URIRef, typ string, data any) (*event.Event, error) {
	b, err := encodeData(data, 512)
	if err != nil {
		return nil, err
	}
	d := &eventBlock{ts: types.Timestamp{Time: time.Now()}, ct: event.ApplicationJSON}
	d.ec = event.EventContextV1{ID: newID(), Source: source, Type: typ, Time: &d.ts, DataContentType: &d.ct}
	d.e = event.Event{Context: &d.ec, DataEncoded: b}
	return &d.e, nil
}

// encodeData encodes data as JSON: with its own AppendJSON when it has
// one (into a buffer of size bytes to start with), else encoding/json.
func encodeData(data any, size int) ([]byte, error) {
	if a, ok := data.(jsonAppender); ok {
		return a.AppendJSON(make([]byte, 0, size)), nil
	}
	return json.Marshal(data)
}

// Reply builds the reply to req: NewEvent with the op's reply type.
func Reply(req *Request, data any) (*event.Event, error) {
	return NewEvent(req.Op.ReplyType, data)
}

// nuids hands each goroutine a generator of its own: nuid.Next shares one
// behind a mutex, which every request and reply would contend for. Each
// generator has its own random prefix, so ids stay unique.
var nuids = sync.Pool{New: func() any { return nuid.New() }}

// newID returns a fresh event id (a NUID).
func newID() string {
	n := nuids.Get().(*nuid.NUID)
	id := n.Next()
	nuids.Put(n)
	return id
}
