// Package blocking lets code that may wait (on the network, the disk, or a
// lock held across either) find out, before it waits, that its caller runs
// it on a goroutine that must not: a NATS subscription's, which would hold
// up every request behind it. The caller then serves the request again
// where waiting is fine.
package blocking

import (
	"context"
	"errors"
)

// ErrWouldBlock is Check's answer in a context that forbids waiting.
var ErrWouldBlock = errors.New("the request has to wait for I/O: serve it where waiting is allowed")

type forbidKey struct{}

// Forbid returns a context in which Check reports ErrWouldBlock.
func Forbid(ctx context.Context) context.Context {
	return context.WithValue(ctx, forbidKey{}, true)
}

// Check returns ErrWouldBlock when ctx forbids waiting, nil otherwise. Call
// it before anything that may wait, and return its error unchanged.
func Check(ctx context.Context) error {
	if ctx.Value(forbidKey{}) != nil {
		return ErrWouldBlock
	}
	return nil
}
