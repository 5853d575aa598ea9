package bus

import (
	"context"
	"testing"
	"time"
)

// TestSessionStore: a stored session reads back, a key is never stored
// twice, a purged or expired session reads as none.
func TestSessionStore(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	s, err := NewSessionStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSession(ctx, "never"); got != nil || err != nil {
		t.Fatalf("unknown key: %q, %v; want nothing", got, err)
	}
	if err := s.PutSession(ctx, "k1", []byte(`{"a":1}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSession(ctx, "k1"); string(got) != `{"a":1}` || err != nil {
		t.Fatalf("k1: %q, %v", got, err)
	}
	if err := s.PutSession(ctx, "k1", []byte(`{"a":2}`), time.Hour); err == nil {
		t.Error("a second session under the same key was stored")
	}
	if got, _ := s.GetSession(ctx, "k1"); string(got) != `{"a":1}` {
		t.Errorf("k1 after the refused put: %q", got)
	}
	if err := s.DeleteSession(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSession(ctx, "k1"); got != nil || err != nil {
		t.Errorf("k1 after delete: %q, %v", got, err)
	}
	if err := s.PutSession(ctx, "short", []byte(`{}`), time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s.GetSession(ctx, "short")
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a session with a one-second TTL is still there after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Opening the bucket again (another instance, a restart) keeps it.
	if err := s.PutSession(ctx, "k2", []byte(`{}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	again, err := NewSessionStore(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := again.GetSession(ctx, "k2"); string(got) != `{}` {
		t.Errorf("k2 through a second store: %q", got)
	}
}
