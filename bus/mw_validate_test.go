package bus

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

func TestValidate(t *testing.T) {
	v := schemas.MustValidator()
	for _, tc := range []struct {
		name   string
		modify func(e *event.Event)
		want   schemas.ErrorCode // "" when the request reaches the handler
	}{
		{"valid", func(*event.Event) {}, ""},
		{"no data", func(e *event.Event) { e.DataEncoded = nil }, ""},
		{"no datacontenttype", func(e *event.Event) { _ = e.Context.SetDataContentType("") }, ""},
		{"+json media type", func(e *event.Event) { e.SetDataContentType("application/vnd.agentauth+json; charset=utf-8") }, ""},
		{"source of another agent", func(e *event.Event) { e.SetSource(schemas.AgentSource("a2")) }, schemas.CodeSourceMismatch},
		{"service source", func(e *event.Event) { e.SetSource(schemas.ServiceSource) }, schemas.CodeSourceMismatch},
		{"reply type", func(e *event.Event) { e.SetType(schemas.TypeSysInfoReply) }, schemas.CodeUnknownType},
		{"unknown type", func(e *event.Event) { e.SetType("dev.agentauth.nope") }, schemas.CodeUnknownType},
		{"text/plain", func(e *event.Event) { e.SetDataContentType("text/plain") }, schemas.CodeUnsupportedContent},
		{"unparsable media type", func(e *event.Event) { e.SetDataContentType("application/json; =") }, schemas.CodeUnsupportedContent},
		{"data failing the schema", func(e *event.Event) { e.DataEncoded = []byte(`{"x":1}`) }, schemas.CodeSchemaViolation},
		{"data not an object", func(e *event.Event) { e.DataEncoded = []byte(`[]`) }, schemas.CodeSchemaViolation},
		{"data not JSON", func(e *event.Event) { e.DataEncoded = []byte(`{`) }, schemas.CodeSchemaViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sysInfoEvent(t)
			tc.modify(e)
			called := false
			next, wantReply := replyWith(t)
			h := Validate(v)(HandlerFunc(func(ctx context.Context, r *Request) (*event.Event, error) {
				called = true
				return next.ServeEvent(ctx, r)
			}))
			reply, err := h.ServeEvent(t.Context(), request(e))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want the request to reach the handler", err)
				}
				if !called || reply != wantReply {
					t.Errorf("handler called %v, reply %v; want the handler's reply", called, reply)
				}
				return
			}
			if called {
				t.Errorf("the handler was called, want the request rejected before it")
			}
			var ve *Error
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want an *Error with code %s", err, tc.want)
			}
			if ve.Code != tc.want {
				t.Errorf("got code %s (%s), want %s", ve.Code, ve.Message, tc.want)
			}
			if ve.Message == "" {
				t.Errorf("got an empty message, want one telling what to change")
			}
		})
	}
}

func TestValidateDecodeError(t *testing.T) {
	decodeErr := &DecodeError{Code: schemas.CodeInvalidHeaderEncoding, Reason: "header ce-id: bad percent-encoding"}
	req := request(nil)
	req.decodeErr = decodeErr
	called := false
	reply, err := Validate(schemas.MustValidator())(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
		called = true
		return nil, nil
	})).ServeEvent(t.Context(), req)
	if called || reply != nil {
		t.Errorf("handler called %v, reply %v; want neither", called, reply)
	}
	var de *DecodeError
	if !errors.As(err, &de) || de != decodeErr {
		t.Fatalf("got %v, want the decode error itself", err)
	}
	if got := Classify(err); got.Code != schemas.CodeInvalidHeaderEncoding || got.Message != decodeErr.Reason {
		t.Errorf("classified as %s %q, want %s %q", got.Code, got.Message, schemas.CodeInvalidHeaderEncoding, decodeErr.Reason)
	}
}
