package vault

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"
	"golang.org/x/oauth2/google"
)

const sampleDomain = "example.test"

// resolvedSample gives c a client id and resolves its placeholders with
// sampleDomain.
func resolvedSample(tb testing.TB, c Connection) Connection {
	tb.Helper()
	params := map[string]string{}
	for _, u := range []string{c.AuthURL, c.TokenURL, c.RevocationURL} {
		for _, m := range placeholderRE.FindAllStringSubmatch(u, -1) {
			params[m[1]] = sampleDomain
		}
	}
	r, err := c.Resolve(params)
	if err != nil {
		tb.Fatalf("%s: Resolve(%v): %v", c.Name, params, err)
	}
	r.ClientID = "client-id"
	return r
}

func TestCatalogEntriesValidate(t *testing.T) {
	cat := Catalog()
	if len(cat) < 40 {
		t.Fatalf("catalog has %d entries, want ≥ 40", len(cat))
	}
	for _, c := range cat {
		t.Run(c.Name, func(t *testing.T) {
			if err := resolvedSample(t, c).Validate(); err != nil {
				t.Fatal(err)
			}
			if c.Title == "" || c.Docs == "" {
				t.Errorf("Title %q, Docs %q: want both", c.Title, c.Docs)
			}
			if u, err := url.Parse(c.Docs); err != nil || u.Scheme != "https" || u.Host == "" {
				t.Errorf("Docs %q is not an https URL", c.Docs)
			}
		})
	}
}

