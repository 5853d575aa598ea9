package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
)

// testConfig is the default configuration on free loopback ports and a
// temporary data dir.
func testConfig(tb testing.TB) Config {
	tb.Helper()
	c := benchConfig(tb.TempDir(), "2m")
	c.LogLevel = "error"
	return c
}

// restartableConfig is testConfig on a fixed HTTP address: after a
// restart the development provider's issuer, and the tokens it issued,
// stay valid.
func restartableConfig(tb testing.TB) Config {
	tb.Helper()
	cfg := testConfig(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.HTTPListen = ln.Addr().String()
	ln.Close()
	return cfg
}

// restart stops m (and its embedded NATS) and runs agentauth again with
// the same configuration and data dir.
func restart(tb testing.TB, m *Main) *Main {
	tb.Helper()
	if err := m.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return MustMain(tb, m.Config)
}

// MustMain runs agentauth with cfg and closes it when the test ends.
func MustMain(tb testing.TB, cfg Config) *Main {
	tb.Helper()
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err != nil {
		_ = m.Close(context.Background())
		tb.Fatalf("run: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return m
}

// MustRegister registers an agent with policy p and returns its
// credentials.
func MustRegister(tb testing.TB, m *Main, agent string, p agents.Policy) agents.Credentials {
	tb.Helper()
	a, creds, err := agents.New(agent, p, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Agents().Create(context.Background(), a); err != nil {
		tb.Fatalf("register agent %s: %v", agent, err)
	}
	creds.URL, creds.ServiceXKey = m.NATSURL(), m.sealer.PublicKey()
	waitForUser(tb, m, creds)
	return creds
}

// waitForUser waits until the embedded server accepts the agent's key
// (the registry watch reloads the authorization asynchronously).
func waitForUser(tb testing.TB, m *Main, creds agents.Credentials) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), NKeySeed: []byte(creds.NKeySeed)})
		if err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("agent %s never accepted by the server: %v", creds.Agent, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MustAgent registers an agent (no policy) and connects it to m with its
// credentials.
func MustAgent(tb testing.TB, m *Main, agent string) *client.Client {
	tb.Helper()
	creds := MustRegister(tb, m, agent, agents.Policy{})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		tb.Fatalf("connect agent %s: %v", agent, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// MustConn connects to m as the operator (every permission).
func MustConn(tb testing.TB, m *Main) *nats.Conn {
	tb.Helper()
	nc, err := bus.Connect(bus.ConnOptions{URL: m.NATSURL(), NKeySeed: m.admin})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func TestSysInfo(t *testing.T) {
	m := MustMain(t, testConfig(t))
	c := MustAgent(t, m, "agent-1")
	info, err := c.SysInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Agent != "agent-1" || info.Version != version || info.Service != "agentauth" || info.Instance != m.Instance {
		t.Errorf("got %+v", info)
	}
	if !info.Capabilities.Sys {
		t.Errorf("capabilities %v: sys must be enabled", info.Capabilities)
	}
	if d := time.Since(info.ServerTime); d < -time.Minute || d > time.Minute {
		t.Errorf("server time %v is not now", info.ServerTime)
	}
}

// TestMicroDiscovery: `nats micro ls|info|stats` are these requests.
func TestMicroDiscovery(t *testing.T) {
	m := MustMain(t, testConfig(t))
	nc := MustConn(t, m)
	c := MustAgent(t, m, "a1")
	if _, err := c.SysInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ping struct{ Name, ID, Version string }
	request(t, nc, "$SRV.PING.agentauth", &ping)
	if ping.Name != schemas.ServiceName || ping.Version != version {
		t.Errorf("ping: %+v", ping)
	}
	var info struct {
		Endpoints []struct {
			Name, Subject string
			Metadata      map[string]string
		}
	}
	request(t, nc, "$SRV.INFO.agentauth", &info)
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	for _, op := range schemas.Operations {
		found := false
		for _, e := range info.Endpoints {
			if e.Subject == op.SubjectPattern() && e.Name == op.Endpoint() && e.Metadata["request_type"] == op.RequestType {
				found = true
			}
		}
		if !found {
			t.Errorf("operation %s not registered; endpoints: %v", op.SubjectPattern(), subjects)
		}
	}
	var stats struct {
		Endpoints []struct {
			Name        string
			NumRequests int `json:"num_requests"`
		}
	}
	// sys.info is inline: one endpoint per processor (sys-info,
	// sys-info-2, …), whose counts add up. micro counts a request once
	// its callback returns, which can be just after the reply: read until
	// it shows.
	counted := 0
	for deadline := time.Now().Add(5 * time.Second); counted < 1 && time.Now().Before(deadline); {
		request(t, nc, "$SRV.STATS.agentauth", &stats)
		for _, e := range stats.Endpoints {
			if e.Name == schemas.OpSysInfo.Endpoint() || strings.HasPrefix(e.Name, schemas.OpSysInfo.Endpoint()+"-") {
				counted += e.NumRequests
			}
		}
		if counted < 1 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if counted < 1 {
		t.Errorf("stats: %s counted %d requests, want ≥ 1 (%+v)", schemas.OpSysInfo.Endpoint(), counted, stats.Endpoints)
	}
}

func request(t *testing.T, nc *nats.Conn, subject string, out any) {
	t.Helper()
	msg, err := nc.Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
}

// rawRequest sends header and data to agent's sys.info subject and returns
// the reply event or the *bus.ReplyError.
func rawRequest(t *testing.T, nc *nats.Conn, subject string, h nats.Header, data []byte) (*event.Event, error) {
	t.Helper()
	msg, err := nc.RequestMsg(&nats.Msg{Subject: subject, Header: h, Data: data}, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return bus.ParseReply(msg)
}

func ceHeader(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = []string{kv[i+1]}
	}
	return h
}

func validHeader(agent string) nats.Header {
	return ceHeader("ce-specversion", "1.0", "ce-id", "req-1", "ce-source", schemas.AgentSource(agent), "ce-type", schemas.TypeSysInfoRequest, "Content-Type", "application/json")
}

func with(h nats.Header, kv ...string) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = []string{kv[i+1]}
	}
	return out
}

// TestBadInput sends every kind of bad input through a real embedded
// server: each gets an error reply with its stable code, is counted in
// metrics and audited, and nothing else is stored.
func TestBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	nc := MustConn(t, m)
	subject := "agentauth.a1.sys.info"
	ok := validHeader("a1")
	cases := []struct {
		name string
		h    nats.Header
		data []byte
		want schemas.ErrorCode
	}{
		{"oversized", ok, bytes.Repeat([]byte(" "), m.Config.MaxEventBytes+1), schemas.CodeEventTooLarge},
		{"not a CloudEvent", nats.Header{"X": []string{"y"}}, []byte(`{}`), schemas.CodeInvalidEvent},
		{"no headers at all", nil, []byte(`{}`), schemas.CodeInvalidEvent},
		{"missing id", with(ok, "ce-id", ""), []byte(`{}`), schemas.CodeInvalidEvent},
		{"missing type", with(ok, "ce-type", ""), []byte(`{}`), schemas.CodeInvalidEvent},
		{"missing source", with(ok, "ce-source", ""), []byte(`{}`), schemas.CodeInvalidEvent},
		{"specversion 0.3", with(ok, "ce-specversion", "0.3"), []byte(`{}`), schemas.CodeUnsupportedVersion},
		{"specversion 2.0", with(ok, "ce-specversion", "2.0"), []byte(`{}`), schemas.CodeUnsupportedVersion},
		{"bad percent-encoding", with(ok, "ce-id", "a%zzb"), []byte(`{}`), schemas.CodeInvalidHeaderEncoding},
		{"invalid UTF-8 in header", with(ok, "ce-id", "a%FFb"), []byte(`{}`), schemas.CodeInvalidHeaderEncoding},
		{"bad time", with(ok, "ce-time", "lunchtime"), []byte(`{}`), schemas.CodeInvalidEvent},
		{"data fails schema", ok, []byte(`{"x":1}`), schemas.CodeSchemaViolation},
		{"data not JSON", ok, []byte(`{nope`), schemas.CodeSchemaViolation},
		{"unknown type on known subject", with(ok, "ce-type", "dev.agentauth.vault.token.request"), []byte(`{}`), schemas.CodeUnknownType},
		{"text/plain data", with(ok, "Content-Type", "text/plain"), []byte(`hello`), schemas.CodeUnsupportedContent},
		{"source of another agent", with(ok, "ce-source", schemas.AgentSource("a2")), []byte(`{}`), schemas.CodeSourceMismatch},
		{"structured with a bad specversion", ceHeader("Content-Type", bus.MediaStructured), []byte(`{"specversion":"0.9","id":"1","source":"/agents/a1","type":"` + schemas.TypeSysInfoRequest + `"}`), schemas.CodeUnsupportedVersion},
		{"batch", ceHeader("Content-Type", "application/cloudevents-batch+json"), []byte(`[]`), schemas.CodeInvalidEvent},
	}
	auditBefore := streamMsgs(t, m, schemas.StreamAudit)
	eventsBefore := streamMsgs(t, m, schemas.StreamEvents)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rawRequest(t, nc, subject, tc.h, tc.data)
			var re *bus.ReplyError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want an error reply", err)
			}
			if re.Code != tc.want {
				t.Errorf("code: got %s (%s), want %s", re.Code, re.Message, tc.want)
			}
			if strings.TrimSpace(re.Message) == "" || re.Status < 400 {
				t.Errorf("message %q status %d: want an actionable message and a 4xx status", re.Message, re.Status)
			}
		})
	}
	// Valid input, binary and structured, still works.
	if _, err := rawRequest(t, nc, subject, ok, []byte(`{}`)); err != nil {
		t.Errorf("valid binary request: %v", err)
	}
	structured := fmt.Sprintf(`{"specversion":"1.0","id":"s-1","source":"/agents/a1","type":%q,"datacontenttype":"application/json","data":{}}`, schemas.TypeSysInfoRequest)
	if _, err := rawRequest(t, nc, subject, ceHeader("Content-Type", bus.MediaStructured), []byte(structured)); err != nil {
		t.Errorf("valid structured request: %v", err)
	}

	// Counted in metrics, by code.
	metrics := httpGet(t, m.HTTPURL()+"/metrics")
	for _, tc := range cases {
		line := fmt.Sprintf(`agentauth_requests_total{code="%s",operation="sys-info"}`, tc.want)
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	// Audited: one audit event per request, each with its code; nothing
	// else stored.
	if err := m.auditor.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	audits := replayAudit(t, m)
	codes := map[schemas.ErrorCode]int{}
	for _, a := range audits {
		codes[a.Code]++
	}
	for _, tc := range cases {
		if codes[tc.want] == 0 {
			t.Errorf("no audit event with code %s", tc.want)
		}
	}
	if got, want := len(audits), len(cases)+2; got != want {
		t.Errorf("audit events: got %d, want %d", got, want)
	}
	if streamMsgs(t, m, schemas.StreamEvents) != eventsBefore {
		t.Errorf("bad input changed the events stream")
	}
	if streamMsgs(t, m, schemas.StreamAudit) <= auditBefore {
		t.Errorf("audit stream did not grow")
	}
}

