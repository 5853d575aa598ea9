package main

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

// The vault scenarios' connections: the demo connection holds the bench
// user's cached token (the common path); bench-refresh is served by a
// local provider in this process (the refresh path).
const (
	benchRefreshConnection = "bench-refresh"
	benchRefreshUsers      = 1024
)

// benchPolicy is the bench agent's policy.
var benchPolicy = agents.Policy{
	Audiences:         []string{benchAudience},
	Connections:       []agents.ConnectionGrant{{Connection: demoConnection}, {Connection: benchRefreshConnection}},
	ApprovalAudiences: []string{benchApprovalAudience},
}

// benchProvider is a minimal OAuth token endpoint: every refresh answers
// with a new access token (non-rotating, one hour).
func benchProvider() *httptest.Server {
	var n atomic.Int64
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "refresh_token" {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"bench-at-%d","token_type":"Bearer","expires_in":3600}`, n.Add(1))
	}))
}

func benchRefreshConfig(url string) vault.Config {
	return vault.Config{Name: benchRefreshConnection, Title: "Bench provider", AuthURL: url + "/authorize", TokenURL: url + "/token",
		ClientID: "bench", ClientSecret: "bench-secret", Refresh: vault.RefreshNonRotating}
}

// seedVault stores the bench user's cached demo token (non-expiring) and
// the refresh scenario's users.
func seedVault(m *Main) error {
	if m.vaultStore == nil {
		return errors.New("the instance has no vault")
	}
	alice := vault.UserRef{Issuer: devIdPIssuer(m.PublicURL()), Subject: devidpAlice}
	now := time.Now()
	rec := vault.Record{User: alice, Connection: demoConnection, Scopes: []string{"openid"}, AccessToken: "bench-" + crand.Text(),
		TokenType: "Bearer", Status: vault.StatusActive, LinkedAt: now}
	recs := []vault.Record{rec}
	for i := range benchRefreshUsers {
		recs = append(recs, vault.Record{User: benchUser(i), Connection: benchRefreshConnection, AccessToken: "old", RefreshToken: "rt-" + strconv.Itoa(i),
			Expiry: now.Add(time.Hour), Status: vault.StatusActive, LinkedAt: now})
	}
	return m.vaultStore.PutBatch(recs)
}

const devidpAlice = "dev-alice"

func benchUser(i int) vault.UserRef {
	return vault.UserRef{Issuer: "https://bench.example", Subject: "user-" + strconv.Itoa(i)}
}

// vaultTokenOps: vault.token on the common path (a valid stored token):
// verify the user, check the policy, read and open the record, seal to
// the agent, audit; the SDK opens the sealed token.
func vaultTokenOps(ctx context.Context, env *benchEnv) (reqOps, error) {
	if env.userToken == "" {
		return reqOps{}, errors.New("no user token: run against the built-in instance, or pass --user-token with a connected demo account")
	}
	return requestOps(env, schemas.OpVaultToken, schemas.VaultTokenRequest{UserToken: env.userToken, Connection: demoConnection}, func(ctx context.Context) error {
		_, err := env.agent.Token(ctx, env.userToken, demoConnection)
		return err
	})
}

// setupVaultRefresh: a forced refresh in the service (lease, synced
// intent, provider call, synced write, audit) against the same provider
// call made directly with x/oauth2.
func setupVaultRefresh(ctx context.Context, env *benchEnv) (benchOp, benchOp, func(), error) {
	if env.m == nil || env.m.vault == nil || env.providerURL == "" {
		return nil, nil, nil, errors.New("vault.refresh needs the built-in instance (run without --nats-url)")
	}
	var next atomic.Int64
	op := func(ctx context.Context) error {
		_, err := env.m.vault.Refresh(ctx, benchUser(int(next.Add(1)%benchRefreshUsers)), benchRefreshConnection)
		return err
	}
	cfg := &oauth2.Config{ClientID: "bench", ClientSecret: "bench-secret", Endpoint: oauth2.Endpoint{TokenURL: env.providerURL + "/token", AuthStyle: oauth2.AuthStyleInHeader}}
	base := func(ctx context.Context) error {
		_, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: "rt"}).Token()
		return err
	}
	return op, base, func() {}, nil
}

// setupVaultScale: lookups among scaleRecords stored connections against
// lookups among 10,000, each in its own fresh store in a temporary dir;
// the resident memory after loading each is printed.
func setupVaultScale(records int, errw io.Writer, noProgress bool) func(context.Context, *benchEnv) (benchOp, benchOp, func(), error) {
	return func(ctx context.Context, env *benchEnv) (benchOp, benchOp, func(), error) {
		dir, err := os.MkdirTemp("", "agentauth-vault-scale-")
		if err != nil {
			return nil, nil, nil, err
		}
		kr, err := vault.NewKeyring(vault.GenerateKey())
		if err != nil {
			return nil, nil, nil, err
		}
		var stores []*vault.Store
		cleanup := func() {
			for _, s := range stores {
				_ = s.Close()
			}
			_ = os.RemoveAll(dir)
		}
		var ops []benchOp
		for _, n := range []int{10000, records} {
			s, err := vault.OpenStore(fmt.Sprintf("%s/%d", dir, n), kr, vault.StoreOptions{})
			if err != nil {
				cleanup()
				return nil, nil, nil, err
			}
			stores = append(stores, s)
			if err := fillStore(s, n, errw, noProgress); err != nil {
				cleanup()
				return nil, nil, nil, err
			}
			// Reopen, as after a restart: both stores read from their
			// tables, not from the memtable the 10,000 would still fit in.
			if err := s.Close(); err != nil {
				cleanup()
				return nil, nil, nil, err
			}
			if s, err = vault.OpenStore(fmt.Sprintf("%s/%d", dir, n), kr, vault.StoreOptions{}); err != nil {
				stores = stores[:len(stores)-1]
				cleanup()
				return nil, nil, nil, err
			}
			stores[len(stores)-1] = s
			// Lookups in the settled store, not while compaction is
			// still moving the bulk load down.
			if err := s.Settle(ctx); err != nil {
				cleanup()
				return nil, nil, nil, err
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(errw, "vault.scale: %d connections stored; process resident memory %s (Go heap in use %d MiB; the rest is mostly Badger's memory-mapped tables and value log)\n", n, rss(), ms.HeapInuse>>20)
			ops = append(ops, func(context.Context) error {
				_, err := s.Get(scaleUser(rand.N(n)), "google")
				return err
			})
		}
		return ops[1], ops[0], cleanup, nil
	}
}

func scaleUser(i int) vault.UserRef {
	return vault.UserRef{Issuer: "https://issuer.example", Subject: "user-" + strconv.Itoa(i)}
}

// fillStore writes n records shaped like real ones (a JWT-sized access
// token, a refresh token, scopes, an expiry) in batches.
func fillStore(s *vault.Store, n int, errw io.Writer, noProgress bool) error {
	bar := countBar(errw, n, fmt.Sprintf("storing %d connections", n), noProgress || n <= 10000)
	at := strings.Repeat("a", 900)
	now := time.Now()
	const batch = 10000
	for i := 0; i < n; i += batch {
		recs := make([]vault.Record, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			recs = append(recs, vault.Record{User: scaleUser(j), Connection: "google", Scopes: []string{"openid", "email", "https://www.googleapis.com/auth/drive.readonly"},
				AccessToken: at, RefreshToken: "1//" + strconv.Itoa(j), TokenType: "Bearer", Expiry: now.Add(time.Hour + time.Duration(j)*time.Millisecond),
				Status: vault.StatusActive, LinkedAt: now})
		}
		if err := s.PutBatch(recs); err != nil {
			return err
		}
		if bar != nil {
			_ = bar.Set(min(i+batch, n))
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return nil
}

// rss is this process's resident memory, from /proc.
func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
