package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
)

// researcher registers an agent whose policy may query the default
// collection, and connects as it.
func researcher(t *testing.T, m *Main) *client.Client {
	t.Helper()
	creds := MustRegister(t, m, "researcher", agents.Policy{Collections: []string{"default"}})
	agent, err := client.Connect(context.Background(), client.Options{Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	return agent
}

// TestRetrievalEndToEnd is the "done when", as the README does
// it: load a model and tuples, ingest documents, and two people asking
// the same question through an agent get different, complete answers —
// exactly the documents OpenFGA says each may view.
func TestRetrievalEndToEnd(t *testing.T) {
	m := MustMain(t, testConfig(t))
	dir := m.Config.DataDir
	runCLI(t, "fga", "model", "write", "../../examples/rag/model.fga", "--data-dir", dir)
	runCLI(t, "fga", "tuples", "write", "../../examples/rag/tuples.yaml", "--data-dir", dir)
	if out := runCLI(t, "docs", "ingest", "../../examples/rag/docs.jsonl", "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "7 documents ingested") {
		t.Fatalf("docs ingest: %s", out)
	}
	agent := researcher(t, m)
	ctx := context.Background()
	want := map[string][]string{
		"alice": {"architecture", "handbook", "incident", "roadmap-1", "roadmap-2"},
		"bob":   {"handbook", "pipeline", "pricing", "roadmap-1", "roadmap-2"},
	}
	for user, ids := range want {
		tok := devToken(t, m, user)
		// What OpenFGA itself says the person may view.
		listed := runCLI(t, "fga", "list-objects", "user:dev-"+user, "can_view", "doc", "--data-dir", dir)
		for _, strategy := range []string{"auto", "post-filter", "pre-filter"} {
			res, err := agent.QueryWith(ctx, schemas.RetrievalQuery{UserToken: tok, Query: "what is on the roadmap", K: 10, Strategy: strategy})
			if err != nil {
				t.Fatalf("%s %s: %v", user, strategy, err)
			}
			var got []string
			for _, d := range res.Documents {
				got = append(got, d.ID)
				if !strings.Contains(listed, d.Object) {
					t.Errorf("%s got %s, which OpenFGA does not list for them:\n%s", user, d.Object, listed)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, ids) || !res.Complete {
				t.Errorf("%s (%s): got %v complete=%v, want %v complete", user, strategy, got, res.Complete, ids)
			}
		}
	}
	// Deleted documents are gone from the next answer.
	if out := runCLI(t, "docs", "delete", "handbook", "--data-dir", dir, "--nats-url", m.NATSURL()); !strings.Contains(out, "1 documents deleted") {
		t.Fatalf("docs delete: %s", out)
	}
	res, err := agent.Query(ctx, devToken(t, m, "alice"), "what is on the roadmap", 10)
	if err != nil || len(res.Documents) != 4 || !res.Complete {
		t.Fatalf("after deleting the handbook: %+v %v", res, err)
	}
	// The Retriever adapter, with a k smaller than what is permitted.
	r := &client.Retriever{Client: agent, UserToken: devToken(t, m, "bob"), K: 2}
	docs, err := r.GetRelevantDocuments(ctx, "pricing for 2021")
	if err != nil || len(docs) != 2 || docs[0].Metadata["id"] != "pricing" {
		t.Fatalf("retriever: %+v %v", docs, err)
	}
}

// TestRetrievalBadInput: refusals over the wire, and nothing is returned
// without a positive check.
func TestRetrievalBadInput(t *testing.T) {
	m := MustMain(t, testConfig(t))
	dir := m.Config.DataDir
	runCLI(t, "fga", "model", "write", "../../examples/rag/model.fga", "--data-dir", dir)
	agent := researcher(t, m)
	ctx := context.Background()
	alice := devToken(t, m, "alice")
	for _, tc := range []struct {
		name string
		q    schemas.RetrievalQuery
		want schemas.ErrorCode
	}{
		{"collection outside the policy", schemas.RetrievalQuery{UserToken: alice, Query: "x", Collection: "finance"}, schemas.CodeDenied},
		{"no query", schemas.RetrievalQuery{UserToken: alice}, schemas.CodeSchemaViolation},
		{"k too large", schemas.RetrievalQuery{UserToken: alice, Query: "x", K: 1000}, schemas.CodeSchemaViolation},
		{"garbage token", schemas.RetrievalQuery{UserToken: "nope", Query: "x"}, schemas.CodeUnauthenticated},
		{"unknown strategy", schemas.RetrievalQuery{UserToken: alice, Query: "x", Strategy: "trust-me"}, schemas.CodeSchemaViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.QueryWith(ctx, tc.q); !isCode(err, tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	// An agent is not an ingest principal.
	if _, err := agent.Ingest(ctx, schemas.IngestDoc{ID: "x", Object: "doc:x", Text: "x"}); !isCode(err, schemas.CodeDenied) {
		t.Fatalf("ingest by an agent: %v", err)
	}
	// A document nobody was granted is never returned.
	if out := runCLI(t, "docs", "ingest", "../../examples/rag/docs.jsonl", "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "7 documents") {
		t.Fatal(out)
	}
	res, err := agent.Query(ctx, alice, "roadmap", 10)
	if err != nil || len(res.Documents) != 0 || !res.Complete {
		t.Fatalf("no tuples written: want an empty, complete answer, got %+v %v", res, err)
	}
}

// TestRetrievalConditionContext: a model whose permission depends on a
// condition is answered over the wire with the query's context, and
// without the context it fails closed.
func TestRetrievalConditionContext(t *testing.T) {
	m := MustMain(t, testConfig(t))
	dir := m.Config.DataDir
	files := t.TempDir()
	write := func(name, body string) string {
		p := files + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	runCLI(t, "fga", "model", "write", write("model.fga", `model
  schema 1.1

type user

type doc
  relations
    define viewer: [user, user with before]
    define can_view: viewer

condition before(now: int, until: int) {
  now < until
}
`), "--data-dir", dir)
	runCLI(t, "fga", "tuples", "write", write("tuples.yaml", `- user: user:dev-alice
  relation: viewer
  object: doc:open
- user: user:dev-alice
  relation: viewer
  object: doc:timed
  condition:
    name: before
    context:
      until: 100
`), "--data-dir", dir)
	if out := runCLI(t, "docs", "ingest", write("docs.jsonl", `{"id": "open", "object": "doc:open", "text": "the open plan"}
{"id": "timed", "object": "doc:timed", "text": "the timed plan"}
{"id": "other", "object": "doc:other", "text": "the other plan"}
`), "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "3 documents ingested") {
		t.Fatalf("docs ingest: %s", out)
	}
	agent := researcher(t, m)
	ctx := context.Background()
	alice := devToken(t, m, "alice")
	for _, tc := range []struct {
		now  int
		want []string
	}{{50, []string{"open", "timed"}}, {150, []string{"open"}}} {
		for _, strategy := range []string{"post-filter", "pre-filter"} {
			res, err := agent.QueryWith(ctx, schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Strategy: strategy,
				Consistency: "HIGHER_CONSISTENCY", Context: map[string]any{"now": tc.now}})
			if err != nil {
				t.Fatalf("now=%d %s: %v", tc.now, strategy, err)
			}
			var got []string
			for _, d := range res.Documents {
				got = append(got, d.ID)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) || !res.Complete {
				t.Errorf("now=%d %s: %v complete=%v, want %v complete", tc.now, strategy, got, res.Complete, tc.want)
			}
		}
	}
	// Without the context OpenFGA cannot decide the timed document: the
	// query fails closed rather than leave it out silently.
	if res, err := agent.QueryWith(ctx, schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Strategy: "post-filter"}); err == nil {
		t.Fatalf("no context: %+v, want an error", res)
	}
	// A context that is not an object is refused by the schema.
	var out schemas.RetrievalResult
	err := agent.Do(ctx, schemas.OpRetrievalQuery, json.RawMessage(`{"user_token":"`+alice+`","query":"plan","context":"now=50"}`), &out)
	if !isCode(err, schemas.CodeSchemaViolation) {
		t.Fatalf("context as a string: %v, want %s", err, schemas.CodeSchemaViolation)
	}
}