// TestConformanceThroughPipeline: the conformance suite's valid events get
// past the decoder (they fail later, on their foreign source), invalid ones
// are refused by it.
func TestConformanceThroughPipeline(t *testing.T) {
	m := MustMain(t, testConfig(t))
	nc := MustConn(t, m)
	decodeCodes := map[schemas.ErrorCode]bool{schemas.CodeInvalidEvent: true, schemas.CodeUnsupportedVersion: true, schemas.CodeInvalidHeaderEncoding: true}
	for _, file := range []string{"valid-events.json", "invalid-events.json"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "testdata", "cloudevents-conformance", file))
		if err != nil {
			t.Fatalf("conformance data: %v", err)
		}
		var suite struct {
			Tests []struct {
				ID    string          `json:"id"`
				Event json.RawMessage `json:"event"`
			} `json:"tests"`
		}
		if err := json.Unmarshal(raw, &suite); err != nil {
			t.Fatal(err)
		}
		if len(suite.Tests) == 0 {
			t.Fatalf("%s has no tests", file)
		}
		for _, tc := range suite.Tests {
			_, err := rawRequest(t, nc, "agentauth.a1.sys.info", ceHeader("Content-Type", bus.MediaStructured), tc.Event)
			var re *bus.ReplyError
			if !errors.As(err, &re) {
				t.Fatalf("%s: got %v, want an error reply", tc.ID, err)
			}
			if file == "valid-events.json" && decodeCodes[re.Code] {
				t.Errorf("%s: valid event refused by the decoder: %s: %s", tc.ID, re.Code, re.Message)
			}
			if file == "invalid-events.json" && !decodeCodes[re.Code] {
				t.Errorf("%s: invalid event got past the decoder (code %s)", tc.ID, re.Code)
			}
		}
	}
}

