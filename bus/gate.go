package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// gate counts the requests in flight and, once closed, admits no more.
// micro's Stop only starts draining the endpoint subscriptions: requests
// already delivered keep reaching the callbacks for a while, and the gate
// refuses them instead of racing the shutdown. Lock-free, as it is on
// every request's path.
type gate struct {
	n       atomic.Int64  // requests in flight, plus gateClosed once closed
	entered atomic.Uint64 // requests admitted so far
	once    sync.Once
	idle    chan struct{} // closed when the gate is closed and nothing is in flight
}

const gateClosed = 1 << 40

func newGate() *gate { return &gate{idle: make(chan struct{})} }

// enter admits a request, or reports that the gate is closed.
func (g *gate) enter() bool {
	if g.n.Add(1) >= gateClosed {
		g.leave()
		return false
	}
	g.entered.Add(1)
	return true
}

// hold counts work handed on by an admitted request (a worker job, a
// handler outliving its timeout); it is admitted whatever the gate's
// state, as the request holding the gate keeps it from becoming idle.
func (g *gate) hold() { g.n.Add(1) }

// leave ends what enter admitted or hold counted.
func (g *gate) leave() {
	if g.n.Add(-1) == gateClosed {
		g.once.Do(func() { close(g.idle) })
	}
}

// close stops admitting requests; idle is closed once the last one left.
func (g *gate) close() {
	for {
		v := g.n.Load()
		if v >= gateClosed {
			return
		}
		if g.n.CompareAndSwap(v, v+gateClosed) {
			if v == 0 {
				g.once.Do(func() { close(g.idle) })
			}
			return
		}
	}
}

// quiet waits until nothing is in flight and nothing was admitted for
// gap, or ctx ends.
func (g *gate) quiet(ctx context.Context, gap time.Duration) error {
	for {
		seen := g.entered.Load()
		if g.n.Load()%gateClosed == 0 {
			select {
			case <-time.After(gap):
			case <-ctx.Done():
				return ctx.Err()
			}
			if g.entered.Load() == seen && g.n.Load()%gateClosed == 0 {
				return nil
			}
			continue
		}
		select {
		case <-time.After(gap / 4):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
