package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// researcher registers an agent whose policy may query the default
// collection, and connects as it.
func researcher(t *testing.T, m *Main) *client.Client {
	t.Helper()
	return principal(t, m, "researcher", agents.Policy{Collections: []string{"default"}})
}

// principal registers an agent with policy p and connects as it.
func principal(t *testing.T, m *Main, name string, p agents.Policy) *client.Client {
	t.Helper()
	creds := MustRegister(t, m, name, p)
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
// condition is answered over the wire with the query's context (a key
// the operator lets agents set), and without the context it fails
// closed.
func TestRetrievalConditionContext(t *testing.T) {
	cfg := testConfig(t)
	cfg.FGAAgentContextKeys = "now"
	m := MustMain(t, cfg)
	dir := m.Config.DataDir
	write := tempFiles(t)
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

// blockedModel grants can_view to viewers who are not blocked: the
// relations viewer and blocked are not permissions to view.
const blockedModel = `model
  schema 1.1

type user

type doc
  relations
    define viewer: [user]
    define blocked: [user]
    define can_view: viewer but not blocked
`

// mustBlockedFixture writes blockedModel with alice a viewer of open and
// of hidden, and blocked on hidden, and ingests both documents.
func mustBlockedFixture(t *testing.T, m *Main) {
	t.Helper()
	dir := m.Config.DataDir
	write := tempFiles(t)
	runCLI(t, "fga", "model", "write", write("model.fga", blockedModel), "--data-dir", dir)
	runCLI(t, "fga", "tuples", "write", write("tuples.yaml", `- {user: "user:dev-alice", relation: viewer, object: "doc:open"}
- {user: "user:dev-alice", relation: viewer, object: "doc:hidden"}
- {user: "user:dev-alice", relation: blocked, object: "doc:hidden"}
`), "--data-dir", dir)
	if out := runCLI(t, "docs", "ingest", write("docs.jsonl", `{"id": "open", "object": "doc:open", "text": "the open plan"}
{"id": "hidden", "object": "doc:hidden", "text": "the hidden plan"}
`), "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "2 documents ingested") {
		t.Fatalf("docs ingest: %s", out)
	}
}

// TestRetrievalRelationAllowList: an agent may ask only about the
// relations the operator allows (can_view by default). Asking about
// viewer, which a blocked person still holds, is denied and returns
// nothing; so is any relation outside --fga-relations.
func TestRetrievalRelationAllowList(t *testing.T) {
	ids := func(res *schemas.RetrievalResult) []string {
		var got []string
		for _, d := range res.Documents {
			got = append(got, d.ID)
		}
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		name      string
		relations string // --fga-relations; "": the default
		allowed   map[string][]string
		denied    []string
	}{
		{"default", "", map[string][]string{"": {"open"}, "can_view": {"open"}}, []string{"viewer", "blocked", "can_edit"}},
		{"configured", "can_view, viewer", map[string][]string{"": {"open"}, "viewer": {"hidden", "open"}}, []string{"blocked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tc.relations != "" {
				cfg.FGARelations = tc.relations
			}
			m := MustMain(t, cfg)
			mustBlockedFixture(t, m)
			agent := researcher(t, m)
			alice := devToken(t, m, "alice")
			for rel, want := range tc.allowed {
				for _, strategy := range []string{"post-filter", "pre-filter"} {
					res, err := agent.QueryWith(t.Context(), schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Relation: rel, Strategy: strategy})
					if err != nil {
						t.Fatalf("relation %q (%s): %v", rel, strategy, err)
					}
					if got := ids(res); !slices.Equal(got, want) {
						t.Errorf("relation %q (%s): got %v, want %v", rel, strategy, got, want)
					}
				}
			}
			for _, rel := range tc.denied {
				res, err := agent.QueryWith(t.Context(), schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Relation: rel})
				if !isCode(err, schemas.CodeDenied) || res != nil {
					t.Fatalf("relation %q: got %+v, %v; want no documents and %s", rel, res, err, schemas.CodeDenied)
				}
				if !strings.Contains(err.Error(), "can_view") {
					t.Errorf("relation %q: the denial %q does not name the allowed relations", rel, err)
				}
			}
		})
	}
}

