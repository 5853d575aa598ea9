package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/schemas"
)

// MustAuditor returns an Auditor on js with fresh metrics, closed when the
// test ends (before the server it writes to shuts down).
func MustAuditor(tb testing.TB, js jetstream.JetStream) (*Auditor, *Metrics) {
	tb.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	a := NewAuditor(js, m, discardLog(), "test-1")
	tb.Cleanup(func() {
		if err := a.Close(context.Background()); err != nil {
			tb.Errorf("close auditor: %v", err)
		}
	})
	return a, m
}

// replayEvents replays the whole audit stream and fails on any message
// that does not decode.
func replayEvents(tb testing.TB, js jetstream.JetStream) []Replayed {
	tb.Helper()
	var out []Replayed
	err := Replay(tb.Context(), js, ReplayOptions{Stream: schemas.StreamAudit}, nil, func(r Replayed) error {
		if r.DecodeErr != nil {
			tb.Errorf("sequence %d on %s: %v", r.Sequence, r.Subject, r.DecodeErr)
			return nil
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		tb.Fatalf("replay: %v", err)
	}
	return out
}

func TestAuditorRecord(t *testing.T) {
	js := MustJetStream(t)
	a, m := MustAuditor(t, js)
	trace := childOf(testTraceparent)
	type data struct {
		Agent string `json:"agent"`
		N     int    `json:"n"`
	}
	recorded := []data{{"a1", 1}, {"a2", 2}, {"a1", 3}}
	for _, d := range recorded {
		a.Record("vault", "token", "issued", "dev.agentauth.test.issued", trace, d)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}

	got := replayEvents(t, js)
	if len(got) != len(recorded) {
		t.Fatalf("replayed %d events, want %d", len(got), len(recorded))
	}
	for i, r := range got {
		if r.Subject != "agentauth.audit.vault.token.issued" {
			t.Errorf("event %d subject: got %q, want agentauth.audit.vault.token.issued", i, r.Subject)
		}
		e := r.Event
		if e.Type() != "dev.agentauth.test.issued" || e.Source() != schemas.ServiceSource || e.ID() == "" || e.Time().IsZero() {
			t.Errorf("event %d: got type %q source %q id %q time %v; want the recorded type, source %s, an id and a time",
				i, e.Type(), e.Source(), e.ID(), e.Time(), schemas.ServiceSource)
		}
		if tp, _ := e.Extensions()[ExtTraceparent].(string); tp != trace.Traceparent() {
			t.Errorf("event %d traceparent: got %q, want %q", i, tp, trace.Traceparent())
		}
		var d data
		if err := DecodeData(e, &d); err != nil {
			t.Fatalf("event %d data: %v", i, err)
		}
		if d != recorded[i] {
			t.Errorf("event %d data: got %+v, want %+v", i, d, recorded[i])
		}
	}
	if got := metricValue(t, m.AuditFailures); got != 0 {
		t.Errorf("audit failures: got %v, want 0", got)
	}
}

func TestAuditorBatchesBursts(t *testing.T) {
	js := MustJetStream(t)
	a, m := MustAuditor(t, js)
	verbs := []string{"ok", "rejected", "failed"}
	const n = 1500
	for i := range n {
		a.Record("sys", "info", verbs[i%len(verbs)], "dev.agentauth.test", TraceContext{}, map[string]int{"n": i})
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}

	msgs := streamInfo(t, js, schemas.StreamAudit).State.Msgs
	if msgs == 0 || msgs >= n {
		t.Errorf("stream messages for %d events: got %d, want fewer than events (batched)", n, msgs)
	}
	got := replayEvents(t, js)
	if len(got) != n {
		t.Fatalf("replayed %d events, want %d", len(got), n)
	}
	seen := make([]bool, n)
	last := map[string]int{}
	for _, r := range got {
		var d struct{ N int }
		if err := DecodeData(r.Event, &d); err != nil {
			t.Fatal(err)
		}
		if d.N < 0 || d.N >= n || seen[d.N] {
			t.Fatalf("event n=%d replayed twice or unknown", d.N)
		}
		seen[d.N] = true
		if want := schemas.AuditSubject("sys", "info", verbs[d.N%len(verbs)]); r.Subject != want {
			t.Errorf("event n=%d on %s, want %s", d.N, r.Subject, want)
		}
		if prev, ok := last[r.Subject]; ok && d.N <= prev {
			t.Errorf("%s: event n=%d replayed after n=%d", r.Subject, d.N, prev)
		}
		last[r.Subject] = d.N
	}
	if got := metricValue(t, m.AuditFailures); got != 0 {
		t.Errorf("audit failures: got %v, want 0", got)
	}
}

// TestAuditorSplitsLargeBatches: a burst bigger than one stream message
// may hold is written as several messages under the cap, in order, and
// every event is stored; each event keeps the time it was recorded at.
func TestAuditorSplitsLargeBatches(t *testing.T) {
	js := MustJetStream(t)
	a, m := MustAuditor(t, js)
	const n = 1200
	pad := strings.Repeat("x", 1000)
	before := time.Now()
	for i := range n {
		a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]any{"n": i, "pad": pad})
	}
	after := time.Now()
	if err := a.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}
	info := streamInfo(t, js, schemas.StreamAudit)
	if min := uint64(n * len(pad) / maxAuditMessage); info.State.Msgs <= min || info.State.Msgs >= n {
		t.Errorf("stream messages for %d events of 1 kB: %d, want more than %d (the cap) and fewer than %d", n, info.State.Msgs, min, n)
	}
	got := replayEvents(t, js)
	if len(got) != n {
		t.Fatalf("replayed %d events, want %d", len(got), n)
	}
	for i, r := range got {
		var d struct{ N int }
		if err := DecodeData(r.Event, &d); err != nil {
			t.Fatal(err)
		}
		if d.N != i {
			t.Fatalf("event %d is n=%d: out of order", i, d.N)
		}
		if at := r.Event.Time(); at.Before(before) || at.After(after) {
			t.Errorf("event %d time %v, want when it was recorded (%v…%v)", i, at, before, after)
		}
	}
	if got := metricValue(t, m.AuditFailures); got != 0 {
		t.Errorf("audit failures: got %v, want 0", got)
	}
}

