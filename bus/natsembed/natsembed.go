// Package natsembed runs nats-server with JetStream inside the agentauth
// process: the embedded default of `agentauth serve`.
package natsembed

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	// Configure, when set, adjusts the server options before start
	// (authorization, for example).
	Configure func(*server.Options) error
}

// Server is a running embedded nats-server whose authorization can be
// replaced while it runs.
type Server struct {
	*server.Server
	mu   sync.Mutex
	opts *server.Options
}

// SetNkeyUsers replaces the server's nkey users (and the user that
// connections without credentials act as; "" for none) by a configuration
// reload: existing connections of removed users are closed, permissions of
// the others apply at once.
func (s *Server) SetNkeyUsers(users []*server.NkeyUser, noAuthUser string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.opts.Clone()
	next.Nkeys = users
	next.NoAuthUser = noAuthUser
	if err := s.ReloadOptions(next); err != nil {
		return fmt.Errorf("embedded nats-server: reload authorization: %w", err)
	}
	s.opts = next
	return nil
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
	return &Server{Server: ns, opts: opts.Clone()}, nil
}

type slogAdapter struct{ log *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  {}
