// Package natsembed runs nats-server with JetStream inside the agentauth
// process: the embedded default of `agentauth serve`.
package natsembed

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Options configure the embedded server.
type Options struct {
	Listen   string // host:port; port 0 or -1 picks a free port
	StoreDir string // JetStream store
	// SyncAlways fsyncs every JetStream write before acknowledging it;
	// otherwise the store is synced every SyncInterval (nats-server's
	// default is 2 minutes: acknowledged writes survive a process crash
	// but not a power failure or kernel crash in that window).
	SyncAlways   bool
	SyncInterval time.Duration
	ServerName   string
	Logger       *slog.Logger
	// Auth, when set, authenticates every client (see Authenticator).
	Auth *Authenticator
	// Configure, when set, adjusts the server options before start.
	Configure func(*server.Options) error
}

// Server is a running embedded nats-server whose users can be replaced
// while it runs.
type Server struct {
	*server.Server
	auth *Authenticator
}

// SetNkeyUsers replaces the users the server accepts (nkey users with
// their permissions) and the user that connections without credentials
// act as (nil for none). Connections of users no longer present, or
// whose permissions changed, are closed: nats-server copies a user's
// permissions when the connection authenticates and never refreshes
// them, so a client keeps the old ones until it reconnects under the new.
func (s *Server) SetNkeyUsers(users []*server.NkeyUser, anonymous *server.NkeyUser) error {
	if s.auth == nil {
		return errors.New("embedded nats-server: started without an Authenticator")
	}
	s.auth.set(users, anonymous)
	return nil
}

// Authenticator authenticates clients of the embedded server against a
// user set that can change at any time — unlike a configuration reload,
// which nats-server does not make safe for concurrent JetStream use. An
// nkey client proves its key by signing the server's nonce; a client
// without credentials is the anonymous user, if there is one. Safe for
// concurrent use; it serves one server (Start binds it).
type Authenticator struct {
	mu    sync.Mutex
	srv   *server.Server // nil until Start
	users map[string]*server.NkeyUser
	anon  *server.NkeyUser
	// conns are the connections authenticated as each user (anonKey for
	// the anonymous user), to close them when it changes.
	conns map[string]*connSet
}

// connSet is the ids of a user's connections. Closed ones are dropped
// when the users are set, and when the set grows past pruneAt.
type connSet struct {
	ids     map[uint64]struct{}
	pruneAt int
}

// anonKey keys the anonymous user's connections in Authenticator.conns;
// no nkey is empty.
const anonKey = ""

// minPruneAt is the size from which a user's connection ids are checked
// for closed ones while connections authenticate; the next check is at
// twice the ids still open (amortized constant cost per connection).
const minPruneAt = 64

// NewAuthenticator starts with users and anonymous.
func NewAuthenticator(users []*server.NkeyUser, anonymous *server.NkeyUser) *Authenticator {
	a := &Authenticator{}
	a.set(users, anonymous)
	return a
}

func (a *Authenticator) bind(ns *server.Server) {
	a.mu.Lock()
	a.srv = ns
	a.mu.Unlock()
}

func (a *Authenticator) set(users []*server.NkeyUser, anonymous *server.NkeyUser) {
	m := make(map[string]*server.NkeyUser, len(users))
	for _, u := range users {
		m[u.Nkey] = u
	}
	a.mu.Lock()
	var kick []uint64
	for key, cs := range a.conns {
		old, cur := a.users[key], m[key]
		if key == anonKey {
			old, cur = a.anon, anonymous
		}
		if cur != nil && sameUser(old, cur) {
			continue
		}
		for id := range cs.ids {
			kick = append(kick, id)
		}
		delete(a.conns, key)
	}
	a.users, a.anon = m, anonymous
	ns := a.srv
	a.mu.Unlock()
	if ns == nil {
		return
	}
	for _, id := range kick {
		_ = ns.DisconnectClientByID(id)
	}
	a.forgetClosed(ns, nil)
}

