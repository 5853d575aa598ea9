package schemas

import "encoding/json"

// FGA for RAG: queries, ingestion and deletion of documents.
const (
	TypeRetrievalQueryRequest  = "dev.agentauth.retrieval.query.request"
	TypeRetrievalQueryReply    = "dev.agentauth.retrieval.query.reply"
	TypeRetrievalIngestRequest = "dev.agentauth.retrieval.ingest.request"
	TypeRetrievalIngestReply   = "dev.agentauth.retrieval.ingest.reply"
	TypeRetrievalDeleteRequest = "dev.agentauth.retrieval.delete.request"
	TypeRetrievalDeleteReply   = "dev.agentauth.retrieval.delete.reply"

	// TypeAuditRetrieval records a query (counts, strategy, never the
	// documents' text) and ingestions (agentauth.audit.retrieval.<object>.<verb>).
	TypeAuditRetrieval = "dev.agentauth.audit.retrieval"
)

// Retrieval operations: agentauth.<principal>.retrieval.<op>.
var (
	OpRetrievalQuery = Op{Area: "retrieval", Name: "query", RequestType: TypeRetrievalQueryRequest, ReplyType: TypeRetrievalQueryReply,
		Summary: "The top k documents for a query that the verified person may see (OpenFGA), in rank order, and whether the answer is complete."}
	OpRetrievalIngest = Op{Area: "retrieval", Name: "ingest", RequestType: TypeRetrievalIngestRequest, ReplyType: TypeRetrievalIngestReply,
		Summary: "Add or update documents (an ingest principal: its policy names the collection)."}
	OpRetrievalDelete = Op{Area: "retrieval", Name: "delete", RequestType: TypeRetrievalDeleteRequest, ReplyType: TypeRetrievalDeleteReply,
		Summary: "Delete documents (an ingest principal)."}
)

// RetrievalQuery asks for documents.
type RetrievalQuery struct {
	UserToken   string    `json:"user_token"`
	Query       string    `json:"query,omitempty"`
	Vector      []float32 `json:"vector,omitempty"`
	K           int       `json:"k,omitempty"`        // default 10, at most 100
	Relation    string    `json:"relation,omitempty"` // default can_view
	ObjectType  string    `json:"object_type,omitempty"`
	Collection  string    `json:"collection,omitempty"`  // default "default"
	Consistency string    `json:"consistency,omitempty"` // MINIMIZE_LATENCY or HIGHER_CONSISTENCY
	Strategy    string    `json:"strategy,omitempty"`    // auto (default), post-filter, pre-filter
	// Context is condition context for the query's checks (OpenFGA
	// conditions): only keys the operator lets agents set
	// (--fga-agent-context-keys); current_time is always the service's.
	Context map[string]any `json:"context,omitempty"`
}

// RetrievalDoc is one permitted document.
type RetrievalDoc struct {
	ID       string         `json:"id"`
	Object   string         `json:"object"`
	Text     string         `json:"text"`
	Metadata map[string]any `json:"metadata,omitempty"`
	Score    float32        `json:"score"`
}

// RetrievalResult is a query's answer. It says nothing of the work done
// (candidates, checks, OpenFGA calls, the strategy that answered): those
// vary with the documents the person may not see, so they go to the
// audit record (AuditRetrieval) and the logs, never to the agent.
type RetrievalResult struct {
	Documents []RetrievalDoc `json:"documents"`
	// Complete: k permitted documents were found, or every candidate was
	// checked — nothing the person may see ranks above what is missing.
	Complete bool `json:"complete"`
}

// RetrievalIngest adds or updates documents.
type RetrievalIngest struct {
	Documents []IngestDoc `json:"documents"`
}

// IngestDoc is one document to ingest.
type IngestDoc struct {
	ID         string          `json:"id"`
	Collection string          `json:"collection,omitempty"`
	Object     string          `json:"object"`
	Text       string          `json:"text,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Vector     []float32       `json:"vector,omitempty"`
}

// RetrievalIngested reports an ingestion.
type RetrievalIngested struct {
	Ingested int `json:"ingested"`
}

// RetrievalDelete deletes documents by id.
type RetrievalDelete struct {
	IDs []string `json:"ids"`
}

// RetrievalDeleted reports a deletion.
type RetrievalDeleted struct {
	Deleted int `json:"deleted"`
}

// AuditRetrieval is the data of a TypeAuditRetrieval event.
type AuditRetrieval struct {
	Event      string `json:"event"` // query, ingested, deleted
	Agent      string `json:"agent"`
	Subject    string `json:"subject,omitempty"`
	Issuer     string `json:"issuer,omitempty"`
	Collection string `json:"collection,omitempty"`
	Relation   string `json:"relation,omitempty"`
	K          int    `json:"k,omitempty"`
	Returned   int    `json:"returned"`
	Complete   bool   `json:"complete,omitempty"`
	Candidates int    `json:"candidates,omitempty"`
	Checks     int    `json:"checks,omitempty"`
	FGACalls   int    `json:"fga_calls,omitempty"`
	Strategy   string `json:"strategy,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
}
