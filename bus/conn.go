package bus

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// ConnOptions say how to reach a NATS server.
type ConnOptions struct {
	URL         string
	Name        string
	CredsFile   string
	NKeyFile    string
	NKeySeed    []byte // a user seed held in memory (agentauth's own key, an agent's credentials)
	User        string
	Password    string
	Token       string
	TLSCA       string
	TLSCert     string
	TLSKey      string
	InboxPrefix string
	// OnAsyncError receives asynchronous errors (permission violations,
	// slow consumers, consumers gone); default: nats.go prints them.
	OnAsyncError func(error)
}

// Connect dials NATS with reconnects enabled; errors name the URL and say
// what to check.
func Connect(o ConnOptions) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", o.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	if len(o.NKeySeed) > 0 {
		kp, err := nkeys.FromSeed(o.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("nkey seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("nkey seed: %w", err)
		}
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.OnAsyncError != nil {
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { o.OnAsyncError(err) }))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is the server running and the address right?)", RedactURL(o.URL), redactedError{err, o.URL})
	}
	return nc, nil
}

// RedactURL replaces the user information (user and password, or token)
// of every URL in a comma-separated list of NATS server URLs with "***",
// for messages, pages and logs. Unlike url.URL.Redacted it hides the user
// name too: nats://TOKEN@host carries a token there.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if j, k, ok := userinfo(p); ok {
			parts[i] = p[:j] + "***" + p[k:]
		}
	}
	return strings.Join(parts, ",")
}

// StripUserinfo removes the user information (and its @) of every URL in
// a comma-separated list of NATS server URLs: the address without the
// credentials of whoever wrote it, for handing to someone else.
func StripUserinfo(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if j, k, ok := userinfo(p); ok {
			parts[i] = p[:j] + p[k+1:]
		}
	}
	return strings.Join(parts, ",")
}

// userinfo finds the user information of a URL: u[j:k], up to the last @
// (a password may hold / ? # or @ itself).
func userinfo(u string) (j, k int, ok bool) {
	if i := strings.Index(u, "://"); i >= 0 {
		j = i + 3
	}
	k = strings.LastIndex(u, "@")
	return j, k, k >= j
}

// redactedError is err with the user information of urls hidden in its
// message (a URL parse error quotes the URL).
type redactedError struct {
	err  error
	urls string
}

func (e redactedError) Error() string {
	msg := e.err.Error()
	for _, p := range strings.Split(e.urls, ",") {
		if j, k, ok := userinfo(p); ok && k > j {
			msg = strings.ReplaceAll(msg, p[j:k], "***")
		}
	}
	return msg
}

func (e redactedError) Unwrap() error { return e.err }

// JetStream returns the JetStream API on nc. Asynchronous publishes may
// have 8,192 acks pending, each failing after 10 s without an ack (the
// audit writer checks its own and writes those again).
func JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192), jetstream.WithPublishAsyncTimeout(10*time.Second))
}
