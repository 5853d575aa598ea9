package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

type replayFlags struct {
	nats                   natsFlags
	stream                 string
	subjects               []string
	since, until           string
	fromSeq, toSeq         uint64
	format                 string
	follow, progress, noPB bool
}

func newReplayCmd() *cobra.Command {
	f := &replayFlags{}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Read an agentauth stream (audit by default) as CloudEvents JSON lines or a table",
		Long: `Read an agentauth JetStream stream by time range or sequence, with subject filters.

Streams: audit (` + schemas.StreamAudit + `), events (` + schemas.StreamEvents + `), or any stream name.
--since/--until take RFC 3339 times or durations back from now (10m, 24h).
A progress bar is drawn on stderr while reading a finite range; --follow keeps tailing.`,
		Example: `  agentauth replay --since 1h
  agentauth replay --subject 'agentauth.audit.sys.>' --format table
  agentauth replay --from-seq 100 --to-seq 200 > audit.jsonl
  agentauth replay --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReplay(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	f.nats.add(fl)
	fl.StringVar(&f.stream, "stream", "audit", "stream: audit, events, or a stream name")
	fl.StringSliceVar(&f.subjects, "subject", nil, "subject filter, repeatable (e.g. 'agentauth.audit.sys.>')")
	fl.StringVar(&f.since, "since", "", "start time: RFC 3339 or a duration back from now")
	fl.StringVar(&f.until, "until", "", "end time: RFC 3339 or a duration back from now")
	fl.Uint64Var(&f.fromSeq, "from-seq", 0, "first stream sequence")
	fl.Uint64Var(&f.toSeq, "to-seq", 0, "last stream sequence")
	fl.StringVar(&f.format, "format", "json", "json (CloudEvents JSON lines) or table")
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep reading new events until interrupted, or until past --to-seq or --until")
	fl.BoolVar(&f.noPB, "no-progress", false, "never draw the progress bar")
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parseWhen accepts RFC 3339 or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration (10m, 24h)", s)
	}
	return t, nil
}

func streamName(s string) string {
	switch s {
	case "audit":
		return schemas.StreamAudit
	case "events":
		return schemas.StreamEvents
	}
	return s
}

func runReplay(ctx context.Context, out, errw io.Writer, f *replayFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.format != "json" && f.format != "table" {
		return fmt.Errorf("--format %q: use json or table", f.format)
	}
	now := time.Now()
	since, err := parseWhen(f.since, now)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	until, err := parseWhen(f.until, now)
	if err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	if f.follow {
		sctx, stop := signalContext()
		defer stop()
		ctx = sctx
	}
	nc, err := f.nats.connect("agentauth-replay")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := bus.JetStream(nc)
	if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	showBar := !f.follow && !f.noPB
	total := func(n uint64) {
		if !showBar || n == 0 {
			return
		}
		bar = progressbar.NewOptions64(int64(n),
			progressbar.OptionSetWriter(errw),
			progressbar.OptionSetDescription("replay "+streamName(f.stream)),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetVisibility(isTerminal(errw)),
		)
	}
	var tw *tabwriter.Writer
	if f.format == "table" {
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tSTORED\tSUBJECT\tTYPE\tSUMMARY")
	}
	enc := json.NewEncoder(out)
	count := 0
	err = bus.Replay(ctx, js, bus.ReplayOptions{
		Stream: streamName(f.stream), Subjects: f.subjects,
		Since: since, Until: until, FromSeq: f.fromSeq, ToSeq: f.toSeq, Follow: f.follow,
	}, total, func(r bus.Replayed) error {
		count++
		if bar != nil {
			_ = bar.Add(1)
		}
		if tw != nil {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Sequence, r.Stored.UTC().Format(time.RFC3339Nano), r.Subject, eventType(r), summary(r))
			if f.follow {
				return tw.Flush()
			}
			return nil
		}
		if r.Event == nil {
			return enc.Encode(map[string]any{"sequence": r.Sequence, "subject": r.Subject, "error": "not a CloudEvent: " + r.DecodeErr.Error()})
		}
		return enc.Encode(r.Event)
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if tw != nil {
		_ = tw.Flush()
	}
	if err != nil {
		return f.nats.explain(nc, err)
	}
	if !f.follow {
		fmt.Fprintf(errw, "%d events from %s\n", count, streamName(f.stream))
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	if f, ok := w.(*os.File); ok {
		return isatty.IsTerminal(f.Fd())
	}
	return false
}

func eventType(r bus.Replayed) string {
	if r.Event == nil {
		return "(not a CloudEvent)"
	}
	return r.Event.Type()
}

// summary is the table's last column: the audit facts of a request event,
// or the data shortened.
func summary(r bus.Replayed) string {
	if r.Event == nil {
		return r.DecodeErr.Error()
	}
	if r.Event.Type() == schemas.TypeAuditRequest {
		var a schemas.AuditRequest
		if json.Unmarshal(r.Event.Data(), &a) == nil {
			s := "agent=" + a.Agent + " op=" + a.Operation + " outcome=" + a.Outcome
			if a.Code != "" {
				s += " code=" + string(a.Code)
			}
			return s + " took=" + strconv.FormatInt(a.DurationUS, 10) + "µs"
		}
	}
	if r.Event.Type() == schemas.TypeAuditVault {
		var a schemas.AuditVault
		if json.Unmarshal(r.Event.Data(), &a) == nil {
			s := a.Event + " user=" + a.Subject + " connection=" + a.Connection
			for _, kv := range [][2]string{{"agent", a.Agent}, {"token", a.Fingerprint}, {"scopes", strings.Join(a.Scopes, ",")}, {"reason", a.Reason}} {
				if kv[1] != "" {
					s += " " + kv[0] + "=" + kv[1]
				}
			}
			return s
		}
	}
	s := strings.TrimSpace(string(r.Event.Data()))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