func TestAuditorClose(t *testing.T) {
	js := MustJetStream(t)
	a, m := MustAuditor(t, js)
	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 1})
	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 2})
	if err := a.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := len(replayEvents(t, js)); got != 2 {
		t.Errorf("events stored by Close: got %d, want 2", got)
	}

	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 3})
	if got := metricValue(t, m.AuditFailures); got != 1 {
		t.Errorf("audit failures after a Record on a closed auditor: got %v, want 1", got)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Errorf("flush after close: %v", err)
	}
	if err := a.Close(t.Context()); err != nil {
		t.Errorf("second close: %v", err)
	}
	if got := len(replayEvents(t, js)); got != 2 {
		t.Errorf("stored events: got %d, want 2 (nothing recorded after Close)", got)
	}
}

// faultyJS is a JetStream whose async publishes fail as scripted: the
// first stalls calls report too many pending acks, the first nacks writes
// are refused after being sent (and not stored).
type faultyJS struct {
	jetstream.JetStream
	mu                   sync.Mutex
	stalls, nacks, hangs int
	calls                int
}

func (f *faultyJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f.mu.Lock()
	f.calls++
	stall, nack := f.stalls > 0, f.stalls == 0 && f.nacks > 0
	hang := !stall && !nack && f.hangs > 0
	if stall {
		f.stalls--
	} else if nack {
		f.nacks--
	} else if hang {
		f.hangs--
	}
	f.mu.Unlock()
	switch {
	case hang:
		return unanswered{m}, nil
	case stall:
		return nil, jetstream.ErrTooManyStalledMsgs
	case nack:
		return refused{m}, nil
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// refused is the ack future of a write JetStream refused.
type refused struct{ m *nats.Msg }

func (r refused) Ok() <-chan *jetstream.PubAck { return nil }
func (r refused) Err() <-chan error {
	ch := make(chan error, 1)
	ch <- errors.New("nats: timeout")
	return ch
}
func (r refused) Msg() *nats.Msg { return r.m }

// unanswered is the ack future of a write JetStream never answers.
type unanswered struct{ m *nats.Msg }

func (u unanswered) Ok() <-chan *jetstream.PubAck { return nil }
func (u unanswered) Err() <-chan error            { return nil }
func (u unanswered) Msg() *nats.Msg               { return u.m }

// TestAuditorCloseBounded: Close waits for the last acknowledgements only
// as long as its context allows.
func TestAuditorCloseBounded(t *testing.T) {
	js := MustJetStream(t)
	fj := &faultyJS{JetStream: js, hangs: 1}
	a := NewAuditorWith(fj, NewMetrics(prometheus.NewRegistry()), discardLog(), "test-1", AuditorOptions{Linger: time.Millisecond})
	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 1})
	waitUntil(t, "the write", func() bool {
		fj.mu.Lock()
		defer fj.mu.Unlock()
		return fj.calls >= 1
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Close(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close with a write never acknowledged: %v, want the context's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after its context ended")
	}
}

// TestAuditorRetries: a write JetStream cannot take now (too many acks
// pending) or does not acknowledge is written again, not dropped; one
// that keeps failing is counted as a failure after its last try.
func TestAuditorRetries(t *testing.T) {
	for _, tc := range []struct {
		name          string
		stalls, nacks int
		stored        int
		failures      float64
	}{
		{"stalled", 2, 0, 1, 0},
		{"not acknowledged", 0, 2, 1, 0},
		{"never acknowledged", 0, auditWriteTries, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := MustJetStream(t)
			fj := &faultyJS{JetStream: js, stalls: tc.stalls, nacks: tc.nacks}
			m := NewMetrics(prometheus.NewRegistry())
			a := NewAuditorWith(fj, m, discardLog(), "test-1", AuditorOptions{Linger: time.Millisecond})
			a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 1})
			waitUntil(t, "the writer to try the write", func() bool {
				fj.mu.Lock()
				defer fj.mu.Unlock()
				return fj.calls >= tc.stalls+min(tc.nacks, auditWriteTries-1)+1
			})
			if err := a.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := len(replayEvents(t, js)); got != tc.stored {
				t.Errorf("stored events: got %d, want %d", got, tc.stored)
			}
			if got := metricValue(t, m.AuditFailures); got != tc.failures {
				t.Errorf("audit failures: got %v, want %v", got, tc.failures)
			}
		})
	}
}

