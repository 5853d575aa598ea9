package bus

import (
	"context"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

// BenchmarkServe measures the service side of one request: decode, the
// standard chain, a trivial handler, encode and the reply write.
func BenchmarkServe(b *testing.B) {
	ts := newTestServer(b, ServerOptions{})
	s, nc, m, a, log := ts.Server, ts.nc, ts.m, ts.a, discardLog()
	chain := Chain(HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		return Reply(req, &schemas.SysInfo{Agent: req.Agent, Capabilities: schemas.Capabilities{Sys: true}})
	}), Recover(log), Tracing(), AuditRequests(a), Logging(log), Instrument(m), Validate(schemas.MustValidator()))
	e, _ := NewEventFrom(MustSource("/agents/a1"), schemas.TypeSysInfoRequest, schemas.SysInfoRequest{})
	h, data, _ := Encode(e)
	in := pooledRequest{subject: "agentauth.a1.sys.info", reply: "nobody.listens", header: map[string][]string(h), data: data}
	w := responder{nc: nc, reply: in.reply}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.serve(schemas.OpSysInfo, chain, in, w)
	}
}
