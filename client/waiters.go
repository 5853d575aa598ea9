package client

import (
	"context"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// feedWaiters dispatches the events of one durable consumer of the
// agent's feed (one subject) to the waits of a Client that are looking
// for them, and keeps recent events for a wait that starts a moment late.
// The subscription starts with the first wait and runs until the Client
// closes. Every event is acknowledged: waiting is for this Client, not a
// queue. So an event acknowledged by an earlier process of the agent is
// only in that process's memory: a wait that can ask the service for the
// state it waits for does so (the check of wait).
type feedWaiters struct {
	consumer func(agent string) string // durable consumer name
	filter   func(agent string) string // its subject
	// key, when set, names the one request an event answers (an
	// auth_req_id): waits by key find it without looking at the others.
	key func(*event.Event) string

	mu      sync.Mutex
	waiters map[*feedWait]struct{}
	recent  []*event.Event          // oldest first, at most maxRecent
	byKey   map[string]*event.Event // the recent ones, by key
	sub     *Subscription
	cancel  context.CancelFunc
}

type feedWait struct {
	key   string
	match func(*event.Event) bool
	found chan struct{}
}

// checkAfter is how long a wait gives the feed before it asks the service
// once (the check of wait).
const checkAfter = time.Second

// Recent events are kept ten minutes, at most maxRecent of them.
const (
	recentEvents = 10 * time.Minute
	maxRecent    = 1024
)

// wait blocks until an event arrives (or has arrived recently) that has
// key (when key is not empty) and for which match returns true, or ctx
// ends. check, when set, runs once if nothing arrived within checkAfter
// of registering (so nothing published meanwhile is missed, and a prompt
// answer costs no extra request): an answer it finds elsewhere ends the
// wait (done true; its error is returned).
func (f *feedWaiters) wait(ctx context.Context, c *Client, key string, match func(*event.Event) bool, check func(context.Context) (done bool, err error)) error {
	w := &feedWait{key: key, match: match, found: make(chan struct{}, 1)}
	if err := f.add(ctx, c, w); err != nil {
		return err
	}
	defer f.remove(w)
	if check != nil {
		t := time.NewTimer(checkAfter)
		defer t.Stop()
		select {
		case <-w.found:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if done, err := check(ctx); done {
			return err
		}
	}
	select {
	case <-w.found:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *feedWait) wants(key string, e *event.Event) bool {
	return (w.key == "" || w.key == key) && w.match(e)
}

func (f *feedWaiters) keyOf(e *event.Event) string {
	if f.key == nil {
		return ""
	}
	return f.key(e)
}

func (f *feedWaiters) add(ctx context.Context, c *Client, w *feedWait) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.key != "" {
		if e, ok := f.byKey[w.key]; ok && w.match(e) {
			w.found <- struct{}{}
			return nil
		}
	} else {
		for _, e := range f.recent {
			if w.match(e) {
				w.found <- struct{}{}
				return nil
			}
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
	key := f.keyOf(e)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byKey == nil {
		f.byKey = map[string]*event.Event{}
	}
	now := time.Now()
	for len(f.recent) > 0 && (len(f.recent) >= maxRecent || now.Sub(f.recent[0].Time()) > recentEvents) {
		if k := f.keyOf(f.recent[0]); k != "" && f.byKey[k] == f.recent[0] {
			delete(f.byKey, k)
		}
		f.recent = f.recent[1:]
	}
	f.recent = append(f.recent, e)
	if key != "" {
		f.byKey[key] = e
	}
	for w := range f.waiters {
		if w.wants(key, e) {
			select {
			case w.found <- struct{}{}:
			default:
			}
		}
	}
}

// remove drops a wait; the subscription stays for the next one (it ends
// with the Client), so a wait does not pay for creating a consumer.
func (f *feedWaiters) remove(w *feedWait) {
	f.mu.Lock()
	delete(f.waiters, w)
	f.mu.Unlock()
}

// close ends the subscription, if any.
func (f *feedWaiters) close() {
	f.mu.Lock()
	sub, cancel := f.sub, f.cancel
	f.sub, f.cancel = nil, nil
	f.mu.Unlock()
	if sub != nil {
		sub.Stop()
		cancel()
	}
}
