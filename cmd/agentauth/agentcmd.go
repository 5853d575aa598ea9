package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
)

// policyFlags edit an agent policy from the command line.
type policyFlags struct {
	audiences, scopes, approvalAudiences, approvalScopes, background, collections, ingest, connections []string
	clientID                                                                                           string
	approver                                                                                           bool
}

func (p *policyFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&p.audiences, "audience", nil, "first-party API audience the agent may get exchanged tokens for (repeatable)")
	fl.StringSliceVar(&p.scopes, "scope", nil, "scope the agent may ask for in exchanged tokens (repeatable)")
	fl.StringSliceVar(&p.approvalAudiences, "approval-audience", nil, "audience the agent may ask a person to approve actions for (repeatable)")
	fl.StringSliceVar(&p.approvalScopes, "approval-scope", nil, "scope the agent may ask for in approved tokens (repeatable)")
	fl.StringSliceVar(&p.background, "background-audience", nil, "approval audience for which the agent may name the person by subject (CIBA login_hint) instead of presenting their token (repeatable)")
	fl.BoolVar(&p.approver, "approver", false, "an approval app: it may send people's decisions (with their own tokens) and read their approval notifications")
	fl.StringSliceVar(&p.collections, "collection", nil, "retrieval collection the agent may query (repeatable)")
	fl.StringSliceVar(&p.ingest, "ingest-collection", nil, "retrieval collection the principal may add documents to and delete from (repeatable)")
	fl.StringArrayVar(&p.connections, "connection", nil, "vault connection and its scopes, as name or name=scope1,scope2 (repeatable)")
	fl.StringVar(&p.clientID, "client-id", "", "OAuth client the user tokens this agent presents must have been issued to")
}

// apply sets the fields whose flags were given.
func (p *policyFlags) apply(cmd *cobra.Command, pol *agents.Policy) error {
	fl := cmd.Flags()
	lists := map[string]struct {
		to   *[]string
		from []string
	}{
		"audience": {&pol.Audiences, p.audiences}, "scope": {&pol.Scopes, p.scopes},
		"approval-audience": {&pol.ApprovalAudiences, p.approvalAudiences}, "approval-scope": {&pol.ApprovalScopes, p.approvalScopes},
		"background-audience": {&pol.BackgroundAudiences, p.background},
		"collection":          {&pol.Collections, p.collections}, "ingest-collection": {&pol.IngestCollections, p.ingest},
	}
	for flag, l := range lists {
		if fl.Changed(flag) {
			*l.to = l.from
		}
	}
	if fl.Changed("approver") {
		pol.Approver = p.approver
	}
	if fl.Changed("client-id") {
		pol.ClientID = p.clientID
	}
	if fl.Changed("connection") {
		pol.Connections = nil
		for _, c := range p.connections {
			name, scopes, _ := strings.Cut(c, "=")
			if name == "" {
				return fmt.Errorf("--connection %q: use name or name=scope1,scope2", c)
			}
			g := agents.ConnectionGrant{Connection: name}
			if scopes != "" {
				g.Scopes = strings.Split(scopes, ",")
			}
			pol.Connections = append(pol.Connections, g)
		}
	}
	return nil
}

