package bus

import (
	"context"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/schemas"
)

// MustServer starts an embedded nats-server with JetStream on a free port
// and a temporary store, and shuts it down when the test ends.
func MustServer(tb testing.TB) *server.Server {
	tb.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded nats-server: %v", err)
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns.Server
}

// MustConn connects to ns and closes the connection when the test ends.
func MustConn(tb testing.TB, ns *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatalf("connect to %s: %v", ns.ClientURL(), err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// hdr builds a header from name, value pairs, keeping the names' case and
// repeated names as repeated values.
func hdr(pairs ...string) nats.Header {
	if len(pairs)%2 != 0 {
		panic("hdr: odd number of arguments")
	}
	h := make(nats.Header, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		h[pairs[i]] = append(h[pairs[i]], pairs[i+1])
	}
	return h
}

// attrsOf renders every context attribute and extension of e as the string
// a binary-mode header would carry, time normalised to UTC, so that events
// decoded from different modes compare equal.
func attrsOf(tb testing.TB, e *event.Event) map[string]string {
	tb.Helper()
	m := map[string]string{
		"specversion": e.SpecVersion(),
		"id":          e.ID(),
		"source":      e.Source(),
		"type":        e.Type(),
	}
	if v := e.DataContentType(); v != "" {
		m["datacontenttype"] = v
	}
	if v := e.DataSchema(); v != "" {
		m["dataschema"] = v
	}
	if v := e.Subject(); v != "" {
		m["subject"] = v
	}
	if v := e.Time(); !v.IsZero() {
		m["time"] = v.UTC().Format(time.RFC3339Nano)
	}
	for name, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			tb.Fatalf("extension %s: %v", name, err)
		}
		m[name] = s
	}
	return m
}

// sysInfoEvent is a valid sys.info request from agent a1.
func sysInfoEvent(tb testing.TB) *event.Event {
	tb.Helper()
	e := event.New()
	e.SetID("req-1")
	e.SetSource(schemas.AgentSource("a1"))
	e.SetType(schemas.TypeSysInfoRequest)
	e.SetDataContentType(event.ApplicationJSON)
	e.DataEncoded = []byte(`{}`)
	return &e
}

// request wraps e as the server would deliver it on agentauth.a1.sys.info.
func request(e *event.Event) *Request {
	return &Request{Event: e, Agent: "a1", Subject: "agentauth.a1.sys.info", Op: schemas.OpSysInfo, Received: time.Now()}
}

// replyWith is a handler that answers every request with a sys.info reply.
func replyWith(tb testing.TB) (Handler, *event.Event) {
	tb.Helper()
	reply, err := NewEvent(schemas.TypeSysInfoReply, map[string]string{"service": "agentauth"})
	if err != nil {
		tb.Fatal(err)
	}
	return HandlerFunc(func(context.Context, *Request) (*event.Event, error) { return reply, nil }), reply
}
