package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/client"
)

// TestMain lets the test binary act as the agentauth command, so the
// process tests run the real main (signals, banner, exit codes).
func TestMain(m *testing.M) {
	if os.Getenv("AGENTAUTH_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestServeProcess starts `agentauth serve` as a process, talks to it at
// the address its banner gives, and stops it with SIGTERM.
func TestServeProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "serve", "--data-dir", dir, "--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "AGENTAUTH_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	natsRE := regexp.MustCompile(`NATS\s+(nats://\S+)`)
	var url string
	var banner []string
	deadline := time.After(60 * time.Second)
	for url == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("serve exited before its banner:\n%s", strings.Join(banner, "\n"))
			}
			banner = append(banner, l)
			if m := natsRE.FindStringSubmatch(l); m != nil {
				url = m[1]
			}
		case <-deadline:
			t.Fatalf("no banner:\n%s", strings.Join(banner, "\n"))
		}
	}
	// The banner's example command must be there: read the rest of it.
	for !strings.Contains(banner[len(banner)-1], "Press Ctrl-C") {
		l, ok := <-lines
		if !ok {
			t.Fatalf("serve exited:\n%s", strings.Join(banner, "\n"))
		}
		banner = append(banner, l)
	}
	if !strings.Contains(strings.Join(banner, "\n"), "req agentauth.demo.sys.info") {
		t.Errorf("banner lacks the example request:\n%s", strings.Join(banner, "\n"))
	}
	c, err := client.Connect(context.Background(), client.Options{URL: url, Agent: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.SysInfo(context.Background())
	c.Close()
	if err != nil || info.Agent != "demo" {
		t.Fatalf("sys.info from the process: %+v, %v", info, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, strings.Join(rest, "\n"))
	}
	if !strings.Contains(strings.Join(rest, "\n"), "shutting down") {
		t.Errorf("no shutdown message:\n%s", strings.Join(rest, "\n"))
	}
}

// TestExternalNATS runs agentauth against a NATS server it did not start,
// with user/password credentials, and checks that a wrong password is a
// clear error.
func TestExternalNATS(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{
		Listen:   "127.0.0.1:0",
		StoreDir: t.TempDir(),
		Configure: func(o *server.Options) error {
			o.Username, o.Password = "svc", "pa55"
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	cfg := testConfig(t)
	cfg.NATSURL = ns.ClientURL()
	cfg.NATSUser, cfg.NATSPassword = "svc", "pa55"
	m := MustMain(t, cfg)
	if m.Embedded() {
		t.Fatal("embedded a server although --nats-url was given")
	}
	if got := httpGet(t, m.HTTPURL()+"/readyz"); !strings.Contains(got, "ready") {
		t.Errorf("readyz: %s", got)
	}
	nc, err := natsConnect(ns.ClientURL(), "svc", "pa55")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var info struct{ Name string }
	request(t, nc, "$SRV.PING.agentauth", &info)
	if info.Name != "agentauth" {
		t.Errorf("ping: %+v", info)
	}

	bad := testConfig(t)
	bad.NATSURL = ns.ClientURL()
	bad.NATSUser, bad.NATSPassword = "svc", "wrong"
	m2 := NewMain(bad, m.Log)
	err = m2.Run(context.Background())
	_ = m2.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), ns.ClientURL()) || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password: got %v, want an error naming the URL and not the password", err)
	}
}

func natsConnect(url, user, pass string) (*nats.Conn, error) {
	return nats.Connect(url, nats.UserInfo(user, pass))
}

func TestJetStreamSyncAlways(t *testing.T) {
	cfg := testConfig(t)
	cfg.JetStreamSync = "always"
	m := MustMain(t, cfg)
	if !m.ns.JetStreamConfig().SyncAlways {
		t.Error("--jetstream-sync always did not set SyncAlways")
	}
	cfg2 := testConfig(t)
	cfg2.JetStreamSync = "30s"
	m2 := MustMain(t, cfg2)
	if got := m2.ns.JetStreamConfig().SyncInterval; got != 30*time.Second {
		t.Errorf("sync interval %v, want 30s", got)
	}
}