func streamMsgs(t *testing.T, m *Main, stream string) uint64 {
	t.Helper()
	s, err := m.js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// replayAudit reads the whole audit stream through the replay command.
func replayAudit(t *testing.T, m *Main, extra ...string) []schemas.AuditRequest {
	t.Helper()
	out := runCLI(t, append([]string{"replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress"}, extra...)...)
	var recs []schemas.AuditRequest
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		if e.Type() != schemas.TypeAuditRequest {
			t.Fatalf("replay: unexpected type %s", e.Type())
		}
		var a schemas.AuditRequest
		if err := e.DataAs(&a); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, a)
	}
	return recs
}

// runCLI runs the agentauth command line and returns its standard output.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("agentauth %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func TestReplay(t *testing.T) {
	m := MustMain(t, testConfig(t))
	c := MustAgent(t, m, "a1")
	const n = 5
	for i := 0; i < n; i++ {
		if _, err := c.SysInfo(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	nc := MustConn(t, m)
	if _, err := rawRequest(t, nc, "agentauth.a1.sys.info", with(validHeader("a1"), "ce-specversion", "0.3"), nil); err == nil {
		t.Fatal("want an error reply")
	}
	if err := m.auditor.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	all := replayAudit(t, m)
	if len(all) != n+1 {
		t.Fatalf("replayed %d audit events, want %d", len(all), n+1)
	}
	for i, a := range all[:n] {
		if a.Agent != "a1" || a.Outcome != "ok" || a.Operation != "sys.info" || a.RequestID == "" {
			t.Errorf("event %d: %+v", i, a)
		}
	}
	if a := all[n]; a.Outcome != "error" || a.Code != schemas.CodeUnsupportedVersion {
		t.Errorf("rejected request audited as %+v", a)
	}
	if got := replayAudit(t, m, "--subject", "agentauth.audit.sys.info.rejected"); len(got) != 1 {
		t.Errorf("subject filter: got %d events, want 1", len(got))
	}
	if got := replayAudit(t, m, "--subject", "agentauth.audit.sys.info.ok"); len(got) != n {
		t.Errorf("subject filter: got %d events, want %d", len(got), n)
	}
	if got := replayAudit(t, m, "--since", time.Now().Add(time.Hour).Format(time.RFC3339)); len(got) != 0 {
		t.Errorf("--since in the future: got %d events, want 0", len(got))
	}
	if got := replayAudit(t, m, "--since", "1h"); len(got) != n+1 {
		t.Errorf("--since 1h: got %d events, want %d", len(got), n+1)
	}
	table := runCLI(t, "replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--format", "table", "--no-progress")
	if !strings.Contains(table, "agent=a1 op=sys.info outcome=ok") || !strings.Contains(table, "code=unsupported_specversion") {
		t.Errorf("table output:\n%s", table)
	}
	for _, bad := range [][]string{
		{"--format", "xml"},
		{"--since", "yesterday"},
		{"--from-seq", "5", "--to-seq", "2"},
		{"--stream", "NO_SUCH_STREAM"},
	} {
		root := newRoot(io.Discard, io.Discard)
		root.SetArgs(append([]string{"replay", "--nats-url", m.NATSURL(), "--data-dir", m.Config.DataDir, "--no-progress"}, bad...))
		if err := root.Execute(); err == nil {
			t.Errorf("replay %v: want an error", bad)
		}
	}
}

func TestHTTPEdge(t *testing.T) {
	m := MustMain(t, testConfig(t))
	if body := httpGet(t, m.HTTPURL()+"/healthz"); !strings.Contains(body, "ok") {
		t.Errorf("healthz: %s", body)
	}
	if body := httpGet(t, m.HTTPURL()+"/readyz"); !strings.Contains(body, "ready") {
		t.Errorf("readyz: %s", body)
	}
	c := MustAgent(t, m, "a1")
	if _, err := c.SysInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	body := httpGet(t, m.HTTPURL()+"/metrics")
	for _, want := range []string{`agentauth_requests_total{code="ok",operation="sys-info"} 1`, "agentauth_request_duration_seconds_bucket", `agentauth_http_requests_total{route="healthz",status="200"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if body := httpGet(t, m.HTTPURL()+"/"); !strings.Contains(body, "agentauth.*.sys.info") {
		t.Errorf("index: %s", body)
	}
}

// TestGracefulShutdown: Close stops taking requests but finishes the ones
// in flight, and their audit events are stored.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t)
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	slow := schemas.Op{Area: "test", Name: "slow", RequestType: schemas.TypeSysInfoRequest, ReplyType: schemas.TypeSysInfoReply}
	if err := m.Server().Handle(slow, bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		close(started)
		<-release
		return bus.Reply(req, schemas.SysInfo{Agent: req.Agent})
	})); err != nil {
		t.Fatal(err)
	}
	creds := MustRegister(t, m, "a1", agents.Policy{})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	replied := make(chan error, 1)
	go func() {
		var out schemas.SysInfo
		replied <- c.Do(context.Background(), slow, schemas.SysInfoRequest{}, &out)
	}()
	<-started
	closed := make(chan error, 1)
	go func() { closed <- m.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a request was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-replied; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	// The audit event of the in-flight request survived the shutdown.
	m2 := MustMain(t, withDataDir(testConfig(t), cfg.DataDir))
	found := false
	for _, a := range replayAudit(t, m2) {
		if a.Operation == "test.slow" && a.Outcome == "ok" {
			found = true
		}
	}
	if !found {
		t.Error("audit event of the in-flight request is missing after restart")
	}
}

// mapEnv stands in for os.LookupEnv with the variables of env.
func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func withDataDir(c Config, dir string) Config {
	c.DataDir = dir
	return c
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agentauth.yaml")
	if err := os.WriteFile(file, []byte("http-listen: 127.0.0.1:9001\nlog-level: warn\nrequest-timeout: 3s\nnats-password: hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Empty variables (`VAR: ${X}` with X unset in a compose file)
	// count as unset, but for options where empty means something.
	env := map[string]string{"AGENTAUTH_LOG_LEVEL": "debug", "AGENTAUTH_MAX_EVENT_BYTES": "2048",
		"AGENTAUTH_REQUEST_TIMEOUT": "", "AGENTAUTH_DATA_DIR": "", "AGENTAUTH_SHUTDOWN_TIMEOUT": ""}

	cmd := &cobra.Command{Use: "serve"}
	cf := addConfigFlags(cmd.Flags())
	if err := cmd.Flags().Parse([]string{"--config", file, "--max-event-bytes", "4096"}); err != nil {
		t.Fatal(err)
	}
	cfg, src, err := cf.load(mapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want, src string }{
		{"http-listen", cfg.HTTPListen, "127.0.0.1:9001", "file"},
		{"log-level", cfg.LogLevel, "debug", "env"},
		{"max-event-bytes", fmt.Sprint(cfg.MaxEventBytes), "4096", "flag"},
		{"request-timeout", cfg.RequestTimeout.String(), "3s", "file"},
		{"data-dir", cfg.DataDir, "./agentauth-data", "default"},
		{"shutdown-timeout", cfg.ShutdownTimeout.String(), "15s", "default"},
	} {
		if c.got != c.want || src[c.name] != c.src {
			t.Errorf("%s: got %s from %s, want %s from %s", c.name, c.got, src[c.name], c.want, c.src)
		}
	}
	var out bytes.Buffer
	printConfig(&out, cfg, src)
	if strings.Contains(out.String(), "hunter2") {
		t.Errorf("config table shows a secret:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "nats-password") || !strings.Contains(out.String(), "(set)") {
		t.Errorf("config table does not say the password is set:\n%s", out.String())
	}

	for name, tc := range map[string]struct {
		yaml string
		env  map[string]string
		args []string
		want string
	}{
		"unknown yaml key":   {yaml: "no-such-key: 1\n", want: "unknown key"},
		"bad yaml":           {yaml: ": : :\n", want: "not valid YAML"},
		"bad duration env":   {env: map[string]string{"AGENTAUTH_REQUEST_TIMEOUT": "soon"}, want: "AGENTAUTH_REQUEST_TIMEOUT"},
		"bad int flag":       {args: []string{"--max-event-bytes", "lots"}, want: "--max-event-bytes"},
		"bad sync":           {args: []string{"--jetstream-sync", "sometimes"}, want: "jetstream-sync"},
		"bad log level":      {args: []string{"--log-level", "loud"}, want: "log-level"},
		"tiny max event":     {args: []string{"--max-event-bytes", "10"}, want: "max-event-bytes"},
		"replicas out of ra": {args: []string{"--stream-replicas", "9"}, want: "stream-replicas"},
	} {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if tc.yaml != "" {
				f := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(f, []byte(tc.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", f)
			}
			cmd := &cobra.Command{Use: "serve"}
			cf := addConfigFlags(cmd.Flags())
			if err := cmd.Flags().Parse(args); err != nil {
				t.Fatal(err)
			}
			_, _, err := cf.load(mapEnv(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestConfigCommand runs `agentauth config` end to end.
func TestConfigCommand(t *testing.T) {
	t.Setenv("AGENTAUTH_NATS_TOKEN", "tok-123-secret")
	out := runCLI(t, "config", "--http-listen", "127.0.0.1:9999")
	if !strings.Contains(out, "127.0.0.1:9999") || !strings.Contains(out, "flag") {
		t.Errorf("config output:\n%s", out)
	}
	if strings.Contains(out, "tok-123-secret") {
		t.Errorf("config output shows a secret:\n%s", out)
	}
}

// TestConfigEmptyEnv: a variable set to the empty string applies (the
// help says "empty to require credentials"), one unset does not.
func TestConfigEmptyEnv(t *testing.T) {
	t.Setenv("AGENTAUTH_ANONYMOUS_AGENT", "")
	out := runCLI(t, "config")
	if !regexp.MustCompile(`(?m)^anonymous-agent\s+-\s+env\s+AGENTAUTH_ANONYMOUS_AGENT$`).MatchString(out) {
		t.Errorf("config output does not show anonymous-agent empty from the environment:\n%s", out)
	}

	cmd := &cobra.Command{Use: "serve"}
	cf := addConfigFlags(cmd.Flags())
	if err := cmd.Flags().Parse([]string{"--data-dir", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := cf.load(os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	m := MustMain(t, cfg)
	if nc, err := nats.Connect(m.NATSURL()); err == nil {
		nc.Close()
		t.Error("with AGENTAUTH_ANONYMOUS_AGENT= a connection without credentials was accepted")
	}
}

// TestRestartKeepsStreams: the store is in the data dir; a restart keeps
// what was acknowledged, and stream setup is idempotent.
func TestRestartKeepsStreams(t *testing.T) {
	cfg := testConfig(t)
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	creds := MustRegister(t, m, "a1", agents.Policy{})
	c, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.SysInfo(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	m2 := MustMain(t, cfg)
	if got := len(replayAudit(t, m2)); got != 3 {
		t.Errorf("after restart: %d audit events, want 3", got)
	}
}

func TestPortInUse(t *testing.T) {
	m := MustMain(t, testConfig(t))
	cfg := testConfig(t)
	cfg.HTTPListen = strings.TrimPrefix(m.HTTPURL(), "http://")
	m2 := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	err := m2.Run(context.Background())
	_ = m2.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--http-listen") {
		t.Errorf("got %v, want an error that names --http-listen", err)
	}
}

// TestFailedStartReleasesHTTPPort: a start-up that fails after binding
// the HTTP address (here: no NATS server at --nats-url) frees it on
// Close.
func TestFailedStartReleasesHTTPPort(t *testing.T) {
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	cfg := restartableConfig(t)
	cfg.NATSURL = "nats://" + gone.Addr().String()
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("started without a NATS server")
	}
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("close: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		t.Fatalf("the HTTP address of a failed start is still bound after Close: %v", err)
	}
	ln.Close()
}

// TestConfigAccessTokenTyp: --oidc-access-token-typ comes from a flag,
// the environment or the file like every option, is shown by `agentauth
// config`, and takes at+jwt or nothing.
func TestConfigAccessTokenTyp(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agentauth.yaml")
	if err := os.WriteFile(file, []byte("oidc-access-token-typ: at+jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		typed   bool
		wantErr bool
	}{
		{name: "default", want: "", typed: false},
		{name: "flag", args: []string{"--oidc-access-token-typ", "at+jwt"}, want: "at+jwt", typed: true},
		{name: "media type", args: []string{"--oidc-access-token-typ", "application/at+jwt"}, want: "application/at+jwt", typed: true},
		{name: "env", env: map[string]string{"AGENTAUTH_OIDC_ACCESS_TOKEN_TYP": "at+jwt"}, want: "at+jwt", typed: true},
		{name: "file", args: []string{"--config", file}, want: "at+jwt", typed: true},
		{name: "not at+jwt", args: []string{"--oidc-access-token-typ", "JWT"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "serve"}
			cf := addConfigFlags(cmd.Flags())
			if err := cmd.Flags().Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := cf.load(mapEnv(tc.env))
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "oidc-access-token-typ") {
					t.Errorf("got %v, want an error naming oidc-access-token-typ", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OIDCAccessTokenTyp != tc.want || cfg.accessTokenTyped() != tc.typed {
				t.Errorf("got %q (typed %v), want %q (typed %v)", cfg.OIDCAccessTokenTyp, cfg.accessTokenTyped(), tc.want, tc.typed)
			}
		})
	}
	out := runCLI(t, "config", "--oidc-access-token-typ", "at+jwt")
	if !regexp.MustCompile(`(?m)^oidc-access-token-typ\s+at\+jwt\s+flag\s+AGENTAUTH_OIDC_ACCESS_TOKEN_TYP$`).MatchString(out) {
		t.Errorf("config output does not show the setting:\n%s", out)
	}
}
