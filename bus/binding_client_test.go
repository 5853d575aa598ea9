package bus

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentauth/agentauth/schemas"
)

// TestRequestEncoder: the encoder writes what Encode(NewEventFrom(...))
// writes, but for the fresh id and time.
func TestRequestEncoder(t *testing.T) {
	src := MustSource("/agents/a-1")
	data := &schemas.SysInfo{Service: "agentauth", Agent: "a-1"}
	h, body, err := NewRequestEncoder(src).Encode(schemas.TypeSysInfoRequest, data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEventFrom(src, schemas.TypeSysInfoRequest, data)
	if err != nil {
		t.Fatal(err)
	}
	wantH, wantBody, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != string(wantBody) {
		t.Errorf("data: got %s, want %s", body, wantBody)
	}
	if len(h) != len(wantH) {
		t.Errorf("headers: got %v, want %v", sortedHeader(h), sortedHeader(wantH))
	}
	for k, v := range wantH {
		if k == "ce-id" || k == "ce-time" {
			if len(h[k]) != 1 || h[k][0] == "" {
				t.Errorf("%s: got %v", k, h[k])
			}
			continue
		}
		if !reflect.DeepEqual(h[k], v) {
			t.Errorf("%s: got %v, want %v", k, h[k], v)
		}
	}
	got, err := Decode(h, body)
	if err != nil {
		t.Fatalf("Decode of the encoder's request: %v", err)
	}
	if got.Source() != "/agents/a-1" || got.Type() != schemas.TypeSysInfoRequest || got.Time().IsZero() {
		t.Errorf("decoded: %v", got)
	}
	h2, _, _ := NewRequestEncoder(src).Encode(schemas.TypeSysInfoRequest, data)
	if h2["ce-id"][0] == h["ce-id"][0] {
		t.Error("two requests share an id")
	}
	if _, _, err := NewRequestEncoder(src).Encode("t", func() {}); err == nil {
		t.Error("data that is not JSON encoded without an error")
	}
}

// TestEncodeIntoReuse: a reused buffer holds exactly the newest request's
// header (no attribute of the one before left behind), and a reply block
// reused for a smaller event holds only that event's attributes.
func TestEncodeIntoReuse(t *testing.T) {
	enc := NewRequestEncoder(MustSource("/agents/a-1"))
	var buf HeaderBuffer
	h1, _, err := enc.EncodeInto(&buf, schemas.TypeSysInfoRequest, schemas.SysInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The time lives in the buffer: copy it before the buffer is reused.
	id1, time1 := h1["ce-id"][0], strings.Clone(h1["ce-time"][0])
	time.Sleep(time.Millisecond) // a later time renders differently
	h2, body, err := enc.EncodeInto(&buf, schemas.TypeWhoAmIRequest, schemas.WhoAmIRequest{UserToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if h2["ce-id"][0] == id1 || h2["ce-time"][0] == time1 || h2["ce-type"][0] != schemas.TypeWhoAmIRequest || len(h2) != 6 {
		t.Errorf("reused buffer: %v", sortedHeader(h2))
	}
	if e, err := Decode(h2, body); err != nil || e.Type() != schemas.TypeWhoAmIRequest || e.Time().Format(time.RFC3339Nano) != h2["ce-time"][0] {
		t.Errorf("decoded %v, %v", e, err)
	}
	// The data reuses the buffer too: a shorter request leaves nothing of
	// the longer one behind.
	long := &schemas.WhoAmIRequest{UserToken: strings.Repeat("t", 100)}
	if _, b, _ := enc.EncodeInto(&buf, schemas.TypeWhoAmIRequest, long); string(b) != string(long.AppendJSON(nil)) {
		t.Errorf("data %s", b)
	}
	short := &schemas.WhoAmIRequest{UserToken: "u"}
	if _, b, _ := enc.EncodeInto(&buf, schemas.TypeWhoAmIRequest, short); string(b) != `{"user_token":"u"}` {
		t.Errorf("data after reuse %s", b)
	}

	var hb headerBlock
	big, _ := NewEvent(schemas.TypeSysInfoReply, &schemas.SysInfo{})
	setExtension(big, ExtTraceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	big.SetSubject("s")
	if h := encodeV1(big.Context.(*event.EventContextV1), &hb, ""); len(h) != 8 || h["ce-traceparent"] == nil {
		t.Fatalf("first: %v", sortedHeader(h))
	}
	small, _ := NewEvent(schemas.TypeSysInfoReply, &schemas.SysInfo{})
	h := encodeV1(small.Context.(*event.EventContextV1), &hb, "")
	want, _, _ := Encode(small)
	if !reflect.DeepEqual(map[string][]string(h), map[string][]string(want)) {
		t.Errorf("reused block: %v, want %v", sortedHeader(h), sortedHeader(want))
	}
}

// TestDecodeReply: the direct path and ParseReply (+ the type check and
// DecodeData) agree on every reply: the same value, or both an error of
// the same kind.
func TestDecodeReply(t *testing.T) {
	const want = schemas.TypeSysInfoReply
	reply := func(mod func(nats.Header)) *nats.Msg {
		e, err := NewEvent(want, &schemas.SysInfo{Service: "agentauth", Version: "1.2.3", Agent: "a1"})
		if err != nil {
			t.Fatal(err)
		}
		setExtension(e, ExtTraceparent, testTraceparent)
		h, body, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(h)
		}
		return &nats.Msg{Header: h, Data: body}
	}
	errReply := func() *nats.Msg {
		e, _ := NewEvent(schemas.ErrorType, schemas.ErrorData{Code: schemas.CodeDenied, Message: "no"})
		h, body, _ := Encode(e)
		h[micro.ErrorCodeHeader] = []string{"403"}
		h[micro.ErrorHeader] = []string{"no"}
		return &nats.Msg{Header: h, Data: body}
	}
	for _, tc := range []struct {
		name   string
		msg    *nats.Msg
		direct bool // read without ParseReply
		ok     bool
	}{
		{"plain", reply(nil), true, true},
		{"no time", reply(func(h nats.Header) { delete(h, "ce-time") }), true, true},
		{"escaped id", reply(func(h nats.Header) { h["ce-id"] = []string{"a%20b"} }), false, true},
		{"upper-case header", reply(func(h nats.Header) { h["CE-ID"] = h["ce-id"]; delete(h, "ce-id") }), false, true},
		{"case duplicate", reply(func(h nats.Header) { h["CE-ID"] = []string{"x"} }), false, false},
		{"repeated value", reply(func(h nats.Header) { h["ce-id"] = []string{"x", "y"} }), false, false},
		{"bad time", reply(func(h nats.Header) { h["ce-time"] = []string{"yesterday"} }), false, false},
		{"bad escape", reply(func(h nats.Header) { h["ce-id"] = []string{"%zz"} }), false, false},
		{"no id", reply(func(h nats.Header) { delete(h, "ce-id") }), false, false},
		{"no source", reply(func(h nats.Header) { delete(h, "ce-source") }), false, false},
		{"other type", reply(func(h nats.Header) { h["ce-type"] = []string{schemas.TypeWhoAmIReply} }), false, false},
		{"wrong specversion", reply(func(h nats.Header) { h["ce-specversion"] = []string{"0.3"} }), false, false},
		{"error reply", errReply(), false, false},
		{"no responders", &nats.Msg{Header: nats.Header{"Status": []string{"503"}}}, false, false},
		{"other content type", reply(func(h nats.Header) { h[HeaderContentType] = []string{"text/plain"} }), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := plainReply(tc.msg.Header, want); got != tc.direct {
				t.Errorf("read directly: %v, want %v", got, tc.direct)
			}
			var got schemas.SysInfo
			err := DecodeReply(tc.msg, want, &got)
			var slow schemas.SysInfo
			slowErr := func() error {
				e, err := ParseReply(tc.msg)
				if err != nil {
					return err
				}
				if e.Type() != want {
					return errors.New("type")
				}
				return DecodeData(e, &slow)
			}()
			if (err == nil) != tc.ok || (slowErr == nil) != tc.ok {
				t.Fatalf("DecodeReply: %v, ParseReply path: %v; want success %v", err, slowErr, tc.ok)
			}
			var re, slowRE *ReplyError
			if errors.As(err, &re) != errors.As(slowErr, &slowRE) {
				t.Errorf("error kinds differ: %v and %v", err, slowErr)
			}
			if tc.ok && (!reflect.DeepEqual(got, slow) || got.Version != "1.2.3") {
				t.Errorf("decoded %+v, ParseReply path %+v", got, slow)
			}
		})
	}
}

// TestNewIDUnique: ids drawn concurrently from the pooled generators are
// NUIDs and never repeat.
func TestNewIDUnique(t *testing.T) {
	const goroutines, each = 8, 20000
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				ids[g] = append(ids[g], newID())
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*each)
	for _, list := range ids {
		for _, id := range list {
			if len(id) != 22 || seen[id] {
				t.Fatalf("id %q: repeated or not a NUID", id)
			}
			seen[id] = true
		}
	}
}
