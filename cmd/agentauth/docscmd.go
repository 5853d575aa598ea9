package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// ingestPrincipal is the development ingest principal (`agentauth docs
// ingest`): its policy may write the default collection, its credentials
// in the data dir.
const ingestPrincipal = "ingest"

func newDocsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "docs", Short: "Documents for FGA-filtered retrieval: ingest, reindex"}
	cmd.AddCommand(newDocsIngestCmd(), newDocsDeleteCmd(), newDocsReindexCmd())
	return cmd
}

// ingestFlags say how the docs commands reach the running service as an
// ingest principal.
type ingestFlags struct{ dataDir, creds, natsURL string }

func (f *ingestFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance (env AGENTAUTH_DATA_DIR)")
	fl.StringVar(&f.creds, "creds", "", "the ingest principal's credentials file (default <data-dir>/keys/ingest.agent.json)")
	fl.StringVar(&f.natsURL, "nats-url", "", "NATS URL (default: the credentials' URL)")
}

// connect connects as the ingest principal (the development one in the
// data dir unless --creds names another).
func (f *ingestFlags) connect(cmd *cobra.Command, timeout time.Duration) (context.Context, *client.Client, error) {
	creds := f.creds
	if creds == "" {
		creds = keyPath(f.dataDir, ingestPrincipal+".agent.json")
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	c, err := client.Connect(ctx, client.Options{CredsFile: creds, URL: f.natsURL, Timeout: timeout})
	if err != nil {
		return nil, nil, fmt.Errorf("connect as the ingest principal: %w", err)
	}
	return ctx, c, nil
}

func newDocsIngestCmd() *cobra.Command {
	var inf ingestFlags
	var collection string
	var batch int
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "ingest FILE.jsonl",
		Short: "Add or update documents from JSON lines, through the running service",
		Long: `Reads one document per line — {"id": …, "object": "doc:…", "text": …, "metadata": {…},
"collection": …, "vector": [...]} — and sends them to the running agentauth in batches as an
ingest principal (its policy's ingest collections must name the collection): the development one
the embedded instance keeps in <data-dir>/keys/ingest.agent.json, or --creds. Documents are
stored durably and indexed; their OpenFGA objects decide who may retrieve them.`,
		Example: `  go run ./cmd/agentauth docs ingest docs.jsonl`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var docs []schemas.IngestDoc
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for n := 1; sc.Scan(); n++ {
				line := bytes.TrimSpace(sc.Bytes())
				if len(line) == 0 {
					continue
				}
				var d schemas.IngestDoc
				dec := json.NewDecoder(bytes.NewReader(line))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&d); err != nil {
					return fmt.Errorf("%s:%d: %w", args[0], n, err)
				}
				if d.Collection == "" {
					d.Collection = collection
				}
				docs = append(docs, d)
			}
			if err := sc.Err(); err != nil {
				return err
			}
			ctx, c, err := inf.connect(cmd, time.Minute)
			if err != nil {
				return err
			}
			defer c.Close()
			bar := countBar(cmd.ErrOrStderr(), len(docs), "ingesting", noProgress)
			done := 0
			for i := 0; i < len(docs); i += batch {
				n, err := c.Ingest(ctx, docs[i:min(i+batch, len(docs))]...)
				if err != nil {
					return fmt.Errorf("after %d documents: %w", done, err)
				}
				done += n
				if bar != nil {
					_ = bar.Set(done)
				}
			}
			if bar != nil {
				_ = bar.Finish()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d documents ingested\n", done)
			return nil
		},
	}
	fl := cmd.Flags()
	inf.add(fl)
	fl.StringVar(&collection, "collection", "default", "collection of documents that name none")
	fl.IntVar(&batch, "batch", 100, "documents per request")
	fl.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}

func newDocsDeleteCmd() *cobra.Command {
	var inf ingestFlags
	cmd := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete documents by id, through the running service (as the ingest principal)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, err := inf.connect(cmd, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			n, err := c.DeleteDocuments(ctx, args...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d documents deleted\n", n)
			return nil
		},
	}
	inf.add(cmd.Flags())
	return cmd
}

func newDocsReindexCmd() *cobra.Command {
	var dataDir string
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "reindex",
		Short: "Rebuild the vector index from the stored documents (stop agentauth serve first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := retrieval.OpenDocStore(docsDir(dataDir))
			if err != nil {
				if strings.Contains(err.Error(), "directory lock") {
					return fmt.Errorf("%w: is agentauth serve still running on %s? Stop it first", err, dataDir)
				}
				return err
			}
			defer docs.Close()
			path := filepath.Join(docsDir(dataDir), "index.bin")
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			s := &retrieval.Service{Docs: docs, Embedder: retrieval.Lexical{}, Index: retrieval.NewIndex(retrieval.Lexical{}.Dimensions()), IndexPath: path,
				Log: newLogger(cmd.ErrOrStderr(), "warn", "text")}
			bar := &barProgress{w: cmd.ErrOrStderr(), desc: "reindexing", off: noProgress}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if err := s.Reindex(ctx, bar.update); err != nil {
				return err
			}
			bar.finish()
			if err := s.Close(); err != nil {
				return err
			}
			n := docs.Count()
			fmt.Fprintf(cmd.OutOrStdout(), "index rebuilt from %d documents: %s\n", n, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance (env AGENTAUTH_DATA_DIR)")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}