func newAgentCmd() *cobra.Command {
	var nf natsFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Register and manage agents: identity, NATS credentials, sealing key and policy",
	}
	nf.add(cmd.PersistentFlags())
	store := func(ctx context.Context) (*bus.AgentStore, func(), error) {
		return openStore(ctx, &nf, "agentauth-agent-cli", bus.OpenAgentStore)
	}

	// withStore runs fn with the registry of the instance nf points at.
	withStore := func(fn func(ctx context.Context, cmd *cobra.Command, args []string, s *bus.AgentStore) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			s, done, err := store(ctx)
			if err != nil {
				return err
			}
			defer done()
			return fn(ctx, cmd, args, s)
		}
	}

	var pf policyFlags
	var out, serviceXKey string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create an agent and write its credentials file (shown once, never stored by agentauth)",
		Example: `  agentauth agent add billing-bot --audience https://api.example.com --scope orders:read
  go run ./cmd/agentauth agent add my-agent --out ~/.agentauth`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			var pol agents.Policy
			if err := pf.apply(cmd, &pol); err != nil {
				return err
			}
			a, creds, err := agents.New(args[0], pol, time.Now())
			if err != nil {
				return err
			}
			// The agent gets the address, never the operator's own
			// credentials that --nats-url may carry.
			creds.URL = bus.StripUserinfo(nf.url)
			// And agentauth's sealing key, so that the SDK opens only
			// what agentauth sealed.
			if creds.ServiceXKey, err = addServiceXKey(serviceXKey, nf.dataDir); err != nil {
				return err
			}
			path := filepath.Join(out, a.ID+".agent.json")
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s exists; remove it or choose another --out", path)
			}
			s, done, err := store(ctx)
			if err != nil {
				return err
			}
			defer done()
			if err := s.Create(ctx, a); err != nil {
				return err
			}
			if err := writeCredentials(path, creds); err != nil {
				_ = s.Delete(ctx, a.ID)
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "agent %s created\n  nkey  %s\n  xkey  %s\n  credentials written to %s (0600): it holds the agent's secret seeds; agentauth keeps none, so keep this file safe\n\n", a.ID, a.NKey, a.XKey, path)
			if creds.ServiceXKey != "" {
				fmt.Fprintf(w, "  the credentials pin agentauth's sealing key %s: the agent opens only tokens sealed by it\n\n", creds.ServiceXKey)
			} else {
				fmt.Fprintf(w, "WARNING: %s has no sealing key (%s) to pin in the credentials, so the agent will accept a token sealed to it by anyone: give the instance's with --service-xkey, or --data-dir of the instance\n\n", nf.dataDir, keyPath(nf.dataDir, sealKeyFile))
			}
			// An embedded server applies the registry change within
			// milliseconds; wait for it, so that the agent can connect
			// as soon as this command returns.
			if acceptedWithin(ctx, nf.url, []byte(creds.NKeySeed), acceptWait) {
				fmt.Fprintf(w, "The NATS server at %s accepts the agent now.\n", bus.RedactURL(nf.url))
			} else {
				fmt.Fprintf(w, "The NATS server at %s does not accept the agent yet. agentauth's embedded server applies new agents within a second; with your own NATS server, regenerate its authorization with: agentauth agent nats-config\n", bus.RedactURL(nf.url))
			}
			fmt.Fprintf(w, "Use it from Go:  client.Connect(ctx, client.Options{CredsFile: %q})\n", path)
			return nil
		},
	}
	pf.add(add)
	add.Flags().StringVar(&out, "out", ".", "directory for the credentials file <name>.agent.json")
	add.Flags().StringVar(&serviceXKey, "service-xkey", "", "agentauth's sealing public key (X…) to pin in the credentials; default: the one in --data-dir (keys/"+sealKeyFile+")")

	list := &cobra.Command{
		Use:   "list",
		Short: "List agents",
		Args:  cobra.NoArgs,
		RunE: withStore(func(ctx context.Context, cmd *cobra.Command, _ []string, s *bus.AgentStore) error {
			all, err := s.List(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "AGENT\tCREATED\tAUDIENCES\tCONNECTIONS\tNKEY")
			for _, a := range all {
				var conns []string
				for _, c := range a.Policy.Connections {
					conns = append(conns, c.Connection)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.Created.Format(time.RFC3339), dash(strings.Join(a.Policy.Audiences, ",")), dash(strings.Join(conns, ",")), a.NKey)
			}
			return tw.Flush()
		}),
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an agent (public keys, policy and NATS permissions) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, cmd *cobra.Command, args []string, s *bus.AgentStore) error {
			a, rev, err := s.Get(ctx, args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(map[string]any{"agent": a, "revision": rev, "nats_permissions": agents.PermissionsForAgent(a)})
		}),
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an agent: its NATS credentials stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, cmd *cobra.Command, args []string, s *bus.AgentStore) error {
			if err := s.Delete(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s removed\n", args[0])
			return nil
		}),
	}
	var ppf policyFlags
	policy := &cobra.Command{
		Use:     "policy NAME",
		Short:   "Show an agent's policy, or change the parts given as flags",
		Example: `  agentauth agent policy billing-bot --audience https://api.example.com --audience https://billing.example.com`,
		Args:    cobra.ExactArgs(1),
		RunE: withStore(func(ctx context.Context, cmd *cobra.Command, args []string, s *bus.AgentStore) error {
			a, rev, err := s.Get(ctx, args[0])
			if err != nil {
				return err
			}
			if cmd.Flags().NFlag() > 0 {
				if err := ppf.apply(cmd, &a.Policy); err != nil {
					return err
				}
				if err := s.Update(ctx, a, rev); err != nil {
					return err
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(a.Policy)
		}),
	}
	ppf.add(policy)
	natsConfig := &cobra.Command{
		Use:   "nats-config",
		Short: "Print the NATS server authorization that isolates every agent (for --nats-url deployments)",
		Args:  cobra.NoArgs,
		RunE: withStore(func(ctx context.Context, cmd *cobra.Command, _ []string, s *bus.AgentStore) error {
			all, err := s.List(ctx)
			if err != nil {
				return err
			}
			svc := "<agentauth service nkey: the public key of the seed given with --nats-nkey to serve>"
			if seed, err := os.ReadFile(keyPath(nf.dataDir, serviceKeyFile)); err == nil {
				if pub, err := publicKey(trimSeed(seed)); err == nil {
					svc = pub
				}
			}
			_, err = io.WriteString(cmd.OutOrStdout(), agents.NATSConfig(svc, all))
			return err
		}),
	}
	cmd.AddCommand(add, list, show, remove, policy, natsConfig)
	return cmd
}

// addServiceXKey is the sealing public key `agent add` pins in the
// credentials: flag when given, else the one in dataDir, else "" (no key
// to pin; the caller warns).
func addServiceXKey(flag, dataDir string) (string, error) {
	if flag != "" {
		if !nkeys.IsValidPublicCurveKey(flag) {
			return "", fmt.Errorf("--service-xkey %q is not an X25519 public key (X…)", flag)
		}
		return flag, nil
	}
	pub, err := sealingPublicKey(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return pub, err
}

// acceptWait bounds how long `agent add` waits for the server to accept
// the new agent.
const acceptWait = 5 * time.Second

// acceptedWithin reports whether the NATS server at url accepts a
// connection authenticated with seed within d.
func acceptedWithin(ctx context.Context, url string, seed []byte, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		nc, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agentauth-agent-check", NKeySeed: seed})
		if err == nil {
			nc.Close()
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
