package bus

import (
	"fmt"
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
		return nil, fmt.Errorf("connect to NATS at %s: %w (is the server running and the address right?)", o.URL, err)
	}
	return nc, nil
}

// JetStream returns the JetStream API on nc. Asynchronous publishes may
// have 8,192 acks pending (the audit writer checks its own).
func JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
}
