package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SessionsBucket holds the browser sessions of agentauth's HTTP edge.
const SessionsBucket = "AGENTAUTH_SESSIONS"

// SessionsMaxBytes bounds the sessions bucket (sessions and logins in
// progress, which anonymous browsers create). When it is full, new
// entries are refused (the edge answers 503) until old ones expire;
// nothing stored is evicted. About 64 MiB holds some 200,000 entries.
const SessionsMaxBytes = 64 << 20

// SessionStore keeps browser sessions in a JetStream KV bucket, each with
// its own TTL, so that every instance of the edge finds them and a
// restart does not log anyone out. It stores what the caller gives it;
// the caller keys sessions by a hash of the cookie, never the cookie.
type SessionStore struct{ kv jetstream.KeyValue }

// NewSessionStore opens (or creates) the sessions bucket.
func NewSessionStore(ctx context.Context, js jetstream.JetStream, replicas int) (*SessionStore, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         SessionsBucket,
		Description:    "agentauth browser sessions (keyed by a hash of the session cookie)",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		MaxValueSize:   16 << 10,
		MaxBytes:       SessionsMaxBytes,
		LimitMarkerTTL: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: sessions bucket: %w", err)
	}
	return &SessionStore{kv: kv}, nil
}

// PutSession stores a new session under key for ttl (at least a second).
func (s *SessionStore) PutSession(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if _, err := s.kv.Create(ctx, key, value, jetstream.KeyTTL(max(ttl, time.Second))); err != nil {
		return fmt.Errorf("bus: store session: %w", err)
	}
	return nil
}

// GetSession returns the session stored under key, or nil when there is
// none (never stored, expired or deleted).
func (s *SessionStore) GetSession(ctx context.Context, key string) ([]byte, error) {
	e, err := s.entry(ctx, key)
	if e == nil {
		return nil, err
	}
	return e.Value(), nil
}

// entry is key's current entry, or nil when there is none.
func (s *SessionStore) entry(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bus: read session: %w", err)
	}
	return e, nil
}

// TakeSession returns what is stored under key and removes it, once: of
// several concurrent takers one gets the value, the others nil.
func (s *SessionStore) TakeSession(ctx context.Context, key string) ([]byte, error) {
	e, err := s.entry(ctx, key)
	if e == nil {
		return nil, err
	}
	if err := s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		if casConflict(err) {
			return nil, nil // taken by another
		}
		return nil, fmt.Errorf("bus: take session: %w", err)
	}
	return e.Value(), nil
}

// DeleteSession removes the session under key (logout).
func (s *SessionStore) DeleteSession(ctx context.Context, key string) error {
	if err := s.kv.Purge(ctx, key); err != nil {
		return fmt.Errorf("bus: delete session: %w", err)
	}
	return nil
}