func TestAuditorUnencodableData(t *testing.T) {
	js := MustJetStream(t)
	a, m := MustAuditor(t, js)
	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, func() {})
	a.Record("sys", "info", "ok", "dev.agentauth.test", TraceContext{}, map[string]int{"n": 1})
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, m.AuditFailures); got != 1 {
		t.Errorf("audit failures: got %v, want 1", got)
	}
	if got := len(replayEvents(t, js)); got != 1 {
		t.Errorf("stored events: got %d, want 1 (the encodable one)", got)
	}
}

func TestDecodeBatch(t *testing.T) {
	valid := `{"specversion":"1.0","id":"1","source":"/agentauth","type":"t"}`
	for _, tc := range []struct {
		name string
		data string
		want int // events; -1 for an error
	}{
		{"empty array", `[]`, 0},
		{"two events", `[` + valid + `,` + valid + `]`, 2},
		{"object", valid, -1},
		{"string", `"[]"`, -1},
		{"not JSON", `[`, -1},
		{"number in the array", `[1]`, -1},
		{"event without id", `[` + valid + `,{"specversion":"1.0","source":"/a","type":"t"}]`, -1},
		{"wrong specversion", `[{"specversion":"0.3","id":"1","source":"/a","type":"t"}]`, -1},
		{"data and data_base64", `[{"specversion":"1.0","id":"1","source":"/a","type":"t","data":1,"data_base64":"AA=="}]`, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, err := DecodeBatch([]byte(tc.data))
			if tc.want < 0 {
				var de *DecodeError
				if !errors.As(err, &de) || de.Code != schemas.CodeInvalidEvent {
					t.Errorf("got %d events, error %v; want an %s DecodeError", len(events), err, schemas.CodeInvalidEvent)
				}
				return
			}
			if err != nil || len(events) != tc.want {
				t.Errorf("got %d events, error %v; want %d events", len(events), err, tc.want)
			}
		})
	}
}

