package bus

import (
	"context"
	"testing"
	"time"
)

// TestSessionStore: a stored session reads back, a key is never stored
// twice, a purged or expired session reads as none, and a taken one is
// taken once.
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
	// Taken once: of 8 concurrent takers exactly one gets the value.
	if err := s.PutSession(ctx, "once", []byte(`{"v":1}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 8)
	for range 8 {
		go func() {
			v, err := s.TakeSession(ctx, "once")
			if err != nil {
				t.Error(err)
			}
			got <- v
		}()
	}
	n := 0
	for range 8 {
		if v := <-got; v != nil {
			n++
			if string(v) != `{"v":1}` {
				t.Errorf("taken value %q", v)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d takers got the value, want 1", n)
	}
	if v, err := s.TakeSession(ctx, "once"); v != nil || err != nil {
		t.Errorf("taken again: %q, %v", v, err)
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

// TestSessionStoreBounded: the bucket, which anonymous browsers write to
// (logins in progress), has a size bound.
func TestSessionStoreBounded(t *testing.T) {
	js := MustJetStream(t)
	ctx := t.Context()
	if _, err := NewSessionStore(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+SessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got != SessionsMaxBytes {
		t.Errorf("sessions bucket MaxBytes = %d, want %d", got, SessionsMaxBytes)
	}
}
