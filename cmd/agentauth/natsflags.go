package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/agentauth/agentauth/bus"
)

// natsFlags are how an operator tool (replay, agent, …) reaches the NATS
// server of an agentauth instance. With no credentials given, the
// operator key the embedded server generated in the data dir is used.
type natsFlags struct {
	url, creds, nkey, dataDir string
}

func (f *natsFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats-url", envOr("AGENTAUTH_NATS_URL", "nats://127.0.0.1:4222"), "NATS server of the agentauth instance (env AGENTAUTH_NATS_URL)")
	fs.StringVar(&f.creds, "nats-creds", os.Getenv("AGENTAUTH_NATS_CREDS"), "NATS credentials file (env AGENTAUTH_NATS_CREDS)")
	fs.StringVar(&f.nkey, "nats-nkey", os.Getenv("AGENTAUTH_NATS_NKEY"), "NATS nkey seed file (env AGENTAUTH_NATS_NKEY); default: <data-dir>/keys/admin.nk when it exists")
	fs.StringVar(&f.dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of an embedded-NATS instance, for its operator key (env AGENTAUTH_DATA_DIR)")
}

func (f *natsFlags) connect(name string) (*nats.Conn, error) {
	o := bus.ConnOptions{URL: f.url, Name: name, CredsFile: f.creds, NKeyFile: f.nkey}
	if o.CredsFile == "" && o.NKeyFile == "" {
		if _, err := os.Stat(keyPath(f.dataDir, adminKeyFile)); err == nil {
			o.NKeyFile = keyPath(f.dataDir, adminKeyFile)
		}
	}
	return bus.Connect(o)
}

// explain turns a timeout caused by a refused permission into an error
// that says what to do.
func (f *natsFlags) explain(nc *nats.Conn, err error) error {
	if err == nil {
		return nil
	}
	if le := nc.LastError(); le != nil && errors.Is(le, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w: the NATS user lacks permission (%v); run with the operator's key: --data-dir of the instance, or --nats-nkey <data-dir>/keys/%s", err, le, adminKeyFile)
	}
	return err
}

// openStore connects as f says and opens a store over that connection
// with open; close closes the connection.
func openStore[S any](ctx context.Context, f *natsFlags, name string, open func(context.Context, jetstream.JetStream) (S, error)) (s S, close func(), err error) {
	nc, err := f.connect(name)
	if err != nil {
		return s, nil, err
	}
	js, err := bus.JetStream(nc)
	if err != nil {
		nc.Close()
		return s, nil, err
	}
	if s, err = open(ctx, js); err != nil {
		nc.Close()
		return s, nil, f.explain(nc, err)
	}
	return s, nc.Close, nil
}
