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
// next runs on another goroutine: a Recover outside Timeout does not
// cover it, so put one inside too (Server.Handle does).
func Timeout(d time.Duration) Middleware { return timeout(d, nil) }

// timeout is Timeout, counting each handler in g until it returns, also
// when that is after its deadline: a server stops only once they have.
func timeout(d time.Duration, g *gate) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			type result struct {
				reply *event.Event
				err   error
			}
			done := make(chan result, 1)
			if g != nil {
				g.hold()
			}
			runners.run(func() {
				if g != nil {
					defer g.leave()
				}
				r, err := next.ServeEvent(ctx, req)
				done <- result{r, err}
			})
			select {
			case r := <-done:
				return r.reply, r.err
			case <-ctx.Done():
				return nil, Errorf(schemas.CodeTimeout, "the request did not complete within %s; try again", d)
			}
		})
	}
}

// runners are goroutines that run timed handlers: reused, so that a
// request does not pay for a new goroutine and for growing its stack
// through the handler chain. A runner whose handler outlives its timeout
// simply stays busy; more are started when none is idle.
var runners = runnerPool{idle: make(chan chan func(), 4096)}

type runnerPool struct{ idle chan chan func() }

func (p runnerPool) run(f func()) {
	select {
	case work := <-p.idle:
		work <- f
	default:
		work := make(chan func(), 1)
		work <- f
		go p.loop(work)
	}
}

func (p runnerPool) loop(work chan func()) {
	for f := range work {
		f()
		select {
		case p.idle <- work:
		default:
			return // enough idle runners
		}
	}
}
