// Package retrieval is FGA for RAG: documents and their vectors, the
// embedders, the vector index, the OpenFGA checker, and the filter
// strategy that returns, in rank order, only documents the person may
// see — and all of the top k of them. It declares what it needs (Checker,
// Embedder) and never imports the bus.
package retrieval

import (
	"context"
	"time"
)

// Document is one ingested document.
type Document struct {
	ID         string         `json:"id"`         // [A-Za-z0-9._:@/-]{1,256}
	Collection string         `json:"collection"` // default "default"
	Object     string         `json:"object"`     // the OpenFGA object it belongs to, e.g. "doc:2021-roadmap"
	Text       string         `json:"text"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Vector     []float32      `json:"vector,omitempty"`   // given at ingest, or computed by the embedder
	Embedder   string         `json:"embedder,omitempty"` // which embedder computed Vector ("" when the caller gave it)
	Updated    time.Time      `json:"updated"`
}

// Consistency is OpenFGA's consistency preference.
type Consistency string

// Consistency preferences.
const (
	ConsistencyDefault Consistency = ""
	MinimizeLatency    Consistency = "MINIMIZE_LATENCY"
	HigherConsistency  Consistency = "HIGHER_CONSISTENCY"
)

// Checker answers authorization questions (OpenFGA). Users and objects
// are OpenFGA strings ("user:alice", "doc:2021-roadmap").
type Checker interface {
	// BatchCheckWith reports for each object whether user has relation on it:
	// OpenFGA's server-side /batch-check, in chunks of at most 50 with
	// correlation ids, chunks in parallel. Any error (an unavailable
	// server, a timeout, a per-check error) is an error: callers fail
	// closed.
	// o carries the consistency preference and the condition context.
	BatchCheckWith(ctx context.Context, user, relation string, objects []string, o FGAOptions) (map[string]bool, error)
	// ListObjectsWith lists up to max objects of type typ on which user
	// has relation. truncated is true when OpenFGA may have more (it
	// returned max, or stopped at its deadline): never "no more".
	ListObjectsWith(ctx context.Context, user, relation, typ string, max int, o FGAOptions) (objects []string, truncated bool, err error)
}

// Embedder turns texts into vectors of Dimensions() floats.
type Embedder interface {
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	Dimensions() int
	Name() string // recorded with each vector; a different embedder means reindex
}

// Hit is one search result.
type Hit struct {
	ID    string
	Score float32 // cosine similarity
}
