package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
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

	ns       *natsembed.Server
	minter   *minterHolder
	cache    *agentCache
	agentsMu sync.Mutex // serializes syncAgents

	approvalIDKey []byte // derives auth_req_ids (approval.Service.IDKey)
	csrfKey       []byte // keys the web inbox's form tokens (handlers.Inbox.CSRFKey)
	loginKey      []byte // seals logins in progress (handlers.Login.StateKey)
	verifier      handlers.TokenVerifier
	userOK        bool
	devIdP        http.Handler
	login         *handlers.Login
	user          *handlers.User
	vault         *vault.Service
	approval      *approval.Service
	retrieval     *retrieval.Service
	fga           *retrieval.FGA
	stopFGA       func() // the embedded OpenFGA
	inbox         *handlers.Inbox
	// defaultIssuer is the first configured issuer: the one a login_hint
	// names a subject at.
	defaultIssuer string
	vaultStore    *vault.Store
	// vaultDone is closed when the vault's background refresher has returned.
	vaultDone     <-chan struct{}
	connectSecret string // the development provider's secret for the demo connection
	nc            *nats.Conn
	auditNC       *nats.Conn // the audit writer's own connection
	agents        *bus.AgentStore
	sealer        *agents.Sealer
	stop          context.CancelFunc // ends background work (registry watch)
	service       []byte             // agentauth's NATS user seed (embedded mode)
	admin         []byte             // the operator's NATS user seed (embedded mode)
	anon          *agents.Agent      // the development anonymous agent, if any (embedded mode)
	js            jetstream.JetStream
	srv           *bus.Server
	auditor       *bus.Auditor
	metrics       *bus.Metrics
	httpSrv       *http.Server
	httpLn        net.Listener
	natsURL       string
	httpDone      chan error

	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{Config: cfg, Log: log, Instance: nuid.Next()[:10]}
}

