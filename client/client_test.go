package client_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/schemas"
)

// waitTimeout bounds every wait; it is generous because it is never a
// measurement.
const waitTimeout = 10 * time.Second

var capabilities = schemas.Capabilities{Sys: true}

// service is a running agentauth bus: an embedded nats-server with the
// streams, and a bus.Server serving sys.info.
type service struct {
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
	srv *bus.Server
	pub *bus.Publisher
}

// MustService starts an embedded nats-server with JetStream on a free port
// and a temporary store, creates the streams and serves sys.info; all of
// it stops when the test ends.
func MustService(tb testing.TB) *service {
	tb.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded nats-server: %v", err)
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	nc, err := bus.Connect(bus.ConnOptions{URL: ns.ClientURL(), Name: "agentauth-test"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := bus.JetStream(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := bus.EnsureStreams(tb.Context(), js, bus.StreamOptions{}); err != nil {
		tb.Fatalf("ensure streams: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	m := bus.NewMetrics(prometheus.NewRegistry())
	a := bus.NewAuditor(js, m, log, "test-1")
	tb.Cleanup(func() {
		if err := a.Close(context.Background()); err != nil {
			tb.Errorf("close auditor: %v", err)
		}
	})
	srv, err := bus.NewServer(nc, schemas.MustValidator(), m, a, bus.ServerOptions{Version: "1.2.3", Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			tb.Errorf("stop server: %v", err)
		}
	})
	err = srv.Handle(schemas.OpSysInfo, &handlers.SysInfo{
		Version:      "1.2.3",
		Instance:     "test-1",
		Capabilities: capabilities,
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Handle returns before the server has registered the endpoint's
	// subscription; the round trip makes sure it has, so that a client on
	// another connection finds a responder.
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return &service{url: ns.ClientURL(), nc: nc, js: js, srv: srv, pub: bus.NewPublisher(js, nil)}
}

// MustClient connects agent to s and closes the client when the test ends.
func MustClient(tb testing.TB, s *service, agent string) *client.Client {
	tb.Helper()
	c, err := client.Connect(tb.Context(), client.Options{URL: s.url, Agent: agent, Timeout: waitTimeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("connect as %s: %v", agent, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// publish stores an event on the agent's feed.
func (s *service) publish(tb testing.TB, agent, id string) {
	tb.Helper()
	e, err := bus.NewEvent("dev.agentauth.test.notice", map[string]string{"id": id})
	if err != nil {
		tb.Fatal(err)
	}
	e.SetID(id)
	if _, err := s.pub.Publish(tb.Context(), schemas.EventsSubject(agent)+".test", e); err != nil {
		tb.Fatalf("publish %s: %v", id, err)
	}
}

// waitConsumer waits until the agent's durable consumer satisfies cond.
func (s *service) waitConsumer(tb testing.TB, agent, what string, cond func(*jetstream.ConsumerInfo) bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		cons, err := s.js.Consumer(tb.Context(), schemas.StreamEvents, "agent-"+agent)
		if err != nil {
			tb.Fatalf("consumer of %s: %v", agent, err)
		}
		info, err := cons.Info(tb.Context())
		if err != nil {
			tb.Fatalf("consumer of %s: %v", agent, err)
		}
		if cond(info) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("consumer of %s: timed out waiting for %s: %d pending, %d awaiting ack, %d pull requests",
				agent, what, info.NumPending, info.NumAckPending, info.NumWaiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled waits until the agent's durable consumer has nothing left to
// deliver and nothing awaiting an acknowledgement: no event can be
// delivered again.
func (s *service) settled(tb testing.TB, agent string) {
	tb.Helper()
	s.waitConsumer(tb, agent, "every event to be acknowledged", func(info *jetstream.ConsumerInfo) bool {
		return info.NumPending == 0 && info.NumAckPending == 0
	})
}

func receive[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		tb.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestSysInfo(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")
	before := time.Now().Add(-time.Minute)
	info, err := c.SysInfo(t.Context())
	if err != nil {
		t.Fatalf("SysInfo: %v", err)
	}
	if info.Agent != "a1" || info.Service != schemas.ServiceName || info.Version != "1.2.3" || info.Instance != "test-1" {
		t.Errorf("got agent %q service %q version %q instance %q; want a1, %s, 1.2.3, test-1",
			info.Agent, info.Service, info.Version, info.Instance, schemas.ServiceName)
	}
	if info.Capabilities != capabilities {
		t.Errorf("capabilities: got %v, want %v", info.Capabilities, capabilities)
	}
	if info.ServerTime.Before(before) {
		t.Errorf("server time %v is not the current time", info.ServerTime)
	}
	if got := c.Agent(); got != "a1" {
		t.Errorf("Agent(): got %q, want a1", got)
	}
}

func TestSendSchemaViolation(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")
	req, err := c.NewRequest(schemas.OpSysInfo, map[string]int{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Send(t.Context(), schemas.OpSysInfo, req)
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got reply %v, error %v; want a *client.Error", reply, err)
	}
	if ce.Code != schemas.CodeSchemaViolation || ce.Message == "" {
		t.Errorf("got code %q, message %q; want %q and a message", ce.Code, ce.Message, schemas.CodeSchemaViolation)
	}
	if ce.Status != 400 || ce.RequestID != req.ID() {
		t.Errorf("got status %d, request id %q; want 400, %q", ce.Status, ce.RequestID, req.ID())
	}
}

func TestSendUnavailable(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")
	if _, err := c.SysInfo(t.Context()); err != nil {
		t.Fatalf("SysInfo while served: %v", err)
	}
	if err := s.srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The round trip makes sure the server has dropped the endpoints'
	// subscriptions before the client asks.
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err := c.SysInfo(t.Context())
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != schemas.CodeUnavailable {
		t.Fatalf("got %v; want a *client.Error with code %s", err, schemas.CodeUnavailable)
	}
	if ce.Message == "" || ce.Status != 503 {
		t.Errorf("got message %q, status %d; want a message and 503", ce.Message, ce.Status)
	}
}

// TestSendChecksReplyType: a reply of another type, or not from the
// service, is not taken for the operation's.
func TestSendChecksReplyType(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")
	// A responder on the service's subject that answers with the wrong
	// kind of event (an operator's connection may listen anywhere).
	for _, reply := range []struct{ typ, source string }{
		{schemas.OpVaultToken.ReplyType, schemas.ServiceSource},
		{schemas.OpSysInfo.ReplyType, "/agents/mallory"},
	} {
		if err := s.srv.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		sub, err := s.nc.Subscribe(schemas.Subject("a1", schemas.OpSysInfo), func(m *nats.Msg) {
			e, err := bus.NewEventFrom(bus.MustSource(reply.source), reply.typ, schemas.SysInfo{Agent: "a1"})
			if err != nil {
				t.Error(err)
				return
			}
			h, body, err := bus.Encode(e)
			if err != nil {
				t.Error(err)
				return
			}
			_ = m.RespondMsg(&nats.Msg{Header: h, Data: body})
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		req, err := c.NewRequest(schemas.OpSysInfo, schemas.SysInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Send(t.Context(), schemas.OpSysInfo, req); err == nil {
			t.Errorf("a %s from %s was taken for a sys.info reply: %v", reply.typ, reply.source, got)
		}
		_ = sub.Unsubscribe()
	}
}

func TestConnectRejectsAgentID(t *testing.T) {
	s := MustService(t)
	for _, agent := range []string{"Bad Agent", "audit", "events", "", "-a1", "a.b"} {
		t.Run(agent, func(t *testing.T) {
			c, err := client.Connect(t.Context(), client.Options{URL: s.url, Agent: agent})
			if err == nil {
				_ = c.Close()
				t.Fatalf("Connect as %q succeeded", agent)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")

	var mu sync.Mutex
	var got []string
	delivered := make(chan string, 10)
	handler := func(_ context.Context, e *event.Event) error {
		mu.Lock()
		got = append(got, e.ID())
		mu.Unlock()
		delivered <- e.ID()
		return nil
	}

	s.publish(t, "a2", "other-agent") // another agent's feed
	s.publish(t, "a1", "e1")
	s.publish(t, "a1", "e2")
	sub, err := c.Events(t.Context(), handler)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	for _, want := range []string{"e1", "e2"} {
		if id := receive(t, delivered, want); id != want {
			t.Errorf("delivered %q, want %q", id, want)
		}
	}
	s.settled(t, "a1") // both acknowledged
	sub.Stop()
	// Stop returns before the server has dropped the subscription's pull
	// requests; an event stored before then would go to the stopped
	// subscription and come back only after the ack wait.
	s.waitConsumer(t, "a1", "the stopped subscription's pull requests to go", func(info *jetstream.ConsumerInfo) bool {
		return info.NumWaiting == 0
	})

	s.publish(t, "a1", "e3")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got = nil
	mu.Unlock()

	c2 := MustClient(t, s, "a1")
	sub2, err := c2.Events(t.Context(), handler)
	if err != nil {
		t.Fatalf("Events after reconnecting: %v", err)
	}
	t.Cleanup(sub2.Stop)
	if id := receive(t, delivered, "e3"); id != "e3" {
		t.Errorf("delivered %q after reconnecting, want e3", id)
	}
	s.settled(t, "a1") // nothing left that could be redelivered
	sub2.Stop()
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"e3"}; !slices.Equal(got, want) {
		t.Errorf("delivered after reconnecting: got %v, want %v", got, want)
	}
}

func TestEventsRedeliversOnError(t *testing.T) {
	s := MustService(t)
	c := MustClient(t, s, "a1")
	s.publish(t, "a1", "e1")

	type delivery struct {
		id    string
		calls int
	}
	delivered := make(chan delivery, 10)
	var calls atomic.Int32
	sub, err := c.Events(t.Context(), func(_ context.Context, e *event.Event) error {
		n := int(calls.Add(1))
		delivered <- delivery{e.ID(), n}
		if n == 1 {
			return errors.New("agent is busy")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	t.Cleanup(sub.Stop)
	for i := 1; i <= 2; i++ {
		d := receive(t, delivered, "a delivery")
		if d.id != "e1" || d.calls != i {
			t.Errorf("delivery %d: got %+v, want e1", i, d)
		}
	}
	s.settled(t, "a1")
}

// TestOpenPinsServiceKey: with credentials that carry agentauth's sealing
// key, the client opens only boxes sealed by it; credentials without one
// (written before the key was pinned) still open any box, and Connect
// warns once.
func TestOpenPinsServiceKey(t *testing.T) {
	s := MustService(t)
	a, creds, err := agents.New("pinned-bot", agents.Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	service, forger := mustSealer(t), mustSealer(t)
	genuine, err := service.Seal(a, []byte("genuine"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.Seal(a, []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	// This bus has no authorization, which refuses nkeys: the sealing
	// seed is what the test is about.
	creds.NKeySeed = ""
	connect := func(c agents.Credentials) (*client.Client, string) {
		t.Helper()
		var logs strings.Builder
		cl, err := client.Connect(t.Context(), client.Options{URL: s.url, Credentials: &c, Timeout: waitTimeout, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		return cl, logs.String()
	}

	pinned := creds
	pinned.ServiceXKey = service.PublicKey()
	cl, logs := connect(pinned)
	if logs != "" {
		t.Errorf("Connect with a pinned key logged: %s", logs)
	}
	if pt, err := cl.Open(forged); !errors.Is(err, agents.ErrUnknownSender) {
		t.Errorf("box sealed by another key: got %q, %v, want ErrUnknownSender", pt, err)
	} else if !strings.Contains(err.Error(), "not this agentauth instance's") {
		t.Errorf("error %q does not say the key is not agentauth's", err)
	}
	if pt, err := cl.Open(genuine); err != nil || string(pt) != "genuine" {
		t.Errorf("box sealed by agentauth: got %q, %v, want %q", pt, err, "genuine")
	}

	legacy, logs := connect(creds)
	if n := strings.Count(logs, "level=WARN"); n != 1 || !strings.Contains(logs, "re-issue the credentials") {
		t.Errorf("Connect without a pinned key logged %d warnings, want 1 saying to re-issue the credentials:\n%s", n, logs)
	}
	if pt, err := legacy.Open(forged); err != nil || string(pt) != "forged" {
		t.Errorf("unpinned credentials: got %q, %v, want today's behaviour (opened)", pt, err)
	}
}

func mustSealer(tb testing.TB) *agents.Sealer {
	tb.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := kp.Seed()
	s, err := agents.NewSealer(seed)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
