package bus

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

const (
	traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentID = "00f067aa0ba902b7"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseTraceparent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		ok    bool
		flags byte
	}{
		{"sampled", "00-" + traceID + "-" + parentID + "-01", true, 1},
		{"not sampled", "00-" + traceID + "-" + parentID + "-00", true, 0},
		{"future version", "01-" + traceID + "-" + parentID + "-01", true, 1},
		{"future version with more fields", "cc-" + traceID + "-" + parentID + "-01-what-the-future-holds", true, 1},
		{"empty", "", false, 0},
		{"short", "00-" + traceID + "-" + parentID + "-0", false, 0},
		{"version 00 with more fields", "00-" + traceID + "-" + parentID + "-01-xyz", false, 0},
		{"future version, no dash after flags", "01-" + traceID + "-" + parentID + "-01xyz", false, 0},
		{"version ff", "ff-" + traceID + "-" + parentID + "-01", false, 0},
		{"version not hex", "0x-" + traceID + "-" + parentID + "-01", false, 0},
		{"version upper case", "0A-" + traceID + "-" + parentID + "-01", false, 0},
		{"all-zero trace id", "00-00000000000000000000000000000000-" + parentID + "-01", false, 0},
		{"all-zero parent id", "00-" + traceID + "-0000000000000000-01", false, 0},
		{"upper-case trace id", "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + parentID + "-01", false, 0},
		{"upper-case parent id", "00-" + traceID + "-00F067AA0BA902B7-01", false, 0},
		{"upper-case flags", "00-" + traceID + "-" + parentID + "-0A", false, 0},
		{"trace id not hex", "00-" + traceID[:31] + "g-" + parentID + "-01", false, 0},
		{"wrong separator", "00_" + traceID + "-" + parentID + "-01", false, 0},
		{"misplaced separator", "00-" + traceID[:31] + "-" + "-" + parentID + "-01", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseTraceparent(tc.in)
			if ok != tc.ok {
				t.Fatalf("ParseTraceparent(%q): got ok %v, want %v", tc.in, ok, tc.ok)
			}
			if !ok {
				if got != (TraceContext{}) {
					t.Errorf("got %+v with ok false, want the zero TraceContext", got)
				}
				return
			}
			if g, w := got.TraceID[:], mustHex(t, traceID); string(g) != string(w) {
				t.Errorf("trace id: got %x, want %x", g, w)
			}
			if g, w := got.ParentID[:], mustHex(t, parentID); string(g) != string(w) {
				t.Errorf("parent id: got %x, want %x", g, w)
			}
			if got.SpanID != [8]byte{} {
				t.Errorf("span id: got %x, want zero until a span is made", got.SpanID)
			}
			if got.Flags != tc.flags {
				t.Errorf("flags: got %x, want %x", got.Flags, tc.flags)
			}
		})
	}
}

