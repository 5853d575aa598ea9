package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/openfga/language/pkg/go/transformer"
	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/retrieval"
)

// fgaFlags say which OpenFGA the fga commands talk to.
type fgaFlags struct {
	dataDir, url, store, apiToken   string
	clientID, tokenIssuer, audience string
	timeout                         time.Duration
	consistency, contextJSON        string
	noProgress                      bool
	maxObjects                      int
}

func newFGACmd() *cobra.Command {
	ff := &fgaFlags{}
	cmd := &cobra.Command{
		Use:   "fga",
		Short: "OpenFGA operations: write the authorization model and tuples, ask check and list-objects",
		Long: `Talks to the OpenFGA that retrieval uses: --openfga-url (an OpenFGA or Auth0 FGA server, with
--api-token or client credentials), or by default the embedded one of the agentauth serve running
on --data-dir. When that service is not running, the commands open its OpenFGA database
(<data-dir>/openfga/openfga.db) themselves.`,
	}
	fl := cmd.PersistentFlags()
	fl.StringVar(&ff.dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance whose embedded OpenFGA to use (env AGENTAUTH_DATA_DIR)")
	fl.StringVar(&ff.url, "openfga-url", envOr("AGENTAUTH_OPENFGA_URL", ""), "OpenFGA HTTP API (env AGENTAUTH_OPENFGA_URL; default: the embedded one in --data-dir)")
	fl.StringVar(&ff.store, "store", envOr("AGENTAUTH_OPENFGA_STORE", "agentauth"), "OpenFGA store name, created when missing (env AGENTAUTH_OPENFGA_STORE)")
	fl.StringVar(&ff.apiToken, "api-token", envOr("AGENTAUTH_OPENFGA_API_TOKEN", ""), "OpenFGA API token (env AGENTAUTH_OPENFGA_API_TOKEN, preferred: flags show in ps)")
	fl.StringVar(&ff.clientID, "client-id", envOr("AGENTAUTH_OPENFGA_CLIENT_ID", ""), "OAuth client id for OpenFGA client credentials; the secret comes from env AGENTAUTH_OPENFGA_CLIENT_SECRET")
	fl.StringVar(&ff.tokenIssuer, "token-issuer", envOr("AGENTAUTH_OPENFGA_TOKEN_ISSUER", ""), "token issuer for client credentials, e.g. auth.fga.dev (env AGENTAUTH_OPENFGA_TOKEN_ISSUER)")
	fl.StringVar(&ff.audience, "audience", envOr("AGENTAUTH_OPENFGA_AUDIENCE", ""), "audience for client credentials, e.g. https://api.us1.fga.dev/ (env AGENTAUTH_OPENFGA_AUDIENCE)")
	fl.DurationVar(&ff.timeout, "timeout", 10*time.Second, "timeout of each call to OpenFGA")

	model := &cobra.Command{Use: "model", Short: "Authorization models"}
	model.AddCommand(&cobra.Command{
		Use:   "write FILE.fga|FILE.json|fga.mod",
		Short: "Write an authorization model (DSL, JSON, or a modular model's fga.mod) and use it from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, mods, err := readModelFiles(args[0])
			if err != nil {
				return err
			}
			if _, err := retrieval.ParseModel(data, mods); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return ff.with(cmd, func(ctx context.Context, f *retrieval.FGA) error {
				id, err := f.WriteModel(ctx, data, mods)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "model %s written to store %s (%s); a running agentauth serve uses it within 10s\n", id, ff.store, f.StoreID())
				return nil
			})
		},
	})

	tuples := &cobra.Command{Use: "tuples", Short: "Relationship tuples (the fga CLI's .yaml, .json, .jsonl and .csv files)"}
	for _, del := range []bool{false, true} {
		use, short, verb := "write FILE", "Write the tuples of a file (existing ones are skipped)", "written"
		if del {
			use, short, verb = "delete FILE", "Delete the tuples of a file (missing ones are skipped)", "deleted"
		}
		tc := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				data, err := os.ReadFile(args[0])
				if err != nil {
					return err
				}
				ts, err := retrieval.ParseTuples(args[0], data)
				if err != nil {
					return err
				}
				return ff.with(cmd, func(ctx context.Context, f *retrieval.FGA) error {
					const chunk = 100
					bar := countBar(cmd.ErrOrStderr(), len(ts), "tuples", ff.noProgress || len(ts) <= chunk)
					for start := 0; start < len(ts); start += chunk {
						part := ts[start:min(start+chunk, len(ts))]
						var err error
						if del {
							err = f.DeleteTuples(ctx, part)
						} else {
							err = f.WriteTuples(ctx, part)
						}
						if err != nil {
							if bar != nil {
								_ = bar.Exit()
							}
							if start > 0 {
								return fmt.Errorf("%w (the first %d of %d tuples were %s; running the command again is safe)", err, start, len(ts), verb)
							}
							return err
						}
						if bar != nil {
							_ = bar.Add(len(part))
						}
					}
					if bar != nil {
						_ = bar.Finish()
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%d tuples %s in store %s (%s)\n", len(ts), verb, ff.store, f.StoreID())
					return nil
				})
			},
		}
		tc.Flags().BoolVar(&ff.noProgress, "no-progress", false, "no progress bar")
		tuples.AddCommand(tc)
	}

	check := &cobra.Command{
		Use:   "check USER RELATION OBJECT",
		Short: "Ask whether USER (user:anne) has RELATION (can_view) on OBJECT (doc:roadmap)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := ff.options()
			if err != nil {
				return err
			}
			return ff.with(cmd, func(ctx context.Context, f *retrieval.FGA) error {
				ok, err := f.CheckWith(ctx, args[0], args[1], args[2], o)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "allowed: %t\n", ok)
				return nil
			})
		},
	}
	ff.addQueryFlags(check)

	list := &cobra.Command{
		Use:   "list-objects USER RELATION TYPE",
		Short: "List the objects of TYPE (doc) on which USER has RELATION, one a line",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := ff.options()
			if err != nil {
				return err
			}
			return ff.with(cmd, func(ctx context.Context, f *retrieval.FGA) error {
				objs, truncated, err := f.ListObjectsWith(ctx, args[0], args[1], args[2], ff.maxObjects, o)
				if err != nil {
					return err
				}
				for _, obj := range objs {
					fmt.Fprintln(cmd.OutOrStdout(), obj)
				}
				if truncated {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d objects shown, and there may be more: OpenFGA stops at its result cap or its deadline\n", len(objs))
				}
				return nil
			})
		},
	}
	ff.addQueryFlags(list)
	list.Flags().IntVar(&ff.maxObjects, "max", 0, "at most this many objects (0: as many as OpenFGA returns)")

	cmd.AddCommand(model, tuples, check, list)
	return cmd
}

