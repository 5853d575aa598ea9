// Command approval-agent is what the seed's with_async_authorization
// does, as an agentauth agent: it asks the person to approve a purchase
// (binding message and RFC 9396 authorization details), waits on its
// event feed for the decision (no polling), and on approval verifies the
// token it receives against agentauth's published keys with a standard
// JWT library and prints what it authorizes.
//
//	go run ./cmd/agentauth agent add shopper --approval-audience https://shop.example --approval-scope purchase
//	go run ./examples/approval-agent --creds shopper.agent.json --user alice
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
)

func main() {
	creds := flag.String("creds", "shopper.agent.json", "the agent's credentials file (agentauth agent add)")
	user := flag.String("user", "alice", "development user to act for (alice or bob)")
	edge := flag.String("url", "http://127.0.0.1:8080", "agentauth's HTTP edge")
	audience := flag.String("audience", "https://shop.example", "the API the approved token is for")
	message := flag.String("message", "Buy 2 coffees for 7.50 EUR", "the binding message the person sees")
	expiry := flag.Int("expiry", 300, "seconds the person has to decide")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *creds, *user, *edge, *audience, *message, *expiry); err != nil {
		fmt.Fprintln(os.Stderr, "approval-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, creds, user, edge, audience, message string, expiry int) error {
	c, err := client.Connect(ctx, client.Options{CredsFile: creds})
	if err != nil {
		return err
	}
	defer c.Close()
	hc := &http.Client{Timeout: 10 * time.Second}
	ut, err := devidp.UserToken(ctx, hc, edge, user, "")
	if err != nil {
		return fmt.Errorf("user token: %w", err)
	}
	details := []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"coffee","quantity":2,"amount":7.5,"currency":"EUR","merchant":"Corner Café"}`)}
	a, err := c.RequestApproval(ctx, client.ApprovalRequest{
		UserToken: ut, BindingMessage: message, Audience: audience, Scopes: []string{"purchase"},
		AuthorizationDetails: details, RequestedExpiry: expiry,
	})
	if err != nil {
		return err
	}
	fmt.Printf("asked %s to approve %q (auth_req_id %s, expires in %s).\nApprove or deny it at %s/approvals (logged in as %s), or with: go run ./cmd/agentauth approvals --user %s\nwaiting for the decision…\n",
		user, message, a.AuthReqID, time.Until(a.Expires).Round(time.Second), edge, user, user)
	tok, err := c.WaitForApproval(ctx, a.AuthReqID)
	switch {
	case errors.Is(err, client.ErrApprovalDenied):
		fmt.Println("denied:", err)
		return nil
	case errors.Is(err, client.ErrApprovalExpired):
		fmt.Println("expired: nobody decided in time")
		return nil
	case err != nil:
		return err
	}
	// Verify as the shop's API would: the published JWKS, ES256 only.
	resp, err := hc.Get(edge + "/.well-known/jwks.json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var jwks jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		return err
	}
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	var claims struct {
		jwt.Claims
		Scope   string            `json:"scope"`
		Details []json.RawMessage `json:"authorization_details"`
		Act     struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := parsed.Claims(jwks, &claims); err != nil {
		return fmt.Errorf("the token does not verify against %s/.well-known/jwks.json: %w", edge, err)
	}
	fmt.Printf("approved. The token (verified against the published keys) says:\n  sub %s, act %s, aud %v, scope %q, expires %s\n",
		claims.Subject, claims.Act.Sub, claims.Audience, claims.Scope, claims.Expiry.Time().Local().Format(time.TimeOnly))
	for _, d := range claims.Details {
		fmt.Printf("  authorization_details: %s\n", d)
	}
	return nil
}
