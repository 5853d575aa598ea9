package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/schemas"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// Main is the one place that opens connections and files and wires the
// service together. Run starts it; Close stops it. Tests run it with port
// 0 and a temporary data dir.
type Main struct {
	Config Config
	Log    *slog.Logger

	Instance string
	Registry *prometheus.Registry

	ns       *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	srv      *bus.Server
	auditor  *bus.Auditor
	metrics  *bus.Metrics
	httpSrv  *http.Server
	httpLn   net.Listener
	natsURL  string
	httpDone chan error

	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{Config: cfg, Log: log, Instance: nuid.Next()[:10]}
}

// NATSURL is the client URL of the NATS server in use.
func (m *Main) NATSURL() string { return m.natsURL }

// HTTPURL is the base URL of the HTTP edge.
func (m *Main) HTTPURL() string { return "http://" + m.httpLn.Addr().String() }

// Embedded reports whether agentauth runs its own nats-server.
func (m *Main) Embedded() bool { return m.ns != nil }

// Server returns the request/reply server (for tests).
func (m *Main) Server() *bus.Server { return m.srv }

// Run starts everything and returns once the service is serving. Call
// Close to stop it, also after an error.
func (m *Main) Run(ctx context.Context) error {
	c := m.Config
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	m.Registry = prometheus.NewRegistry()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.metrics = bus.NewMetrics(m.Registry)

	if c.NATSURL == "" {
		always, interval, err := c.syncPolicy()
		if err != nil {
			return err
		}
		m.ns, err = natsembed.Start(natsembed.Options{
			Listen:       c.NATSListen,
			StoreDir:     filepath.Join(c.DataDir, "jetstream"),
			SyncAlways:   always,
			SyncInterval: interval,
			ServerName:   "agentauth-" + m.Instance,
			Logger:       m.Log,
		})
		if err != nil {
			return err
		}
		m.natsURL = m.ns.ClientURL()
	} else {
		m.natsURL = c.NATSURL
	}
	var err error
	m.nc, err = bus.Connect(m.connOptions("agentauth-" + m.Instance))
	if err != nil {
		return err
	}
	m.js, err = bus.JetStream(m.nc, func(subject string, err error) {
		m.metrics.AuditFailures.Inc()
		m.Log.Error("JetStream did not acknowledge an audit event", "subject", subject, "error", err)
	})
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(sctx, m.js, m.streamOptions()); err != nil {
		return fmt.Errorf("%w (is JetStream enabled on %s?)", err, m.natsURL)
	}
	m.auditor = bus.NewAuditor(m.js, m.metrics, m.Log, m.Instance)

	validator, err := schemas.NewValidator()
	if err != nil {
		return err
	}
	m.srv, err = bus.NewServer(m.nc, validator, m.metrics, m.auditor, bus.ServerOptions{
		Version:       version,
		Description:   "agentauth: user authentication, token vault, async approvals and FGA-filtered retrieval for AI agents",
		MaxEventBytes: c.MaxEventBytes,
		Timeout:       c.RequestTimeout,
		Logger:        m.Log,
	})
	if err != nil {
		return err
	}
	if err := m.srv.Handle(schemas.OpSysInfo, &handlers.SysInfo{
		Version:      version,
		Instance:     m.Instance,
		Capabilities: m.capabilities(),
	}, bus.Inline()); err != nil {
		return err
	}

	m.httpLn, err = net.Listen("tcp", c.HTTPListen)
	if err != nil {
		return fmt.Errorf("HTTP listen on %s: %w (choose another address with --http-listen)", c.HTTPListen, err)
	}
	m.httpSrv = &http.Server{
		Handler: handlers.NewHTTP(handlers.HTTPDeps{
			Ready:    m.ready,
			Gatherer: m.Registry,
			Registry: m.Registry,
			Info:     func() any { return m.info() },
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	m.httpDone = make(chan error, 1)
	go func() { m.httpDone <- m.httpSrv.Serve(m.httpLn) }()
	return nil
}

func (m *Main) connOptions(name string) bus.ConnOptions {
	c := m.Config
	return bus.ConnOptions{
		URL: m.natsURL, Name: name,
		CredsFile: c.NATSCreds, NKeyFile: c.NATSNKey, User: c.NATSUser, Password: c.NATSPassword, Token: c.NATSToken,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
	}
}

func (m *Main) streamOptions() bus.StreamOptions {
	return bus.StreamOptions{Replicas: m.Config.StreamReplicas, AuditMaxAge: m.Config.AuditMaxAge, EventsMaxAge: m.Config.EventsMaxAge}
}

// capabilities lists what this instance serves; later capabilities switch
// themselves on here.
func (m *Main) capabilities() schemas.Capabilities {
	return schemas.Capabilities{Sys: true}
}

// ready checks NATS and every stream.
func (m *Main) ready(ctx context.Context) error {
	if !m.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS at %s", m.natsURL)
	}
	for _, cfg := range bus.StreamConfigs(m.streamOptions()) {
		if _, err := m.js.Stream(ctx, cfg.Name); err != nil {
			return fmt.Errorf("stream %s: %v", cfg.Name, err)
		}
	}
	return nil
}

func (m *Main) info() map[string]any {
	ops := []string{}
	for _, op := range m.srv.Operations() {
		ops = append(ops, op.SubjectPattern())
	}
	return map[string]any{
		"service": schemas.ServiceName, "version": version, "instance": m.Instance,
		"nats_url": m.natsURL, "embedded_nats": m.Embedded(), "operations": ops,
		"capabilities": m.capabilities(),
	}
}

// Close stops taking requests, lets in-flight ones finish (up to the
// shutdown timeout), flushes the audit stream, drains NATS, stops the HTTP
// edge and the embedded server. It is safe to call more than once.
func (m *Main) Close(ctx context.Context) error {
	m.closeOnce.Do(func() { m.closeErr = m.close(ctx) })
	return m.closeErr
}

func (m *Main) close(ctx context.Context) error {
	timeout := m.Config.ShutdownTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	if m.srv != nil {
		if err := m.srv.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if m.httpSrv != nil {
		if err := m.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if err := <-m.httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if m.auditor != nil {
		if err := m.auditor.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("audit flush: %w", err))
		}
	}
	if m.nc != nil {
		drained := make(chan struct{})
		m.nc.SetClosedHandler(func(*nats.Conn) { close(drained) })
		if err := m.nc.Drain(); err != nil {
			m.nc.Close()
		} else {
			select {
			case <-drained:
			case <-ctx.Done():
				m.nc.Close()
			}
		}
	}
	if m.ns != nil {
		m.ns.Shutdown()
		m.ns.WaitForShutdown()
	}
	return errors.Join(errs...)
}

// banner tells a newcomer how to talk to the service.
func (m *Main) banner(w io.Writer) {
	nurl := m.natsURL
	fmt.Fprintf(w, `
agentauth %s is running (instance %s)
  NATS      %s%s
  HTTP      %s  (/healthz /readyz /metrics)
  data dir  %s
  fsync     %s

Try it from another terminal with the nats CLI:
  nats --server %s req agentauth.demo.sys.info '{}' \
    -H ce-specversion:1.0 -H ce-id:hello-1 -H ce-source:/agents/demo -H ce-type:%s
  nats --server %s micro ls
  go run ./cmd/agentauth replay --nats-url %s --since 10m

Press Ctrl-C to stop (twice to force).

`, version, m.Instance, nurl, embeddedNote(m.Embedded()), m.HTTPURL(), m.Config.DataDir, m.Config.JetStreamSync, nurl, schemas.TypeSysInfoRequest, nurl, nurl)
}

func embeddedNote(embedded bool) string {
	if embedded {
		return "  (embedded nats-server with JetStream)"
	}
	return "  (external)"
}
