package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// docsDir is where documents (Badger) and the vector index live.
func docsDir(dataDir string) string { return filepath.Join(dataDir, "docs") }

// fgaConfig is the OpenFGA client's configuration: for the embedded
// OpenFGA (no --openfga-url; the caller adds its URL and token) its own
// limits, for --openfga-url the server's default cap (1,000 objects) and
// --openfga-list-objects-deadline. ListObjects waits 2 s longer than the
// deadline, so that the partial answer OpenFGA sends at its deadline
// arrives and is served by the post-filter instead of failing the query.
func (c Config) fgaConfig() retrieval.FGAConfig {
	fc := retrieval.FGAConfig{URL: c.OpenFGAURL, APIToken: c.OpenFGAToken, StoreName: c.OpenFGAStore, Timeout: c.OpenFGATimeout,
		ListObjectsDeadline: c.OpenFGAListDeadline, ListObjectsTimeout: c.OpenFGAListDeadline + 2*time.Second,
		ClientID: c.OpenFGAClientID, ClientSecret: c.OpenFGAClientSecret, TokenIssuer: c.OpenFGATokenIssuer, Audience: c.OpenFGAAudience}
	if c.OpenFGAURL == "" {
		fc.ListObjectsMax = openFGAListObjectsMax
		fc.ListObjectsDeadline, fc.ListObjectsTimeout = openFGAListObjectsDeadline, openFGARequestTimeout
	}
	return fc
}

// setupRetrieval connects to OpenFGA (embedded unless --openfga-url),
// opens the documents and the index.
func (m *Main) setupRetrieval(ctx context.Context) error {
	c := m.Config
	fc := c.fgaConfig()
	if c.OpenFGAURL == "" {
		var err error
		if fc.URL, m.stopFGA, err = startOpenFGA(c.DataDir, m.Log); err != nil {
			return fmt.Errorf("embedded OpenFGA: %w", err)
		}
		if fc.APIToken, err = readOpenFGAToken(c.DataDir); err != nil {
			return err
		}
		if err := writeOpenFGAURL(c.DataDir, fc.URL); err != nil {
			return err
		}
	}
	listMax := fc.ListObjectsMax // 0 for an external OpenFGA: its own default cap (1,000)
	fga, err := retrieval.NewFGA(ctx, fc)
	if err != nil {
		return err
	}
	m.fga = fga
	docs, err := retrieval.OpenDocStore(docsDir(c.DataDir))
	if err != nil {
		return err
	}
	var emb retrieval.Embedder = retrieval.Lexical{}
	if c.EmbeddingsURL != "" {
		emb = &retrieval.OpenAI{URL: c.EmbeddingsURL, Model: c.EmbeddingsModel, APIKey: c.EmbeddingsKey, Dims: c.EmbeddingsDimensions}
	}
	m.retrieval = &retrieval.Service{Docs: docs, Embedder: emb, Checker: fga, IndexPath: filepath.Join(docsDir(c.DataDir), "index.bin"), Log: m.Log,
		PreFilterMax: listMax}
	return m.retrieval.Open(ctx) // Close closes docs, also after an error here
}

func (m *Main) registerRetrieval() error {
	rels, err := m.Config.fgaRelations()
	if err != nil {
		return err
	}
	keys, err := m.Config.fgaAgentContextKeys()
	if err != nil {
		return err
	}
	h := &handlers.Retrieval{User: m.user, Service: m.retrieval, UserPrefix: m.Config.FGAUserPrefix, Relations: rels, AgentContextKeys: keys,
		Audit: func(object, verb string, a schemas.AuditRetrieval) {
			m.auditor.Record("retrieval", object, verb, schemas.TypeAuditRetrieval, bus.TraceContext{}, a)
		}}
	for op, hf := range map[*schemas.Op]func() bus.Handler{
		&schemas.OpRetrievalQuery: h.Query, &schemas.OpRetrievalIngest: h.Ingest, &schemas.OpRetrievalDelete: h.Delete,
	} {
		if err := m.srv.Handle(*op, hf()); err != nil {
			return err
		}
	}
	return nil
}
