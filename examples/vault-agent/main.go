// Command vault-agent is what the seed's with_token_vault does, as an
// agentauth agent: it asks the Token Vault for the user's token of a
// connection; when the person has not connected it prints the connect
// link and waits on its event feed until they have; then it prints the
// token's fingerprint and expiry, and asks again every --every to show
// the token being refreshed as it nears expiry.
//
//	go run ./cmd/agentauth agent add mail-bot --connection demo
//	go run ./examples/vault-agent --creds mail-bot.agent.json --user alice
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
)

func main() {
	creds := flag.String("creds", "mail-bot.agent.json", "the agent's credentials file (agentauth agent add)")
	connection := flag.String("connection", "demo", "the connection to get a token for")
	user := flag.String("user", "alice", "development user to act for (alice or bob)")
	edge := flag.String("url", "http://127.0.0.1:8080", "agentauth's HTTP edge (for the development user's token)")
	every := flag.Duration("every", 30*time.Second, "ask again this often (0: once)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *creds, *connection, *user, *edge, *every); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "vault-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, creds, connection, user, edge string, every time.Duration) error {
	c, err := client.Connect(ctx, client.Options{CredsFile: creds})
	if err != nil {
		return err
	}
	defer c.Close()
	// The person's own token: in a real agent it comes from the user's
	// login; here, the development provider's headless login.
	ut, err := devidp.UserToken(ctx, &http.Client{Timeout: 10 * time.Second}, edge, user, "")
	if err != nil {
		return fmt.Errorf("user token: %w", err)
	}
	for {
		tok, err := c.Token(ctx, ut, connection)
		var ar *client.AuthorizationRequired
		switch {
		case errors.As(err, &ar):
			fmt.Printf("%s must connect %s (%s). Open this link in a browser logged in to agentauth as %s:\n\n  %s\n\nwaiting for the connection…\n",
				user, ar.Connection, ar.Reason, user, ar.URL)
			ev, err := c.WaitForConnection(ctx, ar)
			if err != nil {
				return err
			}
			fmt.Printf("connected: %s for %s, scopes %v\n", ev.Connection, ev.Subject, ev.Scopes)
			continue
		case err != nil:
			return err
		}
		fmt.Printf("%s  token %s  expires %s  scopes %v\n", time.Now().Format(time.TimeOnly), tok.Fingerprint, tok.Expiry.Local().Format(time.TimeOnly), tok.Scopes)
		if every <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}
