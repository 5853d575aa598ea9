package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

const signingKeysFile = "signing.json" // agentauth's token signing keys (0600)

// loadSigningKeys reads the signing keys, creating the first on first start.
func loadSigningKeys(m *Main) ([]identity.SigningKey, error) {
	path := keyPath(m.Config.DataDir, signingKeysFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := identity.NewSigningKey(time.Now())
		if err != nil {
			return nil, err
		}
		keys := []identity.SigningKey{k}
		if err := saveSigningKeys(path, keys); err != nil {
			return nil, err
		}
		m.Log.Warn("GENERATED a token signing key on first start; production must supply its own and keep it secret", "file", path)
		return keys, nil
	}
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	var keys []identity.SigningKey
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("signing keys %s: %w", path, err)
	}
	return keys, nil
}

func saveSigningKeys(path string, keys []identity.SigningKey) error {
	b, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// minterHolder swaps the minter when the key file changes (after
// `agentauth keys rotate`), so a rotation needs no restart.
type minterHolder struct {
	mu      sync.RWMutex
	m       *identity.Minter
	modTime time.Time
}

func (h *minterHolder) get() *identity.Minter {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.m
}

// Mint implements handlers.TokenMinter.
func (h *minterHolder) Mint(g identity.Grant) (identity.Minted, error) { return h.get().Mint(g) }

// watch reloads the keys when the file changes, until ctx ends.
func (h *minterHolder) watch(ctx context.Context, m *Main, issuer string) {
	path := keyPath(m.Config.DataDir, signingKeysFile)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(path)
		if err != nil || !st.ModTime().After(h.modTime) {
			continue
		}
		keys, err := loadSigningKeys(m)
		if err == nil {
			var mm *identity.Minter
			if mm, err = identity.NewMinter(issuer, keys, nil); err == nil {
				h.mu.Lock()
				h.m, h.modTime = mm, st.ModTime()
				h.mu.Unlock()
				m.Log.Info("signing keys reloaded", "kid", mm.KeyID(), "published", len(mm.JWKS().Keys))
				continue
			}
		}
		m.Log.Error("signing keys changed but could not be loaded; still using the previous ones", "file", path, "error", err)
		h.modTime = st.ModTime()
	}
}

// agentCache answers agent lookups from memory, kept current by the
// registry watch; a miss reads the registry.
type agentCache struct {
	store *bus.AgentStore
	mu    sync.RWMutex
	byID  map[string]agents.Agent
}

func (c *agentCache) Agent(ctx context.Context, id string) (agents.Agent, error) {
	c.mu.RLock()
	a, ok := c.byID[id]
	c.mu.RUnlock()
	if ok {
		return a, nil
	}
	if err := blocking.Check(ctx); err != nil {
		return agents.Agent{}, err
	}
	a, _, err := c.store.Get(ctx, id)
	return a, err
}

func (c *agentCache) refresh(ctx context.Context) error {
	list, err := c.store.List(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]agents.Agent, len(list))
	for _, a := range list {
		m[a.ID] = a
	}
	c.mu.Lock()
	c.byID = m
	c.mu.Unlock()
	return nil
}

// noVerifier answers when no OpenID issuer is configured.
type noVerifier struct{}

func (noVerifier) Verify(context.Context, string, identity.VerifyOptions) (*identity.User, error) {
	return nil, bus.Errorf(schemas.CodeUnavailable, "no OpenID Connect issuer is configured: start agentauth with --oidc-issuers")
}

func issuerList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// wellKnown serves the JWKS and discovery document of the tokens agentauth
// mints, so any API verifies them with a standard library.
func wellKnown(h *minterHolder) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /.well-known/jwks.json": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/jwk-set+json")
			w.Header().Set("Cache-Control", "max-age=60")
			_ = json.NewEncoder(w).Encode(h.get().JWKS())
		},
		"GET /.well-known/openid-configuration": func(w http.ResponseWriter, r *http.Request) {
			iss := h.get().Issuer()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"issuer":                                iss,
				"jwks_uri":                              iss + "/.well-known/jwks.json",
				"id_token_signing_alg_values_supported": []string{"ES256"},
				"token_endpoint_auth_methods_supported": []string{"none"},
				"grant_types_supported":                 []string{"urn:ietf:params:oauth:grant-type:token-exchange"},
				"response_types_supported":              []string{},
				"subject_types_supported":               []string{"public"},
				"service_documentation":                 "Tokens are minted over NATS (agentauth.<agent>.user.exchange) and sealed to the agent; this document publishes their keys.",
			})
		},
	}
}
