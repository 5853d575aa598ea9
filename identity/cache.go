package identity

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/agentauth/agentauth/internal/blocking"
)

// CachingVerifier remembers successful verifications by the SHA-256 of
// the exact token and the verify options, until the token expires, so a
// token an agent presents again is not parsed and its signature not
// checked again. Failures are never cached. At most Max entries are kept
// (default 100,000); when full, expired entries are dropped, then an
// arbitrary half. Safe for concurrent use.
type CachingVerifier struct {
	Next interface {
		Verify(ctx context.Context, raw string, o VerifyOptions) (*User, error)
	}
	Max int
	Now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

type cacheKey struct {
	sum  [32]byte
	kind Kind
	azp  string
}

type cacheEntry struct {
	user User
	exp  time.Time
}

// Verify returns the cached identity of raw or verifies it with Next.
func (c *CachingVerifier) Verify(ctx context.Context, raw string, o VerifyOptions) (*User, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	k := cacheKey{sum: sha256.Sum256([]byte(raw)), kind: o.Kind, azp: o.AuthorizedParty}
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && now().Before(e.exp) {
		u := e.user
		return &u, nil
	}
	// Verifying may fetch the issuer's keys.
	if err := blocking.Check(ctx); err != nil {
		return nil, err
	}
	u, err := c.Next.Verify(ctx, raw, o)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[cacheKey]cacheEntry)
	}
	max := c.Max
	if max <= 0 {
		max = 100_000
	}
	if len(c.entries) >= max {
		t := now()
		for key, e := range c.entries {
			if !t.Before(e.exp) {
				delete(c.entries, key)
			}
		}
		for key := range c.entries {
			if len(c.entries) < max/2 {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = cacheEntry{user: *u, exp: u.Expiry}
	return u, nil
}
