package bus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Recover turns a handler panic into an internal error (so the caller gets
// an error reply and the service keeps serving) and logs the stack.
func Recover(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (reply *event.Event, err error) {
			defer func() {
				if p := recover(); p != nil {
					log.Error("handler panic", "subject", req.Subject, "agent", req.Agent, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					reply, err = nil, fmt.Errorf("panic in handler for %s: %v", req.Op.Endpoint(), p)
				}
			}()
			return next.ServeEvent(ctx, req)
		})
	}
}
