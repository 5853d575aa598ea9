package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
	"github.com/agentauth/agentauth/vault"
)

// Config is the effective configuration of `agentauth serve`. Each field
// comes from, in order of precedence: a flag, an AGENTAUTH_* environment
// variable, the YAML file named by --config, the default.
type Config struct {
	DataDir              string
	NATSListen           string
	NATSURL              string
	NATSCreds            string
	NATSNKey             string
	NATSUser             string
	NATSPassword         string
	NATSToken            string
	NATSTLSCA            string
	NATSTLSCert          string
	NATSTLSKey           string
	HTTPListen           string
	JetStreamSync        string
	StreamReplicas       int
	AuditMaxAge          time.Duration
	AuditLinger          time.Duration
	EventsMaxAge         time.Duration
	MaxEventBytes        int
	RequestTimeout       time.Duration
	ShutdownTimeout      time.Duration
	LogLevel             string
	LogFormat            string
	AnonymousAgent       string
	PublicURL            string
	OIDCIssuers          string
	OIDCAudience         string
	OIDCAccessTokenTyp   string
	DevIdP               string
	LoginClientID        string
	LoginSecret          string
	DevIdPForce          bool
	VaultKey             string
	VaultKeyFile         string
	VaultRefreshInterval time.Duration
	DevConnectionTTL     time.Duration
	OpenFGAURL           string
	OpenFGAToken         string
	OpenFGAStore         string
	OpenFGAClientID      string
	OpenFGAClientSecret  string
	OpenFGATokenIssuer   string
	OpenFGAAudience      string
	OpenFGATimeout       time.Duration
	OpenFGAListDeadline  time.Duration
	FGAUserPrefix        string
	FGARelations         string
	FGAAgentContextKeys  string
	EmbeddingsURL        string
	EmbeddingsModel      string
	EmbeddingsKey        string
	EmbeddingsDimensions int
	// Connections are the `connections:` list of the YAML file (client
	// ids and secrets may come from AGENTAUTH_CONNECTION_<NAME>_CLIENT_ID
	// and _CLIENT_SECRET instead).
	Connections []vault.Config
}

// option is one configuration setting: its flag name (also its YAML key),
// environment variable, default, help and whether its value is secret.
type option struct {
	name   string
	usage  string
	secret bool
	// redact, when set, hides the secret parts of a value shown whole
	// otherwise (the credentials in a URL).
	redact func(string) string
	ptr    func(*Config) any // *string, *int or *time.Duration
	def    string
	// emptyMeans, when set, says what an empty value does: such an
	// option's AGENTAUTH_ variable applies even when set to "" (and
	// turns it off). Any other option's empty variable counts as unset,
	// as in `VAR: ${X}` with X unset in a compose file.
	emptyMeans string
}

