package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/internal/testutil"
	"github.com/agentauth/agentauth/schemas"
)

// testServer is a Server on a real embedded NATS with JetStream, its
// auditor running; both stop with the test.
type testServer struct {
	*Server
	js jetstream.JetStream
	nc *nats.Conn
	m  *Metrics
	a  *Auditor
}

func newTestServer(tb testing.TB, o ServerOptions) *testServer {
	tb.Helper()
	ts := &testServer{js: MustJetStream(tb)}
	ts.nc = ts.js.Conn()
	ts.m = NewMetrics(prometheus.NewRegistry())
	ts.a = NewAuditor(ts.js, ts.m, discardLog(), "test")
	tb.Cleanup(func() { _ = ts.a.Close(context.Background()) })
	if o.Logger == nil {
		o.Logger = discardLog()
	}
	o.Version = "0.0.1"
	var err error
	if ts.Server, err = NewServer(ts.nc, schemas.MustValidator(), ts.m, ts.a, o); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ts.Stop(context.Background()) })
	return ts
}

// handle registers h for op or fails the test.
func (ts *testServer) handle(tb testing.TB, op schemas.Op, h Handler, opts ...HandleOption) {
	tb.Helper()
	if err := ts.Handle(op, h, opts...); err != nil {
		tb.Fatal(err)
	}
}

// request sends a request event of op's type with data, as agent a1 (and
// traceparent when set), and returns the raw reply.
func (ts *testServer) request(op schemas.Op, data any, traceparent string) (*nats.Msg, error) {
	e, err := NewEventFrom(MustSource("/agents/a1"), op.RequestType, data)
	if err != nil {
		return nil, err
	}
	if traceparent != "" {
		e.SetExtension(ExtTraceparent, traceparent)
	}
	hd, body, err := Encode(e)
	if err != nil {
		return nil, err
	}
	return ts.nc.RequestMsg(&nats.Msg{Subject: schemas.Subject("a1", op), Header: hd, Data: body}, 5*time.Second)
}

// TestServerReplyTrace: a reply written by the server (inline and through
// a worker) carries this hop's traceparent: the caller's trace id, a new
// span, and the caller's span as parent; a request without one starts a
// trace. Several requests in a row check that pooled reply headers hold
// only their own reply's values.
func TestServerReplyTrace(t *testing.T) {
	ts := newTestServer(t, ServerOptions{})
	h := HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		return Reply(req, &schemas.SysInfo{Agent: req.Agent})
	})
	inlineOp := schemas.OpSysInfo
	pooledOp := schemas.Op{Area: "test", Name: "pooled", RequestType: schemas.OpSysInfo.RequestType, ReplyType: schemas.OpSysInfo.ReplyType}
	ts.handle(t, inlineOp, h, Inline())
	ts.handle(t, pooledOp, h)

	caller, _ := ParseTraceparent(testTraceparent)
	seen := map[string]bool{}
	for _, op := range []schemas.Op{inlineOp, pooledOp} {
		for i, in := range []string{testTraceparent, "", testTraceparent} {
			msg, err := ts.request(op, schemas.SysInfoRequest{}, in)
			if err != nil {
				t.Fatal(err)
			}
			reply, err := ParseReply(msg)
			if err != nil {
				t.Fatalf("%s #%d: %v", op.Name, i, err)
			}
			tp, _ := reply.Extensions()[ExtTraceparent].(string)
			got, ok := ParseTraceparent(tp)
			if !ok {
				t.Fatalf("%s #%d: reply traceparent %q (headers %v)", op.Name, i, tp, sortedHeader(msg.Header))
			}
			if seen[tp] {
				t.Errorf("%s #%d: traceparent %s seen on an earlier reply", op.Name, i, tp)
			}
			seen[tp] = true
			if in != "" && (got.TraceID != caller.TraceID || got.ParentID == caller.ParentID) {
				t.Errorf("%s #%d: reply trace %s does not continue %s with a span of its own", op.Name, i, tp, in)
			}
			if in == "" && got.TraceID == caller.TraceID {
				t.Errorf("%s #%d: a request without a trace got the earlier request's trace", op.Name, i)
			}
			if len(msg.Header.Values("ce-traceparent")) != 1 || reply.Type() != op.ReplyType || reply.ID() == "" {
				t.Errorf("%s #%d: reply headers %v", op.Name, i, sortedHeader(msg.Header))
			}
		}
	}
}

