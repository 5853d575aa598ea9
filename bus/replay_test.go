package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/schemas"
)

var (
	subjectOK       = schemas.AuditSubject("sys", "info", "ok")
	subjectRejected = schemas.AuditSubject("sys", "info", "rejected")
)

// publishAudit stores n events on the audit stream, alternating between
// the ok and rejected subjects (sequence 1 is ok, 2 rejected, ...), and
// returns their ids in order.
func publishAudit(tb testing.TB, js jetstream.JetStream, n int) []string {
	tb.Helper()
	pub := NewPublisher(js, nil)
	ids := make([]string, n)
	for i := range n {
		subject := subjectOK
		if i%2 == 1 {
			subject = subjectRejected
		}
		ids[i] = fmt.Sprintf("audit-%d", i+1)
		ack, err := pub.Publish(tb.Context(), subject, testEvent(tb, ids[i], map[string]int{"n": i + 1}))
		if err != nil {
			tb.Fatal(err)
		}
		if ack.Sequence != uint64(i+1) {
			tb.Fatalf("event %d stored at sequence %d; the test expects an empty stream", i+1, ack.Sequence)
		}
	}
	return ids
}

// replayed is the outcome of one Replay call.
type replayed struct {
	events     []Replayed
	totals     []uint64 // every value total was called with
	err        error
	calledBack bool
}

func replayAll(tb testing.TB, js jetstream.JetStream, o ReplayOptions) replayed {
	tb.Helper()
	var r replayed
	r.err = Replay(tb.Context(), js, o, func(n uint64) { r.totals = append(r.totals, n) }, func(e Replayed) error {
		r.calledBack = true
		r.events = append(r.events, e)
		return nil
	})
	return r
}

