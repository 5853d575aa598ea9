package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
)

// agentConn connects with an agent's credentials and collects the
// server's asynchronous errors (permission violations).
type agentConn struct {
	*nats.Conn
	mu   sync.Mutex
	errs []error
}

func (c *agentConn) violations() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

func mustAgentConn(t *testing.T, m *Main, creds agents.Credentials) *agentConn {
	t.Helper()
	ac := &agentConn{}
	nc, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), NKeySeed: []byte(creds.NKeySeed), InboxPrefix: agents.InboxPrefix(creds.Agent),
		OnAsyncError: func(err error) { ac.mu.Lock(); ac.errs = append(ac.errs, err); ac.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ac.Conn = nc
	return ac
}

// waitViolation waits until the server has refused something of c's and
// the refusal names subject.
func waitViolation(t *testing.T, c *agentConn, subject string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, err := range c.violations() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no permission violation for %q; errors: %v", subject, c.violations())
}

// TestIsolation proves with real connections that an agent is confined
// to its own subjects, inbox and feed.
func TestIsolation(t *testing.T) {
	m := MustMain(t, testConfig(t))
	c1 := MustRegister(t, m, "a1", agents.Policy{})
	c2 := MustRegister(t, m, "a2", agents.Policy{})
	a1 := mustAgentConn(t, m, c1)
	admin := MustConn(t, m)

	// Subscriptions the server must refuse; each is probed with a
	// message that must not arrive.
	for _, tc := range []struct{ subject, probe string }{
		{">", "anything.at.all"},
		{"_INBOX.>", "_INBOX.someone.1"},
		{agents.InboxPrefix("a2") + ".>", agents.InboxPrefix("a2") + ".x"},
		{schemas.EventsSubject("a2") + ".>", schemas.EventsSubject("a2") + ".linked"},
		{"agentauth.a2.sys.info", "agentauth.a2.sys.info"},
		{"$JS.API.>", "$JS.API.INFO"},
	} {
		t.Run("SUB "+tc.subject, func(t *testing.T) {
			got := make(chan *nats.Msg, 1)
			sub, err := a1.Subscribe(tc.subject, func(msg *nats.Msg) { got <- msg })
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			waitViolation(t, a1, tc.subject)
			if err := admin.Publish(tc.probe, []byte("secret")); err != nil {
				t.Fatal(err)
			}
			if err := admin.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := a1.Flush(); err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatal(err)
			}
			select {
			case msg := <-got:
				t.Fatalf("delivered %s to a refused subscription", msg.Subject)
			default:
			}
		})
	}

	// Publishing under another agent's prefix is refused, and the service
	// never sees the request.
	t.Run("PUB under another agent's prefix", func(t *testing.T) {
		e, _ := bus.NewEventFrom(bus.MustSource(schemas.AgentSource("a2")), schemas.TypeSysInfoRequest, schemas.SysInfoRequest{})
		h, data, _ := bus.Encode(e)
		if err := a1.PublishMsg(&nats.Msg{Subject: "agentauth.a2.sys.info", Reply: agents.InboxPrefix("a1") + ".r", Header: h, Data: data}); err != nil {
			t.Fatal(err)
		}
		waitViolation(t, a1, "agentauth.a2.sys.info")
		if err := m.auditor.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, a := range replayAudit(t, m) {
			if a.RequestID == e.ID() {
				t.Fatalf("the service handled a request published by a1 as a2: %+v", a)
			}
		}
	})

	t.Run("consumer on another agent's feed", func(t *testing.T) {
		js, err := bus.JetStream(a1.Conn)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = bus.Consume(ctx, js, bus.ConsumerOptions{Stream: schemas.StreamEvents, Durable: agents.FeedConsumer("a2"), Filter: []string{schemas.EventsSubject("a2") + ".>"}}, nil, slog.New(slog.DiscardHandler), func(context.Context, *bus.Delivery) error { return nil })
		if err == nil {
			t.Fatal("a1 created a consumer on a2's feed")
		}
	})

	// What an agent may do still works: its own request, and its own feed.
	t.Run("own request and feed", func(t *testing.T) {
		cl, err := client.Connect(context.Background(), client.Options{Credentials: &c1})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.SysInfo(context.Background()); err != nil {
			t.Fatalf("own sys.info: %v", err)
		}
		got := make(chan string, 1)
		sub, err := cl.Events(context.Background(), func(_ context.Context, e *cloudevent.Event) error { got <- e.ID(); return nil })
		if err != nil {
			t.Fatalf("own feed: %v", err)
		}
		defer sub.Stop()
		ev, _ := bus.NewEvent("dev.agentauth.test", map[string]string{"k": "v"})
		if _, err := bus.NewPublisher(m.js, nil).Publish(context.Background(), schemas.EventsSubject("a1")+".test", ev); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != ev.ID() {
				t.Errorf("got event %s, want %s", id, ev.ID())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("own feed event not delivered")
		}
	})

	// A removed agent's credentials stop working.
	t.Run("removed agent", func(t *testing.T) {
		closed := make(chan struct{})
		live, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), NKeySeed: []byte(c2.NKeySeed)})
		if err != nil {
			t.Fatal(err)
		}
		live.SetDisconnectErrHandler(func(*nats.Conn, error) { close(closed) })
		live.SetReconnectHandler(nil)
		defer live.Close()
		if err := m.Agents().Delete(context.Background(), "a2"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			nc, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), NKeySeed: []byte(c2.NKeySeed)})
			if err != nil {
				break
			}
			nc.Close()
			if time.Now().After(deadline) {
				t.Fatal("a removed agent can still connect")
			}
			time.Sleep(20 * time.Millisecond)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("a removed agent's open connection was not closed")
		}
	})
}

