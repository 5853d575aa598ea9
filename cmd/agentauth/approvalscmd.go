package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
	"github.com/agentauth/agentauth/schemas"
)

func newApprovalsCmd() *cobra.Command {
	var f approvalsFlags
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "Approve or deny agents' requests in the terminal, as the person they name",
		Long: `Logs in as the person (--token, AGENTAUTH_USER_TOKEN, or a development user with --user),
shows their pending approval requests — including those that arrived while no app was open —
and new ones as they come, and sends the person's decision with a keystroke: a approve,
d deny, s skip, q quit. It acts as an approval app: the development one whose credentials
the embedded instance keeps in <data-dir>/keys/approvals.agent.json, or --creds.

Operators list and inspect requests with the subcommands.`,
		Example: `  go run ./cmd/agentauth approvals --user alice
  go run ./cmd/agentauth approvals list --state pending`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApprovalsApp(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.user, "user", "", "development user to log in as (alice, bob)")
	fl.StringVar(&f.password, "password", "", "the development user's password (default: the published one)")
	fl.StringVar(&f.token, "token", os.Getenv("AGENTAUTH_USER_TOKEN"), "the person's access token (env AGENTAUTH_USER_TOKEN)")
	fl.StringVar(&f.url, "url", "http://127.0.0.1:8080", "agentauth's HTTP edge (for --user)")
	fl.StringVar(&f.creds, "creds", "", "the approval app's credentials file (default <data-dir>/keys/approvals.agent.json)")
	fl.StringVar(&f.dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance (env AGENTAUTH_DATA_DIR)")
	fl.StringVar(&f.natsURL, "nats-url", "", "NATS URL (default: the credentials' URL)")
	cmd.AddCommand(newApprovalsListCmd(), newApprovalsShowCmd())
	return cmd
}

type approvalsFlags struct {
	user, password, token, url, creds, dataDir, natsURL string
}

// userOf reads iss and sub from a token without verifying it: only to
// know whose notifications to show; agentauth verifies the token with
// every decision.
func userOf(token string) (approval.UserRef, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return approval.UserRef{}, errors.New("the user token is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return approval.UserRef{}, fmt.Errorf("the user token's claims: %w", err)
	}
	var c struct{ Iss, Sub string }
	if err := json.Unmarshal(b, &c); err != nil || c.Iss == "" || c.Sub == "" {
		return approval.UserRef{}, errors.New("the user token has no iss and sub")
	}
	return approval.UserRef{Issuer: c.Iss, Subject: c.Sub}, nil
}

func (f *approvalsFlags) userToken(ctx context.Context) (string, error) {
	if f.token != "" {
		return f.token, nil
	}
	if f.user == "" {
		return "", errors.New("who decides? give --user (development provider) or --token / AGENTAUTH_USER_TOKEN")
	}
	t, err := devidp.UserToken(ctx, &http.Client{Timeout: 10 * time.Second}, f.url, f.user, f.password)
	if err != nil {
		return "", fmt.Errorf("log in as %s: %w", f.user, err)
	}
	return t, nil
}

// inbox is the terminal app's view: pending requests, oldest first.
type inbox struct {
	mu      sync.Mutex
	pending map[string]schemas.ApprovalNotification
	changed chan struct{}
}

func (b *inbox) apply(typ string, n schemas.ApprovalNotification) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if typ == schemas.TypeApprovalRequested && n.ExpiresAt.After(time.Now()) {
		b.pending[n.AuthReqID] = n
	} else {
		delete(b.pending, n.AuthReqID)
	}
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// next is the pending request to show: the one expiring first that was
// not skipped (skipped ones come back when nothing else is left).
func (b *inbox) next(skipped map[string]bool) (schemas.ApprovalNotification, int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var list []schemas.ApprovalNotification
	for _, n := range b.pending {
		if n.ExpiresAt.After(time.Now()) {
			list = append(list, n)
		}
	}

	if len(list) == 0 {
		return schemas.ApprovalNotification{}, 0, false
	}
	sort.Slice(list, func(i, j int) bool {
		if si, sj := skipped[list[i].AuthReqID], skipped[list[j].AuthReqID]; si != sj {
			return sj
		}
		return list[i].ExpiresAt.Before(list[j].ExpiresAt)
	})
	return list[0], len(list), true
}

func runApprovalsApp(ctx context.Context, in io.Reader, out io.Writer, f *approvalsFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	token, err := f.userToken(ctx)
	if err != nil {
		return err
	}
	who, err := userOf(token)
	if err != nil {
		return err
	}
	credsFile := f.creds
	if credsFile == "" {
		credsFile = keyPath(f.dataDir, approvalsApp+".agent.json")
	}
	c, err := client.Connect(ctx, client.Options{CredsFile: credsFile, URL: f.natsURL})
	if err != nil {
		return fmt.Errorf("connect as the approval app: %w", err)
	}
	defer c.Close()
	js, err := bus.JetStream(c.Conn())
	if err != nil {
		return err
	}
	box := &inbox{pending: map[string]schemas.ApprovalNotification{}, changed: make(chan struct{}, 1)}
	// Everything the stream kept for this person, then what comes: an
	// app that was offline catches up.
	cons, err := js.OrderedConsumer(ctx, schemas.StreamNotify, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.NotifySubject(who.Key()) + ".>"}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("read %s's notifications: %w", who.Subject, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		e, err := bus.Decode(msg.Headers(), msg.Data())
		if err != nil {
			return
		}
		var n schemas.ApprovalNotification
		if bus.DecodeData(e, &n) == nil {
			box.apply(e.Type(), n)
		}
	})
	if err != nil {
		return err
	}
	defer cc.Stop()

	// Each key carries the display it was read under; a key read
	// before the request on screen was printed (a double press or key
	// repeat while the previous decision was in flight) is dropped, never
	// applied to a request the person has not seen.
	disp := &display{}
	keys := make(chan key, 16)
	go readKeys(ctx, in, keys, disp)
	fmt.Fprintf(out, "Approvals for %s (%s). Keys: a approve, d deny, s skip, q quit.\n", termSafe(who.Subject), termSafe(who.Issuer))
	shown := ""
	skipped := map[string]bool{}
	for {
		n, count, ok := box.next(skipped)
		if ok && n.AuthReqID != shown {
			shown = n.AuthReqID
			disp.show(func() { printRequest(out, n, count) })
		} else if !ok && shown != "none" {
			shown = "none"
			disp.show(func() { fmt.Fprintln(out, "No pending requests; waiting for new ones…") })
		}
		select {
		case <-ctx.Done():
			return nil
		case <-box.changed:
			continue
		case <-time.After(time.Second): // expiry of what is shown
			continue
		case k, open := <-keys:
			if !open || k.b == 'q' {
				return nil
			}
			if !ok || k.gen != disp.current() {
				continue
			}
			switch k.b {
			case 'a', 'd':
				r, err := c.Decide(ctx, token, n.AuthReqID, k.b == 'a', "")
				if err != nil {
					fmt.Fprintf(out, "  not sent: %v\n", err)
					box.apply(schemas.TypeApprovalResolved, n)
				} else {
					fmt.Fprintf(out, "  %s\n", r.Status)
					box.apply(schemas.TypeApprovalResolved, n)
				}
			case 's':
				skipped[n.AuthReqID] = true
				shown = ""
			}
		}
	}
}