func (ff *fgaFlags) addQueryFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&ff.consistency, "consistency", "", "minimize-latency or higher-consistency (default: OpenFGA's)")
	cmd.Flags().StringVar(&ff.contextJSON, "context", "", `condition context as a JSON object, e.g. '{"current_time":"2024-01-01T00:00:00Z"}'`)
}

func (ff *fgaFlags) options() (retrieval.FGAOptions, error) {
	var o retrieval.FGAOptions
	switch strings.ToLower(strings.ReplaceAll(ff.consistency, "_", "-")) {
	case "":
	case "minimize-latency":
		o.Consistency = retrieval.MinimizeLatency
	case "higher-consistency":
		o.Consistency = retrieval.HigherConsistency
	default:
		return o, fmt.Errorf("--consistency %q: want minimize-latency or higher-consistency", ff.consistency)
	}
	if ff.contextJSON != "" {
		if err := json.Unmarshal([]byte(ff.contextJSON), &o.Context); err != nil {
			return o, fmt.Errorf("--context: want a JSON object: %w", err)
		}
	}
	return o, nil
}

// with runs fn with an FGA client for the OpenFGA the flags name: the
// given URL; or the running service's embedded one; or, when the service
// is not running, an embedded OpenFGA on its database for this command.
func (ff *fgaFlags) with(cmd *cobra.Command, fn func(context.Context, *retrieval.FGA) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := retrieval.FGAConfig{
		URL: ff.url, StoreName: ff.store, APIToken: ff.apiToken,
		ClientID: ff.clientID, ClientSecret: os.Getenv("AGENTAUTH_OPENFGA_CLIENT_SECRET"), TokenIssuer: ff.tokenIssuer, Audience: ff.audience,
		Timeout: ff.timeout,
	}
	if cfg.URL != "" {
		f, err := retrieval.NewFGA(ctx, cfg)
		if err != nil {
			return err
		}
		return fn(ctx, f)
	}
	if st, err := os.Stat(ff.dataDir); err != nil || !st.IsDir() {
		return fmt.Errorf("no --openfga-url, and no agentauth data dir at %s: start agentauth serve (--data-dir) once, or pass --openfga-url", ff.dataDir)
	}
	if cfg.APIToken == "" && cfg.ClientID == "" {
		if t, err := readOpenFGAToken(ff.dataDir); err == nil {
			cfg.APIToken = t
		}
	}
	if u, err := readOpenFGAURL(ff.dataDir); err == nil {
		cfg.URL = u
		f, err := retrieval.NewFGA(ctx, cfg)
		if err == nil {
			return fn(ctx, f)
		}
		if !errors.Is(err, retrieval.ErrFGAUnavailable) {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// No service is running on the data dir: open its OpenFGA ourselves.
	url, stopFGA, err := startOpenFGA(ff.dataDir, newLogger(cmd.ErrOrStderr(), "warn", "text"))
	if err != nil {
		return err
	}
	defer stopFGA()
	fmt.Fprintf(cmd.ErrOrStderr(), "agentauth serve is not running on %s: using its OpenFGA database directly\n", ff.dataDir)
	cfg.URL = url
	if cfg.APIToken, err = readOpenFGAToken(ff.dataDir); err != nil {
		return err
	}
	cfg.ClientID = ""
	f, err := retrieval.NewFGA(ctx, cfg)
	if err != nil {
		return err
	}
	return fn(ctx, f)
}

// readModelFiles reads a model file; for an fga.mod (or any .mod file) it
// also reads the module files it lists, relative to its directory.
func readModelFiles(name string) ([]byte, map[string][]byte, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, err
	}
	if filepath.Ext(name) != ".mod" {
		return data, nil, nil
	}
	mod, err := transformer.TransformModFile(string(data))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	mods := map[string][]byte{}
	for _, c := range mod.Contents.Value {
		p := filepath.Join(filepath.Dir(name), filepath.FromSlash(c.Value))
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%s lists %s: %w", name, c.Value, err)
		}
		mods[c.Value] = b
	}
	return data, mods, nil
}
