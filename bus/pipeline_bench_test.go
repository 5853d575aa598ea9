package bus

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/schemas"
)

// BenchmarkServe measures the service side of one request: decode, the
// standard chain, a trivial handler, encode and the reply write.
func BenchmarkServe(b *testing.B) {
	js := MustJetStream(b)
	nc := js.Conn()
	m := NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := NewAuditor(js, m, log, "bench")
	defer a.Close(context.Background())
	s, err := NewServer(nc, schemas.MustValidator(), m, a, ServerOptions{Logger: log, Version: "0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
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