// key is a keystroke and the display (generation) it was read under.
type key struct {
	b   byte
	gen uint64
}

// display numbers what the app has put on screen. Safe for concurrent
// use: the main loop shows, readKeys stamps.
type display struct {
	mu  sync.Mutex
	gen uint64
}

// show runs print and starts a new generation; a stamp taken while
// print runs waits for it, so a key is never bound to a display older
// than what the person may be looking at.
func (d *display) show(print func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	print()
	d.gen++
}

func (d *display) current() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen
}

// stampReader records the display generation when each chunk of input
// arrives, so that lines buffered by a bufio.Scanner keep the
// generation under which they were typed.
type stampReader struct {
	r    io.Reader
	d    *display
	last uint64
}

func (s *stampReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.last = s.d.current()
	return n, err
}

// readKeys sends keystrokes, each stamped with the display it was read
// under: single keys on a terminal (raw mode), the first letter of each
// line otherwise (scripts, tests).
func readKeys(ctx context.Context, in io.Reader, keys chan<- key, d *display) {
	defer close(keys)
	if fd, ok := in.(*os.File); ok && term.IsTerminal(int(fd.Fd())) {
		if old, err := term.MakeRaw(int(fd.Fd())); err == nil {
			defer term.Restore(int(fd.Fd()), old)
			b := make([]byte, 1)
			for {
				if _, err := fd.Read(b); err != nil || b[0] == 3 { // Ctrl-C
					return
				}
				select {
				case keys <- key{b: b[0] | 0x20, gen: d.current()}:
				case <-ctx.Done():
					return
				}
			}
		}
	}
	sr := &stampReader{r: in, d: d}
	sc := bufio.NewScanner(sr)
	for sc.Scan() {
		line := strings.TrimSpace(strings.ToLower(sc.Text()))
		if line == "" {
			continue
		}
		select {
		case keys <- key{b: line[0], gen: sr.last}:
		case <-ctx.Done():
			return
		}
	}
}

