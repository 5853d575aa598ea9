// Command agentauth runs the agentauth service and its operator tools.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "agentauth:", err)
		os.Exit(1)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "agentauth",
		Short:         "Let AI agents act for people safely: user auth, token vault, approvals and FGA-filtered retrieval over NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServeCmd(), newConfigCmd(), newReplayCmd(), newBenchCmd(), newAgentCmd(), newKeysCmd(), newVaultCmd(), newApprovalsCmd(), newFGACmd(), newDocsCmd(), newDevCmd(), newBenchLoadCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "agentauth", version) },
	})
	return root
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the service (embedded NATS with JetStream by default)",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, _, err := cf.load(os.LookupEnv)
		if err != nil {
			return err
		}
		log := newLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat)
		slog.SetDefault(log)
		ctx, stop := signalContext()
		defer stop()
		m := NewMain(cfg, log)
		if err := m.Run(ctx); err != nil {
			_ = m.Close(context.Background())
			return err
		}
		m.banner(cmd.ErrOrStderr())
		<-ctx.Done()
		log.Info("shutting down: no new requests, finishing in-flight ones (signal again to force)")
		return m.Close(context.Background())
	}
	return cmd
}

// signalContext is cancelled by the first SIGINT/SIGTERM; a second one
// exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "agentauth: second signal, exiting now")
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (flags > AGENTAUTH_* env > YAML file > defaults), secrets masked",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, src, err := cf.load(os.LookupEnv)
		if err != nil {
			return err
		}
		printConfig(cmd.OutOrStdout(), cfg, src)
		return nil
	}
	return cmd
}
