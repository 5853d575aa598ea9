// Package natsembed runs nats-server with JetStream inside the agentauth
// process: the embedded default of `agentauth serve`.
package natsembed

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
// act as (nil for none). Connections of users no longer present are
// closed.
func (s *Server) SetNkeyUsers(users []*server.NkeyUser, anonymous *server.NkeyUser) error {
	if s.auth == nil {
		return errors.New("embedded nats-server: started without an Authenticator")
	}
	s.auth.set(users, anonymous, s.Server)
	return nil
}

// Authenticator authenticates clients of the embedded server against a
// user set that can change at any time — unlike a configuration reload,
// which nats-server does not make safe for concurrent JetStream use. An
// nkey client proves its key by signing the server's nonce; a client
// without credentials is the anonymous user, if there is one. Safe for
// concurrent use.
type Authenticator struct {
	mu    sync.RWMutex
	users map[string]*server.NkeyUser
	anon  *server.NkeyUser
	conns map[string]map[uint64]struct{} // client ids by nkey, to close removed users
}

// NewAuthenticator starts with users and anonymous.
func NewAuthenticator(users []*server.NkeyUser, anonymous *server.NkeyUser) *Authenticator {
	a := &Authenticator{}
	a.set(users, anonymous, nil)
	return a
}

func (a *Authenticator) set(users []*server.NkeyUser, anonymous *server.NkeyUser, ns *server.Server) {
	m := make(map[string]*server.NkeyUser, len(users))
	for _, u := range users {
		m[u.Nkey] = u
	}
	a.mu.Lock()
	var kick []uint64
	for nkey, ids := range a.conns {
		_, still := m[nkey]
		if anonymous != nil && nkey == anonymous.Nkey {
			still = true
		}
		if still {
			continue
		}
		for id := range ids {
			kick = append(kick, id)
		}
		delete(a.conns, nkey)
	}
	a.users, a.anon = m, anonymous
	a.mu.Unlock()
	for _, id := range kick {
		if ns != nil {
			_ = ns.DisconnectClientByID(id)
		}
	}
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
	a.mu.RLock()
	var u *server.NkeyUser
	if opts.Nkey == "" {
		u = a.anon
	} else {
		u = a.users[opts.Nkey]
	}
	a.mu.RUnlock()
	if u == nil {
		return false
	}
	if opts.Nkey != "" {
		sig, err := base64.RawURLEncoding.DecodeString(opts.Sig)
		if err != nil {
			if sig, err = base64.StdEncoding.DecodeString(opts.Sig); err != nil {
				return false
			}
		}
		pub, err := nkeys.FromPublicKey(opts.Nkey)
		if err != nil || pub.Verify(c.GetNonce(), sig) != nil {
			return false
		}
	}
	if reg.RegisterNkeyUser(u) != nil {
		return false
	}
	a.mu.Lock()
	if a.conns == nil {
		a.conns = map[string]map[uint64]struct{}{}
	}
	if a.conns[u.Nkey] == nil {
		a.conns[u.Nkey] = map[uint64]struct{}{}
	}
	a.conns[u.Nkey][c.GetID()] = struct{}{}
	a.mu.Unlock()
	return true
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