// TestRetrievalAgentContext: current_time is agentauth's clock, not the
// agent's — a back-dated current_time does not revive an expired grant,
// and a valid grant needs no context — and condition-context keys the
// operator did not list (--fga-agent-context-keys) are denied.
func TestRetrievalAgentContext(t *testing.T) {
	m := MustMain(t, testConfig(t))
	dir := m.Config.DataDir
	write := tempFiles(t)
	runCLI(t, "fga", "model", "write", write("model.fga", `model
  schema 1.1

type user

type doc
  relations
    define viewer: [user with non_expired_grant]
    define can_view: viewer

condition non_expired_grant(current_time: timestamp, grant_time: timestamp, grant_duration: duration) {
  current_time < grant_time + grant_duration
}
`), "--data-dir", dir)
	recent := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	runCLI(t, "fga", "tuples", "write", write("tuples.yaml", `- user: user:dev-alice
  relation: viewer
  object: doc:expired
  condition: {name: non_expired_grant, context: {grant_time: "2020-01-01T00:00:00Z", grant_duration: 1h}}
- user: user:dev-alice
  relation: viewer
  object: doc:valid
  condition: {name: non_expired_grant, context: {grant_time: "`+recent+`", grant_duration: 1h}}
`), "--data-dir", dir)
	if out := runCLI(t, "docs", "ingest", write("docs.jsonl", `{"id": "expired", "object": "doc:expired", "text": "the expired plan"}
{"id": "valid", "object": "doc:valid", "text": "the valid plan"}
`), "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "2 documents ingested") {
		t.Fatalf("docs ingest: %s", out)
	}
	agent := researcher(t, m)
	alice := devToken(t, m, "alice")
	for _, tc := range []struct {
		name string
		cctx map[string]any
	}{
		{"no context", nil},
		{"back-dated current_time", map[string]any{"current_time": "2020-01-01T00:10:00Z"}},
	} {
		for _, strategy := range []string{"post-filter", "pre-filter"} {
			res, err := agent.QueryWith(t.Context(), schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Strategy: strategy,
				Consistency: "HIGHER_CONSISTENCY", Context: tc.cctx})
			if err != nil {
				t.Errorf("%s (%s): %v", tc.name, strategy, err)
				continue
			}
			var got []string
			for _, d := range res.Documents {
				got = append(got, d.ID)
			}
			if !slices.Equal(got, []string{"valid"}) {
				t.Errorf("%s (%s): got %v, want [valid]", tc.name, strategy, got)
			}
		}
	}
	res, err := agent.QueryWith(t.Context(), schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10,
		Context: map[string]any{"grant_time": "2099-01-01T00:00:00Z", "region": "eu"}})
	if !isCode(err, schemas.CodeDenied) || res != nil {
		t.Fatalf("unlisted context keys: got %+v, %v; want %s", res, err, schemas.CodeDenied)
	}
	if msg := err.Error(); !strings.Contains(msg, `"grant_time", "region"`) {
		t.Errorf("the denial %q does not name the refused keys", msg)
	}
}

// retrievalAudit replays the retrieval audit records.
func retrievalAudit(t *testing.T, m *Main) []schemas.AuditRetrieval {
	return auditData[schemas.AuditRetrieval](t, m, "agentauth.audit.retrieval.>")
}

// TestRetrievalReplyHidesWork: the reply says nothing that varies with
// the documents the person may not see. A person permitted on none of
// 100 documents gets the same reply, byte for byte, as with no documents
// at all, whatever the strategy; the work done (candidates, checks,
// OpenFGA calls, strategy) is in the audit record only.
func TestRetrievalReplyHidesWork(t *testing.T) {
	cfg := testConfig(t)
	// 100 checks under the race detector on a loaded machine can outlast
	// the default 3 s: this test is about the reply, not the time limit.
	cfg.OpenFGATimeout = 30 * time.Second
	m := MustMain(t, cfg)
	dir := m.Config.DataDir
	runCLI(t, "fga", "model", "write", "../../examples/rag/model.fga", "--data-dir", dir)
	agent := researcher(t, m)
	alice := devToken(t, m, "alice")
	strategies := []string{"auto", "post-filter", "pre-filter"}
	ask := func() map[string]string {
		out := map[string]string{}
		for _, strategy := range strategies {
			var raw json.RawMessage
			if err := agent.Do(t.Context(), schemas.OpRetrievalQuery, schemas.RetrievalQuery{UserToken: alice, Query: "plan", K: 10, Strategy: strategy}, &raw); err != nil {
				t.Fatalf("%s: %v", strategy, err)
			}
			out[strategy] = string(raw)
		}
		return out
	}
	empty := ask()

	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, `{"id": "d%d", "object": "doc:d%d", "text": "the plan number %d"}`+"\n", i, i, i)
	}
	file := t.TempDir() + "/docs.jsonl"
	if err := os.WriteFile(file, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runCLI(t, "docs", "ingest", file, "--data-dir", dir, "--nats-url", m.NATSURL(), "--no-progress"); !strings.Contains(out, "100 documents ingested") {
		t.Fatalf("docs ingest: %s", out)
	}
	hidden := ask()
	for _, strategy := range strategies {
		var keys map[string]json.RawMessage
		if err := json.Unmarshal([]byte(hidden[strategy]), &keys); err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, []string{"complete", "documents"}) {
			t.Errorf("%s: the reply has the fields %v, want only complete and documents: %s", strategy, got, hidden[strategy])
		}
		if hidden[strategy] != empty[strategy] {
			t.Errorf("%s: with 100 hidden documents the reply is %s, with none %s", strategy, hidden[strategy], empty[strategy])
		}
	}
	// The audit record keeps the work done: the post-filter checked all
	// 100 candidates.
	recs := retrievalAudit(t, m)
	if !slices.ContainsFunc(recs, func(a schemas.AuditRetrieval) bool {
		return a.Event == "query" && a.Strategy == "post-filter" && a.Candidates == 100 && a.Checks == 100 && a.FGACalls > 0 && a.Returned == 0
	}) {
		t.Errorf("no query audit record has the work done over the 100 hidden documents: %+v", recs)
	}
}