// TestAnonymousAgent: a connection without credentials is the development
// agent, confined like any other.
func TestAnonymousAgent(t *testing.T) {
	m := MustMain(t, testConfig(t))
	anon := &agentConn{}
	nc, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), InboxPrefix: agents.InboxPrefix("demo"),
		OnAsyncError: func(err error) { anon.mu.Lock(); anon.errs = append(anon.errs, err); anon.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	anon.Conn = nc
	reply, err := rawRequest(t, nc, "agentauth.demo.sys.info", validHeader("demo"), []byte(`{}`))
	if err != nil || reply.Type() != schemas.TypeSysInfoReply {
		t.Fatalf("anonymous sys.info as demo: %v %v", reply, err)
	}
	if err := nc.Publish("agentauth.a1.sys.info", nil); err != nil {
		t.Fatal(err)
	}
	waitViolation(t, anon, "agentauth.a1.sys.info")

	cfg := testConfig(t)
	cfg.AnonymousAgent = ""
	m2 := MustMain(t, cfg)
	if nc, err := nats.Connect(m2.NATSURL()); err == nil {
		nc.Close()
		t.Fatal("with --anonymous-agent '' a connection without credentials was accepted")
	}
}

// TestSealing: a token sealed to an agent opens with its credentials only.
func TestSealing(t *testing.T) {
	m := MustMain(t, testConfig(t))
	c1 := MustRegister(t, m, "a1", agents.Policy{})
	c2 := MustRegister(t, m, "a2", agents.Policy{})
	a1, _, err := m.Agents().Get(context.Background(), "a1")
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("ya29.a0-access-token")
	box, err := m.sealer.Seal(a1, secret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(box.Ciphertext), string(secret)) {
		t.Fatal("ciphertext contains the plaintext")
	}
	cl1, err := client.Connect(context.Background(), client.Options{Credentials: &c1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl1.Close()
	got, err := cl1.Open(box)
	if err != nil || string(got) != string(secret) {
		t.Fatalf("a1 opens its box: %q, %v", got, err)
	}
	cl2, err := client.Connect(context.Background(), client.Options{Credentials: &c2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if _, err := cl2.Open(box); !errors.Is(err, agents.ErrNotForMe) {
		t.Errorf("a2 opens a1's box: %v, want ErrNotForMe", err)
	}
	forged := box
	forged.Recipient = c2XKey(t, c2)
	if _, err := cl2.Open(forged); err == nil {
		t.Error("a2 opened a1's ciphertext by relabelling the recipient")
	}
	// The credentials MustRegister hands out pin agentauth's sealing key:
	// a box sealed to a1 by any other key is refused.
	kp, _ := nkeys.CreateCurveKeys()
	seed, _ := kp.Seed()
	other, err := agents.NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Seal(a1, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl1.Open(foreign); !errors.Is(err, agents.ErrUnknownSender) {
		t.Errorf("a1 opens a box sealed by another key: %v, want ErrUnknownSender", err)
	}
	tampered := box
	tampered.Ciphertext = append([]byte(nil), box.Ciphertext...)
	tampered.Ciphertext[len(tampered.Ciphertext)-1] ^= 1
	if _, err := cl1.Open(tampered); err == nil {
		t.Error("a tampered box opened")
	}
	anon, err := client.Connect(context.Background(), client.Options{URL: m.NATSURL(), Agent: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Open(box); !errors.Is(err, client.ErrNoSealingKey) {
		t.Errorf("open without credentials: %v", err)
	}
}

func c2XKey(t *testing.T, c agents.Credentials) string {
	t.Helper()
	a, err := agents.FromCredentials(c, agents.Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a.XKey
}

// TestAgentCommands drives `agentauth agent …` against a running instance.
func TestAgentCommands(t *testing.T) {
	m := MustMain(t, testConfig(t))
	out := t.TempDir()
	base := []string{"--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir}
	cli := func(args ...string) string { return runCLI(t, append(append([]string{"agent"}, args...), base...)...) }

	got := cli("add", "billing-bot", "--out", out, "--audience", "https://api.example.com", "--connection", "google=drive.readonly,calendar", "--client-id", "web-app")
	if !strings.Contains(got, "agent billing-bot created") {
		t.Fatalf("add: %s", got)
	}
	path := filepath.Join(out, "billing-bot.agent.json")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(got, "SU") && strings.Contains(got, string(raw[10:20])) {
		t.Errorf("add printed secrets")
	}
	a, _, err := m.Agents().Get(context.Background(), "billing-bot")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Policy.AllowsAudience("https://api.example.com") || a.Policy.ClientID != "web-app" || len(a.Policy.Connections) != 1 || len(a.Policy.Connections[0].Scopes) != 2 {
		t.Errorf("stored policy %+v", a.Policy)
	}
	if c := mustCreds(t, path); strings.Contains(string(mustJSON(t, a)), c.NKeySeed) || strings.Contains(string(mustJSON(t, a)), c.XKeySeed) {
		t.Errorf("the registry holds a seed: %s", mustJSON(t, a))
	}

	// `agent add` returns once the server accepts the agent: no wait here.
	if !strings.Contains(got, "accepts the agent now") {
		t.Errorf("add did not report the agent accepted: %s", got)
	}
	cl, err := client.Connect(context.Background(), client.Options{CredsFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cl.SysInfo(context.Background()); err != nil || info.Agent != "billing-bot" {
		t.Fatalf("connect with the written credentials: %+v %v", info, err)
	}
	cl.Close()

	if got := cli("list"); !strings.Contains(got, "billing-bot") || !strings.Contains(got, "demo") {
		t.Errorf("list: %s", got)
	}
	if got := cli("show", "billing-bot"); !strings.Contains(got, `"agentauth.billing-bot.>"`) {
		t.Errorf("show: %s", got)
	}
	if got := cli("policy", "billing-bot", "--audience", "https://b.example.com"); !strings.Contains(got, "https://b.example.com") || strings.Contains(got, "https://api.example.com") {
		t.Errorf("policy: %s", got)
	}
	got = cli("policy", "billing-bot", "--approval-audience", "https://shop.example", "--approval-scope", "purchase",
		"--background-audience", "https://shop.example", "--collection", "default", "--ingest-collection", "docs", "--approver")
	for _, want := range []string{`"approval_audiences":["https://shop.example"]`, `"approval_scopes":["purchase"]`, `"background_audiences":["https://shop.example"]`,
		`"collections":["default"]`, `"ingest_collections":["docs"]`, `"approver":true`, "https://b.example.com"} {
		if !strings.Contains(strings.ReplaceAll(strings.ReplaceAll(got, " ", ""), "\n", ""), want) {
			t.Errorf("policy lacks %s: %s", want, got)
		}
	}
	if got := cli("nats-config"); !strings.Contains(got, a.NKey) || !strings.Contains(got, `"_INBOX_billing-bot.>"`) {
		t.Errorf("nats-config: %s", got)
	}
	for _, bad := range [][]string{{"add", "Bad Name"}, {"add", "audit"}, {"add", "billing-bot", "--out", t.TempDir()}, {"show", "nobody"}, {"remove", "nobody"}, {"add", "x1", "--connection", "=a"}} {
		root := newRoot(io.Discard, io.Discard)
		root.SetArgs(append(append([]string{"agent"}, bad...), base...))
		if err := root.Execute(); err == nil {
			t.Errorf("agent %v: want an error", bad)
		}
	}
	if got := cli("remove", "billing-bot"); !strings.Contains(got, "removed") {
		t.Errorf("remove: %s", got)
	}
	if _, _, err := m.Agents().Get(context.Background(), "billing-bot"); !agents.IsNotFound(err) {
		t.Errorf("after remove: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCreds(t *testing.T, path string) agents.Credentials {
	t.Helper()
	c, err := readCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAcceptedWithin: the wait of `agent add` reports a registered agent
// accepted, and an unknown key not accepted.
func TestAcceptedWithin(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "known", agents.Policy{})
	if !acceptedWithin(context.Background(), m.NATSURL(), []byte(creds.NKeySeed), 5*time.Second) {
		t.Error("a registered agent is reported not accepted")
	}
	_, stranger, err := agents.New("stranger", agents.Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if acceptedWithin(context.Background(), m.NATSURL(), []byte(stranger.NKeySeed), 300*time.Millisecond) {
		t.Error("an unregistered key is reported accepted")
	}
}

// TestPolicyChangeAppliesToOpenConnections: narrowing an agent's policy
// (same key) takes the old permissions from its open connections too;
// nats-server keeps a connection's permissions until it reconnects.
func TestPolicyChangeAppliesToOpenConnections(t *testing.T) {
	m := MustMain(t, testConfig(t))
	creds := MustRegister(t, m, "app1", agents.Policy{Approver: true})
	old := mustAgentConn(t, m, creds)
	streamInfo := func(nc *nats.Conn) error {
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = js.Stream(ctx, schemas.StreamNotify)
		return err
	}
	if err := streamInfo(old.Conn); err != nil {
		t.Fatalf("an approver reads the notifications stream's info: %v", err)
	}

	a, rev, err := m.Agents().Get(context.Background(), "app1")
	if err != nil {
		t.Fatal(err)
	}
	a.Policy.Approver = false
	if err := m.Agents().Update(context.Background(), a, rev); err != nil {
		t.Fatal(err)
	}
	// The change is applied once a new connection is refused.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if streamInfo(mustAgentConn(t, m, creds).Conn) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the narrowed policy was never applied to new connections")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if streamInfo(old.Conn) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection opened under the old policy keeps its permissions")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Reconnected, it has the new permissions only.
	for deadline := time.Now().Add(10 * time.Second); !old.IsConnected(); {
		if time.Now().After(deadline) {
			t.Fatal("the agent's connection did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := streamInfo(old.Conn); err == nil {
		t.Error("after reconnecting, the agent still reads the notifications stream")
	}
}

// TestReplySubjectIsTheAgentsInbox: NATS checks only the subject a client
// publishes to, not its reply subject, and the service may publish
// anywhere. An agent's request whose reply subject is another agent's
// registry record, another agent's feed or inbox is not answered (and is
// audited as rejected); its own inbox still is.
func TestReplySubjectIsTheAgentsInbox(t *testing.T) {
	m := MustMain(t, testConfig(t))
	a1 := MustAgent(t, m, "a1")
	MustAgent(t, m, "a2")
	op := MustConn(t, m)
	_, rev, err := m.agents.Get(context.Background(), "a2")
	if err != nil {
		t.Fatal(err)
	}
	watch, err := op.SubscribeSync("agentauth.events.a2.>")
	if err != nil {
		t.Fatal(err)
	}
	inboxWatch, err := op.SubscribeSync(agents.InboxPrefix("a2") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	req, err := a1.NewRequest(schemas.OpSysInfo, schemas.SysInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h, body, err := bus.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, reply := range []string{"$KV.AGENTAUTH_AGENTS.a2", "agentauth.events.a2.vault.connection.linked", agents.InboxPrefix("a2") + ".x"} {
		if err := a1.Conn().PublishMsg(&nats.Msg{Subject: schemas.Subject("a1", schemas.OpSysInfo), Reply: reply, Header: h, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's own inbox is answered: once it is, the three requests
	// before it on the same connection have been handled.
	if _, err := a1.SysInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.auditor.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if msg, err := watch.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("the service wrote into a2's feed for a1: %s %s", msg.Subject, msg.Data)
	}
	if msg, err := inboxWatch.NextMsg(10 * time.Millisecond); err == nil {
		t.Errorf("the service wrote into a2's inbox for a1: %s %s", msg.Subject, msg.Data)
	}
	if _, got, err := m.agents.Get(context.Background(), "a2"); err != nil || got != rev {
		t.Errorf("a2's registry record: revision %d (was %d), %v", got, rev, err)
	}
	var rejected int
	for _, a := range auditData[schemas.AuditRequest](t, m, "agentauth.audit.sys.info.rejected") {
		if a.Agent == "a1" && a.Code == schemas.CodeDenied {
			rejected++
		}
	}
	if rejected != 3 {
		t.Errorf("rejected requests audited: %d, want 3", rejected)
	}
}