// NATSURL is the client URL of the NATS server in use, with the
// credentials --nats-url may carry: show bus.RedactURL of it.
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
	bg, stop := context.WithCancel(context.Background())
	m.stop = stop
	var sealSeed []byte
	var err error
	m.httpLn, err = net.Listen("tcp", c.HTTPListen)
	if err != nil {
		return fmt.Errorf("HTTP listen on %s: %w (choose another address with --http-listen)", c.HTTPListen, err)
	}
	sealSeed, err = loadOrCreateSeed(m.Log, keyPath(c.DataDir, sealKeyFile), nkeys.CreateCurveKeys)
	if err != nil {
		return err
	}
	if m.sealer, err = agents.NewSealer(sealSeed); err != nil {
		return err
	}
	// Every instance has the sealing key (agents seal to it), so ids
	// derived from it agree across instances.
	if m.approvalIDKey, err = hkdf.Key(sha256.New, sealSeed, nil, "agentauth approval auth_req_id v1", 32); err != nil {
		return err
	}
	// Sessions are shared by instances and kept across restarts, so the
	// inbox's form tokens must be too.
	if m.csrfKey, err = hkdf.Key(sha256.New, sealSeed, nil, "agentauth inbox csrf v1", 32); err != nil {
		return err
	}
	if m.loginKey, err = hkdf.Key(sha256.New, sealSeed, nil, "agentauth login state v1", 32); err != nil {
		return err
	}
	m.Registry = prometheus.NewRegistry()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.metrics = bus.NewMetrics(m.Registry)

	if c.NATSURL == "" {
		always, interval, err := c.syncPolicy()
		if err != nil {
			return err
		}
		if m.service, err = loadOrCreateSeed(m.Log, keyPath(c.DataDir, serviceKeyFile), nkeys.CreateUser); err != nil {
			return err
		}
		if m.admin, err = loadOrCreateSeed(m.Log, keyPath(c.DataDir, adminKeyFile), nkeys.CreateUser); err != nil {
			return err
		}
		if err := m.loadAnonymousAgent(); err != nil {
			return err
		}
		builtin, err := m.builtinUsers()
		if err != nil {
			return err
		}
		var anonUser *server.NkeyUser
		if m.anon != nil {
			anonUser = agentUser(*m.anon)
		}
		m.ns, err = natsembed.Start(natsembed.Options{
			Listen:       c.NATSListen,
			StoreDir:     filepath.Join(c.DataDir, "jetstream"),
			SyncAlways:   always,
			SyncInterval: interval,
			ServerName:   "agentauth-" + m.Instance,
			Logger:       m.Log,
			Auth:         natsembed.NewAuthenticator(builtin, anonUser),
		})
		if err != nil {
			return err
		}
		m.natsURL = m.ns.ClientURL()
	} else {
		m.natsURL = c.NATSURL
	}
	conn := m.connOptions("agentauth-" + m.Instance)
	conn.OnAsyncError = func(err error) {
		if bg.Err() == nil { // errors while closing (watchers ending) are expected
			m.Log.Warn("NATS", "error", err)
		}
	}
	if m.Embedded() {
		conn.NKeySeed = m.service
	}
	m.nc, err = bus.Connect(conn)
	if err != nil {
		return err
	}
	if m.js, err = bus.JetStream(m.nc); err != nil {
		return err
	}
	// The audit writer has a connection of its own, so that its batches
	// never queue in front of replies (same credentials, same
	// permissions).
	auditConn := conn
	auditConn.Name += "-audit"
	if m.auditNC, err = bus.Connect(auditConn); err != nil {
		return err
	}
	// The audit writer checks its writes' acks itself: it writes a
	// refused one again and counts only what still fails.
	auditJS, err := bus.JetStream(m.auditNC)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(sctx, m.js, m.streamOptions()); err != nil {
		return fmt.Errorf("%w (is JetStream enabled on %s?)", err, bus.RedactURL(m.natsURL))
	}
	m.auditor = bus.NewAuditorWith(auditJS, m.metrics, m.Log, m.Instance, bus.AuditorOptions{Linger: c.AuditLinger})
	if m.agents, err = bus.NewAgentStore(sctx, m.js, c.StreamReplicas); err != nil {
		return err
	}
	m.cache = &agentCache{store: m.agents}
	if m.Embedded() {
		if err := m.ensureAnonymousAgent(sctx); err != nil {
			return err
		}
		// The registry is the embedded server's authorization: every
		// change is applied at once, on every instance.
		if err := m.applyAgents(sctx); err != nil {
			return err
		}
	}
	if err := m.agents.Watch(bg, func() {
		if err := m.syncAgents(bg); err != nil && bg.Err() == nil {
			m.Log.Error("agent registry changed but this instance did not take the change", "error", err)
		}
	}); err != nil {
		return err
	}
	m.connectSecret = newConnectSecret()
	if err := m.setupIdentity(bg); err != nil {
		return err
	}
	if err := m.setupVault(sctx, bg); err != nil {
		return err
	}
	if err := m.setupApproval(sctx, bg); err != nil {
		return err
	}
	if err := m.setupRetrieval(sctx); err != nil {
		return err
	}

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
	m.user = &handlers.User{Verifier: m.verifier, Agents: m.cache, Minter: m.minter, Sealer: m.sealer, Audit: m.audit}
	// A verified token and a known agent are in memory; a first sight
	// (keys to fetch, the registry to read) moves to a worker.
	if err := m.srv.Handle(schemas.OpWhoAmI, m.user.WhoAmI(), bus.InlineFirst()); err != nil {
		return err
	}
	if err := m.srv.Handle(schemas.OpExchange, m.user.Exchange()); err != nil {
		return err
	}
	if err := m.registerVault(); err != nil {
		return err
	}
	if err := m.registerApproval(); err != nil {
		return err
	}
	if err := m.registerRetrieval(); err != nil {
		return err
	}

	m.httpSrv = &http.Server{
		Handler: handlers.NewHTTP(handlers.HTTPDeps{
			Ready:    m.ready,
			Gatherer: m.Registry,
			Registry: m.Registry,
			Info:     func() any { return m.info() },
			Routes:   m.routes(),
			Mounts:   m.mounts(),
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

// builtinUsers are agentauth's own NATS user and the operator's, both
// with every permission, and the anonymous agent's, isolated like any
// agent's. They never depend on the registry (the server's no-auth user
// cannot change while it runs).
func (m *Main) builtinUsers() ([]*server.NkeyUser, error) {
	var users []*server.NkeyUser
	for _, seed := range [][]byte{m.service, m.admin} {
		pub, err := publicKey(seed)
		if err != nil {
			return nil, err
		}
		users = append(users, &server.NkeyUser{Nkey: pub})
	}
	if m.anon != nil {
		users = append(users, agentUser(*m.anon))
	}
	return users, nil
}

func agentUser(a agents.Agent) *server.NkeyUser {
	p := agents.PermissionsForAgent(a)
	return &server.NkeyUser{Nkey: a.NKey, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}}
}

// loadAnonymousAgent reads (or, on first start, creates) the development
// agent that connections without credentials act as.
func (m *Main) loadAnonymousAgent() error {
	id := m.Config.AnonymousAgent
	if id == "" {
		return nil
	}
	path := keyPath(m.Config.DataDir, id+".agent.json")
	creds, err := loadOrCreateCredentials(m.Log, path, id, agents.Policy{}, m.sealer.PublicKey())
	if err != nil {
		return err
	}
	a, err := agents.FromCredentials(creds, agents.Policy{}, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	m.anon = &a
	m.Log.Warn("development: connections without credentials act as agent "+id+"; disable with --anonymous-agent ''", "credentials", path)
	return nil
}

// syncAgents brings this instance's view of the agent registry up to
// date: the policies it serves by, and (embedded) the NATS authorization.
// Calls are serialized, so the last to finish applied the newest list.
func (m *Main) syncAgents(ctx context.Context) error {
	m.agentsMu.Lock()
	defer m.agentsMu.Unlock()
	if err := m.cache.refresh(ctx); err != nil {
		return fmt.Errorf("reading the agent registry: %w", err)
	}
	if !m.Embedded() {
		return nil
	}
	if err := m.applyAgents(ctx); err != nil {
		return fmt.Errorf("updating the NATS authorization: %w", err)
	}
	return nil
}

// applyAgents sets the embedded server's users from the registry: each
// agent isolated by agents.PermissionsFor, and the anonymous agent (if
// any) as the user of connections without credentials.
func (m *Main) applyAgents(ctx context.Context) error {
	list, err := m.agents.List(ctx)
	if err != nil {
		return err
	}
	users, err := m.builtinUsers()
	if err != nil {
		return err
	}
	var anonUser *server.NkeyUser
	if m.anon != nil {
		anonUser = agentUser(*m.anon)
	}
	for _, a := range list {
		if m.anon != nil && a.NKey == m.anon.NKey {
			continue // already a built-in user
		}
		users = append(users, agentUser(a))
	}
	return m.ns.SetNkeyUsers(users, anonUser)
}

// ensureAnonymousAgent registers the development agent, if it is not.
func (m *Main) ensureAnonymousAgent(ctx context.Context) error {
	if m.anon == nil {
		return nil
	}
	if _, _, err := m.agents.Get(ctx, m.anon.ID); err == nil || !agents.IsNotFound(err) {
		return err
	}
	if err := m.agents.Create(ctx, *m.anon); err != nil && !errors.Is(err, agents.ErrExists) {
		return err
	}
	return nil
}

// Agents is the agent registry.
func (m *Main) Agents() *bus.AgentStore { return m.agents }

// capabilities lists what this instance serves; later capabilities switch
// themselves on here.
func (m *Main) capabilities() schemas.Capabilities {
	return schemas.Capabilities{Sys: true, User: m.userOK, Vault: m.userOK && m.vault != nil, Approval: m.userOK && m.approval != nil, Retrieval: m.userOK && m.retrieval != nil}
}

// PublicURL is the base URL of the HTTP edge as clients reach it: the
// issuer of the tokens agentauth mints.
func (m *Main) PublicURL() string {
	if m.Config.PublicURL != "" {
		return strings.TrimSuffix(m.Config.PublicURL, "/")
	}
	return m.HTTPURL()
}

// setupIdentity loads the signing keys and configures user-token
// verification.
func (m *Main) setupIdentity(ctx context.Context) error {
	keys, err := loadSigningKeys(m)
	if err != nil {
		return err
	}
	mm, err := identity.NewMinter(m.PublicURL(), keys, nil)
	if err != nil {
		return err
	}
	m.minter = &minterHolder{m: mm}
	if st, err := os.Stat(keyPath(m.Config.DataDir, signingKeysFile)); err == nil {
		m.minter.modTime = st.ModTime()
	}
	go m.minter.watch(ctx, m, m.PublicURL())

	var issuers []identity.IssuerConfig
	for _, iss := range issuerList(m.Config.OIDCIssuers) {
		issuers = append(issuers, identity.IssuerConfig{Issuer: iss, Audience: m.Config.OIDCAudience,
			DistinguishesTokenTypes: m.Config.accessTokenTyped()})
	}
	if m.Config.accessTokenTyped() && len(issuers) == 0 {
		m.Log.Warn("--oidc-access-token-typ applies to --oidc-issuers only, and none is set: the development provider's access tokens are typ JWT, its ID tokens pass as access tokens")
	}
	if m.Config.DevIdP == "on" || m.Config.DevIdP == "auto" && len(issuers) == 0 {
		h, iss, err := m.startDevIdP()
		if err != nil {
			return err
		}
		m.devIdP = h
		// Its ID and access tokens carry the same typ (JWT) and audience,
		// so they cannot be told apart, whatever --oidc-access-token-typ
		// says (docs/NOTES.md).
		issuers = append(issuers, identity.IssuerConfig{Issuer: iss, Audience: m.Config.OIDCAudience})
	}
	if len(issuers) > 0 {
		m.defaultIssuer = issuers[0].Issuer
	}
	if len(issuers) == 0 {
		m.verifier = noVerifier{}
		m.Log.Warn("no OpenID Connect issuer configured: user.whoami and user.exchange answer 'unavailable' (set --oidc-issuers)")
		return nil
	}
	v, err := identity.NewVerifier(issuers, identity.Options{})
	if err != nil {
		return err
	}
	// Browser login at the first issuer; its ID tokens are for the login
	// client.
	idv, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: issuers[0].Issuer, Audience: m.Config.LoginClientID}}, identity.Options{})
	if err != nil {
		return err
	}
	sessions, err := bus.NewSessionStore(ctx, m.js, m.Config.StreamReplicas)
	if err != nil {
		return err
	}
	m.login = &handlers.Login{Issuer: issuers[0].Issuer, ClientID: m.Config.LoginClientID, ClientSecret: m.Config.LoginSecret, PublicURL: m.PublicURL(), IDTokens: idv,
		Sessions: sessions, StateKey: m.loginKey, CSRFKey: m.csrfKey, Log: m.Log}
	m.verifier, m.userOK = &identity.CachingVerifier{Next: v}, true
	return nil
}

