// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a log or output destination that the goroutines of a
// server or command write to while a test reads it. Safe for concurrent
// use; the zero value is ready.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor waits until text has been written, failing tb after timeout
// with what was written instead.
func (s *SyncBuffer) WaitFor(tb testing.TB, text string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(s.String(), text) {
		if time.Now().After(deadline) {
			tb.Fatalf("%q never appeared in:\n%s", text, s.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitUntil polls cond until it holds, failing tb after timeout with what
// it was waiting for.
func WaitUntil(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
