package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/schemas"
)

// waitTimeout bounds every wait for something the server or a background
// goroutine does; it is generous because it is never a measurement.
const waitTimeout = 10 * time.Second

// MustJetStream starts an embedded server, creates the agentauth streams
// and returns JetStream on a fresh connection.
func MustJetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	js, err := JetStream(MustConn(tb, MustServer(tb)))
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	if err := EnsureStreams(tb.Context(), js, StreamOptions{}); err != nil {
		tb.Fatalf("ensure streams: %v", err)
	}
	return js
}

// discardLog is a logger for code under test whose logs are not checked.
func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitUntil polls cond until it holds and fails the test when it still
// does not hold after waitTimeout.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receive returns the next value from ch, failing the test when none
// arrives within waitTimeout.
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

// testEvent is an event as agentauth emits it, with a chosen id.
func testEvent(tb testing.TB, id string, data any) *event.Event {
	tb.Helper()
	e, err := NewEvent("dev.agentauth.test", data)
	if err != nil {
		tb.Fatal(err)
	}
	e.SetID(id)
	return e
}

// streamInfo reads a stream's current info.
func streamInfo(tb testing.TB, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	tb.Helper()
	s, err := js.Stream(tb.Context(), name)
	if err != nil {
		tb.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(tb.Context())
	if err != nil {
		tb.Fatalf("stream %s info: %v", name, err)
	}
	return info
}

// consumerInfo reads a durable consumer's current info.
func consumerInfo(tb testing.TB, js jetstream.JetStream, stream, durable string) *jetstream.ConsumerInfo {
	tb.Helper()
	c, err := js.Consumer(tb.Context(), stream, durable)
	if err != nil {
		tb.Fatalf("consumer %s on %s: %v", durable, stream, err)
	}
	info, err := c.Info(tb.Context())
	if err != nil {
		tb.Fatalf("consumer %s info: %v", durable, err)
	}
	return info
}

func TestEnsureStreams(t *testing.T) {
	js, err := JetStream(MustConn(t, MustServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	o := StreamOptions{EventsMaxAge: time.Hour}
	if err := EnsureStreams(t.Context(), js, o); err != nil {
		t.Fatalf("first EnsureStreams: %v", err)
	}
	first := map[string]*jetstream.StreamInfo{}
	for _, cfg := range StreamConfigs(o) {
		first[cfg.Name] = streamInfo(t, js, cfg.Name)
	}
	if len(first) != 3 || first[schemas.StreamAudit] == nil || first[schemas.StreamEvents] == nil || first[schemas.StreamNotify] == nil {
		t.Fatalf("streams: got %v, want %s, %s and %s", first, schemas.StreamAudit, schemas.StreamEvents, schemas.StreamNotify)
	}

	if err := EnsureStreams(t.Context(), js, o); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	for name, before := range first {
		after := streamInfo(t, js, name)
		if !reflect.DeepEqual(after.Config, before.Config) {
			t.Errorf("%s config changed by a second EnsureStreams:\ngot  %+v\nwant %+v", name, after.Config, before.Config)
		}
		if !after.Created.Equal(before.Created) {
			t.Errorf("%s recreated: created %v, then %v", name, before.Created, after.Created)
		}
	}

	audit := first[schemas.StreamAudit].Config
	if !audit.DenyDelete || !audit.DenyPurge {
		t.Errorf("%s: DenyDelete %v, DenyPurge %v; want both true", schemas.StreamAudit, audit.DenyDelete, audit.DenyPurge)
	}
	if got, want := audit.Subjects, []string{"agentauth.audit.>"}; !slices.Equal(got, want) {
		t.Errorf("%s subjects: got %v, want %v", schemas.StreamAudit, got, want)
	}
	events := first[schemas.StreamEvents].Config
	if got, want := events.Subjects, []string{"agentauth.events.>"}; !slices.Equal(got, want) {
		t.Errorf("%s subjects: got %v, want %v", schemas.StreamEvents, got, want)
	}
	if events.MaxAge != time.Hour {
		t.Errorf("%s max age: got %v, want %v", schemas.StreamEvents, events.MaxAge, time.Hour)
	}
}

func TestAuditStreamDeniesDeleteAndPurge(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	pub := NewPublisher(js, nil)
	ack, err := pub.Publish(ctx, schemas.AuditSubject("sys", "info", "ok"), testEvent(t, "audit-1", map[string]int{"n": 1}))
	if err != nil {
		t.Fatal(err)
	}
	audit, err := js.Stream(ctx, schemas.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Purge(ctx); err == nil {
		t.Error("purging the audit stream succeeded; want an error")
	}
	if err := audit.DeleteMsg(ctx, ack.Sequence); err == nil {
		t.Error("deleting an audit message succeeded; want an error")
	}
	if err := audit.SecureDeleteMsg(ctx, ack.Sequence); err == nil {
		t.Error("securely deleting an audit message succeeded; want an error")
	}
	if got := streamInfo(t, js, schemas.StreamAudit).State.Msgs; got != 1 {
		t.Errorf("audit messages after the attempts: got %d, want 1", got)
	}

	// The events stream allows both, so the refusals above come from the
	// audit stream's configuration.
	if _, err := pub.Publish(ctx, schemas.EventsSubject("a1")+".test", testEvent(t, "evt-1", nil)); err != nil {
		t.Fatal(err)
	}
	events, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Purge(ctx); err != nil {
		t.Errorf("purging the events stream: %v", err)
	}
}

func TestPublish(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	m := NewMetrics(prometheus.NewRegistry())
	pub := NewPublisher(js, m)
	subject := schemas.EventsSubject("a1") + ".test"
	e := testEvent(t, "evt-1", map[string]string{"k": "v"})

	first, err := pub.Publish(ctx, subject, e)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if first.Duplicate || first.Stream != schemas.StreamEvents {
		t.Errorf("first publish: got duplicate %v on %q, want a new message on %s", first.Duplicate, first.Stream, schemas.StreamEvents)
	}
	second, err := pub.Publish(ctx, subject, e)
	if err != nil {
		t.Fatalf("publish again: %v", err)
	}
	if !second.Duplicate {
		t.Error("second publish of the same event id: Duplicate false, want true")
	}
	if second.Sequence != first.Sequence {
		t.Errorf("duplicate sequence: got %d, want %d (the stored one)", second.Sequence, first.Sequence)
	}
	if got := streamInfo(t, js, schemas.StreamEvents).State.Msgs; got != 1 {
		t.Errorf("stored messages: got %d, want 1", got)
	}

	// The stored message is the event.
	s, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, first.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(raw.Header, raw.Data)
	if err != nil {
		t.Fatalf("stored message is not a CloudEvent: %v", err)
	}
	if !reflect.DeepEqual(attrsOf(t, got), attrsOf(t, e)) || string(got.Data()) != string(e.Data()) {
		t.Errorf("stored event: got %v %s, want %v %s", attrsOf(t, got), got.Data(), attrsOf(t, e), e.Data())
	}

	// Another id is another message.
	if _, err := pub.Publish(ctx, subject, testEvent(t, "evt-2", nil)); err != nil {
		t.Fatal(err)
	}
	if got := streamInfo(t, js, schemas.StreamEvents).State.Msgs; got != 2 {
		t.Errorf("stored messages after a second id: got %d, want 2", got)
	}

	// No stream takes this subject.
	if _, err := pub.Publish(ctx, "elsewhere.test", testEvent(t, "evt-3", nil)); err == nil {
		t.Error("publish to a subject no stream takes: got nil error")
	}

	for _, tc := range []struct {
		stream, result string
		want           float64
	}{
		{schemas.StreamEvents, "ok", 2},
		{schemas.StreamEvents, "duplicate", 1},
		{"", "error", 1},
	} {
		if got := metricValue(t, m.Published.WithLabelValues(tc.stream, tc.result)); got != tc.want {
			t.Errorf("published{stream=%q,result=%q}: got %v, want %v", tc.stream, tc.result, got, tc.want)
		}
	}
}

func TestConsume(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	m := NewMetrics(prometheus.NewRegistry())
	pub := NewPublisher(js, m)
	const durable = "test-a1"

	// Each case is one event on agentauth.events.a1.<name>; answer gives
	// the handler's result for each delivery of it.
	cases := []struct {
		name   string
		answer func(numDeliver uint64) error
		want   []uint64 // NumDeliver of each delivery the handler sees
	}{
		{"ok", func(uint64) error { return nil }, []uint64{1}},
		{"conflict", func(uint64) error { return Errorf(schemas.CodeConflict, "already done") }, []uint64{1}},
		{"invalid", func(uint64) error { return Errorf(schemas.CodeSchemaViolation, "bad data") }, []uint64{1}},
		{"unavailable", func(n uint64) error {
			if n == 1 {
				return Errorf(schemas.CodeUnavailable, "try again")
			}
			return nil
		}, []uint64{1, 2}},
		{"panic", func(n uint64) error {
			if n == 1 {
				panic("a handler bug")
			}
			return nil
		}, []uint64{1, 2}},
		{"deadline", func(n uint64) error {
			if n == 1 {
				return fmt.Errorf("call the provider: %w", context.DeadlineExceeded)
			}
			return nil
		}, []uint64{1, 2}},
	}
	answers := map[string]func(uint64) error{}
	ids := map[string]string{}
	for _, tc := range cases {
		answers[tc.name] = tc.answer
		ids[tc.name] = "evt-" + tc.name
	}

	var mu sync.Mutex
	seen := map[string][]uint64{}
	cc, err := Consume(ctx, js, ConsumerOptions{
		Stream:  schemas.StreamEvents,
		Durable: durable,
		Filter:  []string{schemas.EventsSubject("a1") + ".>"},
		Backoff: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond},
	}, m, discardLog(), func(ctx context.Context, d *Delivery) error {
		name := d.Subject[strings.LastIndexByte(d.Subject, '.')+1:]
		mu.Lock()
		seen[name] = append(seen[name], d.NumDeliver)
		mu.Unlock()
		if d.Event == nil || d.Event.ID() != ids[name] {
			t.Errorf("%s: delivered event %v, want id %q", d.Subject, d.Event, ids[name])
		}
		if d.Sequence == 0 {
			t.Errorf("%s: delivery without a stream sequence", d.Subject)
		}
		answer, ok := answers[name]
		if !ok {
			t.Errorf("handler called for %s", d.Subject)
			return nil
		}
		return answer(d.NumDeliver)
	})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)

	for _, tc := range cases {
		if _, err := pub.Publish(ctx, schemas.EventsSubject("a1")+"."+tc.name, testEvent(t, ids[tc.name], nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Not a CloudEvent: no ce- headers, no structured content type.
	if _, err := js.Publish(ctx, schemas.EventsSubject("a1")+".plain", []byte("hello")); err != nil {
		t.Fatal(err)
	}

	want := map[string]float64{"ack": 5, "nak": 3, "term": 2}
	consumed := func(action string) float64 {
		return metricValue(t, m.Consumed.WithLabelValues(durable, action))
	}
	waitUntil(t, "every delivery to be settled", func() bool {
		info := consumerInfo(t, js, schemas.StreamEvents, durable)
		return info.NumPending == 0 && info.NumAckPending == 0 &&
			consumed("ack")+consumed("nak")+consumed("term") >= want["ack"]+want["nak"]+want["term"]
	})
	cc.Stop()
	receive(t, cc.Closed(), "the consumer to stop")

	mu.Lock()
	defer mu.Unlock()
	for _, tc := range cases {
		if got := seen[tc.name]; !slices.Equal(got, tc.want) {
			t.Errorf("%s: deliveries (NumDeliver each): got %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := seen["plain"]; got != nil {
		t.Errorf("handler called for a message that is not a CloudEvent: deliveries %v", got)
	}
	for action, w := range want {
		if got := consumed(action); got != w {
			t.Errorf("consumed{consumer=%q,action=%q}: got %v, want %v", durable, action, got, w)
		}
	}
	if info := consumerInfo(t, js, schemas.StreamEvents, durable); info.AckFloor.Stream != info.Delivered.Stream {
		t.Errorf("ack floor %d below the last delivered sequence %d", info.AckFloor.Stream, info.Delivered.Stream)
	}
}

func TestConsumeStopsWhenContextEnds(t *testing.T) {
	js := MustJetStream(t)
	ctx, cancel := context.WithCancel(t.Context())
	delivered := make(chan string, 1)
	cc, err := Consume(ctx, js, ConsumerOptions{
		Stream:  schemas.StreamEvents,
		Durable: "test-ctx",
		Filter:  []string{schemas.EventsSubject("a1") + ".>"},
	}, nil, discardLog(), func(_ context.Context, d *Delivery) error {
		delivered <- d.Event.ID()
		return nil
	})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)
	if _, err := NewPublisher(js, nil).Publish(ctx, schemas.EventsSubject("a1")+".test", testEvent(t, "evt-1", nil)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, delivered, "the event"); got != "evt-1" {
		t.Errorf("delivered %q, want evt-1", got)
	}
	cancel()
	receive(t, cc.Closed(), "the consumer to stop after its context ended")
}

// TestConsumeEmptyBackoff: an empty backoff schedule means the default,
// not an index out of range when a message is to be redelivered.
func TestConsumeEmptyBackoff(t *testing.T) {
	js := MustJetStream(t)
	delivered := make(chan uint64, 2)
	cc, err := Consume(t.Context(), js, ConsumerOptions{
		Stream:  schemas.StreamEvents,
		Durable: "test-backoff",
		Filter:  []string{schemas.EventsSubject("a1") + ".>"},
		Backoff: []time.Duration{},
	}, nil, discardLog(), func(_ context.Context, d *Delivery) error {
		delivered <- d.NumDeliver
		if d.NumDeliver == 1 {
			return Errorf(schemas.CodeUnavailable, "try again")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)
	if _, err := NewPublisher(js, nil).Publish(t.Context(), schemas.EventsSubject("a1")+".test", testEvent(t, "evt-1", nil)); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 2; want++ {
		if got := receive(t, delivered, "a delivery"); got != want {
			t.Errorf("delivery %d: NumDeliver %d", want, got)
		}
	}
}

func TestConsumeUnknownStream(t *testing.T) {
	js := MustJetStream(t)
	_, err := Consume(t.Context(), js, ConsumerOptions{Stream: "NOPE", Durable: "d"}, nil, discardLog(),
		func(context.Context, *Delivery) error { return nil })
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("consume on a missing stream: got %v, want %v", err, jetstream.ErrStreamNotFound)
	}
}
