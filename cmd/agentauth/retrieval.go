package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/handlers"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// docsDir is where documents (Badger) and the vector index live.
func docsDir(dataDir string) string { return filepath.Join(dataDir, "docs") }

// setupRetrieval connects to OpenFGA (embedded unless --openfga-url),
// opens the documents and the index.
func (m *Main) setupRetrieval(ctx context.Context) error {
	c := m.Config
	url, token := c.OpenFGAURL, c.OpenFGAToken
	listMax := 0 // an external OpenFGA: its own default cap (1,000)
	if url == "" {
		listMax = openFGAListObjectsMax
		var err error
		if url, m.stopFGA, err = startOpenFGA(c.DataDir, m.Log); err != nil {
			return fmt.Errorf("embedded OpenFGA: %w", err)
		}
		if token, err = readOpenFGAToken(c.DataDir); err != nil {
			return err
		}
		if err := writeOpenFGAURL(c.DataDir, url); err != nil {
			return err
		}
	}
	fga, err := retrieval.NewFGA(ctx, retrieval.FGAConfig{URL: url, APIToken: token, StoreName: c.OpenFGAStore, ListObjectsMax: listMax,
		ClientID: c.OpenFGAClientID, ClientSecret: c.OpenFGAClientSecret, TokenIssuer: c.OpenFGATokenIssuer, Audience: c.OpenFGAAudience})
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
	h := &handlers.Retrieval{User: m.user, Service: m.retrieval, UserPrefix: m.Config.FGAUserPrefix,
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
