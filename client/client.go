// Package client is the agent-side Go SDK of agentauth: connect as an
// agent, send request events and get typed replies or typed errors, and
// receive the agent's durable event feed.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// Options say how an agent reaches agentauth.
type Options struct {
	URL string // NATS URL; default: the credentials' URL, else nats://127.0.0.1:4222
	// CredsFile is the agent's credentials file (`agentauth agent add`
	// writes it); Credentials the same, already read. Without either the
	// connection carries no credentials, which only the development
	// anonymous agent of an embedded server accepts.
	CredsFile   string
	Credentials *agents.Credentials
	Agent       string // the agent id; default: the credentials' agent
	// InboxPrefix receives replies; default _INBOX_<agent>, the prefix the
	// agent's NATS permissions allow.
	InboxPrefix string
	Timeout     time.Duration // per request when ctx has no deadline; default 10s
	Logger      *slog.Logger
}

// Client is a connected agent. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	agent   string
	source  types.URIRef
	encoder bus.RequestEncoder
	timeout time.Duration
	log     *slog.Logger
	// opener opens what agentauth seals to this agent (nil without its
	// credentials).
	opener *agents.Opener
	// links and approvals wait on the agent's feed for what the SDK's
	// interrupts resume on.
	links, approvals *feedWaiters
}

// ErrNoSealingKey is returned by Open when the client was connected
// without the agent's credentials.
var ErrNoSealingKey = errors.New("client: connected without the agent's credentials, so sealed tokens cannot be opened")

// Open decrypts a secret agentauth sealed to this agent. With credentials
// that carry agentauth's sealing key (Credentials.ServiceXKey) it refuses a
// box sealed by any other key (agents.ErrUnknownSender).
func (c *Client) Open(s schemas.Sealed) ([]byte, error) {
	if c.opener == nil {
		return nil, ErrNoSealingKey
	}
	pt, err := c.opener.Open(s)
	if errors.Is(err, agents.ErrUnknownSender) {
		return nil, fmt.Errorf("client: %w; if agentauth's sealing key was replaced, the agent needs new credentials", err)
	}
	return pt, err
}

// Error is a typed error reply from agentauth: a stable Code and a Message
// a person can act on.
type Error struct {
	Code       schemas.ErrorCode
	Message    string
	RetryAfter time.Duration
	RequestID  string
	Status     int
	Details    *schemas.ErrorDetails // the next step, for codes that have one
}

func (e *Error) Error() string { return "agentauth: " + string(e.Code) + ": " + e.Message }

// InboxPrefix is the reply inbox prefix of an agent: the only one its NATS
// permissions let it subscribe to.
func InboxPrefix(agent string) string { return agents.InboxPrefix(agent) }

