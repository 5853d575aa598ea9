package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/agents"
)

// TestLockerExclusive: two lockers (two instances, two connections) never
// hold one lease at once; different keys do not wait for each other.
func TestLockerExclusive(t *testing.T) {
	ns := MustServer(t)
	var lockers []*Locker
	for _, owner := range []string{"a", "b"} {
		js, err := JetStream(MustConn(t, ns))
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLocker(t.Context(), js, 1, 30*time.Second, owner)
		if err != nil {
			t.Fatal(err)
		}
		lockers = append(lockers, l)
	}
	var inside, most, total atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			unlock, err := lockers[i%2].Lock(ctx, "vault.user.demo")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			inside.Add(-1)
			total.Add(1)
			unlock()
		}()
	}
	wg.Wait()
	if most.Load() != 1 || total.Load() != 20 {
		t.Fatalf("at most %d holders at once (want 1), %d leases (want 20)", most.Load(), total.Load())
	}
	// Another key is free while this one is held.
	unlock, err := lockers[0].Lock(t.Context(), "vault.user.one")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	u2, err := lockers[1].Lock(ctx, "vault.user.two")
	if err != nil {
		t.Fatalf("another key waited: %v", err)
	}
	u2()
	// The held key is not: the wait ends with the context and says why.
	short, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	if _, err := lockers[1].Lock(short, "vault.user.one"); err == nil {
		t.Fatal("a held lease was taken twice")
	}
}

// TestLockerExpires: the lease of a holder that died (never unlocked)
// expires by itself after its TTL.
func TestLockerExpires(t *testing.T) {
	ns := MustServer(t)
	js, err := JetStream(MustConn(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocker(t.Context(), js, 1, time.Second, "dead")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(t.Context(), "vault.k"); err != nil { // never unlocked
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	unlock, err := l.Lock(ctx, "vault.k")
	if err != nil {
		t.Fatalf("the dead holder's lease never expired: %v", err)
	}
	unlock()
}

// replicatedKV answers Create and Update as a replicated (R>1) bucket
// does when the compare-and-set loses: API error code 10164, wrapped in
// ErrKeyExists or, for a key holding a delete marker, in
// ErrKeyRevisionMismatch.
type replicatedKV struct {
	jetstream.KeyValue
	createErr, updateErr error
	creates              int
}

func (r *replicatedKV) Create(context.Context, string, []byte, ...jetstream.KVCreateOpt) (uint64, error) {
	r.creates++
	return 0, r.createErr
}

func (r *replicatedKV) Update(context.Context, string, []byte, uint64) (uint64, error) {
	return 0, r.updateErr
}

var errR3Conflict = &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}

// TestCASConflictReplicated: a lost compare-and-set on a replicated bucket
// is a conflict like on R1: the lease is waited for (after an unlock left
// a delete marker), an agent update reports ErrConflict.
func TestCASConflictReplicated(t *testing.T) {
	for name, err := range map[string]error{
		"key exists":                   fmt.Errorf("%w: %w", errR3Conflict, jetstream.ErrKeyExists),
		"revision moved (delete mark)": fmt.Errorf("%w: %w", errR3Conflict, jetstream.ErrKeyRevisionMismatch),
	} {
		kv := &replicatedKV{createErr: err, updateErr: err}
		l := &Locker{kv: kv, ttl: time.Minute, owner: "test"}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		_, lerr := l.Lock(ctx, "k")
		cancel()
		if !errors.Is(lerr, context.DeadlineExceeded) || kv.creates < 2 {
			t.Errorf("%s: Lock: %v after %d tries; want it to wait for the holder until the deadline", name, lerr, kv.creates)
		}
		if uerr := (&AgentStore{kv: kv}).Update(t.Context(), agents.Agent{ID: "a1"}, 3); !errors.Is(uerr, agents.ErrConflict) {
			t.Errorf("%s: agent Update: %v, want ErrConflict", name, uerr)
		}
	}
}
