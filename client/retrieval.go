package client

import (
	"context"

	"github.com/agentauth/agentauth/schemas"
)

// Query returns the top k documents for query that the person behind
// userToken may see (each permitted by OpenFGA), in rank order. The
// result says whether it is complete: k permitted documents were found,
// or every candidate was checked.
func (c *Client) Query(ctx context.Context, userToken, query string, k int) (*schemas.RetrievalResult, error) {
	return c.QueryWith(ctx, schemas.RetrievalQuery{UserToken: userToken, Query: query, K: k})
}

// QueryWith is Query with every option (relation, object type,
// collection, consistency, strategy, a condition context, a vector
// instead of text).
func (c *Client) QueryWith(ctx context.Context, q schemas.RetrievalQuery) (*schemas.RetrievalResult, error) {
	var out schemas.RetrievalResult
	if err := c.Do(ctx, schemas.OpRetrievalQuery, q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ingest adds or updates documents (the principal's policy must name
// their collection for ingestion).
func (c *Client) Ingest(ctx context.Context, docs ...schemas.IngestDoc) (int, error) {
	var out schemas.RetrievalIngested
	if err := c.Do(ctx, schemas.OpRetrievalIngest, schemas.RetrievalIngest{Documents: docs}, &out); err != nil {
		return 0, err
	}
	return out.Ingested, nil
}

// DeleteDocuments deletes documents by id.
func (c *Client) DeleteDocuments(ctx context.Context, ids ...string) (int, error) {
	var out schemas.RetrievalDeleted
	if err := c.Do(ctx, schemas.OpRetrievalDelete, schemas.RetrievalDelete{IDs: ids}, &out); err != nil {
		return 0, err
	}
	return out.Deleted, nil
}

// Document is a retrieved document in the shape agent frameworks expect
// (langchaingo's schema.Document: PageContent, Metadata, Score).
type Document struct {
	PageContent string
	Metadata    map[string]any
	Score       float32
}

// Retriever is the Go counterpart of the seed's FGARetriever, complete
// where that one is not: GetRelevantDocuments returns the top K documents
// the person may see, filtered by OpenFGA inside agentauth. It has the
// method langchaingo's schema.Retriever asks for.
type Retriever struct {
	Client    *Client
	UserToken string
	K         int // default 4
	// Options, e.g. Relation, ObjectType, Collection, Consistency.
	Options schemas.RetrievalQuery
	// OnIncomplete, when set, is told when an answer may miss permitted
	// documents (it never does unless OpenFGA truncated a listing).
	OnIncomplete func(*schemas.RetrievalResult)
}

// GetRelevantDocuments runs the query.
func (r *Retriever) GetRelevantDocuments(ctx context.Context, query string) ([]Document, error) {
	q := r.Options
	q.UserToken, q.Query, q.K = r.UserToken, query, r.K
	if q.K == 0 {
		q.K = 4
	}
	res, err := r.Client.QueryWith(ctx, q)
	if err != nil {
		return nil, err
	}
	if !res.Complete && r.OnIncomplete != nil {
		r.OnIncomplete(res)
	}
	docs := make([]Document, 0, len(res.Documents))
	for _, d := range res.Documents {
		md := map[string]any{"id": d.ID, "object": d.Object}
		for k, v := range d.Metadata {
			md[k] = v
		}
		docs = append(docs, Document{PageContent: d.Text, Metadata: md, Score: d.Score})
	}
	return docs, nil
}
