package vault

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"gopkg.in/yaml.v3"
)

const testSecret = "s3cr3t-never-print-me"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// oidcServer serves a discovery document at /.well-known/openid-configuration;
// doc gets the server's URL and returns the body (a value to encode, or []byte).
func oidcServer(tb testing.TB, status int, doc func(base string) any) *httptest.Server {
	tb.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wellKnown {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		switch b := doc(srv.URL).(type) {
		case []byte:
			w.Write(b)
		default:
			json.NewEncoder(w).Encode(b)
		}
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func goodDoc(base string) any {
	return map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"revocation_endpoint":                   base + "/revoke",
		"code_challenge_methods_supported":      []string{"plain", "S256"},
		"scopes_supported":                      []string{"openid", "email", "offline_access"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post"},
	}
}

func mustBuild(tb testing.TB, cfgs []Config, getenv func(string) string) map[string]Connection {
	tb.Helper()
	got, err := Build(context.Background(), cfgs, getenv, nil)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	return got
}

func TestCustomCatalogOverrides(t *testing.T) {
	no := false
	got := mustBuild(t, []Config{{
		Name: "google", ClientID: "id", ClientSecret: testSecret, Title: "Work Google",
		Scopes: []string{"openid", "https://www.googleapis.com/auth/calendar"}, PKCE: &no,
		AuthParams: map[string]string{"prompt": "", "hd": "example.com"},
	}}, env(nil))["google"]
	want := mustLookup(t, "google")
	if got.Custom || got.AuthURL != want.AuthURL || got.TokenURL != want.TokenURL || got.Refresh != RefreshNonRotating {
		t.Errorf("catalog fields lost: %+v", got)
	}
	if got.Title != "Work Google" || got.PKCE || !slices.Equal(got.DefaultScopes, []string{"openid", "https://www.googleapis.com/auth/calendar"}) {
		t.Errorf("overrides not applied: %+v", got)
	}
	if _, ok := got.AuthParams["prompt"]; ok || got.AuthParams["hd"] != "example.com" || got.AuthParams["access_type"] != "offline" {
		t.Errorf("AuthParams = %v, want access_type kept, prompt removed, hd added", got.AuthParams)
	}
	if got.ClientID != "id" || got.ClientSecret != testSecret {
		t.Errorf("credentials = %q, %q", got.ClientID, got.ClientSecret)
	}
	if mustLookup(t, "google").AuthParams["prompt"] != "consent" {
		t.Error("Build changed the catalog")
	}
}

func TestCustomProviderWithParams(t *testing.T) {
	cfg := Config{Name: "corp-okta", Provider: "okta", Params: map[string]string{"domain": "corp.okta.com"}}
	got := mustBuild(t, []Config{cfg}, env(map[string]string{
		"AGENTAUTH_CONNECTION_CORP_OKTA_CLIENT_ID":     "env-id",
		"AGENTAUTH_CONNECTION_CORP_OKTA_CLIENT_SECRET": "env-secret",
	}))["corp-okta"]
	if got.Name != "corp-okta" || got.Title != "Okta" || got.Custom || got.Refresh != RefreshRotatingGrace {
		t.Errorf("got %+v", got)
	}
	if got.AuthURL != "https://corp.okta.com/oauth2/v1/authorize" || got.TokenURL != "https://corp.okta.com/oauth2/v1/token" {
		t.Errorf("URLs %s, %s", got.AuthURL, got.TokenURL)
	}
	if got.ClientID != "env-id" || got.ClientSecret != "env-secret" {
		t.Errorf("credentials = %q, %q; want the environment's", got.ClientID, got.ClientSecret)
	}

	cfg.Params = nil
	cfg.ClientID = "id"
	_, err := Build(context.Background(), []Config{cfg}, env(nil), nil)
	if !errors.Is(err, ErrInvalidConnection) || !strings.Contains(err.Error(), `connection "corp-okta" needs params.domain (your Okta domain`) {
		t.Errorf("err = %v, want it to name params.domain and explain it", err)
	}
}

func TestCustomEnvironmentWins(t *testing.T) {
	cfgs := []Config{
		{Name: "slack", ClientID: "cfg-id", ClientSecret: "cfg-secret"},
		{Name: "github", ClientID: "cfg-id", ClientSecret: "cfg-secret"},
		{Name: "my-idp", AuthURL: "https://idp.example/a", TokenURL: "https://idp.example/t"},
	}
	got := mustBuild(t, cfgs, env(map[string]string{
		"AGENTAUTH_CONNECTION_SLACK_CLIENT_ID":      "env-id",
		"AGENTAUTH_CONNECTION_SLACK_CLIENT_SECRET":  "env-secret",
		"AGENTAUTH_CONNECTION_MY_IDP_CLIENT_ID":     "idp-id",
		"AGENTAUTH_CONNECTION_MY_IDP_CLIENT_SECRET": "idp-secret",
	}))
	for name, want := range map[string][2]string{
		"slack": {"env-id", "env-secret"}, "github": {"cfg-id", "cfg-secret"}, "my-idp": {"idp-id", "idp-secret"},
	} {
		if c := got[name]; c.ClientID != want[0] || c.ClientSecret != want[1] {
			t.Errorf("%s: credentials %q, %q; want %q, %q", name, c.ClientID, c.ClientSecret, want[0], want[1])
		}
	}
}

func TestCustomPlainOAuth(t *testing.T) {
	yes := true
	got := mustBuild(t, []Config{{
		Name: "acme", ClientID: "id", AuthURL: "https://acme.example/oauth/authorize", TokenURL: "https://acme.example/oauth/token",
		Scopes: []string{"a", "b"}, ScopeSeparator: ",", PKCE: &yes,
	}}, env(nil))["acme"]
	want := Connection{
		Name: "acme", Title: "acme", AuthURL: "https://acme.example/oauth/authorize", TokenURL: "https://acme.example/oauth/token",
		DefaultScopes: []string{"a", "b"}, ScopeSeparator: ",", PKCE: true, Refresh: RefreshNonRotating, ClientID: "id", Custom: true,
	}
	if got.Name != want.Name || got.Title != want.Title || got.AuthURL != want.AuthURL || got.TokenURL != want.TokenURL ||
		!slices.Equal(got.DefaultScopes, want.DefaultScopes) || got.ScopeSeparator != want.ScopeSeparator ||
		got.PKCE != want.PKCE || got.Refresh != want.Refresh || got.ClientID != want.ClientID || got.Custom != want.Custom {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestDiscoverOIDC(t *testing.T) {
	srv := oidcServer(t, http.StatusOK, goodDoc)
	for _, raw := range []string{srv.URL, srv.URL + wellKnown} {
		got := mustBuild(t, []Config{{Name: "corp", ClientID: "id", DiscoveryURL: raw}}, env(nil))["corp"]
		if got.AuthURL != srv.URL+"/authorize" || got.TokenURL != srv.URL+"/token" || got.RevocationURL != srv.URL+"/revoke" {
			t.Errorf("%s: URLs %s, %s, %s", raw, got.AuthURL, got.TokenURL, got.RevocationURL)
		}
		if !got.PKCE || !got.Custom || got.Refresh != RefreshRotatingGrace || got.AuthStyle != oauth2.AuthStyleInParams {
			t.Errorf("%s: PKCE %v, Custom %v, Refresh %s, AuthStyle %d", raw, got.PKCE, got.Custom, got.Refresh, got.AuthStyle)
		}
		if !slices.Equal(got.DefaultScopes, []string{"openid", "offline_access"}) {
			t.Errorf("%s: DefaultScopes %v", raw, got.DefaultScopes)
		}
	}

	// Explicit settings win over the document.
	got := mustBuild(t, []Config{{
		Name: "corp", ClientID: "id", DiscoveryURL: srv.URL, TokenURL: "https://proxy.example/token",
		Refresh: RefreshRotating, Scopes: []string{"openid"},
	}}, env(nil))["corp"]
	if got.TokenURL != "https://proxy.example/token" || got.Refresh != RefreshRotating || !slices.Equal(got.DefaultScopes, []string{"openid"}) {
		t.Errorf("overrides lost: %+v", got)
	}

	// No S256 listed (PKCE S256 all the same), no revocation endpoint.
	plain := oidcServer(t, http.StatusOK, func(base string) any {
		return map[string]any{"issuer": base, "authorization_endpoint": base + "/a", "token_endpoint": base + "/t", "code_challenge_methods_supported": []string{"plain"}}
	})
	got = mustBuild(t, []Config{{Name: "plain", ClientID: "id", DiscoveryURL: plain.URL}}, env(nil))["plain"]
	if !got.PKCE || got.RevocationURL != "" || got.AuthStyle != oauth2.AuthStyleInHeader || !slices.Equal(got.DefaultScopes, []string{"openid"}) {
		t.Errorf("got %+v", got)
	}
}

// TestCustomClientAuth: every built connection has a concrete client
// authentication, never x/oauth2's auto-detection: Basic unless the
// catalog, the discovery document (client_secret_post without
// client_secret_basic) or client_auth says otherwise.
func TestCustomClientAuth(t *testing.T) {
	doc := func(methods ...string) *httptest.Server {
		return oidcServer(t, http.StatusOK, func(base string) any {
			d := map[string]any{"issuer": base, "authorization_endpoint": base + "/a", "token_endpoint": base + "/t"}
			if methods != nil {
				d["token_endpoint_auth_methods_supported"] = methods
			}
			return d
		})
	}
	urls := Config{AuthURL: "https://acme.example/a", TokenURL: "https://acme.example/t"}
	withAuth := func(c Config, auth string) Config { c.ClientAuth = auth; return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want oauth2.AuthStyle
	}{
		{"URLs only", urls, oauth2.AuthStyleInHeader},
		{"URLs, client_secret_post", withAuth(urls, "client_secret_post"), oauth2.AuthStyleInParams},
		{"discovery without methods", Config{DiscoveryURL: doc().URL}, oauth2.AuthStyleInHeader},
		{"discovery, post only", Config{DiscoveryURL: doc("client_secret_post").URL}, oauth2.AuthStyleInParams},
		{"discovery, basic and post", Config{DiscoveryURL: doc("client_secret_post", "client_secret_basic").URL}, oauth2.AuthStyleInHeader},
		{"discovery, private_key_jwt only", Config{DiscoveryURL: doc("private_key_jwt").URL}, oauth2.AuthStyleInHeader},
		{"discovery, post only, client_auth basic", Config{DiscoveryURL: doc("client_secret_post").URL, ClientAuth: "client_secret_basic"}, oauth2.AuthStyleInHeader},
		{"catalog entry without a style", Config{Provider: "github"}, oauth2.AuthStyleInHeader},
		{"catalog entry with a style", Config{Provider: "jira"}, oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name, tc.cfg.ClientID = "corp", "id"
			got := mustBuild(t, []Config{tc.cfg}, env(nil))["corp"]
			if got.AuthStyle != tc.want || got.OAuth2("https://broker.example/cb", nil).Endpoint.AuthStyle != tc.want {
				t.Errorf("AuthStyle %d, x/oauth2 config %d; want %d", got.AuthStyle, got.OAuth2("", nil).Endpoint.AuthStyle, tc.want)
			}
		})
	}
}

func TestCustomErrors(t *testing.T) {
	good := oidcServer(t, http.StatusOK, goodDoc)
	wrongIssuer := oidcServer(t, http.StatusOK, func(string) any { return goodDoc("https://other.example") })
	failing := oidcServer(t, http.StatusInternalServerError, func(string) any { return []byte(`{"error":"` + testSecret + `"}`) })
	malformed := oidcServer(t, http.StatusOK, func(string) any { return []byte(`{"issuer": `) })
	noEndpoints := oidcServer(t, http.StatusOK, func(base string) any { return map[string]string{"issuer": base} })
	huge := oidcServer(t, http.StatusOK, func(string) any { return []byte(`{"x":"` + strings.Repeat("a", maxDiscoveryBytes) + `"}`) })

	for _, tc := range []struct {
		name string
		cfgs []Config
		env  map[string]string
		want string
	}{
		{"duplicate", []Config{{Name: "google", ClientID: "id"}, {Name: "google", ClientID: "id"}}, nil, `connection "google" is configured twice`},
		{"unknown provider", []Config{{Name: "corp", Provider: "gooogle"}}, nil, `provider "gooogle" is not in the catalog`},
		{"no urls", []Config{{Name: "corp"}}, nil, "needs either discovery_url or both auth_url and token_url"},
		{"only auth url", []Config{{Name: "corp", AuthURL: "https://corp.example/a"}}, nil, "needs either discovery_url or both auth_url and token_url"},
		{"bad name", []Config{{Name: "Corp_1"}}, nil, "name must match"},
		{"no client id", []Config{{Name: "google", ClientSecret: testSecret}}, nil, "AGENTAUTH_CONNECTION_GOOGLE_CLIENT_ID"},
		{"http url", []Config{{Name: "corp", AuthURL: "http://corp.example/a", TokenURL: "https://corp.example/t"}}, nil, "auth_url"},
		{"bad refresh", []Config{{Name: "google", Refresh: "weekly"}}, nil, `refresh "weekly"`},
		{"secret in a param", []Config{{Name: "okta", Params: map[string]string{"domain": testSecret + "/x"}}}, nil, "params.domain"},
		{"env secret in a param", []Config{{Name: "okta", ClientSecret: "cfg-secret", Params: map[string]string{"domain": "env/" + testSecret}}},
			map[string]string{"AGENTAUTH_CONNECTION_OKTA_CLIENT_SECRET": testSecret}, "params.domain"},
		{"discovery 500", []Config{{Name: "corp", DiscoveryURL: failing.URL}}, nil, "500"},
		{"wrong issuer", []Config{{Name: "corp", DiscoveryURL: wrongIssuer.URL}}, nil, `issuer is "https://other.example"`},
		{"issuer not exact", []Config{{Name: "corp", DiscoveryURL: good.URL + "/"}}, nil, "issuer is"},
		{"malformed", []Config{{Name: "corp", DiscoveryURL: malformed.URL}}, nil, "not a discovery document"},
		{"no endpoints", []Config{{Name: "corp", DiscoveryURL: noEndpoints.URL}}, nil, "no authorization_endpoint or token_endpoint"},
		{"too large", []Config{{Name: "corp", DiscoveryURL: huge.URL}}, nil, "larger than"},
		{"not found", []Config{{Name: "corp", DiscoveryURL: good.URL + "/nope" + wellKnown}}, nil, "404"},
		{"discovery http", []Config{{Name: "corp", DiscoveryURL: "http://idp.example"}}, nil, "discovery_url"},
		{"discovery unreachable", []Config{{Name: "corp", DiscoveryURL: "https://127.0.0.1:1"}}, nil, "discovery"},
		{"bad client_auth", []Config{{Name: "google", ClientAuth: "private_key_jwt"}}, nil, `client_auth "private_key_jwt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := make([]Config, len(tc.cfgs))
			for i, c := range tc.cfgs {
				if c.ClientID == "" && tc.name != "no client id" {
					c.ClientID = "id"
				}
				if c.ClientSecret == "" {
					c.ClientSecret = testSecret
				}
				cfgs[i] = c
			}
			got, err := Build(context.Background(), cfgs, env(tc.env), nil)
			if err == nil {
				t.Fatalf("Build = %v, nil; want an error about %s", got, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("err = %q, want it to contain %q", msg, tc.want)
			}
			if !strings.Contains(msg, `connection "`) {
				t.Errorf("err = %q does not name the connection", msg)
			}
			if strings.Contains(msg, testSecret) {
				t.Errorf("err = %q contains the client secret", msg)
			}
		})
	}
}

func TestCustomRedacted(t *testing.T) {
	c := mustLookup(t, "google")
	c.ClientID, c.ClientSecret = "id", testSecret
	r := c.Redacted()
	if r.ClientSecret != "" || r.ClientID != "id" || c.ClientSecret != testSecret {
		t.Errorf("Redacted: %q/%q, original %q", r.ClientID, r.ClientSecret, c.ClientSecret)
	}
	r.AuthParams["prompt"] = "none"
	if c.AuthParams["prompt"] != "consent" {
		t.Error("Redacted shares AuthParams with the original")
	}
	b, _ := json.Marshal(Config{Name: "x", ClientSecret: testSecret})
	if strings.Contains(string(b), testSecret) {
		t.Errorf("Config JSON %s contains the secret", b)
	}
}

func TestCustomConfigYAML(t *testing.T) {
	var doc struct {
		Connections []Config `yaml:"connections"`
	}
	src := `
connections:
  - name: corp-okta
    provider: okta
    client_id: abc
    client_secret: def
    params: {domain: corp.okta.com}
    scopes: [openid, offline_access]
    pkce: false
    refresh: rotating
    auth_params: {prompt: login}
    client_auth: client_secret_post
`
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	got := mustBuild(t, doc.Connections, env(nil))["corp-okta"]
	if got.PKCE || got.Refresh != RefreshRotating || got.ClientSecret != "def" || got.AuthParams["prompt"] != "login" || got.AuthStyle != oauth2.AuthStyleInParams ||
		got.TokenURL != "https://corp.okta.com/oauth2/v1/token" || !slices.Equal(got.DefaultScopes, []string{"openid", "offline_access"}) {
		t.Errorf("got %+v", got)
	}
}

func FuzzDiscoverDocument(f *testing.F) {
	f.Add([]byte(`{"issuer":"https://i.example","authorization_endpoint":"https://i.example/a","token_endpoint":"https://i.example/t"}`), "https://i.example")
	f.Add([]byte(`{"issuer":"https://i.example","code_challenge_methods_supported":"S256"}`), "")
	f.Add([]byte(`[]`), "https://i.example")
	f.Add([]byte(`{"issuer": null, "token_endpoint": 1}`), "")
	f.Fuzz(func(t *testing.T, body []byte, issuer string) {
		d, err := parseDiscovery(body, issuer)
		if err != nil {
			if !errors.Is(err, ErrInvalidConnection) {
				t.Fatalf("error %v does not wrap ErrInvalidConnection", err)
			}
			return
		}
		if d.AuthorizationEndpoint == "" || d.TokenEndpoint == "" || (issuer != "" && d.Issuer != issuer) {
			t.Fatalf("accepted %+v for issuer %q", d, issuer)
		}
	})
}

// TestCustomPKCEByDefault: a custom provider's authorize requests carry
// PKCE S256, whether given by URLs or discovered (even when its document
// does not list S256); only an explicit `pkce: false` leaves it out.
func TestCustomPKCEByDefault(t *testing.T) {
	no := false
	noMethods := oidcServer(t, http.StatusOK, func(base string) any {
		return map[string]any{"issuer": base, "authorization_endpoint": base + "/a", "token_endpoint": base + "/t"}
	})
	for _, tc := range []struct {
		name string
		cfg  Config
		pkce bool
	}{
		{"URLs only", Config{}, true},
		{"URLs, pkce: false", Config{PKCE: &no}, false},
		{"discovered without S256 listed", Config{DiscoveryURL: noMethods.URL}, true},
		{"discovered, pkce: false", Config{DiscoveryURL: noMethods.URL, PKCE: &no}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustVault(t, modeStrict)
			cfg := tc.cfg
			cfg.Name, cfg.ClientID, cfg.ClientSecret, cfg.Scopes = "acme", h.prov.clientID, h.prov.clientSecret, []string{"read"}
			// The fake provider's endpoints (over the document's, if any).
			cfg.AuthURL, cfg.TokenURL = h.prov.URL()+"/authorize", h.prov.URL()+"/token"
			h.svc.Connections = mustBuild(t, []Config{cfg}, env(nil))

			h.link(t, alice, "acme")
			q := h.prov.LastAuthorize()
			if got := q.Get("code_challenge_method") == "S256" && q.Get("code_challenge") != ""; got != tc.pkce {
				t.Errorf("authorize request with PKCE S256 = %v (query %v), want %v", got, q, tc.pkce)
			}
			if n := h.prov.pkceChecked.Load(); (n == 1) != tc.pkce {
				t.Errorf("code exchanges with a verified PKCE verifier = %d, want PKCE %v", n, tc.pkce)
			}
		})
	}
}
