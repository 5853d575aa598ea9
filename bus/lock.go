package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LocksBucket is the KV bucket of short leases that serialize work across
// agentauth instances (one refresh of a vault connection at a time).
const LocksBucket = "AGENTAUTH_LOCKS"

// Locker hands out leases with JetStream compare-and-set: Lock creates the
// key (which fails while another holder has it) with a per-key TTL, so a
// lease whose holder died expires by itself; Unlock deletes it at the
// revision it created.
type Locker struct {
	kv    jetstream.KeyValue
	ttl   time.Duration
	owner string
}

// NewLocker opens (or creates) the locks bucket. ttl bounds a lease whose
// holder stops without unlocking.
func NewLocker(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration, owner string) (*Locker, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         LocksBucket,
		Description:    "agentauth leases across instances (vault refresh single-flight)",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: locks bucket: %w", err)
	}
	return &Locker{kv: kv, ttl: ttl, owner: owner}, nil
}

// Lock takes the lease for key, waiting (polling with backoff) while
// another holder has it, until ctx ends.
func (l *Locker) Lock(ctx context.Context, key string) (func(), error) {
	wait := 2 * time.Millisecond
	for {
		rev, err := l.kv.Create(ctx, key, []byte(l.owner), jetstream.KeyTTL(l.ttl))
		if err == nil {
			return func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = l.kv.Delete(ctx, key, jetstream.LastRevision(rev))
			}, nil
		}
		if !casConflict(err) {
			return nil, fmt.Errorf("bus: lease %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: lease %s is held by another instance: %w", key, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 100*time.Millisecond)
	}
}
