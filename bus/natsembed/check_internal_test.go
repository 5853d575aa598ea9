package natsembed

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// fakeClient is a connection authenticating without credentials;
// register runs while Check gives it its user.
type fakeClient struct {
	id       uint64
	register func()
}

func (c *fakeClient) GetOpts() *server.ClientOpts                 { return &server.ClientOpts{} }
func (c *fakeClient) GetTLSConnectionState() *tls.ConnectionState { return nil }
func (c *fakeClient) RegisterUser(*server.User)                   {}
func (c *fakeClient) RemoteAddress() net.Addr                     { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *fakeClient) GetNonce() []byte                            { return nil }
func (c *fakeClient) Kind() int                                   { return server.CLIENT }
func (c *fakeClient) GetID() uint64                               { return c.id }
func (c *fakeClient) RegisterNkeyUser(*server.NkeyUser) error     { c.register(); return nil }

// TestCheckRacesRemoval: a user removed while one of its connections
// authenticates either refuses that connection or is seen to have it
// (and closes it); never is the connection recorded under a user that
// is gone, where no later change would find it.
func TestCheckRacesRemoval(t *testing.T) {
	a := NewAuthenticator(nil, &server.NkeyUser{Nkey: "UANON"})
	removed := make(chan struct{})
	c := &fakeClient{id: 7, register: func() {
		// The removal runs while the connection is half authenticated;
		// it waits for Check if Check holds the user (the bound only
		// keeps a correct Check from waiting long).
		go func() { a.set(nil, nil); close(removed) }()
		select {
		case <-removed:
		case <-time.After(200 * time.Millisecond):
		}
	}}
	ok := a.Check(c)
	<-removed
	a.mu.Lock()
	defer a.mu.Unlock()
	if cs := a.conns[anonKey]; ok && cs != nil && hasID(cs, c.id) {
		t.Error("the connection is recorded under the anonymous user after it was removed: it would never be closed")
	}
}

// recorded is how many connection ids a keeps for key.
func recorded(a *Authenticator, key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cs := a.conns[key]; cs != nil {
		return len(cs.ids)
	}
	return 0
}

func hasID(cs *connSet, id uint64) bool {
	_, ok := cs.ids[id]
	return ok
}

// TestClosedConnectionsForgotten: the ids of connections that are gone
// are dropped, when the users are set and as they pile up, not kept for
// as long as their user lasts.
func TestClosedConnectionsForgotten(t *testing.T) {
	anon := &server.NkeyUser{Nkey: "UANON"}
	a := NewAuthenticator(nil, anon)
	ns, err := Start(Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	connect := func() *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(ns.ClientURL(), nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	settle := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ns.NumClients() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("server has %d clients, want %d", ns.NumClients(), want)
			}
		}
	}

	const n = 300
	kept := connect()
	defer kept.Close()
	for range n {
		connect().Close()
	}
	settle(1)
	if got := recorded(a, anonKey); got > n/2 {
		t.Errorf("after %d connections came and went: %d ids recorded, want them pruned as they pile up", n, got)
	}
	if err := ns.SetNkeyUsers(nil, anon); err != nil {
		t.Fatal(err)
	}
	if got := recorded(a, anonKey); got != 1 {
		t.Errorf("after setting the users: %d ids recorded, want 1 (the open connection)", got)
	}
}