func TestCatalogNamesSortedUnique(t *testing.T) {
	cat := Catalog()
	names := make([]string, len(cat))
	for i, c := range cat {
		names[i] = c.Name
	}
	if !slices.IsSorted(names) {
		t.Errorf("names not sorted: %v", names)
	}
	if got := len(slices.Compact(slices.Clone(names))); got != len(names) {
		t.Errorf("%d unique names of %d", got, len(names))
	}
	for _, want := range []string{
		"google", "microsoft", "slack", "github", "gitlab", "bitbucket", "atlassian", "jira", "confluence",
		"notion", "dropbox", "box", "salesforce", "hubspot", "zoom", "linear", "asana", "discord", "spotify",
		"figma", "airtable", "zendesk", "intercom", "quickbooks", "xero", "docusign", "linkedin", "x", "reddit",
		"twitch", "calendly", "monday", "clickup", "shopify", "stripe", "okta", "auth0",
	} {
		if _, ok := Lookup(want); !ok {
			t.Errorf("Lookup(%q) = false", want)
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error(`Lookup("nope") = true`)
	}
}

func TestCatalogHasNoCredentials(t *testing.T) {
	for _, c := range Catalog() {
		if c.ClientID != "" || c.ClientSecret != "" || c.Custom {
			t.Errorf("%s: ClientID %q, ClientSecret %q, Custom %v; want empty, empty, false", c.Name, c.ClientID, c.ClientSecret, c.Custom)
		}
		for k := range c.AuthParams {
			if strings.HasPrefix(k, "client_") {
				t.Errorf("%s: AuthParams has %q", c.Name, k)
			}
		}
		for _, u := range []string{c.AuthURL, c.TokenURL, c.RevocationURL} {
			if strings.Contains(u, "client_") {
				t.Errorf("%s: URL %q carries a client parameter", c.Name, u)
			}
		}
	}
}

// TestCatalogMatchesEndpoints checks the entries built from
// golang.org/x/oauth2/endpoints against that package.
func TestCatalogMatchesEndpoints(t *testing.T) {
	for name, want := range map[string]oauth2.Endpoint{
		"asana":           endpoints.Asana,
		"bitbucket":       endpoints.Bitbucket,
		"cognito":         endpoints.AWSCognito("https://" + sampleDomain),
		"discord":         endpoints.Discord,
		"dropbox":         endpoints.Dropbox,
		"fitbit":          endpoints.Fitbit,
		"github":          endpoints.GitHub,
		"github-app":      endpoints.GitHub,
		"gitlab":          endpoints.GitLab,
		"gmail":           google.Endpoint,
		"google":          google.Endpoint,
		"google-calendar": google.Endpoint,
		"google-drive":    google.Endpoint,
		"heroku":          endpoints.Heroku,
		"linkedin":        endpoints.LinkedIn,
		"mailchimp":       endpoints.Mailchimp,
		"microsoft":       endpoints.AzureAD("common"),
		"pipedrive":       endpoints.Pipedrive,
		"shopify":         endpoints.Shopify(sampleDomain),
		"slack":           endpoints.Slack,
		"spotify":         endpoints.Spotify,
		"strava":          endpoints.Strava,
		"twitch":          endpoints.Twitch,
		"x":               endpoints.X,
		"zoom":            endpoints.Zoom,
	} {
		c, ok := Lookup(name)
		if !ok {
			t.Errorf("Lookup(%q) = false", name)
			continue
		}
		c = resolvedSample(t, c)
		if c.AuthURL != want.AuthURL || c.TokenURL != want.TokenURL {
			t.Errorf("%s: got %s, %s; want %s, %s (x/oauth2/endpoints)", name, c.AuthURL, c.TokenURL, want.AuthURL, want.TokenURL)
		}
		// Where x/oauth2 knows the provider's client authentication, the
		// catalog agrees; elsewhere it is never auto-detection.
		if want.AuthStyle != oauth2.AuthStyleAutoDetect && c.ClientAuth() != want.AuthStyle {
			t.Errorf("%s: client authentication %d, want x/oauth2's %d", name, c.ClientAuth(), want.AuthStyle)
		}
	}
}

func authURL(tb testing.TB, c Connection, scopes []string) url.Values {
	tb.Helper()
	u, err := url.Parse(c.OAuth2("https://broker.example/connect/callback", nil).AuthCodeURL("st", c.AuthCodeOptions(scopes)...))
	if err != nil {
		tb.Fatal(err)
	}
	return u.Query()
}

func TestCatalogGoogleAuthCodeURL(t *testing.T) {
	c, _ := Lookup("google")
	q := authURL(t, resolvedSample(t, c), nil)
	for k, want := range map[string]string{
		"access_type": "offline", "prompt": "consent", "scope": "openid email",
		"client_id": "client-id", "state": "st", "response_type": "code",
		"redirect_uri": "https://broker.example/connect/callback",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestCatalogScopeSeparator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scopes []string
		want   string
	}{
		{"slack", []string{"channels:read", "chat:write"}, "channels:read,chat:write"},
		{"slack", nil, "users:read"},
		{"linear", []string{"read", "write"}, "read,write"},
		{"google", []string{"openid", "email"}, "openid email"},
		{"bitbucket", nil, ""},
	} {
		c, _ := Lookup(tc.name)
		if got := c.AuthScopeParam(tc.scopes); got != tc.want {
			t.Errorf("%s.AuthScopeParam(%q) = %q, want %q", tc.name, tc.scopes, got, tc.want)
		}
		q := authURL(t, resolvedSample(t, c), tc.scopes)
		if got := q.Get("scope"); got != tc.want || q.Has("scope") != (tc.want != "") {
			t.Errorf("%s: scope in URL = %q (present %v), want %q", tc.name, got, q.Has("scope"), tc.want)
		}
	}
}

func TestCatalogAuthCodeOptionsDeterministic(t *testing.T) {
	c := resolvedSample(t, Connection{Name: "p", AuthURL: "https://p.example/a", TokenURL: "https://p.example/t",
		Refresh: RefreshNonRotating, AuthParams: map[string]string{"z": "1", "a": "2", "m": "3", "b": "4"}})
	cfg := c.OAuth2("https://broker.example/cb", []string{"ignored"})
	if cfg.Scopes != nil {
		t.Errorf("Scopes = %v, want nil", cfg.Scopes)
	}
	first := cfg.AuthCodeURL("s", c.AuthCodeOptions([]string{"x"})...)
	for range 20 {
		if got := cfg.AuthCodeURL("s", c.AuthCodeOptions([]string{"x"})...); got != first {
			t.Fatalf("AuthCodeURL changed: %s then %s", first, got)
		}
	}
	if n := len(c.AuthCodeOptions(nil)); n != 4 {
		t.Errorf("%d options without scopes, want 4", n)
	}
}

func TestCatalogOAuth2(t *testing.T) {
	c, _ := Lookup("notion")
	c.ClientID, c.ClientSecret = "id", "secret"
	cfg := c.OAuth2("https://broker.example/cb", nil)
	want := oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL, AuthStyle: oauth2.AuthStyleInHeader}
	if cfg.Endpoint != want || cfg.ClientID != "id" || cfg.ClientSecret != "secret" || cfg.RedirectURL != "https://broker.example/cb" {
		t.Errorf("OAuth2 = %+v", cfg)
	}
}