// TestAuditBatchRoundTrip: what the writer stores for a batch reads back
// as the events NewEvent would have built (attributes, traceparent, data),
// with escaping where a value needs it.
func TestAuditBatchRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 16, 0, 0, 123456789, time.UTC)
	tc := childOf(testTraceparent)
	items := []struct {
		id, typ     string
		traceparent string
		data        any
	}{
		{"a1", schemas.TypeAuditRequest, tc.Traceparent(), &schemas.AuditRequest{Agent: "a1", Outcome: "ok", Received: at}},
		{`id "with" \ quotes`, "dev.agentauth.test", "", map[string]string{"text": "quote \" backslash \\ tab \t é <>&\u2028"}},
	}
	buf := []byte{'['}
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendAuditEvent(buf, it.id, it.typ, at, it.traceparent, it.data); err != nil {
			t.Fatal(err)
		}
	}
	buf = append(buf, ']')
	if !json.Valid(buf) {
		t.Fatalf("the batch is not valid JSON: %s", buf)
	}
	got, err := DecodeBatch(buf)
	if err != nil {
		t.Fatalf("DecodeBatch: %v\n%s", err, buf)
	}
	if len(got) != len(items) {
		t.Fatalf("got %d events, want %d", len(got), len(items))
	}
	for i, it := range items {
		want, err := NewEvent(it.typ, it.data)
		if err != nil {
			t.Fatal(err)
		}
		want.SetID(it.id)
		want.SetTime(at)
		if it.traceparent != "" {
			want.SetExtension(ExtTraceparent, it.traceparent)
		}
		if g, w := attrsOf(t, got[i]), attrsOf(t, want); !reflect.DeepEqual(g, w) {
			t.Errorf("event %d attributes:\ngot  %v\nwant %v", i, g, w)
		}
		if g, w := got[i].Data(), want.Data(); !bytes.Equal(g, w) {
			t.Errorf("event %d data: got %s, want %s", i, g, w)
		}
	}
	if tp, _ := got[0].Extensions()[ExtTraceparent].(string); tp == "" || tp != tc.Traceparent() {
		t.Errorf("traceparent: got %q, want %q", tp, tc.Traceparent())
	}
}

