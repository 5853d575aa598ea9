package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Config is one entry of the `connections:` list in agentauth's YAML configuration.
type Config struct {
	Name           string            `yaml:"name" json:"name"`
	Provider       string            `yaml:"provider" json:"provider,omitempty"` // catalog entry to start from; default: Name when it is in the catalog
	Title          string            `yaml:"title" json:"title,omitempty"`
	ClientID       string            `yaml:"client_id" json:"client_id,omitempty"`
	ClientSecret   string            `yaml:"client_secret" json:"-"`
	Params         map[string]string `yaml:"params" json:"params,omitempty"` // placeholder values, e.g. domain
	AuthURL        string            `yaml:"auth_url" json:"auth_url,omitempty"`
	TokenURL       string            `yaml:"token_url" json:"token_url,omitempty"`
	RevocationURL  string            `yaml:"revocation_url" json:"revocation_url,omitempty"`
	DiscoveryURL   string            `yaml:"discovery_url" json:"discovery_url,omitempty"` // an OIDC issuer (or its /.well-known/openid-configuration URL)
	Scopes         []string          `yaml:"scopes" json:"scopes,omitempty"`               // default scopes
	ScopeSeparator string            `yaml:"scope_separator" json:"scope_separator,omitempty"`
	PKCE           *bool             `yaml:"pkce" json:"pkce,omitempty"`               // nil: the catalog's; true for custom providers. Only `pkce: false` turns it off
	AuthParams     map[string]string `yaml:"auth_params" json:"auth_params,omitempty"` // merged over the provider's; an empty value removes one
	Refresh        RefreshBehaviour  `yaml:"refresh" json:"refresh,omitempty"`
	// ClientAuth is client_secret_basic or client_secret_post; default:
	// the catalog entry's, else the one the discovery document allows,
	// else client_secret_basic. Never auto-detected.
	ClientAuth string `yaml:"client_auth" json:"client_auth,omitempty"`
}

const (
	wellKnown         = "/.well-known/openid-configuration"
	maxDiscoveryBytes = 1 << 20
)

// Build resolves configured connections: catalog entries with the
// configuration's overrides, custom OAuth 2.0 providers by their URLs, or
// OIDC providers by discovery. Client id and secret come from the entry or
// from the environment: AGENTAUTH_CONNECTION_<NAME>_CLIENT_ID and
// AGENTAUTH_CONNECTION_<NAME>_CLIENT_SECRET (NAME upper-cased, '-' → '_'),
// the environment winning. hc fetches discovery documents (10 s timeout if nil).
//
// getenv nil reads the process environment. A discovered provider
// defaults to refresh rotating-grace, one given by URLs to non-rotating;
// both use PKCE S256 unless the entry says `pkce: false`, and client
// authentication client_secret_basic unless the discovery document allows
// only client_secret_post or the entry sets client_auth.
// Every result passes Validate. Configuration errors wrap
// ErrInvalidConnection; errors name the connection and never contain a
// client secret.
func Build(ctx context.Context, cfgs []Config, getenv func(string) string, hc *http.Client) (map[string]Connection, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	out := make(map[string]Connection, len(cfgs))
	for _, cfg := range cfgs {
		env := "AGENTAUTH_CONNECTION_" + envName(cfg.Name)
		secret := cfg.ClientSecret
		if s := getenv(env + "_CLIENT_SECRET"); s != "" {
			secret = s
		}
		if _, dup := out[cfg.Name]; dup {
			return nil, invalidf("connection %q is configured twice", cfg.Name)
		}
		c, err := build(ctx, cfg, hc)
		if err != nil {
			return nil, scrub(err, cfg.ClientSecret, secret)
		}
		c.ClientID, c.ClientSecret = cfg.ClientID, secret
		if id := getenv(env + "_CLIENT_ID"); id != "" {
			c.ClientID = id
		}
		if err := c.Validate(); err != nil {
			return nil, scrub(err, cfg.ClientSecret, secret)
		}
		out[c.Name] = c
	}
	return out, nil
}

