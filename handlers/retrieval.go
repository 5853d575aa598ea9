package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

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
	Audit      func(object, verb string, a schemas.AuditRetrieval)
}

const defaultCollection = "default"

func collectionOf(c string) string {
	if c == "" {
		return defaultCollection
	}
	return c
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
		prefix := h.UserPrefix
		if prefix == "" {
			prefix = "user:"
		}
		res, err := h.Service.Query(ctx, retrieval.Query{
			User: prefix + u.ID, Text: in.Query, Vector: in.Vector, K: in.K, Relation: in.Relation, Type: in.ObjectType,
			Collection: coll, Consistency: retrieval.Consistency(in.Consistency), Strategy: in.Strategy, Context: in.Context,
		})
		if err != nil {
			return nil, err
		}
		out := schemas.RetrievalResult{Documents: []schemas.RetrievalDoc{}, Complete: res.Complete, Candidates: res.Candidates, Checks: res.Checks, FGACalls: res.FGACalls, Strategy: res.Strategy}
		for _, d := range res.Docs {
			out.Documents = append(out.Documents, schemas.RetrievalDoc{ID: d.ID, Object: d.Object, Text: d.Text, Metadata: d.Metadata, Score: d.Score})
		}
		h.Audit("query", "ok", schemas.AuditRetrieval{Event: "query", Agent: a.ID, Subject: u.Subject, Issuer: u.Issuer, Collection: coll,
			Relation: in.Relation, K: in.K, Returned: len(out.Documents), Complete: out.Complete, Candidates: out.Candidates, Checks: out.Checks,
			Strategy: out.Strategy, RequestID: req.Event.ID()})
		return bus.Reply(req, out)
	})
}

// ingester checks that the principal may write to every collection.
func (h *Retrieval) ingester(ctx context.Context, req *bus.Request, collections []string) (agents.Agent, error) {
	a, err := h.User.Agents.Agent(ctx, req.Agent)
	if err != nil {
		return agents.Agent{}, err
	}
	for _, c := range collections {
		if !slices.Contains(a.Policy.IngestCollections, c) {
			return agents.Agent{}, bus.Errorf(schemas.CodeDenied, "%s may not write to collection %q (its policy's ingest collections are %v)", a.ID, c, a.Policy.IngestCollections)
		}
	}
	return a, nil
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
		if err := h.Service.Ingest(ctx, docs); err != nil {
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
		var colls, ids []string
		for _, id := range in.IDs {
			d, err := h.Service.Docs.Get(id)
			if errors.Is(err, retrieval.ErrNotFound) {
				continue
			} else if err != nil {
				return nil, err
			}
			colls, ids = append(colls, d.Collection), append(ids, id)
		}
		a, err := h.ingester(ctx, req, colls)
		if err != nil {
			return nil, err
		}
		n, err := h.Service.Delete(ctx, ids)
		if err != nil {
			return nil, err
		}
		h.Audit("documents", "deleted", schemas.AuditRetrieval{Event: "deleted", Agent: a.ID, Returned: n, RequestID: req.Event.ID()})
		return bus.Reply(req, schemas.RetrievalDeleted{Deleted: n})
	})
}