// TestRetrievalDeleteNoOracle: retrieval.delete tells a principal nothing
// about documents it may not write. An id in another collection gets the
// same reply as an unknown id (and the document stays); a principal with
// no ingest collections is refused before any id is looked up, with the
// same refusal for both.
func TestRetrievalDeleteNoOracle(t *testing.T) {
	m := MustMain(t, testConfig(t))
	ctx := t.Context()
	writerA := principal(t, m, "writer-a", agents.Policy{IngestCollections: []string{"a"}})
	writerB := principal(t, m, "writer-b", agents.Policy{IngestCollections: []string{"b"}})
	reader := researcher(t, m)
	if _, err := writerB.Ingest(ctx, schemas.IngestDoc{ID: "secret", Collection: "b", Object: "doc:secret", Text: "the secret plan"}); err != nil {
		t.Fatal(err)
	}
	reply := func(c *client.Client, id string) string {
		var raw json.RawMessage
		err := c.Do(ctx, schemas.OpRetrievalDelete, schemas.RetrievalDelete{IDs: []string{id}}, &raw)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(raw)
	}
	for _, tc := range []struct {
		name string
		c    *client.Client
		want string // the reply's start
	}{
		{"another collection's writer", writerA, `{"deleted":0}`},
		{"not an ingest principal", reader, "error: agentauth: denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			existing, unknown := reply(tc.c, "secret"), reply(tc.c, "no-such-document")
			if existing != unknown {
				t.Errorf("an existing id in collection b: %s; an unknown id: %s; want the same reply", existing, unknown)
			}
			if !strings.HasPrefix(existing, tc.want) {
				t.Errorf("reply %s, want %s…", existing, tc.want)
			}
			if strings.Contains(existing, `"b"`) {
				t.Errorf("the reply %s names the document's collection", existing)
			}
			if d, err := m.retrieval.Docs.Get("secret"); err != nil || d.Collection != "b" {
				t.Fatalf("the document after the refused delete: %+v, %v", d, err)
			}
		})
	}
	if n, err := writerB.DeleteDocuments(ctx, "secret"); err != nil || n != 1 {
		t.Fatalf("its collection's writer deletes it: %d, %v; want 1", n, err)
	}
}