var options = []option{
	{name: "data-dir", def: "./agentauth-data", usage: "directory for the JetStream store, keys and vault data", ptr: func(c *Config) any { return &c.DataDir }},
	{name: "nats-listen", def: "127.0.0.1:4222", usage: "address of the embedded nats-server (ignored with --nats-url)", ptr: func(c *Config) any { return &c.NATSListen }},
	{name: "nats-url", redact: bus.RedactURL, usage: "use this NATS server or cluster instead of the embedded one (e.g. nats://nats1:4222,nats://nats2:4222)", ptr: func(c *Config) any { return &c.NATSURL }},
	{name: "nats-creds", usage: "credentials file for --nats-url", ptr: func(c *Config) any { return &c.NATSCreds }},
	{name: "nats-nkey", usage: "nkey seed file for --nats-url", ptr: func(c *Config) any { return &c.NATSNKey }},
	{name: "nats-user", usage: "user name for --nats-url", ptr: func(c *Config) any { return &c.NATSUser }},
	{name: "nats-password", secret: true, usage: "password for --nats-url", ptr: func(c *Config) any { return &c.NATSPassword }},
	{name: "nats-token", secret: true, usage: "token for --nats-url", ptr: func(c *Config) any { return &c.NATSToken }},
	{name: "nats-tls-ca", usage: "CA certificate file to verify --nats-url", ptr: func(c *Config) any { return &c.NATSTLSCA }},
	{name: "nats-tls-cert", usage: "client certificate file for --nats-url", ptr: func(c *Config) any { return &c.NATSTLSCert }},
	{name: "nats-tls-key", secret: false, usage: "client key file for --nats-url", ptr: func(c *Config) any { return &c.NATSTLSKey }},
	{name: "http-listen", def: "127.0.0.1:8080", usage: "address of the HTTP edge (/healthz, /readyz, /metrics)", ptr: func(c *Config) any { return &c.HTTPListen }},
	{name: "jetstream-sync", def: "2m", usage: "embedded JetStream fsync policy: an interval (default 2m, nats-server's own: acknowledged writes survive a process crash but those of the last interval can be lost on power failure or a kernel crash) or 'always' (every write fsynced before it is acknowledged: survives power loss, costs throughput; see docs/BENCHMARKS.md)", ptr: func(c *Config) any { return &c.JetStreamSync }},
	{name: "stream-replicas", def: "1", usage: "replicas of agentauth's streams (3 on a NATS cluster)", ptr: func(c *Config) any { return &c.StreamReplicas }},
	{name: "audit-linger", def: "10ms", usage: "how long the audit writer gathers events into one stream write; the events of the last interval are lost if the process is killed (a clean shutdown writes them)", ptr: func(c *Config) any { return &c.AuditLinger }},
	{name: "audit-max-age", def: "0s", usage: "how long the audit stream keeps events (0 = forever)", ptr: func(c *Config) any { return &c.AuditMaxAge }},
	{name: "events-max-age", def: "168h", usage: "how long an agent's event feed keeps events", ptr: func(c *Config) any { return &c.EventsMaxAge }},
	{name: "max-event-bytes", def: "65536", usage: "largest accepted request (headers + data), checked before decoding", ptr: func(c *Config) any { return &c.MaxEventBytes }},
	{name: "request-timeout", def: "10s", usage: "time limit of one request", ptr: func(c *Config) any { return &c.RequestTimeout }},
	{name: "shutdown-timeout", def: "15s", usage: "time given to in-flight requests on shutdown", ptr: func(c *Config) any { return &c.ShutdownTimeout }},
	{name: "log-level", def: "info", usage: "debug, info, warn or error", ptr: func(c *Config) any { return &c.LogLevel }},
	{name: "log-format", def: "text", usage: "text or json", ptr: func(c *Config) any { return &c.LogFormat }},
	{name: "public-url", usage: "base URL agentauth's HTTP edge is reached at: the issuer of the tokens it mints (default http://<http-listen>)", ptr: func(c *Config) any { return &c.PublicURL }},
	{name: "oidc-issuers", usage: "comma-separated OpenID Connect issuer URLs whose user tokens agentauth accepts (e.g. https://tenant.auth0.com/)", ptr: func(c *Config) any { return &c.OIDCIssuers }},
	{name: "oidc-audience", def: "agentauth", usage: "audience user tokens must carry", ptr: func(c *Config) any { return &c.OIDCAudience }},
	{name: "oidc-access-token-typ", usage: "at+jwt: every --oidc-issuers issuer marks its access tokens typ at+jwt (RFC 9068), and a token without it (an ID token) is refused where an access token is expected; empty: not required, so ID tokens with the audience pass as access tokens. Never applied to the development provider, whose access tokens are typ JWT", ptr: func(c *Config) any { return &c.OIDCAccessTokenTyp }},
	{name: "dev-idp", def: "auto", usage: "the built-in development OpenID provider at <public-url>/dev-idp (users alice and bob): auto (on when no --oidc-issuers), on, or off", ptr: func(c *Config) any { return &c.DevIdP }},
	{name: "login-client-id", def: "agentauth-web", usage: "OAuth client id of agentauth's browser login (/login) at the first OpenID issuer (or the development provider)", ptr: func(c *Config) any { return &c.LoginClientID }},
	{name: "login-client-secret", secret: true, usage: "its client secret, for a confidential client (PKCE is used either way)", ptr: func(c *Config) any { return &c.LoginSecret }},
	{name: "dev-idp-force", def: "false", usage: "run the development OpenID provider even when the HTTP edge is not on a loopback address or --public-url names another host", ptr: func(c *Config) any { return &c.DevIdPForce }},
	{name: "vault-key", secret: true, usage: "the vault master key (32 bytes, base64 or hex; generate with: openssl rand -base64 32); default: --vault-key-file", ptr: func(c *Config) any { return &c.VaultKey }},
	{name: "vault-key-file", usage: "file holding the vault master key (default <data-dir>/keys/vault.key, generated on first start: development only, keep production's elsewhere)", ptr: func(c *Config) any { return &c.VaultKeyFile }},
	{name: "vault-refresh-interval", def: "30s", usage: "how often the vault looks for tokens near expiry to refresh in the background", ptr: func(c *Config) any { return &c.VaultRefreshInterval }},
	{name: "dev-connection-ttl", def: "10m", usage: "lifetime of the access tokens the development provider issues to the demo connection (short values show refresh)", ptr: func(c *Config) any { return &c.DevConnectionTTL }},
	{name: "openfga-url", usage: "use this OpenFGA (or Auth0 FGA) HTTP API instead of the embedded one (sqlite in <data-dir>/openfga)", ptr: func(c *Config) any { return &c.OpenFGAURL }},
	{name: "openfga-api-token", secret: true, usage: "API token for --openfga-url", ptr: func(c *Config) any { return &c.OpenFGAToken }},
	{name: "openfga-client-id", usage: "client credentials for --openfga-url (Auth0 FGA, OIDC): client id", ptr: func(c *Config) any { return &c.OpenFGAClientID }},
	{name: "openfga-client-secret", secret: true, usage: "client credentials for --openfga-url: client secret", ptr: func(c *Config) any { return &c.OpenFGAClientSecret }},
	{name: "openfga-token-issuer", usage: "client credentials for --openfga-url: token issuer (a host or URL)", ptr: func(c *Config) any { return &c.OpenFGATokenIssuer }},
	{name: "openfga-audience", usage: "client credentials for --openfga-url: API audience", ptr: func(c *Config) any { return &c.OpenFGAAudience }},
	{name: "openfga-timeout", def: "3s", usage: "time limit of one call to OpenFGA (checks, writes); ListObjects waits its deadline + 2s instead", ptr: func(c *Config) any { return &c.OpenFGATimeout }},
	{name: "openfga-list-objects-deadline", def: "3s", usage: "the ListObjects deadline of the --openfga-url server (OpenFGA's --listObjects-deadline, default 3s): an answer that takes that long may be partial and is served by the post-filter; agentauth waits 2s longer for it (the embedded OpenFGA's is 3s)", ptr: func(c *Config) any { return &c.OpenFGAListDeadline }},
	{name: "openfga-store", def: "agentauth", usage: "name of the OpenFGA store (found or created at start)", ptr: func(c *Config) any { return &c.OpenFGAStore }},
	{name: "fga-user-prefix", def: "user:", usage: "how a verified user becomes an OpenFGA user: prefix + subject for the first issuer's users, prefix + <issuer host>|subject for the others", ptr: func(c *Config) any { return &c.FGAUserPrefix }},
	{name: "fga-relations", def: "can_view", usage: "comma-separated OpenFGA relations agents may ask retrieval queries about (a query without one asks about the first); any other is denied", ptr: func(c *Config) any { return &c.FGARelations }},
	{name: "fga-agent-context-keys", usage: "comma-separated OpenFGA condition-context keys agents may set in retrieval queries (default none: a query with another key is denied); current_time is always agentauth's clock", ptr: func(c *Config) any { return &c.FGAAgentContextKeys }},
	{name: "embeddings-url", usage: "an OpenAI-compatible /v1/embeddings endpoint (OpenAI, Ollama, vLLM, TEI); default: the built-in lexical embedder", ptr: func(c *Config) any { return &c.EmbeddingsURL }},
	{name: "embeddings-model", usage: "model name for --embeddings-url", ptr: func(c *Config) any { return &c.EmbeddingsModel }},
	{name: "embeddings-api-key", secret: true, usage: "API key for --embeddings-url", ptr: func(c *Config) any { return &c.EmbeddingsKey }},
	{name: "embeddings-dimensions", def: "0", usage: "dimensions the embeddings endpoint returns (0: learn from the first answer)", ptr: func(c *Config) any { return &c.EmbeddingsDimensions }},
	{name: "anonymous-agent", def: "demo", usage: "embedded NATS only, for development: connections without credentials act as this agent (created on first start, its keys in <data-dir>/keys); empty to require credentials from everyone", emptyMeans: "no anonymous agent", ptr: func(c *Config) any { return &c.AnonymousAgent }},
}

