package natsembed_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/bus/natsembed"
)

// MustServer starts an embedded server that authenticates with auth and
// shuts it down when the test ends.
func MustServer(tb testing.TB, auth *natsembed.Authenticator) *natsembed.Server {
	tb.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: tb.TempDir(), Auth: auth})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// testUser is an nkey user allowed to publish to pub.
type testUser struct {
	kp  nkeys.KeyPair
	pub string
}

func mustUser(tb testing.TB) testUser {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	return testUser{kp: kp, pub: pub}
}

// allowed is an NkeyUser for key (anonymous when empty) that may publish
// to subjects only; a new value each call, as the registry builds them.
func allowed(key string, subjects ...string) *server.NkeyUser {
	return &server.NkeyUser{Nkey: key, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: subjects},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}}
}

// conn is a client connection that does not reconnect; closed is closed
// once the server has closed it.
type conn struct {
	*nats.Conn
	closed chan struct{}
}

func dial(tb testing.TB, ns *natsembed.Server, u *testUser) (*conn, error) {
	tb.Helper()
	c := &conn{closed: make(chan struct{})}
	opts := []nats.Option{nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(c.closed) })}
	if u != nil {
		opts = append(opts, nats.Nkey(u.pub, u.kp.Sign))
	}
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(nc.Close)
	c.Conn = nc
	return c, nil
}

func mustDial(tb testing.TB, ns *natsembed.Server, u *testUser) *conn {
	tb.Helper()
	c, err := dial(tb, ns, u)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func waitClosed(tb testing.TB, c *conn, what string) {
	tb.Helper()
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: the connection was not closed", what)
	}
}

// stillOpen fails unless the server still answers c (a PING the server
// answers after the change was applied).
func stillOpen(tb testing.TB, c *conn, what string) {
	tb.Helper()
	if err := c.FlushTimeout(5 * time.Second); err != nil || c.IsClosed() {
		tb.Fatalf("%s: the connection was closed (%v)", what, err)
	}
}

// TestPermissionChangeClosesConnections: a user whose permissions change
// (same key) loses its open connections, which nats-server would leave
// with the old permissions; users that did not change keep theirs.
func TestPermissionChangeClosesConnections(t *testing.T) {
	a, b := mustUser(t), mustUser(t)
	auth := natsembed.NewAuthenticator([]*server.NkeyUser{allowed(a.pub, "a.>"), allowed(b.pub, "b.>")}, allowed("", "anon.>"))
	ns := MustServer(t, auth)
	ca, cb, anon := mustDial(t, ns, &a), mustDial(t, ns, &b), mustDial(t, ns, nil)

	// The same users built again: nothing changes.
	if err := ns.SetNkeyUsers([]*server.NkeyUser{allowed(a.pub, "a.>"), allowed(b.pub, "b.>")}, allowed("", "anon.>")); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*conn{"a": ca, "b": cb, "anonymous": anon} {
		stillOpen(t, c, "unchanged "+name)
	}

	// b narrowed, the anonymous user widened.
	if err := ns.SetNkeyUsers([]*server.NkeyUser{allowed(a.pub, "a.>"), allowed(b.pub, "b.only")}, allowed("", "anon.>", "more.>")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, cb, "b's permissions changed")
	waitClosed(t, anon, "the anonymous user's permissions changed")
	stillOpen(t, ca, "a unchanged")

	// New connections get the new permissions.
	cb2 := mustDial(t, ns, &b)
	errs := make(chan error, 1)
	cb2.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if err := cb2.Publish("b.other", nil); err != nil {
		t.Fatal(err)
	}
	_ = cb2.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("publish outside the new permissions: got %v, want a permission violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("publish outside the new permissions was not refused")
	}

	// No anonymous user any more.
	anon2 := mustDial(t, ns, nil)
	if err := ns.SetNkeyUsers([]*server.NkeyUser{allowed(a.pub, "a.>"), allowed(b.pub, "b.only")}, nil); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, anon2, "the anonymous user was removed")
	if _, err := dial(t, ns, nil); err == nil {
		t.Error("a connection without credentials was accepted with no anonymous user")
	}
}