// Connect connects agent to agentauth.
func Connect(ctx context.Context, o Options) (*Client, error) {
	if o.CredsFile != "" && o.Credentials == nil {
		b, err := os.ReadFile(o.CredsFile)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		c, err := agents.ParseCredentials(b)
		if err != nil {
			return nil, fmt.Errorf("client: %s: %w", o.CredsFile, err)
		}
		o.Credentials = &c
	}
	var nkeySeed, xkeySeed []byte
	var serviceXKey string
	if c := o.Credentials; c != nil {
		if o.Agent == "" {
			o.Agent = c.Agent
		}
		if o.Agent != c.Agent {
			return nil, fmt.Errorf("client: credentials are agent %s's, not %s's", c.Agent, o.Agent)
		}
		if o.URL == "" {
			o.URL = c.URL
		}
		nkeySeed, xkeySeed, serviceXKey = []byte(c.NKeySeed), []byte(c.XKeySeed), c.ServiceXKey
	}
	if err := schemas.ValidAgentID(o.Agent); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if o.URL == "" {
		o.URL = nats.DefaultURL
	}
	if o.InboxPrefix == "" {
		o.InboxPrefix = InboxPrefix(o.Agent)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var opener *agents.Opener
	if len(xkeySeed) > 0 {
		var err error
		if opener, err = agents.NewOpener(xkeySeed, serviceXKey); err != nil {
			return nil, fmt.Errorf("client: credentials: %w", err)
		}
		if serviceXKey == "" {
			o.Logger.Warn("agent credentials do not pin agentauth's sealing key, so a token sealed to this agent by anyone is accepted as agentauth's; re-issue the credentials (agentauth agent add) to pin it", "agent", o.Agent)
		}
	}
	nc, err := bus.Connect(bus.ConnOptions{URL: o.URL, Name: "agent-" + o.Agent, NKeySeed: nkeySeed, InboxPrefix: o.InboxPrefix})
	if err != nil {
		return nil, err
	}
	js, err := bus.JetStream(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	source := bus.MustSource(schemas.AgentSource(o.Agent))
	return &Client{nc: nc, js: js, agent: o.Agent, source: source, encoder: bus.NewRequestEncoder(source), timeout: o.Timeout, log: o.Logger, opener: opener,
		links:     &feedWaiters{consumer: agents.LinksConsumer, filter: agents.LinksFilter},
		approvals: &feedWaiters{consumer: agents.ApprovalsConsumer, filter: agents.ApprovalsFilter, key: decisionKey}}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.links.close()
	c.approvals.close()
	c.nc.Close()
	return nil
}

// Agent is the agent id this client acts as.
func (c *Client) Agent() string { return c.agent }

// NewRequest builds a request event for op with data, sourced from this
// agent.
func (c *Client) NewRequest(op schemas.Op, data any) (*event.Event, error) {
	return bus.NewEventFrom(c.source, op.RequestType, data)
}

// Send sends a request event for op and returns the reply event, or an
// *Error for an error reply.
func (c *Client) Send(ctx context.Context, op schemas.Op, req *event.Event) (*event.Event, error) {
	h, body, err := bus.Encode(req)
	if err != nil {
		return nil, err
	}
	msg, err := c.roundTrip(ctx, op, h, body)
	if err != nil {
		return nil, err
	}
	reply, err := bus.ParseReply(msg)
	if err != nil {
		return nil, replyError(op, err)
	}
	if reply.Type() != op.ReplyType || reply.Source() != schemas.ServiceSource {
		return nil, fmt.Errorf("agentauth: %s: the reply is a %s from %s, not a %s from %s", op.Endpoint(), reply.Type(), reply.Source(), op.ReplyType, schemas.ServiceSource)
	}
	return reply, nil
}

// roundTrip sends one request message for op and waits for its reply.
func (c *Client) roundTrip(ctx context.Context, op schemas.Op, h nats.Header, body []byte) (*nats.Msg, error) {
	out := &nats.Msg{Subject: schemas.Subject(c.agent, op), Header: h, Data: body}
	var msg *nats.Msg
	var err error
	if _, ok := ctx.Deadline(); ok || ctx.Done() != nil {
		msg, err = c.nc.RequestMsgWithContext(ctx, out)
	} else {
		// A context that can never end: the plain timeout avoids a
		// context timer per request.
		msg, err = c.nc.RequestMsg(out, c.timeout)
	}
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, &Error{Code: schemas.CodeUnavailable, Message: "no agentauth instance is serving " + schemas.Subject(c.agent, op) + "; is `agentauth serve` running?", Status: 503}
		}
		return nil, fmt.Errorf("agentauth %s.%s: %w", op.Area, op.Name, err)
	}
	return msg, nil
}

// replyError turns an error reply into an *Error; other errors (a reply
// that is not a CloudEvent, or not the expected one) are wrapped.
func replyError(op schemas.Op, err error) error {
	var re *bus.ReplyError
	if errors.As(err, &re) {
		return &Error{Code: re.Code, Message: re.Message, RetryAfter: time.Duration(re.RetryAfterMS) * time.Millisecond, RequestID: re.RequestID, Status: re.Status, Details: re.Details}
	}
	return fmt.Errorf("agentauth %s.%s: %w", op.Area, op.Name, err)
}

var headerBuffers = sync.Pool{New: func() any { return new(bus.HeaderBuffer) }}