func envName(flag string) string {
	return "AGENTAUTH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func setValue(p any, s string) error {
	switch v := p.(type) {
	case *string:
		*v = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*v = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*v = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 30s, 5m or 24h", s)
		}
		*v = d
	default:
		return fmt.Errorf("unsupported option type %T", p)
	}
	return nil
}

func getValue(p any) string {
	switch v := p.(type) {
	case *string:
		return *v
	case *int:
		return strconv.Itoa(*v)
	case *time.Duration:
		return v.String()
	case *bool:
		return strconv.FormatBool(*v)
	}
	return ""
}

// configFlags holds the raw flag values of the serve-like commands.
type configFlags struct {
	file string
	vals map[string]*string
	fs   *pflag.FlagSet
}

func addConfigFlags(fs *pflag.FlagSet) *configFlags {
	cf := &configFlags{vals: map[string]*string{}, fs: fs}
	fs.StringVar(&cf.file, "config", "", "YAML configuration file (keys are the flag names); env AGENTAUTH_CONFIG")
	for _, o := range options {
		def := o.def
		if o.secret {
			def = ""
		}
		cf.vals[o.name] = fs.String(o.name, def, o.usage+" (env "+envName(o.name)+")")
		if _, ok := o.ptr(&Config{}).(*bool); ok {
			fs.Lookup(o.name).NoOptDefVal = "true"
		}
	}
	return cf
}

