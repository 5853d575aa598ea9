// Command rag-agent asks agentauth's retrieval for the documents a
// person may see, as an agent acting for them: the same question for two
// people gets different, complete answers.
//
//	go run ./cmd/agentauth agent add researcher --collection default
//	go run ./examples/rag-agent --creds researcher.agent.json --user alice "what is on the roadmap"
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/devidp"
)

func main() {
	creds := flag.String("creds", "researcher.agent.json", "the agent's credentials file (agentauth agent add)")
	user := flag.String("user", "alice", "development user to act for (alice or bob)")
	edge := flag.String("url", "http://127.0.0.1:8080", "agentauth's HTTP edge")
	k := flag.Int("k", 10, "how many documents")
	flag.Parse()
	query := strings.Join(flag.Args(), " ")
	if query == "" {
		query = "what is on the roadmap"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, *creds, *user, *edge, query, *k); err != nil {
		fmt.Fprintln(os.Stderr, "rag-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, creds, user, edge, query string, k int) error {
	c, err := client.Connect(ctx, client.Options{CredsFile: creds})
	if err != nil {
		return err
	}
	defer c.Close()
	tok, err := devidp.UserToken(ctx, &http.Client{Timeout: 10 * time.Second}, edge, user, "")
	if err != nil {
		return fmt.Errorf("user token: %w", err)
	}
	res, err := c.Query(ctx, tok, query, k)
	if err != nil {
		return err
	}
	fmt.Printf("%q for %s: %d documents (complete: %v)\n", query, user, len(res.Documents), res.Complete)
	for i, d := range res.Documents {
		fmt.Printf("%2d. %.3f  %-14s %-22s %s\n", i+1, d.Score, d.ID, d.Object, d.Text)
	}
	return nil
}
