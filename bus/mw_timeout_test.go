package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

func TestTimeoutExpires(t *testing.T) {
	release := make(chan struct{})
	handlerCtxErr := make(chan error, 1)
	h := Timeout(20 * time.Millisecond)(HandlerFunc(func(ctx context.Context, _ *Request) (*event.Event, error) {
		<-release
		handlerCtxErr <- ctx.Err()
		return NewEvent(schemas.TypeSysInfoReply, struct{}{})
	}))
	reply, err := h.ServeEvent(t.Context(), request(sysInfoEvent(t)))
	close(release)
	if reply != nil {
		t.Errorf("got reply %v, want none: a late reply is discarded", reply)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != schemas.CodeTimeout {
		t.Fatalf("got %v, want an *Error with code %s", err, schemas.CodeTimeout)
	}
	if got := Classify(err); got.Code != schemas.CodeTimeout || got.Action != Nak {
		t.Errorf("classified as %s/%s, want timeout/nak", got.Code, got.Action)
	}
	if got := <-handlerCtxErr; !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("handler context: got %v, want %v", got, context.DeadlineExceeded)
	}
}

func TestTimeoutFastHandler(t *testing.T) {
	next, want := replyWith(t)
	reply, err := Timeout(time.Minute)(next).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	if reply != want {
		t.Errorf("got reply %v, want the handler's", reply)
	}

	wantErr := Errorf(schemas.CodeForbidden, "no")
	_, err = Timeout(time.Minute)(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
		return nil, wantErr
	})).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if !errors.Is(err, wantErr) {
		t.Errorf("got %v, want the handler's error", err)
	}
}

func TestTimeoutHandlerSeesDeadline(t *testing.T) {
	var hasDeadline bool
	_, err := Timeout(time.Minute)(HandlerFunc(func(ctx context.Context, _ *Request) (*event.Event, error) {
		_, hasDeadline = ctx.Deadline()
		return NewEvent(schemas.TypeSysInfoReply, struct{}{})
	})).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if err != nil {
		t.Fatal(err)
	}
	if !hasDeadline {
		t.Errorf("handler context has no deadline, want one")
	}
}