// load resolves the configuration: defaults, then the YAML file, then the
// environment, then flags. sources says where each value came from.
// lookupEnv is os.LookupEnv or a stand-in: a variable set to the empty
// string applies (AGENTAUTH_ANONYMOUS_AGENT= turns anonymous access off),
// an unset one does not.
func (cf *configFlags) load(lookupEnv func(string) (string, bool)) (Config, map[string]string, error) {
	var c Config
	src := map[string]string{}
	for _, o := range options {
		if err := setValue(o.ptr(&c), o.def); err != nil && o.def != "" {
			return c, nil, fmt.Errorf("default of %s: %w", o.name, err)
		}
		src[o.name] = "default"
	}
	file := cf.file
	if file == "" {
		file, _ = lookupEnv("AGENTAUTH_CONFIG")
	}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return c, nil, fmt.Errorf("config file: %w", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return c, nil, fmt.Errorf("config file %s is not valid YAML: %w", file, err)
		}
		for k, v := range m {
			if k == "connections" {
				b, _ := yaml.Marshal(v)
				if err := yaml.Unmarshal(b, &c.Connections); err != nil {
					return c, nil, fmt.Errorf("config file %s: connections: %w", file, err)
				}
				src[k] = "file"
				continue
			}
			o, ok := lookupOption(k)
			if !ok {
				return c, nil, fmt.Errorf("config file %s: unknown key %q; keys are the flag names: %s", file, k, optionNames())
			}
			if err := setValue(o.ptr(&c), fmt.Sprint(v)); err != nil {
				return c, nil, fmt.Errorf("config file %s: %s: %w", file, k, err)
			}
			src[k] = "file"
		}
	}
	for _, o := range options {
		if v, ok := lookupEnv(envName(o.name)); ok && (v != "" || o.emptyMeans != "") {
			if err := setValue(o.ptr(&c), v); err != nil {
				return c, nil, fmt.Errorf("%s: %w", envName(o.name), err)
			}
			src[o.name] = "env"
		}
	}
	for _, o := range options {
		if cf.fs.Changed(o.name) {
			if err := setValue(o.ptr(&c), *cf.vals[o.name]); err != nil {
				return c, nil, fmt.Errorf("--%s: %w", o.name, err)
			}
			src[o.name] = "flag"
		}
	}
	return c, src, c.validate()
}

func lookupOption(name string) (option, bool) {
	for _, o := range options {
		if o.name == name {
			return o, true
		}
	}
	return option{}, false
}

