package approval

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// pendingIndex is Run's view of the pending requests, by person, fed by
// its watch of the store, so that an inbox opening does not read every
// stored request. rev is the highest store revision the watch delivered.
type pendingIndex struct {
	mu      sync.Mutex
	rev     uint64
	grown   chan struct{} // closed (and replaced) when rev grows
	byUser  map[UserRef]map[string]Request
	stopped bool
}

func newPendingIndex() *pendingIndex {
	return &pendingIndex{grown: make(chan struct{}), byUser: map[UserRef]map[string]Request{}}
}

// seen records r as stored at revision rev.
func (x *pendingIndex) seen(r Request, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r.State == schemas.ApprovalPending {
		m := x.byUser[r.User]
		if m == nil {
			m = map[string]Request{}
			x.byUser[r.User] = m
		}
		m[r.ID] = r
	} else if m := x.byUser[r.User]; m != nil {
		delete(m, r.ID)
		if len(m) == 0 {
			delete(x.byUser, r.User)
		}
	}
	if rev > x.rev {
		x.rev = rev
		close(x.grown)
		x.grown = make(chan struct{})
	}
}

// stop marks the index as no longer fed (its watch ended).
func (x *pendingIndex) stop() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.stopped = true
	close(x.grown)
	x.grown = make(chan struct{})
}

// indexCatchUp bounds how long Pending waits for the watch to reach what
// the store holds before reading the store itself.
const indexCatchUp = 2 * time.Second

// pending returns u's pending requests as of revision last or later
// (waiting for the watch to deliver it), unexpired at now, oldest first;
// false when the index cannot answer (stopped, or behind for longer than
// indexCatchUp).
func (x *pendingIndex) pending(ctx context.Context, last uint64, u UserRef, now time.Time) ([]Request, bool) {
	timeout := time.NewTimer(indexCatchUp)
	defer timeout.Stop()
	for {
		x.mu.Lock()
		if x.stopped {
			x.mu.Unlock()
			return nil, false
		}
		if x.rev >= last {
			var out []Request
			for _, r := range x.byUser[u] {
				if now.Before(r.Expires) {
					out = append(out, r)
				}
			}
			x.mu.Unlock()
			SortOldestFirst(out)
			return out, true
		}
		grown := x.grown
		x.mu.Unlock()
		select {
		case <-grown:
		case <-timeout.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// SortOldestFirst orders requests oldest first, by id for the same instant
// (a stable order for listings).
func SortOldestFirst(rs []Request) {
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].Created.Equal(rs[j].Created) {
			return rs[i].Created.Before(rs[j].Created)
		}
		return rs[i].ID < rs[j].ID
	})
}
