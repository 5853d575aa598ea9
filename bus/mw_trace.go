package bus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	mrand "math/rand/v2"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"
)

// TraceContext is a W3C trace context (traceparent version 00).
type TraceContext struct {
	TraceID  [16]byte
	SpanID   [8]byte // this hop's span
	ParentID [8]byte // the caller's span, zero when the trace started here
	Flags    byte
	rendered string // Traceparent, computed once by childOf
}

// Valid reports whether the trace id is set.
func (t TraceContext) Valid() bool { return t.TraceID != [16]byte{} }

// Traceparent renders the header value for this span.
func (t TraceContext) Traceparent() string {
	if t.rendered != "" {
		return t.rendered
	}
	if !t.Valid() {
		return ""
	}
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], t.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], t.SpanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{t.Flags})
	return string(b[:])
}

// ParseTraceparent parses a version-00 traceparent value. ok is false for
// anything malformed, including all-zero ids.
func ParseTraceparent(s string) (t TraceContext, ok bool) {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] == "ff" {
		return t, false
	}
	// Version 00 is exactly 55 characters; a later version may append
	// fields, each after a dash.
	if s[:2] == "00" && len(s) != 55 || len(s) > 55 && s[55] != '-' {
		return t, false
	}
	if !isLowerHex(s[:2]) || !isLowerHex(s[3:35]) || !isLowerHex(s[36:52]) || !isLowerHex(s[53:55]) {
		return t, false
	}
	_, _ = hex.Decode(t.TraceID[:], []byte(s[3:35]))
	_, _ = hex.Decode(t.ParentID[:], []byte(s[36:52]))
	var fl [1]byte
	_, _ = hex.Decode(fl[:], []byte(s[53:55]))
	t.Flags = fl[0]
	if t.TraceID == [16]byte{} || t.ParentID == [8]byte{} {
		return TraceContext{}, false
	}
	return t, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

var spanSeed = func() (s uint64) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}()
var spanCounter atomic.Uint64

// newSpanID returns a non-zero span id, unique within the process.
func newSpanID() (id [8]byte) {
	v := spanSeed ^ (spanCounter.Add(1) * 0x9E3779B97F4A7C15)
	if v == 0 {
		v = 1
	}
	binary.BigEndian.PutUint64(id[:], v)
	return id
}

// childOf continues the caller's trace (or starts one) with a new span.
func childOf(incoming string) TraceContext {
	t, ok := ParseTraceparent(incoming)
	if !ok {
		// Trace ids need uniqueness, not secrecy: the runtime's
		// generator avoids a system call per request.
		t = TraceContext{Flags: 0}
		binary.BigEndian.PutUint64(t.TraceID[:8], mrand.Uint64())
		binary.BigEndian.PutUint64(t.TraceID[8:], mrand.Uint64()|1)
	}
	t.SpanID = newSpanID()
	t.rendered = ""
	t.rendered = t.Traceparent()
	return t
}

// setExtension sets a string extension of an event of ours without the
// sdk setter's validation and conversion (the name is a constant).
func setExtension(e *event.Event, name, value string) {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		e.SetExtension(name, value)
		return
	}
	if ec.Extensions == nil {
		ec.Extensions = make(map[string]any, 1)
	}
	ec.Extensions[name] = value
}

// ExtTraceparent is the CloudEvents distributed-tracing extension name.
const ExtTraceparent = "traceparent"

// Tracing continues the request's W3C trace context (the traceparent
// extension, or a new trace when absent or malformed) with a span of its
// own, and stamps that traceparent on the reply so the caller can
// correlate it (under a Server, the server writes it while encoding the
// reply, which spares an extension map per reply). The server reads
// req.Trace for error replies and audit.
func Tracing() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			if !req.Trace.Valid() {
				var in string
				if req.Event != nil {
					if v, ok := req.Event.Extensions()[ExtTraceparent].(string); ok {
						in = v
					}
				}
				req.Trace = childOf(in)
			}
			reply, err := next.ServeEvent(ctx, req)
			if reply != nil && !req.stampsTrace {
				setExtension(reply, ExtTraceparent, req.Trace.Traceparent())
			}
			return reply, err
		})
	}
}