// build turns one entry into a connection without client credentials.
func build(ctx context.Context, cfg Config, hc *http.Client) (Connection, error) {
	if !nameRE.MatchString(cfg.Name) {
		return Connection{}, invalidf("connection %q: the name must match [a-z0-9][a-z0-9-]*", cfg.Name)
	}
	provider := cfg.Provider
	if _, ok := Lookup(cfg.Name); ok && provider == "" {
		provider = cfg.Name
	}
	var c Connection
	switch {
	case provider != "":
		base, ok := Lookup(provider)
		if !ok {
			return Connection{}, invalidf("connection %q: provider %q is not in the catalog", cfg.Name, provider)
		}
		c = base
	case cfg.DiscoveryURL == "" && (cfg.AuthURL == "" || cfg.TokenURL == ""):
		return Connection{}, invalidf("connection %q is not in the catalog and has no provider: it needs either discovery_url or both auth_url and token_url", cfg.Name)
	default:
		c = Connection{Custom: true, Refresh: RefreshNonRotating}
	}
	c.Name = cfg.Name
	if cfg.DiscoveryURL != "" {
		raw, err := fill(cfg.DiscoveryURL, cfg.Name, provider, cfg.Params)
		if err != nil {
			return Connection{}, err
		}
		d, err := discover(ctx, hc, raw)
		if err != nil {
			return Connection{}, fmt.Errorf("connection %q: %w", cfg.Name, err)
		}
		c.AuthURL, c.TokenURL = d.AuthorizationEndpoint, d.TokenEndpoint
		if slices.Contains(d.CodeChallengeMethods, "S256") {
			c.PKCE = true
		}
		if d.RevocationEndpoint != "" {
			c.RevocationURL = d.RevocationEndpoint
		}
		if c.AuthStyle == oauth2.AuthStyleAutoDetect {
			c.AuthStyle = d.authStyle()
		}
		if c.Custom {
			c.Refresh = RefreshRotatingGrace
			c.DefaultScopes = []string{"openid"}
			if slices.Contains(d.ScopesSupported, "offline_access") {
				c.DefaultScopes = append(c.DefaultScopes, "offline_access")
			}
		}
	}
	override(&c.Title, cfg.Title)
	override(&c.AuthURL, cfg.AuthURL)
	override(&c.TokenURL, cfg.TokenURL)
	override(&c.RevocationURL, cfg.RevocationURL)
	override(&c.ScopeSeparator, cfg.ScopeSeparator)
	override(&c.Refresh, cfg.Refresh)
	if c.Title == "" {
		c.Title = c.Name
	}
	if cfg.Scopes != nil {
		c.DefaultScopes = slices.Clone(cfg.Scopes)
	}
	if c.Custom {
		// PKCE S256 whatever the document says (RFC 9700 §2.1.1; a
		// server that does not know it ignores the parameters): only an
		// explicit `pkce: false` turns it off.
		c.PKCE = true
	}
	if cfg.PKCE != nil {
		c.PKCE = *cfg.PKCE
	}
	switch cfg.ClientAuth {
	case "":
	case "client_secret_basic":
		c.AuthStyle = oauth2.AuthStyleInHeader
	case "client_secret_post":
		c.AuthStyle = oauth2.AuthStyleInParams
	default:
		return Connection{}, invalidf("connection %q: client_auth %q is not client_secret_basic or client_secret_post", cfg.Name, cfg.ClientAuth)
	}
	c.AuthStyle = c.ClientAuth() // a concrete style, never auto-detection
	if len(cfg.AuthParams) > 0 {
		if c.AuthParams == nil {
			c.AuthParams = map[string]string{}
		}
		maps.Copy(c.AuthParams, cfg.AuthParams)
		maps.DeleteFunc(c.AuthParams, func(_, v string) bool { return v == "" })
	}
	return c.resolve(provider, cfg.Params)
}

func override[T ~string](dst *T, v T) {
	if v != "" {
		*dst = v
	}
}

// envName is the connection name as it appears in environment variables.
func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// scrub removes secrets from err's message, keeping its chain.
func scrub(err error, secrets ...string) error {
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// discovery is the part of an OIDC discovery document Build uses.
type discovery struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
	ScopesSupported       []string `json:"scopes_supported"`
	TokenAuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
}

// authStyle is the client authentication to use with the document's
// provider: client_secret_post when the document lists it and not
// client_secret_basic, else client_secret_basic (RFC 6749 §2.3.1: every
// server supports it; OIDC Discovery's default when the list is absent).
func (d discovery) authStyle() oauth2.AuthStyle {
	basic, post := slices.Contains(d.TokenAuthMethods, "client_secret_basic"), slices.Contains(d.TokenAuthMethods, "client_secret_post")
	if post && !basic {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// discover fetches the discovery document of an issuer, or the document
// at raw when raw already ends in /.well-known/openid-configuration. For
// an issuer, the document's issuer must equal raw exactly.
func discover(ctx context.Context, hc *http.Client, raw string) (discovery, error) {
	docURL, issuer := raw, raw
	if strings.HasSuffix(raw, wellKnown) {
		issuer = ""
	} else {
		docURL = strings.TrimSuffix(raw, "/") + wellKnown
	}
	if err := checkURL(docURL); err != nil {
		return discovery{}, invalidf("discovery_url: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, docURL, nil)
	if err != nil {
		return discovery{}, invalidf("discovery_url: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return discovery{}, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return discovery{}, fmt.Errorf("discovery: GET %s answered %s", docURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes+1))
	if err != nil {
		return discovery{}, fmt.Errorf("discovery: GET %s: %w", docURL, err)
	}
	if len(body) > maxDiscoveryBytes {
		return discovery{}, fmt.Errorf("discovery: %s is larger than %d bytes", docURL, maxDiscoveryBytes)
	}
	d, err := parseDiscovery(body, issuer)
	if err != nil {
		return discovery{}, fmt.Errorf("discovery: %s: %w", docURL, err)
	}
	return d, nil
}

// parseDiscovery decodes a discovery document and checks its issuer
// (when issuer is not "") and that it names both endpoints.
func parseDiscovery(body []byte, issuer string) (discovery, error) {
	var d discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return discovery{}, invalidf("not a discovery document: %v", err)
	}
	switch {
	case issuer != "" && d.Issuer != issuer:
		return discovery{}, invalidf("issuer is %q, want %q (the configured discovery_url, exactly)", d.Issuer, issuer)
	case d.AuthorizationEndpoint == "" || d.TokenEndpoint == "":
		return discovery{}, invalidf("no authorization_endpoint or token_endpoint")
	}
	return d, nil
}