// printRequest shows n. Everything in it came from an agent, so every
// field goes through termSafe: no terminal control sequence or bidi
// override reaches the screen.
func printRequest(w io.Writer, n schemas.ApprovalNotification, count int) {
	fmt.Fprintf(w, "\n%d pending. %s asks:\n  %s\n  audience %s", count, termSafe(n.Agent), termSafe(fmt.Sprintf("%q", n.BindingMessage)), termSafe(n.Audience))
	if len(n.Scopes) > 0 {
		fmt.Fprintf(w, ", scopes %s", termSafe(strings.Join(n.Scopes, " ")))
	}
	fmt.Fprintf(w, "\n  expires %s (in %s)\n", n.ExpiresAt.Local().Format(time.TimeOnly), time.Until(n.ExpiresAt).Round(time.Second))
	for _, d := range n.AuthorizationDetails {
		fmt.Fprintf(w, "  details: %s\n", termSafe(string(d)))
	}
	fmt.Fprintf(w, "  [a]pprove  [d]eny  [s]kip  [q]uit > ")
}

// termSafe writes every rune of s that is not graphic (controls, C1
// controls such as U+009B CSI, separators) or is approval.Invisible (bidi
// overrides such as U+202E, zero-width characters) as [U+XXXX], like the
// web inbox does.
func termSafe(s string) string { return approval.Reveal(s, termUnsafe) }

func termUnsafe(r rune) bool { return !unicode.IsGraphic(r) || approval.Invisible(r) }

// operator commands: the store, read over the operator's connection.
func approvalStore(ctx context.Context, nf *natsFlags) (*bus.ApprovalStore, func(), error) {
	return openStore(ctx, nf, "agentauth-approvals-cli", func(ctx context.Context, js jetstream.JetStream) (*bus.ApprovalStore, error) {
		return bus.NewApprovalStore(ctx, js, 0)
	})
}

func newApprovalsListCmd() *cobra.Command {
	var nf natsFlags
	var user, agent, state string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List approval requests by user (subject), agent or state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := context.Background()
			s, done, err := approvalStore(ctx, &nf)
			if err != nil {
				return err
			}
			defer done()
			all, err := s.List(ctx)
			if err != nil {
				return err
			}
			var rs []approval.Request
			for _, r := range all {
				if (user == "" || r.User.Subject == user) && (agent == "" || r.Agent == agent) && (state == "" || r.State == state) {
					rs = append(rs, r)
				}
			}
			sort.Slice(rs, func(i, j int) bool { return rs[i].Created.Before(rs[j].Created) })
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, r := range rs {
					if err := enc.Encode(redacted(r)); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "AUTH_REQ_ID\tCREATED\tSTATE\tAGENT\tUSER\tAUDIENCE\tBINDING MESSAGE")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Created.UTC().Format(time.RFC3339), r.State, r.Agent, r.User.Subject, r.Audience, r.BindingMessage)
			}
			return tw.Flush()
		},
	}
	nf.add(cmd.Flags())
	cmd.Flags().StringVar(&user, "user", "", "only requests naming this subject")
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's requests")
	cmd.Flags().StringVar(&state, "state", "", "only this state: pending, approved, denied, expired")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON lines")
	return cmd
}

func newApprovalsShowCmd() *cobra.Command {
	var nf natsFlags
	cmd := &cobra.Command{
		Use:   "show AUTH_REQ_ID",
		Short: "Show one approval request (the sealed token only as its fingerprint)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			s, done, err := approvalStore(ctx, &nf)
			if err != nil {
				return err
			}
			defer done()
			r, _, err := s.Get(ctx, args[0])
			if errors.Is(err, approval.ErrNotFound) {
				return fmt.Errorf("no approval request %s", args[0])
			} else if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(redacted(r))
		},
	}
	nf.add(cmd.Flags())
	return cmd
}

// redacted drops the sealed token (only the agent can open it, but an
// operator listing has no use for it) and keeps its fingerprint.
func redacted(r approval.Request) approval.Request {
	if r.Token != nil {
		t := *r.Token
		t.SealedToken = schemas.Sealed{}
		r.Token = &t
	}
	return r
}
