package handlers

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// Retrieval serves retrieval.query, retrieval.ingest and retrieval.delete.
type Retrieval struct {
	User    *User // verifies user tokens for the principal in the subject
	Service *retrieval.Service
	// UserPrefix makes an OpenFGA user of a verified user's ID
	// (identity.User.ID: the bare subject for the default issuer, a
	// qualified id for any other); default "user:".
	UserPrefix string
	// Relations are the OpenFGA relations an agent may ask about: a query
	// naming another is denied, and a query naming none asks about the
	// first. Empty: retrieval.DefaultRelation only. An agent choosing the
	// relation could ask about one that grants more than the relation
	// meant for viewing (viewer where can_view is "viewer but not
	// blocked").
	Relations []string
	// AgentContextKeys are the condition-context keys an agent may set in
	// a query: a query with any other is denied. Empty: none. current_time
	// is never the agent's: the Service sets it (retrieval.Query.Context),
	// over any the agent sends.
	AgentContextKeys []string
	Audit            func(object, verb string, a schemas.AuditRetrieval)
}

const defaultCollection = "default"

func collectionOf(c string) string {
	if c == "" {
		return defaultCollection
	}
	return c
}

// relation is the relation a query asks about: the agent's, when the
// operator allows it, else a denial naming the allowed ones.
func (h *Retrieval) relation(asked string) (string, error) {
	allowed := h.Relations
	if len(allowed) == 0 {
		allowed = []string{retrieval.DefaultRelation}
	}
	if asked == "" {
		return allowed[0], nil
	}
	if !slices.Contains(allowed, asked) {
		return "", bus.Errorf(schemas.CodeDenied, "relation %q may not be asked about: agents may use %s (the operator's --fga-relations)", asked, strings.Join(allowed, ", "))
	}
	return asked, nil
}

// checkContext denies a condition context with keys the operator did
// not allow agents to set, naming them.
func (h *Retrieval) checkContext(c map[string]any) error {
	var refused []string
	for k := range c {
		if k != retrieval.ContextCurrentTime && !slices.Contains(h.AgentContextKeys, k) {
			refused = append(refused, k)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	slices.Sort(refused)
	allowed := "none"
	if len(h.AgentContextKeys) > 0 {
		allowed = strings.Join(h.AgentContextKeys, ", ")
	}
	return bus.Errorf(schemas.CodeDenied, "condition context key %s may not be set by an agent (allowed: %s, the operator's --fga-agent-context-keys; current_time is always agentauth's clock)",
		strings.Join(quoteAll(refused), ", "), allowed)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// Query answers retrieval.query: the person proven by their token, the
// collection in the agent's policy, the documents filtered by OpenFGA.
func (h *Retrieval) Query() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.RetrievalQuery
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		if in.Query == "" && len(in.Vector) == 0 {
			return nil, bus.Errorf(schemas.CodeSchemaViolation, "give a query text or a vector")
		}
		u, a, err := h.User.verify(ctx, req, in.UserToken)
		if err != nil {
			return nil, err
		}
		coll := collectionOf(in.Collection)
		if !slices.Contains(a.Policy.Collections, coll) {
			return nil, bus.Errorf(schemas.CodeDenied, "agent %s may not query collection %q (its policy names %v)", a.ID, coll, a.Policy.Collections)
		}
		rel, err := h.relation(in.Relation)
		if err != nil {
			return nil, err
		}
		if err := h.checkContext(in.Context); err != nil {
			return nil, err
		}
		prefix := h.UserPrefix
		if prefix == "" {
			prefix = "user:"
		}
		res, err := h.Service.Query(ctx, retrieval.Query{
			User: prefix + u.ID, Text: in.Query, Vector: in.Vector, K: in.K, Relation: rel, Type: in.ObjectType,
			Collection: coll, Consistency: retrieval.Consistency(in.Consistency), Strategy: in.Strategy, Context: in.Context,
		})
		if err != nil {
			return nil, err
		}
		// The work done (candidates, checks, calls, strategy) varies with
		// the documents the person may not see: the audit record has it,
		// the agent does not.
		out := schemas.RetrievalResult{Documents: []schemas.RetrievalDoc{}, Complete: res.Complete}
		for _, d := range res.Docs {
			out.Documents = append(out.Documents, schemas.RetrievalDoc{ID: d.ID, Object: d.Object, Text: d.Text, Metadata: d.Metadata, Score: d.Score})
		}
		h.Audit("query", "ok", schemas.AuditRetrieval{Event: "query", Agent: a.ID, Subject: u.Subject, Issuer: u.Issuer, Collection: coll,
			Relation: rel, K: in.K, Returned: len(out.Documents), Complete: out.Complete, Candidates: res.Candidates, Checks: res.Checks,
			FGACalls: res.FGACalls, Strategy: res.Strategy, RequestID: req.Event.ID()})
		return bus.Reply(req, out)
	})
}