func sequences(events []Replayed) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Sequence
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestReplay(t *testing.T) {
	js := MustJetStream(t)
	const n = 8
	ids := publishAudit(t, js, n)

	all := replayAll(t, js, ReplayOptions{Stream: schemas.StreamAudit})
	if all.err != nil {
		t.Fatalf("replay: %v", all.err)
	}
	if !slices.Equal(all.totals, []uint64{n}) {
		t.Errorf("total: got calls %v, want one call with %d", all.totals, n)
	}
	if got, want := sequences(all.events), seqRange(1, n); !slices.Equal(got, want) {
		t.Fatalf("sequences: got %v, want %v", got, want)
	}
	for i, r := range all.events {
		wantSubject := subjectOK
		if i%2 == 1 {
			wantSubject = subjectRejected
		}
		if r.DecodeErr != nil || r.Event == nil {
			t.Errorf("sequence %d: decode error %v", r.Sequence, r.DecodeErr)
			continue
		}
		if r.Event.ID() != ids[i] || r.Subject != wantSubject || r.Index != 0 || r.Stored.IsZero() {
			t.Errorf("sequence %d: got id %q subject %q index %d stored %v; want id %q subject %q index 0 and a stored time",
				r.Sequence, r.Event.ID(), r.Subject, r.Index, r.Stored, ids[i], wantSubject)
		}
		if want := fmt.Sprintf(`{"n":%d}`, i+1); string(r.Event.Data()) != want {
			t.Errorf("sequence %d data: got %s, want %s", r.Sequence, r.Event.Data(), want)
		}
	}
	firstStored, lastStored := all.events[0].Stored, all.events[n-1].Stored

	evens := []uint64{2, 4, 6, 8}
	for _, tc := range []struct {
		name      string
		o         ReplayOptions
		want      []uint64
		wantTotal *uint64 // nil: not checked
	}{
		{name: "from and to", o: ReplayOptions{FromSeq: 3, ToSeq: 5}, want: seqRange(3, 5)},
		{name: "from", o: ReplayOptions{FromSeq: n - 1}, want: seqRange(n-1, n), wantTotal: ptr(uint64(2))},
		{name: "to", o: ReplayOptions{ToSeq: 2}, want: seqRange(1, 2)},
		{name: "to the last", o: ReplayOptions{ToSeq: n}, want: seqRange(1, n)},
		{name: "to beyond the end", o: ReplayOptions{ToSeq: n + 10}, want: seqRange(1, n)},
		{name: "one", o: ReplayOptions{FromSeq: 4, ToSeq: 4}, want: []uint64{4}},
		{name: "from beyond the end", o: ReplayOptions{FromSeq: n + 1}, want: nil, wantTotal: ptr(uint64(0))},
		{name: "subjects", o: ReplayOptions{Subjects: []string{subjectRejected}}, want: evens, wantTotal: ptr(uint64(len(evens)))},
		{name: "subjects and range", o: ReplayOptions{Subjects: []string{subjectRejected}, FromSeq: 3, ToSeq: 6}, want: []uint64{4, 6}},
		{name: "wildcard subject", o: ReplayOptions{Subjects: []string{"agentauth.audit.sys.>"}}, want: seqRange(1, n), wantTotal: ptr(uint64(n))},
		{name: "since the future", o: ReplayOptions{Since: time.Now().Add(time.Hour)}, want: nil, wantTotal: ptr(uint64(0))},
		{name: "until the past", o: ReplayOptions{Until: firstStored.Add(-time.Hour)}, want: nil},
		{name: "since the first", o: ReplayOptions{Since: firstStored}, want: seqRange(1, n), wantTotal: ptr(uint64(n))},
		{name: "until the last", o: ReplayOptions{Until: lastStored}, want: seqRange(1, n)},
		{name: "since the past until the future", o: ReplayOptions{Since: firstStored.Add(-time.Hour), Until: lastStored.Add(time.Hour)}, want: seqRange(1, n)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Stream = schemas.StreamAudit
			r := replayAll(t, js, tc.o)
			if r.err != nil {
				t.Fatalf("replay: %v", r.err)
			}
			if got := sequences(r.events); !slices.Equal(got, tc.want) {
				t.Errorf("sequences: got %v, want %v", got, tc.want)
			}
			if len(tc.want) == 0 && r.calledBack {
				t.Error("fn called for an empty selection")
			}
			if len(r.totals) != 1 {
				t.Errorf("total called %d times, want once", len(r.totals))
			} else if tc.wantTotal != nil && r.totals[0] != *tc.wantTotal {
				t.Errorf("total: got %d, want %d", r.totals[0], *tc.wantTotal)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestReplayRejectsOptions(t *testing.T) {
	js := MustJetStream(t)
	publishAudit(t, js, 2)
	now := time.Now()
	for _, tc := range []struct {
		name string
		o    ReplayOptions
	}{
		{"start sequence and start time", ReplayOptions{FromSeq: 1, Since: now.Add(-time.Hour)}},
		{"start after end", ReplayOptions{FromSeq: 5, ToSeq: 4}},
		{"until before since", ReplayOptions{Since: now, Until: now.Add(-time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Stream = schemas.StreamAudit
			r := replayAll(t, js, tc.o)
			if r.err == nil {
				t.Fatal("got nil error")
			}
			if r.calledBack || len(r.totals) > 0 {
				t.Errorf("callbacks ran for rejected options: fn %v, total %v", r.calledBack, r.totals)
			}
		})
	}
	t.Run("missing stream", func(t *testing.T) {
		r := replayAll(t, js, ReplayOptions{Stream: "NOPE"})
		if !errors.Is(r.err, jetstream.ErrStreamNotFound) {
			t.Errorf("got %v, want %v", r.err, jetstream.ErrStreamNotFound)
		}
	})
}

func TestReplayStopsOnCallbackError(t *testing.T) {
	js := MustJetStream(t)
	publishAudit(t, js, 4)
	stop := errors.New("enough")
	calls := 0
	err := Replay(t.Context(), js, ReplayOptions{Stream: schemas.StreamAudit}, nil, func(Replayed) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("got %v, want the callback's error", err)
	}
	if calls != 2 {
		t.Errorf("callback calls: got %d, want 2", calls)
	}
}

func TestReplayUnpacksBatches(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	if _, err := NewPublisher(js, nil).Publish(ctx, subjectOK, testEvent(t, "single-1", map[string]int{"n": 0})); err != nil {
		t.Fatal(err)
	}
	// The audit writer's own grouping: three events of one subject become
	// one batch message, the lone event of the other subject a plain one.
	// (An Auditor without its writer goroutine: this test is the writer.)
	a := &Auditor{js: js, log: discardLog(), metrics: NewMetrics(prometheus.NewRegistry()), instance: "test-1"}
	var items []auditItem
	for i := range 3 {
		items = append(items, auditItem{subject: subjectRejected, typ: "dev.agentauth.test.batch", data: map[string]int{"n": i}})
	}
	items = append(items, auditItem{subject: subjectOK, typ: "dev.agentauth.test.single", data: map[string]int{"n": 9}})
	a.write(items)
	a.settle(true) // every write acknowledged

	stream, err := js.Stream(ctx, schemas.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := stream.GetLastMsgForSubject(ctx, subjectRejected)
	if err != nil {
		t.Fatal(err)
	}
	if got := batch.Header.Get(HeaderContentType); got != "application/cloudevents-batch+json" {
		t.Fatalf("stored batch Content-Type: got %q, want application/cloudevents-batch+json", got)
	}

	r := replayAll(t, js, ReplayOptions{Stream: schemas.StreamAudit})
	if r.err != nil {
		t.Fatalf("replay: %v", r.err)
	}
	if !slices.Equal(r.totals, []uint64{3}) {
		t.Errorf("total: got %v, want [3] (messages, not events)", r.totals)
	}
	type seen struct {
		seq   uint64
		index int
		typ   string
		data  string
		subj  string
	}
	var got []seen
	for _, e := range r.events {
		if e.DecodeErr != nil {
			t.Fatalf("sequence %d: %v", e.Sequence, e.DecodeErr)
		}
		got = append(got, seen{e.Sequence, e.Index, e.Event.Type(), string(e.Event.Data()), e.Subject})
	}
	want := []seen{
		{1, 0, "dev.agentauth.test", `{"n":0}`, subjectOK},
		{batch.Sequence, 0, "dev.agentauth.test.batch", `{"n":0}`, subjectRejected},
		{batch.Sequence, 1, "dev.agentauth.test.batch", `{"n":1}`, subjectRejected},
		{batch.Sequence, 2, "dev.agentauth.test.batch", `{"n":2}`, subjectRejected},
		{batch.Sequence + 1, 0, "dev.agentauth.test.single", `{"n":9}`, subjectOK},
	}
	if !slices.Equal(got, want) {
		t.Errorf("replayed:\ngot  %+v\nwant %+v", got, want)
	}
	if len(r.events) == 5 {
		ids := map[string]bool{}
		for _, e := range r.events {
			ids[e.Event.ID()] = true
		}
		if len(ids) != 5 {
			t.Errorf("event ids are not distinct: %v", ids)
		}
	}
}

func TestReplayUndecodable(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	if _, err := js.Publish(ctx, subjectOK, []byte("plain text")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{
		Subject: subjectOK,
		Header:  nats.Header{HeaderContentType: []string{mediaBatch}},
		Data:    []byte(`{"not":"an array"}`),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPublisher(js, nil).Publish(ctx, subjectOK, testEvent(t, "after", nil)); err != nil {
		t.Fatal(err)
	}

	r := replayAll(t, js, ReplayOptions{Stream: schemas.StreamAudit})
	if r.err != nil {
		t.Fatalf("replay: %v", r.err)
	}
	if got, want := sequences(r.events), []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("sequences: got %v, want %v", got, want)
	}
	for _, e := range r.events[:2] {
		var de *DecodeError
		if e.Event != nil || !errors.As(e.DecodeErr, &de) || de.Code != schemas.CodeInvalidEvent {
			t.Errorf("sequence %d: got event %v, error %v; want no event and an %s decode error", e.Sequence, e.Event, e.DecodeErr, schemas.CodeInvalidEvent)
		}
		if e.Subject != subjectOK {
			t.Errorf("sequence %d subject: got %q, want %q", e.Sequence, e.Subject, subjectOK)
		}
	}
	if last := r.events[2]; last.DecodeErr != nil || last.Event == nil || last.Event.ID() != "after" {
		t.Errorf("sequence 3: got event %v, error %v; want event \"after\"", last.Event, last.DecodeErr)
	}
}

func TestReplayFollow(t *testing.T) {
	js := MustJetStream(t)
	const n = 3
	publishAudit(t, js, n)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan Replayed, n+1)
	done := make(chan error, 1)
	go func() {
		done <- Replay(ctx, js, ReplayOptions{Stream: schemas.StreamAudit, Follow: true}, nil, func(r Replayed) error {
			got <- r
			return nil
		})
	}()
	for i := range n {
		r := receive(t, got, fmt.Sprintf("stored event %d", i+1))
		if r.Sequence != uint64(i+1) {
			t.Errorf("stored event %d: got sequence %d", i+1, r.Sequence)
		}
	}
	// Replay is now waiting past the end of the stream.
	if _, err := NewPublisher(js, nil).Publish(ctx, subjectRejected, testEvent(t, "live", nil)); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got, "the event published while following"); r.Event == nil || r.Event.ID() != "live" || r.Sequence != n+1 {
		t.Errorf("followed event: got %v at sequence %d, want \"live\" at %d", r.Event, r.Sequence, n+1)
	}
	cancel()
	if err := receive(t, done, "Replay to return after cancel"); err != nil {
		t.Errorf("Replay after cancel: got %v, want nil", err)
	}
}

func TestReplayFollowEmptyStream(t *testing.T) {
	js := MustJetStream(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan Replayed, 1)
	started := make(chan uint64, 1)
	done := make(chan error, 1)
	go func() {
		done <- Replay(ctx, js, ReplayOptions{Stream: schemas.StreamAudit, Subjects: []string{subjectOK}, Follow: true},
			func(n uint64) { started <- n },
			func(r Replayed) error { got <- r; return nil })
	}()
	if n := receive(t, started, "the replay to start"); n != 0 {
		t.Errorf("total on an empty stream: got %d, want 0", n)
	}
	pub := NewPublisher(js, nil)
	if _, err := pub.Publish(ctx, subjectRejected, testEvent(t, "filtered-out", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, subjectOK, testEvent(t, "wanted", nil)); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got, "the followed event"); r.Event == nil || r.Event.ID() != "wanted" {
		t.Errorf("followed: got %v, want the event on %s", r.Event, subjectOK)
	}
	cancel()
	if err := receive(t, done, "Replay to return after cancel"); err != nil {
		t.Errorf("Replay after cancel: got %v, want nil", err)
	}
}

// TestReplayFollowStopsAtUpperBound: with Follow, --to-seq and --until
// still end the replay; events stored later are not delivered.
func TestReplayFollowStopsAtUpperBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		o     func(storedBefore time.Time) ReplayOptions
		want  []uint64
		first int // events received before more are published
	}{
		{name: "to-seq", o: func(time.Time) ReplayOptions { return ReplayOptions{FromSeq: 3, ToSeq: 5} }, want: []uint64{3, 4, 5}, first: 2},
		{name: "until", o: func(t time.Time) ReplayOptions { return ReplayOptions{FromSeq: 2, Until: t} }, want: []uint64{2, 3, 4}, first: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := MustJetStream(t)
			publishAudit(t, js, 4)
			o := tc.o(time.Now())
			o.Stream, o.Follow = schemas.StreamAudit, true
			got := make(chan Replayed, 16)
			done := make(chan error, 1)
			go func() {
				done <- Replay(t.Context(), js, o, nil, func(r Replayed) error { got <- r; return nil })
			}()
			var seqs []uint64
			for range tc.first {
				seqs = append(seqs, receive(t, got, "a stored event").Sequence)
			}
			// Replay is following; more events arrive, past the bound.
			pub := NewPublisher(js, nil)
			for i := range 3 {
				if _, err := pub.Publish(t.Context(), subjectOK, testEvent(t, fmt.Sprintf("later-%d", i), nil)); err != nil {
					t.Fatal(err)
				}
			}
			if err := receive(t, done, "Replay to return at its upper bound"); err != nil {
				t.Fatalf("Replay: %v", err)
			}
			close(got)
			for r := range got {
				seqs = append(seqs, r.Sequence)
			}
			if !slices.Equal(seqs, tc.want) {
				t.Errorf("sequences: got %v, want %v", seqs, tc.want)
			}
		})
	}
}