func TestCatalogResolve(t *testing.T) {
	okta, _ := Lookup("okta")
	for _, tc := range []struct {
		name    string
		params  map[string]string
		wantErr []string // substrings; nil for success
	}{
		{"ok", map[string]string{"domain": "dev-123.okta.com", "unused": "x"}, nil},
		{"missing", nil, []string{`connection "okta" needs params.domain`, "your Okta domain, e.g. dev-123.okta.com"}},
		{"empty", map[string]string{"domain": ""}, []string{"params.domain"}},
		{"slash", map[string]string{"domain": "evil.example/x"}, []string{"params.domain", "host name"}},
		{"scheme", map[string]string{"domain": "https://dev-123.okta.com"}, []string{"params.domain"}},
		{"port", map[string]string{"domain": "dev-123.okta.com:443"}, []string{"params.domain"}},
		{"query", map[string]string{"domain": "a.example?x=y"}, []string{"params.domain"}},
		{"dots", map[string]string{"domain": ".."}, []string{"params.domain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := okta.Resolve(tc.params)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got.AuthURL != "https://dev-123.okta.com/oauth2/v1/authorize" || got.RevocationURL != "https://dev-123.okta.com/oauth2/v1/revoke" {
					t.Errorf("resolved URLs %s, %s", got.AuthURL, got.RevocationURL)
				}
				if !strings.Contains(okta.AuthURL, "{domain}") {
					t.Errorf("Resolve changed its receiver: %s", okta.AuthURL)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConnection) {
				t.Fatalf("err = %v, want ErrInvalidConnection", err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestCatalogReturnsCopies(t *testing.T) {
	a := Catalog()
	for i := range a {
		if len(a[i].DefaultScopes) > 0 {
			a[i].DefaultScopes[0] = "mutated"
		}
		for k := range a[i].AuthParams {
			a[i].AuthParams[k] = "mutated"
		}
		a[i].AuthURL = "mutated"
	}
	g, _ := Lookup("google")
	g.AuthParams["prompt"] = "mutated"
	g.DefaultScopes[0] = "mutated"
	for _, c := range append(Catalog(), mustLookup(t, "google"), mustLookup(t, "gmail")) {
		if c.AuthURL == "mutated" || slices.Contains(c.DefaultScopes, "mutated") {
			t.Errorf("%s: a caller's change leaked into the catalog: %+v", c.Name, c)
		}
		for k, v := range c.AuthParams {
			if v == "mutated" {
				t.Errorf("%s: AuthParams[%s] leaked a caller's change", c.Name, k)
			}
		}
	}
}

func mustLookup(tb testing.TB, name string) Connection {
	tb.Helper()
	c, ok := Lookup(name)
	if !ok {
		tb.Fatalf("Lookup(%q) = false", name)
	}
	return c
}

func TestCatalogValidate(t *testing.T) {
	good := Connection{Name: "p", AuthURL: "https://p.example/a", TokenURL: "https://p.example/t", Refresh: RefreshRotating, ClientID: "id"}
	for _, tc := range []struct {
		name string
		edit func(*Connection)
		want string // "" for valid
	}{
		{"good", func(*Connection) {}, ""},
		{"loopback http", func(c *Connection) { c.TokenURL = "http://127.0.0.1:8080/t"; c.AuthURL = "http://localhost/a" }, ""},
		{"ipv6 loopback", func(c *Connection) { c.RevocationURL = "http://[::1]:9/r" }, ""},
		{"comma separator", func(c *Connection) { c.ScopeSeparator = "," }, ""},
		{"upper-case name", func(c *Connection) { c.Name = "Google" }, "name must match"},
		{"leading dash", func(c *Connection) { c.Name = "-x" }, "name must match"},
		{"empty name", func(c *Connection) { c.Name = "" }, "name must match"},
		{"http", func(c *Connection) { c.TokenURL = "http://p.example/t" }, "token_url"},
		{"relative", func(c *Connection) { c.AuthURL = "/authorize" }, "auth_url"},
		{"missing token url", func(c *Connection) { c.TokenURL = "" }, "token_url"},
		{"bad revocation", func(c *Connection) { c.RevocationURL = "ftp://p.example/r" }, "revocation_url"},
		{"userinfo", func(c *Connection) { c.AuthURL = "https://u:p@p.example/a" }, "auth_url"},
		{"placeholder", func(c *Connection) { c.AuthURL = "https://{domain}/a" }, "params.domain"},
		{"refresh", func(c *Connection) { c.Refresh = "sometimes" }, "refresh"},
		{"no refresh", func(c *Connection) { c.Refresh = "" }, "refresh"},
		{"separator", func(c *Connection) { c.ScopeSeparator = ";" }, "separator"},
		{"auth style", func(c *Connection) { c.AuthStyle = 7 }, "auth style"},
		{"reserved param", func(c *Connection) { c.AuthParams = map[string]string{"redirect_uri": "https://evil.example"} }, "redirect_uri"},
		{"no client id", func(c *Connection) { c.Name = "my-app"; c.ClientID = "" }, "AGENTAUTH_CONNECTION_MY_APP_CLIENT_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good.clone()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("Validate() = nil, want an error about %s", tc.want)
			case !errors.Is(err, ErrInvalidConnection) || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate() = %v, want ErrInvalidConnection mentioning %q", err, tc.want)
			}
		})
	}
}
