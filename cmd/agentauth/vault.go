package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

const (
	vaultKeyFile = "vault.key"
	// demoConnection links an account at the development OpenID provider,
	// standing in for a third-party provider in development and tests.
	demoConnection   = "demo"
	devConnectClient = "agentauth-connect"
)

// vaultKey reads the vault master key: --vault-key / AGENTAUTH_VAULT_KEY,
// else the key file (generated, with a warning, on first start).
func (m *Main) vaultKey() ([]byte, error) {
	c := m.Config
	if c.VaultKey != "" {
		k, err := vault.ParseKey(c.VaultKey)
		if err != nil {
			return nil, fmt.Errorf("AGENTAUTH_VAULT_KEY: %w", err)
		}
		return k, nil
	}
	path := c.VaultKeyFile
	if path == "" {
		path = keyPath(c.DataDir, vaultKeyFile)
	}
	k, created, err := vault.LoadOrCreateKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("vault master key: %w", err)
	}
	if created {
		m.Log.Warn("generated a vault master key next to the data it protects: production must supply its own (AGENTAUTH_VAULT_KEY or --vault-key-file) and keep it elsewhere", "file", path)
	}
	return k, nil
}

// vaultDir is the Badger directory of the vault.
func vaultDir(dataDir string) string { return filepath.Join(dataDir, "vault") }

// setupVault opens the encrypted store, resolves the connections and
// starts the background refresher.
func (m *Main) setupVault(ctx, bg context.Context) error {
	key, err := m.vaultKey()
	if err != nil {
		return err
	}
	kr, err := vault.NewKeyring(key)
	if err != nil {
		return err
	}
	m.vaultStore, err = vault.OpenStore(vaultDir(m.Config.DataDir), kr, vault.StoreOptions{Logger: m.Log, CacheRecords: 10000})
	if err != nil {
		return err
	}
	conns, err := vault.Build(ctx, m.Config.Connections, os.Getenv, nil)
	if err != nil {
		return err
	}
	if m.devIdP != nil {
		if _, taken := conns[demoConnection]; !taken {
			conns[demoConnection] = m.demoConnection()
		}
	}
	locker, err := bus.NewLocker(ctx, m.js, m.Config.StreamReplicas, 30*time.Second, m.Instance)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("agentauth connect state key"))
	m.vault = &vault.Service{
		Store:       m.vaultStore,
		Connections: conns,
		Locker:      locker,
		Events:      &vaultEvents{m: m, pub: bus.NewPublisher(m.js, m.metrics)},
		Sealer:      m.sealer,
		PublicURL:   m.PublicURL(),
		StateKey:    mac.Sum(nil),
		Log:         m.Log,
	}
	done := make(chan struct{})
	m.vaultDone = done
	go func() {
		defer close(done)
		m.vault.RunRefresher(bg, vault.RefresherOptions{Interval: m.Config.VaultRefreshInterval})
	}()
	return nil
}

// demoConnection is the development provider as a third-party provider.
func (m *Main) demoConnection() vault.Connection {
	iss := devIdPIssuer(m.PublicURL())
	return vault.Connection{
		Name: demoConnection, Title: "Demo account (development provider)",
		AuthURL: iss + "/authorize", TokenURL: iss + "/oauth/token", RevocationURL: iss + "/revoke",
		DefaultScopes: []string{"openid", "profile", "email", "offline_access"}, ScopeSeparator: " ",
		PKCE: true, Refresh: vault.RefreshRotating,
		ClientID: devConnectClient, ClientSecret: m.connectSecret,
	}
}

// newConnectSecret is the development provider's secret for the demo
// connection's client: per process, like the provider's own state.
func newConnectSecret() string { return rand.Text() }

func (m *Main) registerVault() error {
	h := &handlers.Vault{User: m.user, Service: m.vault}
	for op, hf := range map[*schemas.Op]func() bus.Handler{
		&schemas.OpVaultToken: h.Token, &schemas.OpVaultConnect: h.Connect,
		&schemas.OpVaultConnections: h.Connections, &schemas.OpVaultDisconnect: h.Disconnect,
	} {
		var opts []bus.HandleOption
		if *op == schemas.OpVaultToken {
			// The common case (a cached record, not due for refresh)
			// is in memory; a refresh or a store read moves to a worker.
			opts = append(opts, bus.InlineFirst())
		}
		if err := m.srv.Handle(*op, hf(), opts...); err != nil {
			return err
		}
	}
	return nil
}

// vaultEvents publishes the vault's feed events and audit records.
type vaultEvents struct {
	m   *Main
	pub *bus.Publisher
}

func (e *vaultEvents) Feed(ctx context.Context, agent, verb, typ string, data schemas.ConnectionEvent) error {
	ev, err := bus.NewEvent(typ, data)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err = e.pub.Publish(ctx, schemas.EventsSubject(agent)+".vault.connection."+verb, ev)
	return err
}

func (e *vaultEvents) Audit(object, verb string, a schemas.AuditVault) {
	e.m.auditor.Record("vault", object, verb, schemas.TypeAuditVault, bus.TraceContext{}, &a)
}
