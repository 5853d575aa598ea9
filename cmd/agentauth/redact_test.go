package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/bus/natsembed"
)

// startExternalNATS starts a nats-server with JetStream, as an operator
// would run one, that requires user u with password pw.
func startExternalNATS(t *testing.T, listen, dir, u, pw string) *natsembed.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Listen: listen, StoreDir: dir, Configure: func(o *server.Options) error {
		o.Username, o.Password = u, pw
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// readyz returns the status and reason of GET /readyz.
func readyz(t *testing.T, m *Main) (int, string) {
	t.Helper()
	resp, err := http.Get(m.HTTPURL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Reason string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.Reason
}

// TestNATSURLCredentialsHidden: the user and password in --nats-url (of
// every server of the list) show nowhere: not at the unauthenticated /,
// not in /readyz's reason, the banner, `agentauth config` or a failed
// connection's error.
func TestNATSURLCredentialsHidden(t *testing.T) {
	const secret = "s3cret"
	dir := t.TempDir()
	ext := startExternalNATS(t, "127.0.0.1:-1", dir, "u", secret)
	defer func() { ext.Shutdown(); ext.WaitForShutdown() }()
	addr := ext.Addr().String()
	cfg := testConfig(t)
	// A list, as for a cluster; the second server is not there.
	cfg.NATSURL = "nats://u:" + secret + "@" + addr + ", nats://u:" + secret + "@127.0.0.1:1"

	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err != nil {
		_ = m.Close(context.Background())
		t.Fatalf("run: %v", err)
	}
	defer func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	shows := func(what, s string) {
		t.Helper()
		if strings.Contains(s, secret) {
			t.Errorf("%s shows the NATS password:\n%s", what, s)
		}
		if !strings.Contains(s, "***@") {
			t.Errorf("%s does not show the redacted URL:\n%s", what, s)
		}
	}
	shows("GET /", httpGet(t, m.HTTPURL()+"/"))
	var banner bytes.Buffer
	m.banner(&banner)
	shows("the banner", banner.String())
	shows("agentauth config", runCLI(t, "config", "--nats-url", cfg.NATSURL))

	ext.Shutdown()
	ext.WaitForShutdown()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Until the client notices, the reason is a stream that does
		// not answer.
		code, reason := readyz(t, m)
		if code == http.StatusServiceUnavailable && strings.Contains(reason, "not connected") {
			shows("/readyz", reason)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never reported the NATS server gone")
		}
	}
	ext = startExternalNATS(t, addr, dir, "u", secret)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := readyz(t, m); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agentauth did not reconnect to the NATS server")
		}
	}

	bad := "nats://u:wrong-" + secret + "@" + addr
	if _, err := bus.Connect(bus.ConnOptions{URL: bad}); err == nil {
		t.Error("connected with a wrong password")
	} else {
		shows("a failed connection's error", err.Error())
	}
	badCfg := testConfig(t)
	badCfg.NATSURL = bad
	m2 := NewMain(badCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	err := m2.Run(context.Background())
	_ = m2.Close(context.Background())
	if err == nil {
		t.Fatal("agentauth started with a wrong NATS password")
	}
	shows("agentauth's start-up error", err.Error())
}