// Do sends data as a request for op and decodes the reply's data into out.
// It writes the request's headers and reads a plain reply directly, with
// no event objects in between (the same bytes and checks as NewRequest,
// Send and bus.DecodeData).
func (c *Client) Do(ctx context.Context, op schemas.Op, data, out any) error {
	buf := headerBuffers.Get().(*bus.HeaderBuffer)
	h, body, err := c.encoder.EncodeInto(buf, op.RequestType, data)
	if err != nil {
		headerBuffers.Put(buf)
		return err
	}
	msg, err := c.roundTrip(ctx, op, h, body)
	headerBuffers.Put(buf) // nats.go copied the header when it sent the request
	if err != nil {
		return err
	}
	if err := bus.DecodeReply(msg, op.ReplyType, out); err != nil {
		return replyError(op, err)
	}
	return nil
}

// SysInfo asks for the service version, capabilities and server time.
func (c *Client) SysInfo(ctx context.Context) (*schemas.SysInfo, error) {
	var out schemas.SysInfo
	if err := c.Do(ctx, schemas.OpSysInfo, schemas.SysInfoRequest{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EventHandler handles one event of the agent's feed. Returning nil
// acknowledges it; an error has it redelivered later.
type EventHandler func(ctx context.Context, e *event.Event) error

// Subscription is a running feed subscription.
type Subscription struct{ cc jetstream.ConsumeContext }

// Stop stops delivery after the events already received are handled, and
// returns once the subscription is gone from the server, so an event
// published afterwards waits for the next subscription. Unacknowledged
// events are delivered again next time.
func (s *Subscription) Stop() {
	s.cc.Drain()
	<-s.cc.Closed()
}

// Events delivers the agent's durable event feed (agentauth.events.<agent>.>)
// to h, starting with whatever arrived while the agent was away. The
// consumer is durable ("agent-<id>"), so acknowledged events are not
// delivered again after a restart.
func (c *Client) Events(ctx context.Context, h EventHandler) (*Subscription, error) {
	cc, err := bus.Consume(ctx, c.js, bus.ConsumerOptions{
		Stream:  schemas.StreamEvents,
		Durable: agents.FeedConsumer(c.agent),
		Filter:  []string{schemas.EventsSubject(c.agent) + ".>"},
	}, nil, c.log, func(ctx context.Context, d *bus.Delivery) error {
		if err := h(ctx, d.Event); err != nil {
			return &bus.Error{Code: schemas.CodeUnavailable, Message: "agent handler failed", Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Subscription{cc: cc}, nil
}

// Conn is the client's NATS connection, for tools that need the raw bus
// (the benchmark's baseline, for instance).
func (c *Client) Conn() *nats.Conn { return c.nc }

// WhoAmI returns the verified identity behind the user's token.
func (c *Client) WhoAmI(ctx context.Context, userToken string) (*schemas.WhoAmI, error) {
	var out schemas.WhoAmI
	if err := c.Do(ctx, schemas.OpWhoAmI, &schemas.WhoAmIRequest{UserToken: userToken}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Token is a first-party access token obtained by exchange, opened.
type Token struct {
	AccessToken string
	Audience    string
	Scopes      []string
	Expiry      time.Time
	JTI         string
	Fingerprint string
}

// Exchange trades the user's token for a short-lived token for one
// first-party API audience (RFC 8693), which agentauth seals to this agent
// and the client opens.
func (c *Client) Exchange(ctx context.Context, userToken, audience string, scopes ...string) (*Token, error) {
	var out schemas.ExchangeReply
	if err := c.Do(ctx, schemas.OpExchange, schemas.ExchangeRequest{UserToken: userToken, Audience: audience, Scopes: scopes}, &out); err != nil {
		return nil, err
	}
	raw, err := c.Open(out.SealedToken)
	if err != nil {
		return nil, err
	}
	return &Token{AccessToken: string(raw), Audience: out.Audience, Scopes: out.Scopes, Expiry: out.ExpiresAt, JTI: out.JTI, Fingerprint: out.Fingerprint}, nil
}