// TestServerInlineEndpoints: an inline operation is served by
// InlineEndpoints endpoints on one subject and queue group; every request
// is answered once, and their micro stats add up to the requests sent.
func TestServerInlineEndpoints(t *testing.T) {
	ts := newTestServer(t, ServerOptions{InlineEndpoints: 3})
	s := ts.Server
	var served atomic.Int64
	ts.handle(t, schemas.OpSysInfo, HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		served.Add(1)
		return Reply(req, &schemas.SysInfo{Agent: req.Agent})
	}), Inline())

	const n = 60
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			msg, err := ts.request(schemas.OpSysInfo, schemas.SysInfoRequest{}, "")
			if err == nil {
				_, err = ParseReply(msg)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := served.Load(); got != n {
		t.Errorf("handler ran %d times for %d requests", got, n)
	}
	info := s.svc.Info()
	stats := s.svc.Stats()
	names := map[string]bool{}
	for _, e := range info.Endpoints {
		if e.Subject != schemas.OpSysInfo.SubjectPattern() || e.QueueGroup != info.Endpoints[0].QueueGroup {
			t.Errorf("endpoint %s: subject %s, queue group %q", e.Name, e.Subject, e.QueueGroup)
		}
		names[e.Name] = true
	}
	if len(names) != 3 || !names["sys-info"] || !names["sys-info-2"] || !names["sys-info-3"] {
		t.Errorf("endpoints %v, want sys-info, sys-info-2, sys-info-3", names)
	}
	// micro counts a request once its callback returns, which can be
	// just after the reply arrived: read until the count settles.
	total := 0
	for deadline := time.Now().Add(5 * time.Second); ; stats = s.svc.Stats() {
		total = 0
		for _, e := range stats.Endpoints {
			total += e.NumRequests
		}
		if total == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if total != n {
		t.Errorf("micro stats count %d requests, want %d", total, n)
	}
	if ops := s.Operations(); len(ops) != 1 {
		t.Errorf("operations %v, want one", ops)
	}
}

// TestServerInlineFirst: an InlineFirst operation runs its handler inline
// in a context that forbids waiting; a handler that would wait is run again
// on a worker, where waiting is allowed and the Timeout middleware applies.
// Either way the caller gets one reply, and the request is audited and
// counted once.
func TestServerInlineFirst(t *testing.T) {
	ts := newTestServer(t, ServerOptions{Timeout: time.Minute})
	type run struct {
		forbidden, deadline bool
	}
	var mu sync.Mutex
	runs := map[string][]run{}
	h := HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		var in schemas.WhoAmIRequest
		if err := DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		_, deadline := ctx.Deadline()
		err := blocking.Check(ctx)
		mu.Lock()
		runs[in.UserToken] = append(runs[in.UserToken], run{forbidden: err != nil, deadline: deadline})
		mu.Unlock()
		if in.UserToken == "waits" && err != nil {
			return nil, err
		}
		return Reply(req, &schemas.WhoAmI{Subject: in.UserToken})
	})
	ts.handle(t, schemas.OpWhoAmI, h, InlineFirst())

	for _, tok := range []string{"in-memory", "waits"} {
		msg, err := ts.request(schemas.OpWhoAmI, schemas.WhoAmIRequest{UserToken: tok}, "")
		if err != nil {
			t.Fatal(err)
		}
		var out schemas.WhoAmI
		if err := DecodeReply(msg, schemas.OpWhoAmI.ReplyType, &out); err != nil || out.Subject != tok {
			t.Fatalf("%s: reply %+v, %v", tok, out, err)
		}
	}
	mu.Lock()
	if got := runs["in-memory"]; len(got) != 1 || !got[0].forbidden || got[0].deadline {
		t.Errorf("in-memory request ran %+v, want once, inline (waiting forbidden, no deadline)", got)
	}
	if got := runs["waits"]; len(got) != 2 || !got[0].forbidden || got[1].forbidden || !got[1].deadline {
		t.Errorf("waiting request ran %+v, want inline, then on a worker with a deadline", got)
	}
	mu.Unlock()

	if n := metricValue(t, ts.m.Requests.WithLabelValues(schemas.OpWhoAmI.Endpoint(), "ok")); n != 2 {
		t.Errorf("counted %v requests, want 2", n)
	}
	if n := metricValue(t, ts.m.Duration.WithLabelValues(schemas.OpWhoAmI.Endpoint()).(prometheus.Metric)); n != 2 {
		t.Errorf("observed %v durations, want 2", n)
	}
	if err := ts.a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := len(replayEvents(t, ts.js)); got != 2 {
		t.Errorf("audited %d requests, want 2", got)
	}
}

