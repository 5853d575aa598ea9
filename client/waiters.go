package client

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// feedWaiters dispatches the events of one durable consumer of the
// agent's feed (one subject) to the waits of a Client that are looking
// for them, and keeps recent events for a wait that starts a moment late.
// The subscription runs while someone waits. Every event is
// acknowledged: waiting is for this Client, not a queue.
type feedWaiters struct {
	consumer func(agent string) string // durable consumer name
	filter   func(agent string) string // its subject

	mu      sync.Mutex
	waiters map[*feedWait]struct{}
	recent  []*event.Event
	sub     *Subscription
	cancel  context.CancelFunc
}

type feedWait struct {
	match func(*event.Event) bool
	found chan struct{}
}

// recentEvents is how long delivered events are kept for late waits.
const recentEvents = 10 * time.Minute

// wait blocks until an event for which match returns true arrives (or has
// arrived recently), or ctx ends.
func (f *feedWaiters) wait(ctx context.Context, c *Client, match func(*event.Event) bool) error {
	w := &feedWait{match: match, found: make(chan struct{}, 1)}
	if err := f.add(ctx, c, w); err != nil {
		return err
	}
	defer f.remove(w)
	select {
	case <-w.found:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *feedWaiters) add(ctx context.Context, c *Client, w *feedWait) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.recent {
		if w.match(e) {
			w.found <- struct{}{}
			return nil
		}
	}
	if f.waiters == nil {
		f.waiters = map[*feedWait]struct{}{}
	}
	f.waiters[w] = struct{}{}
	if f.sub != nil {
		return nil
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cc, err := bus.Consume(sctx, c.js, bus.ConsumerOptions{
		Stream:  schemas.StreamEvents,
		Durable: f.consumer(c.agent),
		Filter:  []string{f.filter(c.agent)},
	}, nil, c.log, func(_ context.Context, d *bus.Delivery) error {
		f.deliver(d.Event)
		return nil
	})
	if err != nil {
		cancel()
		delete(f.waiters, w)
		return err
	}
	f.sub, f.cancel = &Subscription{cc: cc}, cancel
	return nil
}

func (f *feedWaiters) deliver(e *event.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.recent = slices.DeleteFunc(f.recent, func(x *event.Event) bool { return now.Sub(x.Time()) > recentEvents })
	f.recent = append(f.recent, e)
	for w := range f.waiters {
		if w.match(e) {
			select {
			case w.found <- struct{}{}:
			default:
			}
		}
	}
}

func (f *feedWaiters) remove(w *feedWait) {
	f.mu.Lock()
	delete(f.waiters, w)
	var sub *Subscription
	var cancel context.CancelFunc
	if len(f.waiters) == 0 && f.sub != nil {
		sub, cancel, f.sub, f.cancel = f.sub, f.cancel, nil, nil
	}
	f.mu.Unlock()
	if sub != nil {
		sub.Stop()
		cancel()
	}
}
