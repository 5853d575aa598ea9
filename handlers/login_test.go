package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
)

// sessionStore is a real bus.SessionStore on an embedded nats-server.
func sessionStore(t *testing.T) *bus.SessionStore {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := bus.Connect(bus.ConnOptions{URL: ns.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := bus.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bus.NewSessionStore(t.Context(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPendingLoginShared: a login started by one instance is finished by
// another that shares the store and the key, once; what is stored is
// sealed (no verifier or nonce in the clear), bound to its state, and
// useless under another key.
func TestPendingLoginShared(t *testing.T) {
	store := sessionStore(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	a := &Login{Sessions: store, StateKey: key}
	b := &Login{Sessions: store, StateKey: key}
	ctx := context.Background()
	p := pendingLogin{verifier: "verifier-" + random(), nonce: "nonce-" + random(), next: "/approvals", created: time.Now().UTC().Truncate(time.Millisecond)}
	if err := a.putPending(ctx, "state-1", p); err != nil {
		t.Fatal(err)
	}
	raw, err := store.GetSession(ctx, pendingKey("state-1"))
	if err != nil || raw == nil {
		t.Fatalf("stored: %q, %v", raw, err)
	}
	for _, secret := range []string{p.verifier, p.nonce, "state-1"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the store holds %q in the clear", secret)
		}
	}
	if len(a.pending) != 0 {
		t.Error("the login was kept in memory too")
	}
	got, ok := b.takePending(ctx, "state-1")
	if !ok || got.verifier != p.verifier || got.nonce != p.nonce || got.next != p.next || !got.created.Equal(p.created) {
		t.Fatalf("taken by the other instance: %+v, %v; want %+v", got, ok, p)
	}
	if _, ok := a.takePending(ctx, "state-1"); ok {
		t.Error("a login was taken twice")
	}

	// Moved to another state's key, or read with another key: refused.
	if err := a.putPending(ctx, "state-2", p); err != nil {
		t.Fatal(err)
	}
	sealed, _ := store.TakeSession(ctx, pendingKey("state-2"))
	if err := store.PutSession(ctx, pendingKey("state-3"), sealed, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.takePending(ctx, "state-3"); ok {
		t.Error("a sealed login moved to another state was accepted")
	}
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	if err := a.putPending(ctx, "state-4", p); err != nil {
		t.Fatal(err)
	}
	if _, ok := (&Login{Sessions: store, StateKey: other}).takePending(ctx, "state-4"); ok {
		t.Error("a login sealed under one key opened under another")
	}
	if _, ok := b.takePending(ctx, "unknown"); ok {
		t.Error("an unknown state was taken")
	}
}

// TestLocalNext: where a login may send the browser afterwards. Anything
// a browser could read as another site falls back to /whoami.
func TestLocalNext(t *testing.T) {
	for _, tc := range []struct {
		name, next, want string
	}{
		{"path with query", "/ok/path?x=1", "/ok/path?x=1"},
		{"inbox return", "/approvals?done=approved", "/approvals?done=approved"},
		{"encoded space in query", "/connections?q=a%20b", "/connections?q=a%20b"},
		{"empty", "", defaultNext},
		{"backslash", `/\evil.example`, defaultNext},
		{"backslash after slashes", `/\/evil.example`, defaultNext},
		{"encoded backslash", "/%5Cevil.example", defaultNext},
		{"tab", "/\t/evil.example", defaultNext},
		{"newline", "/\n/evil.example", defaultNext},
		{"encoded tab", "/%09/evil.example", defaultNext},
		{"space", "/ /evil.example", defaultNext},
		{"no-break space", "/\u00a0/evil.example", defaultNext},
		{"scheme-relative", "//evil.example", defaultNext},
		{"encoded second slash", "/%2Fevil.example", defaultNext},
		{"absolute", "https://evil.example", defaultNext},
		{"absolute with path", "https://evil.example/", defaultNext},
		{"javascript", "javascript:alert(1)", defaultNext},
		{"relative", "evil.example", defaultNext},
		{"invalid escape", "/%zz", defaultNext},
		{"invalid UTF-8", "/\xff/x", defaultNext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := localNext(tc.next); got != tc.want {
				t.Errorf("localNext(%q) = %q, want %q", tc.next, got, tc.want)
			}
		})
	}
}