// TestServerWorkerStats: requests answered on workers (pooled operations,
// and InlineFirst requests moved to a worker) show in `nats micro stats`
// as the endpoint's data, errors included, read over $SRV.STATS as the
// nats CLI reads them.
func TestServerWorkerStats(t *testing.T) {
	ts := newTestServer(t, ServerOptions{Timeout: time.Minute})
	fail := HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		var in struct {
			UserToken string `json:"user_token"`
		}
		if err := DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		switch in.UserToken {
		case "denied":
			return nil, Errorf(schemas.CodeDenied, "not for you")
		case "waits":
			if err := blocking.Check(ctx); err != nil {
				return nil, err
			}
			return nil, Errorf(schemas.CodeDenied, "not for you either")
		}
		return Reply(req, &schemas.WhoAmI{Subject: in.UserToken})
	})
	ts.handle(t, schemas.OpVaultToken, fail)            // pooled
	ts.handle(t, schemas.OpWhoAmI, fail, InlineFirst()) // inline, or moved
	ts.handle(t, schemas.OpSysInfo, fail, Inline())     // inline only
	for op, toks := range map[schemas.Op][]string{
		schemas.OpVaultToken: {"ok", "denied", "denied"},
		schemas.OpWhoAmI:     {"ok", "denied", "waits"},
	} {
		for _, tok := range toks {
			var data any = schemas.WhoAmIRequest{UserToken: tok}
			if op == schemas.OpVaultToken {
				data = schemas.VaultTokenRequest{UserToken: tok, Connection: "google"}
			}
			msg, err := ts.request(op, data, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseReply(msg); (err != nil) != (tok != "ok") {
				t.Fatalf("%s %s: %v", op.Endpoint(), tok, err)
			}
		}
	}
	// A malformed request to the pooled operation fails on its worker too.
	bad, err := ts.nc.Request(schemas.Subject("a1", schemas.OpVaultToken), []byte("{"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseReply(bad); err == nil {
		t.Fatal("malformed request answered without an error")
	}

	// micro counts a request when its callback returns, which for a
	// request moved to a worker can be after the worker's reply: read the
	// stats until they settle.
	var problems []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		problems = workerStatsProblems(t, ts)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// workerStatsProblems reads $SRV.STATS as the nats CLI does and lists how
// it differs from what TestServerWorkerStats sent.
func workerStatsProblems(t *testing.T, ts *testServer) (problems []string) {
	t.Helper()
	msg, err := ts.nc.Request("$SRV.STATS."+schemas.ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Endpoints []struct {
			Name        string       `json:"name"`
			NumRequests int          `json:"num_requests"`
			NumErrors   int          `json:"num_errors"`
			Data        EndpointData `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &stats); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var whoami struct{ requests, errors, workerRequests, workerErrors int }
	for _, e := range stats.Endpoints {
		w := e.Data.Workers
		switch e.Name {
		case "vault-token":
			seen[e.Name] = true
			if e.NumRequests != 4 || w == nil || w.NumRequests != 4 || w.NumErrors != 3 || !strings.HasPrefix(w.LastError, "400:") || w.ProcessingTime <= 0 || w.AverageProcessingTime != w.ProcessingTime/4 {
				problems = append(problems, fmt.Sprintf("vault-token: %d requests, workers %+v; want 4 requests, workers 4 with 3 errors, the last a 400", e.NumRequests, w))
			}
		case "sys-info", "sys-info-2":
			seen["sys-info"] = true
			if w != nil {
				problems = append(problems, fmt.Sprintf("%s: inline-only endpoint has worker stats %+v", e.Name, w))
			}
		}
		if strings.HasPrefix(e.Name, "user-whoami") {
			seen["user-whoami"] = true
			if w == nil {
				problems = append(problems, fmt.Sprintf("%s: no worker stats", e.Name))
				continue
			}
			// micro counted the inline error; the moved request is
			// the workers' (its endpoint is whichever got it).
			whoami.requests += e.NumRequests
			whoami.errors += e.NumErrors
			whoami.workerRequests += w.NumRequests
			whoami.workerErrors += w.NumErrors
		}
	}
	if len(seen) != 3 {
		problems = append(problems, fmt.Sprintf("endpoints seen %v", seen))
	}
	if whoami.requests != 3 || whoami.errors != 1 || whoami.workerRequests != 1 || whoami.workerErrors != 1 {
		problems = append(problems, fmt.Sprintf("user-whoami: %+v; want 3 requests and 1 error in micro's counts, 1 request with 1 error on workers", whoami))
	}
	return problems
}

// TestServerSlowInline: a request served inline that outlasts the bound
// (a handler waiting without blocking.Check) is counted and logged, once
// a minute per operation; quick requests and requests served on workers
// are not.
func TestServerSlowInline(t *testing.T) {
	var logs testutil.SyncBuffer
	ts := newTestServer(t, ServerOptions{SlowInline: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h := HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		var in struct {
			UserToken string `json:"user_token"`
		}
		if err := DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		if in.UserToken == "slow" {
			time.Sleep(250 * time.Millisecond) // waits where it must not
		}
		return Reply(req, &schemas.WhoAmI{Subject: in.UserToken})
	})
	ts.handle(t, schemas.OpWhoAmI, h, Inline())
	ts.handle(t, schemas.OpVaultToken, h) // on workers: waiting is fine
	for _, r := range []struct {
		op   schemas.Op
		data any
	}{
		{schemas.OpWhoAmI, schemas.WhoAmIRequest{UserToken: "quick"}},
		{schemas.OpWhoAmI, schemas.WhoAmIRequest{UserToken: "slow"}},
		{schemas.OpWhoAmI, schemas.WhoAmIRequest{UserToken: "slow"}},
		{schemas.OpVaultToken, schemas.VaultTokenRequest{UserToken: "slow", Connection: "google"}},
	} {
		msg, err := ts.request(r.op, r.data, "")
		if err == nil {
			_, err = ParseReply(msg)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := metricValue(t, ts.m.SlowInline.WithLabelValues(schemas.OpWhoAmI.Endpoint())); n != 2 {
		t.Errorf("counted %v slow inline requests, want 2", n)
	}
	if n := metricValue(t, ts.m.SlowInline.WithLabelValues(schemas.OpVaultToken.Endpoint())); n != 0 {
		t.Errorf("counted %v slow requests served on workers, want 0", n)
	}
	out := logs.String()
	if got := strings.Count(out, "a request served inline took long"); got != 1 {
		t.Errorf("logged %d warnings, want 1 (once a minute):\n%s", got, out)
	}
	if !strings.Contains(out, "op=user-whoami") || !strings.Contains(out, "blocking.Check") {
		t.Errorf("warning does not name the operation and the fix:\n%s", out)
	}
}

// TestServerHandlerPanic: a panicking handler gets the caller an internal
// error and the service keeps serving, wherever the handler runs: inline,
// on a worker (where Timeout runs it on a goroutine of its own), or moved
// to a worker by InlineFirst.
func TestServerHandlerPanic(t *testing.T) {
	ts := newTestServer(t, ServerOptions{})
	var calls atomic.Int64
	h := HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		if err := blocking.Check(ctx); err != nil { // InlineFirst: go to a worker
			return nil, err
		}
		if calls.Add(1)%2 == 1 {
			var m map[string]int
			m["boom"]++ // a nil map write
		}
		return Reply(req, &schemas.SysInfo{Agent: req.Agent})
	})
	ops := map[string]HandleOption{"inline": Inline(), "pooled": nil, "inline-first": InlineFirst()}
	for name, opt := range ops {
		op := schemas.Op{Area: "test", Name: strings.ReplaceAll(name, "-", ""), RequestType: schemas.OpSysInfo.RequestType, ReplyType: schemas.OpSysInfo.ReplyType}
		if opt != nil {
			ts.handle(t, op, h, opt)
		} else {
			ts.handle(t, op, h)
		}
		msg, err := ts.request(op, schemas.SysInfoRequest{}, "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var re *ReplyError
		if _, err := ParseReply(msg); !errors.As(err, &re) || re.Code != schemas.CodeInternal {
			t.Errorf("%s: a panicking handler's reply: %v, want an %s error", name, err, schemas.CodeInternal)
		}
		msg, err = ts.request(op, schemas.SysInfoRequest{}, "")
		if err != nil {
			t.Fatalf("%s: after the panic: %v", name, err)
		}
		if _, err := ParseReply(msg); err != nil {
			t.Errorf("%s: the request after the panic: %v", name, err)
		}
	}
}

// TestServerStopUnderLoad: the server stops with hundreds of requests
// delivered and not yet served. Every one is answered — served, or
// refused with a retryable error if the machine paused micro's hand-over
// longer than Stop waits — none makes the server panic (a send on the
// closed worker queue, before) and none is left unanswered.
func TestServerStopUnderLoad(t *testing.T) {
	ts := newTestServer(t, ServerOptions{})
	started := make(chan struct{}, 1)
	op := schemas.Op{Area: "test", Name: "slow", RequestType: schemas.OpSysInfo.RequestType, ReplyType: schemas.OpSysInfo.ReplyType}
	ts.handle(t, op, HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		time.Sleep(2 * time.Millisecond)
		return Reply(req, &schemas.SysInfo{Agent: req.Agent})
	}))
	client, err := nats.Connect(ts.nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	inbox := nats.NewInbox()
	replies, err := client.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEventFrom(MustSource("/agents/a1"), op.RequestType, schemas.SysInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hd, body, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for range n {
		if err := client.PublishMsg(&nats.Msg{Subject: schemas.Subject("a1", op), Reply: inbox, Header: hd, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	receive(t, started, "the first request to reach its handler")
	if err := ts.Stop(t.Context()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	served, refused := 0, 0
	for served+refused < n {
		msg, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d replies and %d refusals: %v", served, refused, err)
		}
		var re *ReplyError
		switch _, err := ParseReply(msg); {
		case err == nil:
			served++
		case errors.As(err, &re) && re.Code == schemas.CodeUnavailable && re.RetryAfterMS > 0:
			refused++
		default:
			t.Fatalf("reply %d: %v, want a reply or a retryable unavailable error", served+refused+1, err)
		}
	}
	if served == 0 {
		t.Errorf("none of the %d requests delivered before the stop was served (%d refused)", n, refused)
	}
}