func TestAuditRequests(t *testing.T) {
	js := MustJetStream(t)
	a, _ := MustAuditor(t, js)
	const secret = "s3cr3t-token"
	trace := childOf(testTraceparent)

	cases := []struct {
		name    string
		err     error
		verb    string
		outcome string
		code    schemas.ErrorCode
	}{
		{"ok", nil, "ok", "ok", ""},
		{"bad input", Errorf(schemas.CodeSchemaViolation, "at /x: additional property"), "rejected", "error", schemas.CodeSchemaViolation},
		{"not found", Errorf(schemas.CodeNotFound, "no such grant"), "rejected", "error", schemas.CodeNotFound},
		{"uncoded", fmt.Errorf("refresh with %s: connection refused", secret), "failed", "error", schemas.CodeInternal},
		{"coded with a cause", &Error{Code: schemas.CodeUnavailable, Message: "the provider is down", Err: errors.New(secret)}, "failed", "error", schemas.CodeUnavailable},
	}
	for i, tc := range cases {
		reply, err := NewEvent(schemas.TypeSysInfoReply, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		h := AuditRequests(a)(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
			if tc.err != nil {
				return nil, tc.err
			}
			return reply, nil
		}))
		e := sysInfoEvent(t)
		e.SetID(fmt.Sprintf("req-%d", i))
		req := request(e)
		req.Trace = trace
		got, err := h.ServeEvent(t.Context(), req)
		if !errors.Is(err, tc.err) || (tc.err == nil && got != reply) {
			t.Errorf("%s: middleware returned %v, %v; want the handler's result", tc.name, got, err)
		}
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}

	byID := map[string]Replayed{}
	for _, r := range replayEvents(t, js) {
		var rec schemas.AuditRequest
		if err := DecodeData(r.Event, &rec); err != nil {
			t.Fatal(err)
		}
		if _, dup := byID[rec.RequestID]; dup {
			t.Errorf("request %s audited twice", rec.RequestID)
		}
		byID[rec.RequestID] = r
	}
	if len(byID) != len(cases) {
		t.Errorf("audited requests: got %d, want %d", len(byID), len(cases))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("req-%d", i)
			r, ok := byID[id]
			if !ok {
				t.Fatalf("request %s not audited", id)
			}
			if want := schemas.AuditSubject("sys", "info", tc.verb); r.Subject != want {
				t.Errorf("subject: got %q, want %q", r.Subject, want)
			}
			if r.Event.Type() != schemas.TypeAuditRequest {
				t.Errorf("type: got %q, want %q", r.Event.Type(), schemas.TypeAuditRequest)
			}
			var rec schemas.AuditRequest
			if err := DecodeData(r.Event, &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Outcome != tc.outcome || rec.Code != tc.code {
				t.Errorf("outcome, code: got %q, %q; want %q, %q", rec.Outcome, rec.Code, tc.outcome, tc.code)
			}
			if tc.err != nil {
				if want := Classify(tc.err).Message; rec.Message != want {
					t.Errorf("message: got %q, want the public message %q", rec.Message, want)
				}
			} else if rec.Message != "" {
				t.Errorf("message on success: got %q, want none", rec.Message)
			}
			if rec.Agent != "a1" || rec.Subject != "agentauth.a1.sys.info" || rec.Operation != "sys.info" ||
				rec.RequestType != schemas.TypeSysInfoRequest || rec.Instance != "test-1" || rec.Received.IsZero() {
				t.Errorf("facts: got %+v", rec)
			}
			if rec.Traceparent != trace.Traceparent() {
				t.Errorf("traceparent: got %q, want %q", rec.Traceparent, trace.Traceparent())
			}
			if tp, _ := r.Event.Extensions()[ExtTraceparent].(string); tp != trace.Traceparent() {
				t.Errorf("event traceparent: got %q, want %q", tp, trace.Traceparent())
			}
		})
	}

	// Not one stored byte, header or payload, carries the internal error.
	stream, err := js.Stream(t.Context(), schemas.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("audit stream is empty")
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("sequence %d: %v", seq, err)
		}
		if bytes.Contains(msg.Data, []byte(secret)) {
			t.Errorf("sequence %d payload contains the internal error text: %s", seq, msg.Data)
		}
		for k, vs := range msg.Header {
			for _, v := range vs {
				if bytes.Contains([]byte(k+v), []byte(secret)) {
					t.Errorf("sequence %d header %s: %q contains the internal error text", seq, k, v)
				}
			}
		}
	}
}

// TestDecodeDataWholeNumbers: a whole number written 60.0 or 1e2 (which
// JSON Schema's integer accepts) where Go needs an int is bad input with
// a schema_violation code, not an internal error.
func TestDecodeDataWholeNumbers(t *testing.T) {
	for _, raw := range []string{`{"ttl_seconds":60.0}`, `{"ttl_seconds":1e2}`} {
		e := event.New()
		if err := e.SetData(event.ApplicationJSON, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		var v schemas.ExchangeRequest
		err := DecodeData(&e, &v)
		var be *Error
		if !errors.As(err, &be) || be.Code != schemas.CodeSchemaViolation {
			t.Errorf("%s: %v, want a %s error", raw, err, schemas.CodeSchemaViolation)
		}
	}
}
