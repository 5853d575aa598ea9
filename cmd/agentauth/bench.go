package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

type benchFlags struct {
	scenarios    []string
	n, warmup    int
	concurrency  []int
	rounds       int
	jsonOut      bool
	natsURL      string
	sync         string
	agent        string
	noProgress   bool
	loadProcess  bool
	agentCreds   string
	userToken    string
	issuer       string
	audience     string
	operator     natsFlags
	cpuProfile   string
	memProfile   string
	creds        *agents.Credentials
	scaleRecords int
	ragDocs      int
	ragDim       int
	rag          *ragBench
}

// connectAgent connects the load's agent, retrying while the embedded
// server's authorization catches up with a registration just made.
func connectAgent(ctx context.Context, o client.Options) (*client.Client, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.Connect(ctx, o)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchEnv is what a scenario runs against: an agentauth instance reached
// over TCP loopback, and a way to dial more connections of the same kind.
type benchEnv struct {
	natsURL   string
	userToken string
	issuer    string // the user token's issuer, when known
	audience  string
	agent     *client.Client
	dial      func(name string) (*nats.Conn, error)
	// In-process instance only.
	m           *Main
	providerURL string // the refresh scenario's local provider
}

// benchOp is one timed operation.
type benchOp func(ctx context.Context) error

// scenario pairs an operation with its physical limit, both measured in
// the same run.
type scenario struct {
	name  string
	limit string
	// setup returns the operation and its baseline, and a cleanup.
	setup func(ctx context.Context, env *benchEnv) (op, baseline benchOp, cleanup func(), err error)
	// ops, for request/reply scenarios, builds the operation and its
	// baseline without starting the echo responder: what a separate load
	// process runs while the responder stays next to the service.
	ops func(ctx context.Context, env *benchEnv) (reqOps, error)
	// optIn scenarios run only when named.
	optIn bool
}

// reqOps are a request/reply scenario's operation, its echo baseline, and
// the request message both send (its subject the operation's).
type reqOps struct {
	call, base benchOp
	request    *nats.Msg
}

var scenarios = []scenario{
	{name: "sys.info", limit: "nats echo", setup: withEcho(sysInfoOps), ops: sysInfoOps},
	{name: "user.whoami", limit: "nats echo", setup: withEcho(whoAmIOps), ops: whoAmIOps},
	{name: "user.exchange", limit: "nats echo", setup: withEcho(exchangeOps), ops: exchangeOps},
	{name: "jwt.verify", limit: "cached verify", setup: setupJWTVerify},
	{name: "vault.token", limit: "nats echo", setup: withEcho(vaultTokenOps), ops: vaultTokenOps},
	{name: "vault.refresh", limit: "provider call", setup: setupVaultRefresh},
	{name: "approval.e2e", limit: "jetstream publish", setup: setupApprovalE2E},
	// vault.scale is opt-in (--scenario vault.scale): it stores
	// --scale-records connections first.
	{name: "vault.scale", limit: "lookup@10k", optIn: true},
	// The retrieval@ scenarios are opt-in (--scenario retrieval.scale
	// runs the four): --rag-docs documents, a user permitted on that share.
	{name: "retrieval@100%", limit: "unfiltered search", optIn: true},
	{name: "retrieval@10%", limit: "unfiltered search", optIn: true},
	{name: "retrieval@1%", limit: "unfiltered search", optIn: true},
	{name: "retrieval@0.1%", limit: "unfiltered search", optIn: true},
}

// scenarioNames are the scenarios that run by default; all adds the
// opt-in ones.
func scenarioNames(all ...bool) []string {
	var s []string
	for _, sc := range scenarios {
		if !sc.optIn || len(all) > 0 {
			s = append(s, sc.name)
		}
	}
	return s
}

func newBenchCmd() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark scenarios side by side with their physical limit measured in the same run",
		Long: `Runs each scenario at each concurrency, alternating rounds of the scenario and of its
limit (for request/reply scenarios: a raw NATS request/reply echo responder with the same
payload and header sizes on the same server and connection type). Reports the median over
rounds of p50, p99 and throughput, and the ratios to the limit.

Without --nats-url it starts an agentauth instance in this process (embedded NATS on a free
loopback port, a temporary data dir) and talks to it over TCP loopback.`,
		Example: `  agentauth bench
  agentauth bench --scenario sys.info --n 50000 --concurrency 1,16 --rounds 3 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.scenarios, "scenario", scenarioNames(), "scenarios to run: "+strings.Join(scenarioNames(true), ", ")+", "+ragScaleName+" (vault.scale and retrieval@… only when named)")
	fl.IntVar(&f.scaleRecords, "scale-records", 1000000, "vault.scale: stored connections to look up among (against 10,000)")
	fl.IntVar(&f.ragDocs, "rag-docs", 100000, "retrieval@…: documents to search among")
	fl.IntVar(&f.ragDim, "rag-dim", 384, "retrieval@…: vector dimensions")
	fl.IntVar(&f.n, "n", 20000, "requests per round")
	fl.IntVar(&f.warmup, "warmup", 2000, "untimed requests before each scenario")
	fl.IntSliceVar(&f.concurrency, "concurrency", []int{1, 16}, "concurrent requesters")
	fl.IntVar(&f.rounds, "rounds", 3, "alternating rounds of scenario and limit; medians are reported")
	fl.BoolVar(&f.jsonOut, "json", false, "print results as JSON")
	fl.StringVar(&f.natsURL, "nats-url", "", "benchmark a running instance at this NATS URL instead of starting one (with --agent-creds, and --nats-nkey or --data-dir for the operator connection of the baseline)")
	fl.StringVar(&f.agentCreds, "agent-creds", "", "with --nats-url: the credentials file of the agent to act as")
	fl.StringVar(&f.userToken, "user-token", "", "with --nats-url: a user token for the user.* scenarios (its agent's policy must allow audience "+benchAudience+")")
	fl.StringVar(&f.operator.nkey, "nats-nkey", "", "with --nats-url: operator nkey seed file")
	fl.StringVar(&f.operator.dataDir, "data-dir", "./agentauth-data", "with --nats-url: data dir of the instance, for its operator key")
	fl.StringVar(&f.sync, "jetstream-sync", "2m", "fsync policy of the instance the bench starts")
	fl.StringVar(&f.agent, "agent", "bench-agent", "agent id to act as")
	fl.BoolVar(&f.noProgress, "no-progress", false, "do not draw progress bars")
	fl.BoolVar(&f.loadProcess, "load-process", false, "generate the load of request/reply scenarios from a separate process, as agents are (the echo responder stays next to the service)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (service and load) to this file")
	fl.StringVar(&f.memProfile, "memprofile", "", "write the allocations of the whole run (service and load) to this file, as a pprof allocs profile")
	return cmd
}

// Stats of one measured run.
type Stats struct {
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Throughput float64       `json:"throughput_per_s"`
	Errors     int           `json:"errors"`
}

// BenchResult is one row of the report.
type BenchResult struct {
	Scenario    string  `json:"scenario"`
	Limit       string  `json:"limit"`
	Concurrency int     `json:"concurrency"`
	N           int     `json:"n"`
	Rounds      int     `json:"rounds"`
	Op          Stats   `json:"op"`
	Baseline    Stats   `json:"limit_stats"`
	P50Ratio    float64 `json:"p50_ratio"`
	TputRatio   float64 `json:"throughput_ratio"`
}

func runBench(ctx context.Context, out, errw io.Writer, f *benchFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.n <= 0 || f.rounds <= 0 || len(f.concurrency) == 0 {
		return fmt.Errorf("--n, --rounds and --concurrency must be positive")
	}
	var selected []scenario
	f.scenarios = expandRAGScenarios(f.scenarios)
	defer closeRAG(f)
	for _, name := range f.scenarios {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		if i < 0 {
			return fmt.Errorf("unknown scenario %q; choose from %s", name, strings.Join(scenarioNames(true), ", "))
		}
		sc := scenarios[i]
		if sc.name == "vault.scale" {
			sc.setup = setupVaultScale(f.scaleRecords, errw, f.noProgress)
		}
		if strings.HasPrefix(sc.name, ragPrefix) {
			sc.setup = ragScenario(f, errw, sc.name)
		}
		selected = append(selected, sc)
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if f.memProfile != "" {
		defer func() {
			if err := writeAllocs(f.memProfile); err != nil {
				fmt.Fprintf(errw, "bench: %v\n", err)
			}
		}()
	}
	natsURL := f.natsURL
	var inProcess *Main
	var providerURL string
	if natsURL == "" {
		dir, err := os.MkdirTemp("", "agentauth-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg := benchConfig(dir, f.sync)
		provider := benchProvider()
		defer provider.Close()
		providerURL = provider.URL
		cfg.Connections = append(cfg.Connections, benchRefreshConfig(provider.URL))
		m := NewMain(cfg, newLogger(errw, "warn", "text"))
		if err := m.Run(ctx); err != nil {
			_ = m.Close(context.Background())
			return err
		}
		defer m.Close(context.Background())
		inProcess = m
		if err := seedVault(m); err != nil {
			return err
		}
		natsURL = m.NATSURL()
		a, creds, err := agents.New(f.agent, benchPolicy, time.Now())
		if err != nil {
			return err
		}
		if err := m.Agents().Create(ctx, a); err != nil {
			return err
		}
		// Now, not when the registry watcher gets to it: the first
		// connection would be refused (and logged as an authentication
		// error by the NATS server).
		if err := m.syncAgents(ctx); err != nil {
			return err
		}
		creds.URL, creds.ServiceXKey = natsURL, m.sealer.PublicKey()
		f.creds = &creds
		f.operator.nkey = keyPath(dir, adminKeyFile)
		t, err := devidp.FetchToken(ctx, &http.Client{Timeout: 10 * time.Second}, devIdPIssuer(m.PublicURL()), devCLIClient, devCLIRedirectURI, "alice", devidp.DefaultUsers()[0].Password)
		if err != nil {
			return fmt.Errorf("bench user token: %w", err)
		}
		f.userToken = t.AccessToken
		f.issuer, f.audience = devIdPIssuer(m.PublicURL()), m.Config.OIDCAudience
		fmt.Fprintf(errw, "bench: started agentauth (embedded NATS %s, jetstream-sync %s)\n", natsURL, f.sync)
	}
	f.operator.url = natsURL
	copts := client.Options{URL: natsURL, Credentials: f.creds, CredsFile: f.agentCreds}
	if f.creds == nil && f.agentCreds == "" {
		copts.Agent = f.agent // the instance's anonymous development agent
	}
	agent, err := connectAgent(ctx, copts)
	if err != nil {
		return err
	}
	defer agent.Close()
	env := &benchEnv{natsURL: natsURL, userToken: f.userToken, issuer: f.issuer, audience: f.audience, agent: agent, dial: func(name string) (*nats.Conn, error) {
		return f.operator.connect(name)
	}, m: inProcess, providerURL: providerURL}
	var results []BenchResult
	for _, sc := range selected {
		op, base, cleanup, err := sc.setup(ctx, env)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		for _, c := range f.concurrency {
			if c <= 0 {
				return fmt.Errorf("--concurrency %d must be positive", c)
			}
			var ops, bases []Stats
			if f.loadProcess && sc.ops != nil {
				spec := loadSpec{URL: natsURL, UserToken: f.userToken, Scenario: sc.name, Concurrency: c, N: f.n, Warmup: f.warmup, Rounds: f.rounds, Limit: sc.limit, NoProgress: f.noProgress}
				if f.creds != nil {
					spec.Credentials = *f.creds
				} else if f.agentCreds != "" {
					if spec.Credentials, err = readCredentials(f.agentCreds); err != nil {
						return err
					}
				} else {
					spec.Credentials.Agent = f.agent
				}
				fmt.Fprintf(errw, "bench: %s c=%d in a load process\n", sc.name, c)
				if ops, bases, err = runLoadProcess(ctx, errw, spec); err != nil {
					return fmt.Errorf("scenario %s: %w", sc.name, err)
				}
			} else {
				ops, bases = f.measureRounds(ctx, errw, sc.name, sc.limit, op, base, c)
			}
			res := BenchResult{Scenario: sc.name, Limit: sc.limit, Concurrency: c, N: f.n, Rounds: f.rounds, Op: medianStats(ops), Baseline: medianStats(bases)}
			if res.Baseline.P50 > 0 {
				res.P50Ratio = float64(res.Op.P50) / float64(res.Baseline.P50)
			}
			if res.Baseline.Throughput > 0 {
				res.TputRatio = res.Op.Throughput / res.Baseline.Throughput
			}
			results = append(results, res)
		}
		cleanup()
	}
	if f.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printBench(out, results)
	return nil
}

func benchConfig(dir, sync string) Config {
	var c Config
	for _, o := range options {
		_ = setValue(o.ptr(&c), o.def)
	}
	c.DataDir = dir
	c.NATSListen = "127.0.0.1:0"
	c.HTTPListen = "127.0.0.1:0"
	c.JetStreamSync = sync
	c.LogLevel = "warn"
	return c
}

// writeAllocs writes the allocations sampled since the process started.
func writeAllocs(path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memory profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(pf, 0); err != nil {
		_ = pf.Close()
		return fmt.Errorf("memory profile: %w", err)
	}
	return pf.Close()
}

// measureRounds warms op and base up, then measures them in alternating rounds
// at concurrency c, each round with its progress bar.
func (f *benchFlags) measureRounds(ctx context.Context, errw io.Writer, name, limit string, op, base benchOp, c int) (ops, bases []Stats) {
	measure(ctx, op, f.warmup, c, nil)
	measure(ctx, base, f.warmup, c, nil)
	for r := 0; r < f.rounds; r++ {
		bases = append(bases, measure(ctx, base, f.n, c, f.bar(errw, fmt.Sprintf("%s c=%d round %d/%d", limit, c, r+1, f.rounds))))
		ops = append(ops, measure(ctx, op, f.n, c, f.bar(errw, fmt.Sprintf("%s c=%d round %d/%d", name, c, r+1, f.rounds))))
	}
	return ops, bases
}

func (f *benchFlags) bar(w io.Writer, desc string) *progressbar.ProgressBar {
	if f.noProgress {
		return nil
	}
	return progressbar.NewOptions(f.n,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetVisibility(isTerminal(w)),
	)
}

// measure runs op n times from c goroutines and reports latency
// percentiles and throughput. Errors are counted, not timed.
func measure(ctx context.Context, op benchOp, n, c int, bar *progressbar.ProgressBar) Stats {
	lat := make([]time.Duration, n)
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := op(ctx); err != nil {
					errs.Add(1)
				}
				lat[i] = time.Since(t0)
				if bar != nil && i%256 == 0 {
					_ = bar.Set(int(i))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if bar != nil {
		_ = bar.Finish()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return Stats{
		P50:        lat[n/2],
		P99:        lat[min(n-1, n*99/100)],
		Throughput: float64(n) / elapsed.Seconds(),
		Errors:     int(errs.Load()),
	}
}

func medianStats(s []Stats) Stats {
	pick := func(get func(Stats) float64) float64 {
		v := make([]float64, len(s))
		for i := range s {
			v[i] = get(s[i])
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	out := Stats{
		P50:        time.Duration(pick(func(x Stats) float64 { return float64(x.P50) })),
		P99:        time.Duration(pick(func(x Stats) float64 { return float64(x.P99) })),
		Throughput: pick(func(x Stats) float64 { return x.Throughput }),
	}
	for _, x := range s {
		out.Errors += x.Errors
	}
	return out
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
	case d < time.Microsecond:
		return strconv.FormatInt(int64(d), 10) + "ns"
	default:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "µs"
	}
}

func printBench(w io.Writer, rs []BenchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tc\tn×rounds\tp50\tp99\treq/s\terrors\t|\tlimit\tp50\tp99\treq/s\t|\tp50 ratio\treq/s ratio\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d×%d\t%s\t%s\t%.0f\t%d\t|\t%s\t%s\t%s\t%.0f\t|\t%.2f×\t%.0f%%\t\n",
			r.Scenario, r.Concurrency, r.N, r.Rounds, fmtDur(r.Op.P50), fmtDur(r.Op.P99), r.Op.Throughput, r.Op.Errors,
			r.Limit, fmtDur(r.Baseline.P50), fmtDur(r.Baseline.P99), r.Baseline.Throughput,
			r.P50Ratio, 100*r.TputRatio)
	}
	_ = tw.Flush()
}

// sysInfoOps: the sys.info round trip through the whole pipeline.
func sysInfoOps(ctx context.Context, env *benchEnv) (reqOps, error) {
	return requestOps(env, schemas.OpSysInfo, schemas.SysInfoRequest{}, func(ctx context.Context) error {
		_, err := env.agent.SysInfo(ctx)
		return err
	})
}

// whoAmIOps: user.whoami with a development user's token (the JWKS and the
// verified-token cache warm after the first request).
func whoAmIOps(ctx context.Context, env *benchEnv) (reqOps, error) {
	if env.userToken == "" {
		return reqOps{}, errors.New("no user token: run against the built-in instance, or pass --user-token")
	}
	return requestOps(env, schemas.OpWhoAmI, schemas.WhoAmIRequest{UserToken: env.userToken}, func(ctx context.Context) error {
		_, err := env.agent.WhoAmI(ctx, env.userToken)
		return err
	})
}

// exchangeOps: user.exchange, minting and sealing a token each time and
// opening it in the SDK.
func exchangeOps(ctx context.Context, env *benchEnv) (reqOps, error) {
	if env.userToken == "" {
		return reqOps{}, errors.New("no user token: run against the built-in instance, or pass --user-token")
	}
	return requestOps(env, schemas.OpExchange, schemas.ExchangeRequest{UserToken: env.userToken, Audience: benchAudience}, func(ctx context.Context) error {
		_, err := env.agent.Exchange(ctx, env.userToken, benchAudience)
		return err
	})
}

// echoSubject is where the baseline's echo responder listens: under the
// agent's own prefix, which its permissions allow, where no agentauth
// endpoint listens.
func echoSubject(agent string) string { return "agentauth." + agent + ".bench.echo" }

// requestOps pairs call (op through the SDK) with the raw NATS request the
// echo responder answers: the same request headers and data, through the
// agent's own connection, with a timeout as the SDK sends.
func requestOps(env *benchEnv, op schemas.Op, data any, call benchOp) (reqOps, error) {
	req, err := env.agent.NewRequest(op, data)
	if err != nil {
		return reqOps{}, err
	}
	reqH, reqBody, err := bus.Encode(req)
	if err != nil {
		return reqOps{}, err
	}
	conn, subject := env.agent.Conn(), echoSubject(env.agent.Agent())
	base := func(ctx context.Context) error {
		_, err := conn.RequestMsg(&nats.Msg{Subject: subject, Header: reqH, Data: reqBody}, 10*time.Second)
		return err
	}
	return reqOps{call: call, base: base, request: &nats.Msg{Subject: schemas.Subject(env.agent.Agent(), op), Header: reqH, Data: reqBody}}, nil
}

// withEcho makes a scenario's setup: its operations plus an echo
// responder, next to the service, answering with the headers and data of
// one real reply (same sizes, same server, same connection types).
func withEcho(ops func(context.Context, *benchEnv) (reqOps, error)) func(context.Context, *benchEnv) (benchOp, benchOp, func(), error) {
	return func(ctx context.Context, env *benchEnv) (benchOp, benchOp, func(), error) {
		r, err := ops(ctx, env)
		if err != nil {
			return nil, nil, nil, err
		}
		cleanup, err := startEcho(env, r.request)
		if err != nil {
			return nil, nil, nil, err
		}
		return r.call, r.base, cleanup, nil
	}
}

// startEcho sends req once to the service for a real reply and starts
// the echo responder that answers with it.
func startEcho(env *benchEnv, req *nats.Msg) (func(), error) {
	nc, err := env.dial("bench-echo-client")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sample, err := nc.RequestMsg(&nats.Msg{Subject: req.Subject, Header: req.Header, Data: req.Data}, 5*time.Second)
	if err == nil {
		_, err = bus.ParseReply(sample)
	}
	if err != nil {
		return nil, fmt.Errorf("sample %s: %w", req.Subject, err)
	}
	responder, err := env.dial("bench-echo-responder")
	if err != nil {
		return nil, err
	}
	sub, err := responder.QueueSubscribe(echoSubject(env.agent.Agent()), "q", func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: sample.Header, Data: sample.Data})
	})
	if err == nil {
		err = responder.Flush()
	}
	if err != nil {
		responder.Close()
		return nil, err
	}
	return func() { _ = sub.Unsubscribe(); responder.Close() }, nil
}

// setupJWTVerify: verification of the user token in this process (with a
// warm JWKS) against the verified-token cache. At concurrency 1 the
// rates are verifications per second per core.
func setupJWTVerify(ctx context.Context, env *benchEnv) (benchOp, benchOp, func(), error) {
	if env.userToken == "" || env.issuer == "" {
		return nil, nil, nil, errors.New("jwt.verify needs the built-in development provider (run without --nats-url)")
	}
	v, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: env.issuer, Audience: env.audience}}, identity.Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := v.Verify(ctx, env.userToken, identity.VerifyOptions{}); err != nil {
		return nil, nil, nil, err
	}
	cached := &identity.CachingVerifier{Next: v}
	op := func(ctx context.Context) error {
		_, err := v.Verify(ctx, env.userToken, identity.VerifyOptions{})
		return err
	}
	base := func(ctx context.Context) error {
		_, err := cached.Verify(ctx, env.userToken, identity.VerifyOptions{})
		return err
	}
	return op, base, func() {}, nil
}

// benchAudience is the first-party audience the bench agent may exchange for.
const benchAudience = "https://api.bench.example"

// loadSpec tells a load process what to run.
type loadSpec struct {
	URL         string             `json:"url"`
	Credentials agents.Credentials `json:"credentials"`
	UserToken   string             `json:"user_token,omitempty"`
	Scenario    string             `json:"scenario"`
	Concurrency int                `json:"concurrency"`
	N           int                `json:"n"`
	Warmup      int                `json:"warmup"`
	Rounds      int                `json:"rounds"`
	// Limit names the baseline in progress bars; NoProgress turns them
	// off (they are drawn only on a terminal anyway).
	Limit      string `json:"limit,omitempty"`
	NoProgress bool   `json:"no_progress,omitempty"`
}

type loadResult struct {
	Ops   []Stats `json:"ops"`
	Bases []Stats `json:"bases"`
}

// runLoadProcess runs one scenario's rounds in a child process (this
// binary's hidden bench-load command) and returns its measurements.
func runLoadProcess(ctx context.Context, errw io.Writer, spec loadSpec) ([]Stats, []Stats, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "bench-load")
	cmd.Env = append(os.Environ(), "AGENTAUTH_TEST_MAIN=1") // lets a test binary act as agentauth
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = errw
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("load process: %w", err)
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, nil, fmt.Errorf("load process output: %w", err)
	}
	return r.Ops, r.Bases, nil
}

func newBenchLoadCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "bench-load",
		Short:  "The load process of agentauth bench (reads its spec on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var spec loadSpec
			if err := json.NewDecoder(cmd.InOrStdin()).Decode(&spec); err != nil {
				return fmt.Errorf("bench-load spec: %w", err)
			}
			ctx := context.Background()
			o := client.Options{URL: spec.URL, Agent: spec.Credentials.Agent}
			if spec.Credentials.NKeySeed != "" {
				o.Credentials = &spec.Credentials
			}
			agent, err := connectAgent(ctx, o)
			if err != nil {
				return err
			}
			defer agent.Close()
			i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == spec.Scenario })
			if i < 0 || scenarios[i].ops == nil {
				return fmt.Errorf("bench-load: no request scenario %q", spec.Scenario)
			}
			ro, err := scenarios[i].ops(ctx, &benchEnv{natsURL: spec.URL, userToken: spec.UserToken, agent: agent})
			if err != nil {
				return err
			}
			var r loadResult
			f := &benchFlags{n: spec.N, warmup: spec.Warmup, rounds: spec.Rounds, noProgress: spec.NoProgress}
			// Bars go to the parent's stderr, drawn when it is a terminal.
			r.Ops, r.Bases = f.measureRounds(ctx, cmd.ErrOrStderr(), spec.Scenario, spec.Limit, ro.call, ro.base, spec.Concurrency)
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		},
	}
}
