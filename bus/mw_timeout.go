package bus

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

// Timeout bounds a handler: its context is cancelled after d, and if it has
// not returned by then the request fails with a timeout error while the
// handler finishes in the background (its late reply is discarded).
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			type result struct {
				reply *event.Event
				err   error
			}
			done := make(chan result, 1)
			go func() {
				r, err := next.ServeEvent(ctx, req)
				done <- result{r, err}
			}()
			select {
			case r := <-done:
				return r.reply, r.err
			case <-ctx.Done():
				return nil, Errorf(schemas.CodeTimeout, "the request did not complete within %s; try again", d)
			}
		})
	}
}