// forgetClosed drops the ids of connections the server no longer has,
// of the users keyed by keys (nil: all). The server is asked without
// holding a.mu; an id, once closed, is never reused.
func (a *Authenticator) forgetClosed(ns *server.Server, keys []string) {
	type conn struct {
		key string
		id  uint64
	}
	var ids []conn
	a.mu.Lock()
	if keys == nil {
		for key := range a.conns {
			keys = append(keys, key)
		}
	}
	for _, key := range keys {
		if cs := a.conns[key]; cs != nil {
			for id := range cs.ids {
				ids = append(ids, conn{key, id})
			}
		}
	}
	a.mu.Unlock()
	var gone []conn
	for _, c := range ids {
		if ns.GetClient(c.id) == nil {
			gone = append(gone, c)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range gone {
		if cs := a.conns[c.key]; cs != nil {
			delete(cs.ids, c.id)
		}
	}
	for _, key := range keys {
		if cs := a.conns[key]; cs != nil {
			if len(cs.ids) == 0 {
				delete(a.conns, key)
			} else {
				cs.pruneAt = max(2*len(cs.ids), minPruneAt)
			}
		}
	}
}

// sameUser says whether a connection authenticated as a has what one
// authenticating as b would get.
func sameUser(a, b *server.NkeyUser) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Nkey == b.Nkey && a.Issued == b.Issued && a.Account == b.Account &&
		a.SigningKey == b.SigningKey && a.ProxyRequired == b.ProxyRequired &&
		reflect.DeepEqual(a.Permissions, b.Permissions) &&
		reflect.DeepEqual(a.AllowedConnectionTypes, b.AllowedConnectionTypes)
}

type nkeyRegistrar interface {
	RegisterNkeyUser(*server.NkeyUser) error
}

// Check implements server.Authentication.
func (a *Authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	reg, ok := c.(nkeyRegistrar)
	if !ok {
		return false
	}
	opts := c.GetOpts()
	key := anonKey
	if opts.Nkey != "" {
		if !signedNonce(opts.Nkey, opts.Sig, c.GetNonce()) {
			return false
		}
		key = opts.Nkey
	}
	// Looking the user up, giving the connection its permissions and
	// recording it happen under one lock, so a concurrent set either
	// comes first or sees this connection (and closes it if its user
	// changed).
	a.mu.Lock()
	u := a.anon
	if key != anonKey {
		u = a.users[key]
	}
	if u == nil || reg.RegisterNkeyUser(u) != nil {
		a.mu.Unlock()
		return false
	}
	if a.conns == nil {
		a.conns = map[string]*connSet{}
	}
	cs := a.conns[key]
	if cs == nil {
		cs = &connSet{ids: map[uint64]struct{}{}, pruneAt: minPruneAt}
		a.conns[key] = cs
	}
	cs.ids[c.GetID()] = struct{}{}
	ns, prune := a.srv, len(cs.ids) > cs.pruneAt
	if prune {
		cs.pruneAt = 2 * len(cs.ids) // no other Check starts a prune meanwhile
	}
	a.mu.Unlock()
	if prune && ns != nil {
		a.forgetClosed(ns, []string{key})
	}
	return true
}

// signedNonce says whether sig (base64, raw URL or standard) is nkey's
// signature of nonce.
func signedNonce(nkey, sig string, nonce []byte) bool {
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(nkey)
	return err == nil && pub.Verify(nonce, raw) == nil
}

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:   o.ServerName,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     o.StoreDir,
		SyncAlways:   o.SyncAlways,
		SyncInterval: o.SyncInterval,
		NoSigs:       true,
		MaxPayload:   1 << 20,
	}
	if o.Auth != nil {
		opts.CustomClientAuthentication = o.Auth
		opts.AlwaysEnableNonce = true
	}
	if o.Configure != nil {
		if err := o.Configure(opts); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if o.Auth != nil {
		o.Auth.bind(ns)
	}
	if o.Logger != nil {
		ns.SetLoggerV2(&slogAdapter{log: o.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not start listening on %s (is the port in use? choose another with --nats-listen)", o.Listen)
	}
	return &Server{Server: ns, auth: o.Auth}, nil
}

type slogAdapter struct{ log *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