func TestTraceparentRender(t *testing.T) {
	if got := (TraceContext{}).Traceparent(); got != "" {
		t.Errorf("zero context: got %q, want empty", got)
	}
	tc, ok := ParseTraceparent("00-" + traceID + "-" + parentID + "-01")
	if !ok {
		t.Fatal("parse failed")
	}
	tc.SpanID = [8]byte{0xa, 0xb, 0xc, 0xd, 0, 1, 2, 3}
	if got, want := tc.Traceparent(), "00-"+traceID+"-0a0b0c0d00010203-01"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// traced runs Tracing around a handler that records the request's trace
// context and replies.
func traced(t *testing.T, req *Request) (seen TraceContext, reply *event.Event) {
	t.Helper()
	reply, err := Tracing()(HandlerFunc(func(_ context.Context, r *Request) (*event.Event, error) {
		seen = r.Trace
		return NewEvent(schemas.TypeSysInfoReply, struct{}{})
	})).ServeEvent(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return seen, reply
}

func replyTrace(t *testing.T, reply *event.Event) TraceContext {
	t.Helper()
	v, ok := reply.Extensions()[ExtTraceparent].(string)
	if !ok {
		t.Fatalf("reply extensions %v: no traceparent", reply.Extensions())
	}
	tc, ok := ParseTraceparent(v)
	if !ok {
		t.Fatalf("reply traceparent %q does not parse", v)
	}
	return tc
}

func TestTracingContinuesTrace(t *testing.T) {
	e := sysInfoEvent(t)
	e.SetExtension(ExtTraceparent, "00-"+traceID+"-"+parentID+"-01")
	seen, reply := traced(t, request(e))

	if got, want := hex.EncodeToString(seen.TraceID[:]), traceID; got != want {
		t.Errorf("trace id: got %s, want the caller's %s", got, want)
	}
	if got, want := hex.EncodeToString(seen.ParentID[:]), parentID; got != want {
		t.Errorf("parent id: got %s, want the caller's span %s", got, want)
	}
	if seen.SpanID == [8]byte{} || hex.EncodeToString(seen.SpanID[:]) == parentID {
		t.Errorf("span id: got %x, want a new non-zero span", seen.SpanID)
	}
	if seen.Flags != 1 {
		t.Errorf("flags: got %x, want the caller's 01", seen.Flags)
	}
	rt := replyTrace(t, reply)
	if rt.TraceID != seen.TraceID {
		t.Errorf("reply trace id: got %x, want %x", rt.TraceID, seen.TraceID)
	}
	if rt.ParentID != seen.SpanID {
		t.Errorf("reply parent id: got %x, want this hop's span %x", rt.ParentID, seen.SpanID)
	}
}

func TestTracingStartsTrace(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
	}{
		{"missing", nil},
		{"malformed", "00-garbage"},
		{"all-zero trace id", "00-00000000000000000000000000000000-" + parentID + "-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sysInfoEvent(t)
			if tc.in != nil {
				e.SetExtension(ExtTraceparent, tc.in)
			}
			seen, reply := traced(t, request(e))
			if !seen.Valid() {
				t.Fatalf("got %+v, want a valid new trace", seen)
			}
			if seen.SpanID == [8]byte{} {
				t.Errorf("got a zero span id, want a new span")
			}
			if seen.ParentID != [8]byte{} {
				t.Errorf("parent id: got %x, want zero for a trace started here", seen.ParentID)
			}
			if rt := replyTrace(t, reply); rt.TraceID != seen.TraceID || rt.ParentID != seen.SpanID {
				t.Errorf("reply traceparent: got %+v, want trace %x span %x", rt, seen.TraceID, seen.SpanID)
			}
		})
	}
}

func TestTracingNewSpanPerRequest(t *testing.T) {
	e := sysInfoEvent(t)
	e.SetExtension(ExtTraceparent, "00-"+traceID+"-"+parentID+"-01")
	a, _ := traced(t, request(e))
	b, _ := traced(t, request(e))
	if a.SpanID == b.SpanID {
		t.Errorf("two requests got the same span id %x", a.SpanID)
	}
	c, _ := traced(t, request(sysInfoEvent(t)))
	d, _ := traced(t, request(sysInfoEvent(t)))
	if c.TraceID == d.TraceID {
		t.Errorf("two new traces got the same trace id %x", c.TraceID)
	}
}

func TestTracingKeepsServerTrace(t *testing.T) {
	// The server sets req.Trace itself for a message it could not decode.
	preset := childOf("00-" + traceID + "-" + parentID + "-01")
	req := &Request{Agent: "a1", Subject: "agentauth.a1.sys.info", Op: schemas.OpSysInfo, Trace: preset,
		decodeErr: &DecodeError{Code: schemas.CodeInvalidEvent, Reason: "x"}}
	wantErr := req.decodeErr
	var seen TraceContext
	reply, err := Tracing()(HandlerFunc(func(_ context.Context, r *Request) (*event.Event, error) {
		seen = r.Trace
		return nil, r.decodeErr
	})).ServeEvent(t.Context(), req)
	if reply != nil || !errors.Is(err, wantErr) {
		t.Errorf("got %v, %v; want no reply and the handler's error", reply, err)
	}
	if seen != preset {
		t.Errorf("trace: got %+v, want the server's %+v", seen, preset)
	}
}
