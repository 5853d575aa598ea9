package bus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

func TestRecover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		want  string
	}{
		{"string", "boom", "boom"},
		{"error", errors.New("nil map write"), "nil map write"},
		{"runtime error", nil, "index out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			h := Recover(log)(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
				if tc.value == nil {
					var s []int
					_ = s[3]
				}
				panic(tc.value)
			}))
			reply, err := h.ServeEvent(t.Context(), request(sysInfoEvent(t)))
			if reply != nil {
				t.Errorf("got a reply %v, want none", reply)
			}
			if err == nil {
				t.Fatal("got no error, want one")
			}
			f := Classify(err)
			if f.Code != schemas.CodeInternal || !f.Internal {
				t.Errorf("got code %s internal %v, want internal true", f.Code, f.Internal)
			}
			if strings.Contains(f.Message, tc.want) {
				t.Errorf("message %q shows the panic, want it hidden", f.Message)
			}
			logged := buf.String()
			for _, want := range []string{"handler panic", tc.want, "agentauth.a1.sys.info", "stack="} {
				if !strings.Contains(logged, want) {
					t.Errorf("log %q does not contain %q", logged, want)
				}
			}
			if !strings.Contains(logged, "level=ERROR") {
				t.Errorf("log %q is not at error level", logged)
			}
		})
	}
}

func TestRecoverPassesThrough(t *testing.T) {
	var buf bytes.Buffer
	next, want := replyWith(t)
	reply, err := Recover(slog.New(slog.NewTextHandler(&buf, nil)))(next).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if err != nil || reply != want {
		t.Errorf("got %v, %v; want the handler's reply and no error", reply, err)
	}
	wantErr := Errorf(schemas.CodeNotFound, "x")
	_, err = Recover(slog.New(slog.NewTextHandler(&buf, nil)))(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
		return nil, wantErr
	})).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if !errors.Is(err, wantErr) {
		t.Errorf("got %v, want the handler's error", err)
	}
	if buf.Len() != 0 {
		t.Errorf("got log %q, want nothing logged without a panic", buf.String())
	}
}