// ingester checks that the principal is an ingest principal (its policy
// names ingest collections) and may write to every collection.
func (h *Retrieval) ingester(ctx context.Context, req *bus.Request, collections []string) (agents.Agent, error) {
	a, err := h.User.Agents.Agent(ctx, req.Agent)
	if err != nil {
		return agents.Agent{}, err
	}
	if len(a.Policy.IngestCollections) == 0 {
		return agents.Agent{}, bus.Errorf(schemas.CodeDenied, "%s is not an ingest principal: its policy names no ingest collections", a.ID)
	}
	for _, c := range collections {
		if !slices.Contains(a.Policy.IngestCollections, c) {
			return agents.Agent{}, bus.Errorf(schemas.CodeDenied, "%s may not write to collection %q (its policy's ingest collections are %v)", a.ID, c, a.Policy.IngestCollections)
		}
	}
	return a, nil
}

// writableBy says whether a's policy lets it write to a collection.
func writableBy(a agents.Agent) func(collection string) bool {
	return func(c string) bool { return slices.Contains(a.Policy.IngestCollections, c) }
}

// Ingest answers retrieval.ingest.
func (h *Retrieval) Ingest() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.RetrievalIngest
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		docs := make([]retrieval.Document, 0, len(in.Documents))
		var colls []string
		for _, d := range in.Documents {
			doc := retrieval.Document{ID: d.ID, Collection: collectionOf(d.Collection), Object: d.Object, Text: d.Text, Vector: d.Vector}
			if len(d.Metadata) > 0 {
				if err := json.Unmarshal(d.Metadata, &doc.Metadata); err != nil {
					return nil, bus.Errorf(schemas.CodeSchemaViolation, "document %s: metadata must be an object", d.ID)
				}
			}
			docs = append(docs, doc)
			colls = append(colls, doc.Collection)
		}
		a, err := h.ingester(ctx, req, colls)
		if err != nil {
			return nil, err
		}
		// The documents these ids replace must be writable too.
		if err := h.Service.IngestIn(ctx, docs, writableBy(a)); err != nil {
			return nil, err
		}
		h.Audit("documents", "ingested", schemas.AuditRetrieval{Event: "ingested", Agent: a.ID, Returned: len(docs), RequestID: req.Event.ID()})
		return bus.Reply(req, schemas.RetrievalIngested{Ingested: len(docs)})
	})
}

// Delete answers retrieval.delete.
func (h *Retrieval) Delete() bus.Handler {
	return bus.HandlerFunc(func(ctx context.Context, req *bus.Request) (*event.Event, error) {
		var in schemas.RetrievalDelete
		if err := bus.DecodeData(req.Event, &in); err != nil {
			return nil, err
		}
		// Refused before any lookup; then the ids of documents in
		// collections the principal may not write are skipped like
		// unknown ids, so the reply says nothing of them.
		a, err := h.ingester(ctx, req, nil)
		if err != nil {
			return nil, err
		}
		n, err := h.Service.DeleteIn(ctx, in.IDs, writableBy(a))
		if err != nil {
			return nil, err
		}
		h.Audit("documents", "deleted", schemas.AuditRetrieval{Event: "deleted", Agent: a.ID, Returned: n, RequestID: req.Event.ID()})
		return bus.Reply(req, schemas.RetrievalDeleted{Deleted: n})
	})
}