func (m *Main) routes() map[string]http.HandlerFunc {
	r := wellKnown(m.minter)
	if m.login != nil {
		for k, v := range m.login.Routes() {
			r[k] = v
		}
		if m.vault != nil {
			for k, v := range (&handlers.Connect{Login: m.login, Service: m.vault, CSRFKey: m.csrfKey}).Routes() {
				r[k] = v
			}
		}
		if m.approval != nil {
			m.inbox = &handlers.Inbox{Login: m.login, Service: m.approval, Notifications: bus.Notifications{JS: m.js, Log: m.Log}, Log: m.Log, CSRFKey: m.csrfKey}
			for k, v := range m.inbox.Routes() {
				r[k] = v
			}
		}
	}
	return r
}

func (m *Main) mounts() map[string]http.Handler {
	if m.devIdP == nil {
		return nil
	}
	return map[string]http.Handler{devIdPPath + "/": m.devIdP}
}

// audit records a domain audit event about a request.
func (m *Main) audit(req *bus.Request, area, object, verb, typ string, data any) {
	m.auditor.Record(area, object, verb, typ, req.Trace, data)
}

// ready checks NATS and every stream.
func (m *Main) ready(ctx context.Context) error {
	if !m.nc.IsConnected() || !m.auditNC.IsConnected() {
		return fmt.Errorf("not connected to NATS at %s", bus.RedactURL(m.natsURL))
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
		"nats_url": bus.RedactURL(m.natsURL), "embedded_nats": m.Embedded(), "operations": ops,
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
	if m.stop != nil {
		m.stop()
	}
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
	if m.inbox != nil {
		m.inbox.Shutdown() // ends the live event streams, which Shutdown would wait for
	}
	if m.httpSrv != nil {
		if err := m.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if err := <-m.httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	} else if m.httpLn != nil {
		_ = m.httpLn.Close() // a failed start: bound, never served
	}
	if m.vaultDone != nil {
		// m.stop ended the refresher's context: no refresh starts, and
		// one already at the provider is stored before the store closes
		// (else a rotated refresh token is lost).
		select {
		case <-m.vaultDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("vault: a background refresh was still running at the shutdown timeout; it is marked and reported on its next attempt: %w", ctx.Err()))
		}
	}
	if m.vaultStore != nil {
		if err := m.vaultStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("vault store: %w", err))
		}
	}
	if m.retrieval != nil {
		if err := m.retrieval.Close(); err != nil { // saves the index
			errs = append(errs, fmt.Errorf("documents: %w", err))
		}
		if err := m.retrieval.Docs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("documents: %w", err))
		}
	}
	if m.stopFGA != nil {
		m.stopFGA()
	}
	if m.auditor != nil {
		if err := m.auditor.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("audit flush: %w", err))
		}
	}
	for _, nc := range []*nats.Conn{m.auditNC, m.nc} {
		if nc == nil {
			continue
		}
		drained := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(drained) })
		if err := nc.Drain(); err != nil {
			nc.Close()
		} else {
			select {
			case <-drained:
			case <-ctx.Done():
				nc.Close()
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
	nurl := bus.RedactURL(m.natsURL)
	fmt.Fprintf(w, "\nagentauth %s is running (instance %s)\n  NATS      %s%s\n  HTTP      %s  (/healthz /readyz /metrics)\n  data dir  %s\n  fsync     %s\n\n",
		version, m.Instance, nurl, embeddedNote(m.Embedded()), m.HTTPURL(), m.Config.DataDir, m.Config.JetStreamSync)
	if m.anon != nil {
		a := m.anon.ID
		fmt.Fprintf(w, `Try it from another terminal with the nats CLI, as the development agent %q
(connections without credentials act as it; it may only use its own subjects and inbox):
  nats --server %s --inbox-prefix %s req agentauth.%s.sys.info '{}' \
    -H ce-specversion:1.0 -H ce-id:hello-1 -H ce-source:%s -H ce-type:%s

`, a, nurl, agents.InboxPrefix(a), a, schemas.AgentSource(a), schemas.TypeSysInfoRequest)
	}
	if m.devIdP != nil {
		fmt.Fprintf(w, `DEVELOPMENT OpenID provider: %s (users alice and bob). A user token for scripts:
  TOKEN=$(go run ./cmd/agentauth dev token alice --url %s)

`, devIdPIssuer(m.PublicURL()), m.PublicURL())
	}
	if m.vault != nil && m.login != nil {
		names := make([]string, 0, len(m.vault.Connections))
		for n := range m.vault.Connections {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(w, `Token Vault: connections %s. People see and disconnect theirs at %s/connections;
an agent whose policy names one (agent add NAME --connection demo) gets tokens with vault.token.

`, strings.Join(names, ", "), m.PublicURL())
	}
	if m.approval != nil && m.login != nil {
		fmt.Fprintf(w, `Approvals: people see and decide agents' requests at %s/approvals, or in a terminal:
  go run ./cmd/agentauth approvals --user alice --data-dir %s

`, m.PublicURL(), m.Config.DataDir)
	}
	if m.Embedded() {
		admin := keyPath(m.Config.DataDir, adminKeyFile)
		fmt.Fprintf(w, `Operators use the key generated in the data dir:
  nats --server %s --nkey %s micro ls
  go run ./cmd/agentauth replay --data-dir %s --since 10m
  go run ./cmd/agentauth agent add my-agent --data-dir %s

`, nurl, admin, m.Config.DataDir, m.Config.DataDir)
	}
	fmt.Fprint(w, "Press Ctrl-C to stop (twice to force).\n\n")
}

func embeddedNote(embedded bool) string {
	if embedded {
		return "  (embedded nats-server with JetStream)"
	}
	return "  (external)"
}