func optionNames() string {
	names := make([]string, len(options))
	for i, o := range options {
		names[i] = o.name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// accessTokenTyped says whether the --oidc-issuers issuers mark access
// tokens typ at+jwt (identity.IssuerConfig.DistinguishesTokenTypes).
func (c Config) accessTokenTyped() bool { return c.OIDCAccessTokenTyp != "" }

// syncPolicy interprets JetStreamSync.
func (c Config) syncPolicy() (always bool, interval time.Duration, err error) {
	if c.JetStreamSync == "always" {
		return true, 0, nil
	}
	d, err := time.ParseDuration(c.JetStreamSync)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("jetstream-sync %q: use 'always' or a positive interval such as 2m", c.JetStreamSync)
	}
	return false, d, nil
}

// commaList splits a comma-separated option, dropping blanks.
func commaList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

var reFGAName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// fgaRelations interprets FGARelations: at least one relation name.
func (c Config) fgaRelations() ([]string, error) {
	rels := commaList(c.FGARelations)
	if len(rels) == 0 {
		return nil, errors.New("fga-relations: name at least one relation agents may ask about (e.g. can_view)")
	}
	for _, r := range rels {
		if !reFGAName.MatchString(r) {
			return nil, fmt.Errorf("fga-relations: %q is not an OpenFGA relation name (A-Z a-z 0-9 _, up to 64)", r)
		}
	}
	return rels, nil
}

// fgaAgentContextKeys interprets FGAAgentContextKeys.
func (c Config) fgaAgentContextKeys() ([]string, error) {
	keys := commaList(c.FGAAgentContextKeys)
	for _, k := range keys {
		if k == retrieval.ContextCurrentTime {
			return nil, fmt.Errorf("fga-agent-context-keys: %s is always agentauth's clock, never an agent's: remove it", k)
		}
	}
	return keys, nil
}

func (c Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir must not be empty"))
	}
	if _, _, err := c.syncPolicy(); err != nil {
		errs = append(errs, err)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("stream-replicas %d: use 1 to 5", c.StreamReplicas))
	}
	if c.MaxEventBytes < 1024 || c.MaxEventBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("max-event-bytes %d: use 1024 to 1048576", c.MaxEventBytes))
	}
	if c.AnonymousAgent != "" {
		if err := schemas.ValidAgentID(c.AnonymousAgent); err != nil {
			errs = append(errs, fmt.Errorf("anonymous-agent: %w", err))
		}
	}
	switch strings.ToLower(c.OIDCAccessTokenTyp) {
	case "", "at+jwt", "application/at+jwt":
	default:
		errs = append(errs, fmt.Errorf("oidc-access-token-typ %q: use at+jwt, or leave it empty not to require a typ", c.OIDCAccessTokenTyp))
	}
	switch c.DevIdP {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("dev-idp %q: use auto, on or off", c.DevIdP))
	}
	if c.VaultRefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("vault-refresh-interval %s: must be positive", c.VaultRefreshInterval))
	}
	if c.DevConnectionTTL <= 0 {
		errs = append(errs, fmt.Errorf("dev-connection-ttl %s: must be positive", c.DevConnectionTTL))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("request-timeout must be positive"))
	}
	if c.OpenFGATimeout <= 0 {
		errs = append(errs, fmt.Errorf("openfga-timeout %s: must be positive", c.OpenFGATimeout))
	}
	if c.OpenFGAListDeadline <= 0 {
		errs = append(errs, fmt.Errorf("openfga-list-objects-deadline %s: must be positive", c.OpenFGAListDeadline))
	}
	if _, err := c.fgaRelations(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.fgaAgentContextKeys(); err != nil {
		errs = append(errs, err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log-format %q: use text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// printConfig writes the effective configuration as a table, secrets masked.
func printConfig(w io.Writer, c Config, src map[string]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE\tENV")
	for _, o := range options {
		v := getValue(o.ptr(&c))
		if o.redact != nil {
			v = o.redact(v)
		}
		if o.secret && v != "" {
			v = "******** (set)"
		}
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.name, v, src[o.name], envName(o.name))
	}
	for _, cc := range c.Connections {
		desc := cc.Provider
		if desc == "" {
			desc = cc.Name
		}
		if cc.ClientSecret != "" {
			desc += ", client secret ******** (set)"
		}
		fmt.Fprintf(tw, "connection %s\t%s\t%s\t%s\n", cc.Name, desc, src["connections"], "AGENTAUTH_CONNECTION_"+strings.ToUpper(strings.ReplaceAll(cc.Name, "-", "_"))+"_CLIENT_ID/_SECRET")
	}
	_ = tw.Flush()
}