// TestRetrievalIngestKeepsOthersDocuments: ingesting a document whose id
// belongs to a document in a collection the principal may not write is
// denied, and changes nothing: the document is neither overwritten nor
// moved, and the rest of the batch is not written either.
func TestRetrievalIngestKeepsOthersDocuments(t *testing.T) {
	m := MustMain(t, testConfig(t))
	ctx := t.Context()
	writerA := principal(t, m, "writer-a", agents.Policy{IngestCollections: []string{"a"}})
	writerB := principal(t, m, "writer-b", agents.Policy{IngestCollections: []string{"b"}})
	orig := schemas.IngestDoc{ID: "shared", Collection: "b", Object: "doc:shared", Text: "b's own plan"}
	if _, err := writerB.Ingest(ctx, orig); err != nil {
		t.Fatal(err)
	}
	before, err := m.retrieval.Docs.Get("shared")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		docs []schemas.IngestDoc
	}{
		{"moved to the writer's collection", []schemas.IngestDoc{{ID: "shared", Collection: "a", Object: "doc:taken", Text: "a's plan"}}},
		{"in a batch with a document of its own", []schemas.IngestDoc{{ID: "mine", Collection: "a", Object: "doc:mine", Text: "a's plan"}, {ID: "shared", Collection: "a", Object: "doc:taken", Text: "a's plan"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := writerA.Ingest(ctx, tc.docs...)
			if !isCode(err, schemas.CodeDenied) {
				t.Fatalf("ingest: %d, %v; want %s", n, err, schemas.CodeDenied)
			}
			if strings.Contains(err.Error(), `"b"`) {
				t.Errorf("the denial %q names the document's collection", err)
			}
			after, err := m.retrieval.Docs.Get("shared")
			if err != nil || after.Collection != before.Collection || after.Object != before.Object || after.Text != before.Text || !after.Updated.Equal(before.Updated) {
				t.Errorf("the document after the refused ingest: %+v, %v; want it unchanged: %+v", after, err, before)
			}
			if _, err := m.retrieval.Docs.Get("mine"); !errors.Is(err, retrieval.ErrNotFound) {
				t.Errorf("the rest of the refused batch was written: %v", err)
			}
		})
	}
	// Its own collection's writer may still change it.
	orig.Text = "b's new plan"
	if _, err := writerB.Ingest(ctx, orig); err != nil {
		t.Fatal(err)
	}
	if d, err := m.retrieval.Docs.Get("shared"); err != nil || d.Text != orig.Text {
		t.Fatalf("after its writer's update: %+v, %v", d, err)
	}
}

// TestConfigRetrievalOptions: the relations agents may ask about, the
// context keys they may set and the OpenFGA client's time limits come
// from the options, with their defaults, and bad values are refused.
func TestConfigRetrievalOptions(t *testing.T) {
	load := func(t *testing.T, args ...string) (Config, error) {
		t.Helper()
		cmd := &cobra.Command{Use: "serve"}
		cf := addConfigFlags(cmd.Flags())
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		c, _, err := cf.load(mapEnv(nil))
		return c, err
	}
	c, err := load(t)
	if err != nil {
		t.Fatal(err)
	}
	rels, _ := c.fgaRelations()
	keys, _ := c.fgaAgentContextKeys()
	if !slices.Equal(rels, []string{retrieval.DefaultRelation}) || len(keys) != 0 {
		t.Errorf("defaults: relations %v, agent context keys %v; want [can_view], none", rels, keys)
	}
	// The embedded OpenFGA: its own limits; ListObjects waits past its deadline.
	if fc := c.fgaConfig(); fc.Timeout != 3*time.Second || fc.ListObjectsDeadline != openFGAListObjectsDeadline ||
		fc.ListObjectsTimeout != openFGAListObjectsDeadline+2*time.Second || fc.ListObjectsMax != openFGAListObjectsMax {
		t.Errorf("embedded OpenFGA client: %+v", fc)
	}

	c, err = load(t, "--fga-relations", "can_view, viewer", "--fga-agent-context-keys", "region,ip", "--openfga-url", "http://fga:8080",
		"--openfga-timeout", "1s", "--openfga-list-objects-deadline", "10s")
	if err != nil {
		t.Fatal(err)
	}
	rels, _ = c.fgaRelations()
	keys, _ = c.fgaAgentContextKeys()
	if !slices.Equal(rels, []string{"can_view", "viewer"}) || !slices.Equal(keys, []string{"region", "ip"}) {
		t.Errorf("relations %v, agent context keys %v", rels, keys)
	}
	if fc := c.fgaConfig(); fc.Timeout != time.Second || fc.ListObjectsDeadline != 10*time.Second ||
		fc.ListObjectsTimeout != 12*time.Second || fc.ListObjectsMax != 0 {
		t.Errorf("external OpenFGA client: %+v", fc)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no relation", []string{"--fga-relations", " , "}, "fga-relations"},
		{"not a relation name", []string{"--fga-relations", "can view"}, "fga-relations"},
		{"current_time for agents", []string{"--fga-agent-context-keys", "region,current_time"}, "current_time"},
		{"zero timeout", []string{"--openfga-timeout", "0s"}, "openfga-timeout"},
		{"zero deadline", []string{"--openfga-list-objects-deadline", "0s"}, "openfga-list-objects-deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := load(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// tempFiles returns a function that writes a file of the test's own
// temporary dir and returns its path.
func tempFiles(t *testing.T) func(name, body string) string {
	dir := t.TempDir()
	return func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
