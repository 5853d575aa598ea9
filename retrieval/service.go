package retrieval

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// Error is a retrieval outcome with a wire code and a message a person
// can act on: invalid input (schema_violation) and an OpenFGA or
// embedder that could not answer (unavailable).
type Error = schemas.Error

// ErrInvalid is wrapped by the errors of invalid documents and queries.
var ErrInvalid = errors.New("retrieval: invalid input")

// ErrDenied is wrapped by the errors of writes the caller may not make
// (IngestIn).
var ErrDenied = errors.New("retrieval: not permitted")

func invalid(format string, a ...any) error {
	return &Error{Code: schemas.CodeSchemaViolation, Msg: fmt.Sprintf(format, a...), Err: ErrInvalid}
}

// Strategies of a query (Query.Strategy, Result.Strategy). Wire values:
// append only.
const (
	StrategyAuto       = "auto"
	StrategyPostFilter = "post-filter"
	StrategyPreFilter  = "pre-filter"
)

// Defaults.
const (
	DefaultK          = 10
	MaxK              = 10000
	DefaultRelation   = "can_view"
	DefaultCollection = "default"
	MaxContextKeys    = 64 // in a query's condition context
	// ContextCurrentTime is the condition-context key the Service sets
	// to its clock's time (RFC 3339) in every query: a caller's value is
	// replaced.
	ContextCurrentTime = "current_time"
)

// Service is FGA for RAG: it ingests documents (Badger, the durable
// truth) into the vector index and answers queries with the documents a
// user may see according to the Checker (OpenFGA), in rank order, and
// all of the top k of them.
//
// A query's candidates come from the exact index in rank order and are
// filtered by one of two strategies:
//
//   - post-filter: the next candidates in rank order are batch-checked
//     (each object once, however many documents share it), permitted ones
//     are kept in rank order, and the batch is refilled — growing — until
//     k are permitted or every candidate has been checked. Both ends are
//     complete answers.
//   - pre-filter: ListObjects names the objects the user may see (at most
//     PreFilterMax); when OpenFGA says that is all of them, only their
//     documents are scored, which gives the exact top k among permitted
//     documents. When the list is truncated the query falls back to the
//     post-filter: truncation never means "no more".
//
// "auto" (the default) starts with the post-filter over one chunk and
// switches to the pre-filter when fewer than LowSelectivity of the
// candidates checked are permitted; it remembers each (user, relation,
// type, collection)'s observed selectivity in a small LRU to choose, and
// to size its first batch, up front next time.
//
// Fail closed: when the Checker errs (OpenFGA unavailable, a timeout, a
// check without an answer) a query returns no documents and an *Error
// with code unavailable.
//
// Set the exported fields before the first call; Open (or the first
// call) reads the documents' references and loads or rebuilds the index.
// A Service is safe for concurrent use: queries run in parallel; Ingest,
// Delete and Reindex are serialized.
type Service struct {
	Docs     *DocStore
	Index    *Index // nil: loaded from IndexPath, or rebuilt; Reindex replaces its content
	Embedder Embedder
	Checker  Checker
	// IndexPath is where the index persists: saved SaveDelay after
	// changes and on Close; "" keeps it in memory only.
	IndexPath string
	Now       func() time.Time
	Log       *slog.Logger

	// SaveDelay batches index saves; 0: 5s.
	SaveDelay time.Duration
	// PreFilterMax is the pre-filter's ListObjects limit: a user
	// permitted on more objects of a type is served by the post-filter.
	// 0: 1000.
	PreFilterMax int
	// LowSelectivity is the share of permitted candidates below which
	// "auto" uses the pre-filter; 0: 0.05.
	LowSelectivity float64
	// MaxChecks bounds the objects one query's post-filter checks; a
	// query that reaches it returns what it found with Complete false.
	// 0: no bound.
	MaxChecks int

	wmu sync.Mutex // serializes Open, Ingest, Delete, Reindex

	mu        sync.RWMutex // guards the fields below and the Index pointer
	opened    bool
	stale     bool // a write failed half-way: the index may miss documents until a reindex
	refs      map[string]docRef
	objDocs   map[string][]string // object → ids of its documents
	scopeDocs map[scopeKey]int    // number of documents per (collection, object type)
	collDocs  map[string]int      // number of documents per collection

	saveMu    sync.Mutex
	saveTimer *time.Timer
	dirty     bool
	closed    bool
	saveRun   sync.Mutex // one Save at a time

	estOnce sync.Once
	est     *estimates
}

type scopeKey struct{ collection, typ string }

// Query is a retrieval query.
type Query struct {
	User     string    // the OpenFGA user, "user:dev-alice"; required
	Text     string    // the query, embedded by the Service's Embedder
	Vector   []float32 // or its vector (Dimensions elements)
	K        int       // 0: DefaultK; at most MaxK
	Relation string    // "": DefaultRelation (can_view)
	// Type restricts results to objects of this type; "": any type (the
	// relation must then exist on every type in the collection, or
	// OpenFGA refuses the question and the query fails closed).
	Type        string
	Collection  string // "": DefaultCollection
	Consistency Consistency
	Strategy    string // "" or StrategyAuto, StrategyPostFilter, StrategyPreFilter
	// Context is the condition context of every check and list the query
	// makes (OpenFGA conditions); nil: none. Its current_time
	// (ContextCurrentTime) is always the Service's clock (Now, RFC 3339),
	// whatever the caller gave: OpenFGA lets a request's context fill a
	// condition's parameters, so a caller's time could revive an expired
	// grant. A condition whose current_time parameter is not a timestamp
	// therefore fails closed.
	Context map[string]any
}

// Result is a query's answer.
type Result struct {
	Docs []ScoredDoc // rank order, at most K, never nil; their Vector is not set
	// Complete: K permitted documents were found, or every candidate was
	// checked — nothing the user may see ranks above what is missing.
	Complete bool
	// Candidates is the number of ranked documents the strategy
	// considered (post-filter: taken from the ranking and matched to a
	// check; pre-filter: the permitted documents scored).
	Candidates int
	Checks     int    // objects checked with BatchCheck
	FGACalls   int    // BatchCheck and ListObjects calls
	Strategy   string // the strategy that produced Docs: StrategyPostFilter or StrategyPreFilter
}

// ScoredDoc is a permitted document and its cosine similarity to the
// query.
type ScoredDoc struct {
	Document
	Score float32
}

var (
	reID         = regexp.MustCompile(`^[A-Za-z0-9._:@/-]{1,256}$`)
	reCollection = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	reObject     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}:[^\s#]{1,256}$`)
	reUser       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}:[^\s]{1,512}$`)
	reRelation   = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	reType       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Open reads the documents' references and loads the index from
// IndexPath (when Index is nil). It rebuilds the index from the
// documents (Reindex, which re-embeds the documents another embedder
// made) when there is none yet, when it was built by another embedder
// (by name: an index file of format version 1 names none) or for other
// dimensions, or when it is behind the documents (a stop between a
// write and the index's debounced save). A damaged index file is an
// error wrapping ErrIndexCorrupt that says to run `agentauth docs
// reindex`. Calling Open is optional: the first Ingest, Delete or Query
// does it; calling it again does nothing.
func (s *Service) Open(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.openLocked(ctx)
}

func (s *Service) isOpen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.opened
}

func (s *Service) ready(ctx context.Context) error {
	if s.isOpen() {
		return nil
	}
	return s.Open(ctx)
}

func (s *Service) openLocked(ctx context.Context) error {
	if s.isOpen() {
		return nil
	}
	if s.Docs == nil || s.Embedder == nil {
		return errors.New("retrieval: the Service needs Docs and an Embedder")
	}
	dim, name := s.Embedder.Dimensions(), s.Embedder.Name()
	s.mu.RLock()
	idx := s.Index
	s.mu.RUnlock()
	reason := ""
	if idx == nil {
		if s.IndexPath == "" {
			reason = "no index file is configured"
		} else {
			l, err := LoadIndex(s.IndexPath)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				reason = "there is no index file yet"
			case err != nil:
				return err
			default:
				idx = l
			}
		}
	}
	refs := map[string]docRef{}
	seq, err := s.Docs.eachRef(func(id string, r docRef) { refs[id] = r })
	if err != nil {
		return err
	}
	if reason == "" {
		switch {
		case idx.Dimensions() != dim:
			reason = fmt.Sprintf("the index holds %d-dimension vectors, the embedder %s makes %d", idx.Dimensions(), name, dim)
		case idx.Len() > 0 && idx.Embedder() != name:
			// Vectors of another embedder, even of the same size, do not
			// compare with this one's queries.
			reason = fmt.Sprintf("the index was built by the embedder %q, this one is %s", idx.Embedder(), name)
		case idx.Generation() != seq || idx.Len() != len(refs):
			reason = fmt.Sprintf("the index (change %d, %d vectors) is behind the documents (change %d, %d documents)", idx.Generation(), idx.Len(), seq, len(refs))
		default:
			for id := range refs {
				if !idx.Has(id) {
					reason = fmt.Sprintf("the index does not hold document %s", id)
					break
				}
			}
		}
	}
	if reason != "" {
		if len(refs) > 0 {
			s.log().Info("rebuilding the vector index from the documents", "reason", reason, "documents", len(refs))
		}
		s.mu.Lock()
		if s.Index == nil && idx != nil && idx.Dimensions() == dim {
			s.Index = idx
		}
		s.mu.Unlock()
		return s.reindexLocked(ctx, nil)
	}
	idx.SetEmbedder(name) // an empty index, or one of this embedder
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Index = idx
	s.setRefs(refs)
	s.opened = true
	return nil
}

// setRefs replaces the references and their derived maps. s.mu is held.
func (s *Service) setRefs(refs map[string]docRef) {
	s.refs = refs
	s.objDocs = make(map[string][]string, len(refs))
	s.scopeDocs = map[scopeKey]int{}
	s.collDocs = map[string]int{}
	for id, r := range refs {
		s.addRefCounts(id, r)
	}
}

func (s *Service) addRef(id string, r docRef) {
	if old, ok := s.refs[id]; ok {
		if old == r {
			return
		}
		s.removeRef(id)
	}
	s.refs[id] = r
	s.addRefCounts(id, r)
}

func (s *Service) addRefCounts(id string, r docRef) {
	s.objDocs[r.Object] = append(s.objDocs[r.Object], id)
	s.scopeDocs[scopeKey{r.Collection, objectType(r.Object)}]++
	s.collDocs[r.Collection]++
}

func (s *Service) removeRef(id string) {
	r, ok := s.refs[id]
	if !ok {
		return
	}
	delete(s.refs, id)
	ids := slices.DeleteFunc(s.objDocs[r.Object], func(x string) bool { return x == id })
	if len(ids) == 0 {
		delete(s.objDocs, r.Object)
	} else {
		s.objDocs[r.Object] = ids
	}
	k := scopeKey{r.Collection, objectType(r.Object)}
	if s.scopeDocs[k]--; s.scopeDocs[k] <= 0 {
		delete(s.scopeDocs, k)
	}
	if s.collDocs[r.Collection]--; s.collDocs[r.Collection] <= 0 {
		delete(s.collDocs, r.Collection)
	}
}

func objectType(object string) string {
	t, _, _ := strings.Cut(object, ":")
	return t
}

// embed embeds texts in slices of 256 and checks the embedder's answer.
func (s *Service) embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, 0, len(texts))
	dim := s.Embedder.Dimensions()
	for i := 0; i < len(texts); i += 256 {
		part := texts[i:min(i+256, len(texts))]
		vs, err := s.Embedder.Embed(ctx, part)
		if err == nil && len(vs) != len(part) {
			err = fmt.Errorf("%d vectors for %d texts", len(vs), len(part))
		}
		for _, v := range vs {
			if err == nil && len(v) != dim {
				err = fmt.Errorf("%w: a %d-dimension vector, the embedder announces %d", ErrDimensions, len(v), dim)
			}
		}
		if err != nil {
			return nil, &Error{Code: schemas.CodeUnavailable, Msg: fmt.Sprintf("the embedder %s could not embed the text", s.Embedder.Name()), Err: err}
		}
		out = append(out, vs...)
	}
	return out, nil
}

// Ingest validates documents, embeds the texts of those without a
// vector, stores them (synced) and indexes them. A document needs an id,
// an object "type:id" and a text or a vector of the embedder's
// dimensions; its collection defaults to "default". A vector given is
// stored normalized and marked as the caller's (Embedder ""); Updated is
// set to now. An invalid batch changes nothing (*Error, schema_violation,
// wrapping ErrInvalid); an embedder that fails gives an *Error with code
// unavailable.
func (s *Service) Ingest(ctx context.Context, docs []Document) error {
	return s.IngestIn(ctx, docs, nil)
}

// IngestIn is Ingest for a caller that may write only the collections
// writable accepts (nil: any): every document's collection, and the
// collection of the document it replaces, if any, must be writable, or
// nothing changes (*Error, code denied, wrapping ErrDenied). A document
// may otherwise be overwritten, and moved, by a caller of another
// collection. The replaced documents are read under the write lock, so
// no concurrent write slips between the check and the write.
func (s *Service) IngestIn(ctx context.Context, docs []Document, writable func(collection string) bool) error {
	if len(docs) == 0 {
		return nil
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	dim := s.Embedder.Dimensions()
	now := s.now().UTC()
	prepared := make([]Document, len(docs))
	seen := make(map[string]bool, len(docs))
	var texts []string
	var need []int
	for i, d := range docs {
		if !reID.MatchString(d.ID) {
			return invalid("document %d: id %q is not 1 to 256 of A-Z a-z 0-9 . _ : @ / -", i, d.ID)
		}
		if seen[d.ID] {
			return invalid("document id %q appears twice in the batch", d.ID)
		}
		seen[d.ID] = true
		if d.Collection == "" {
			d.Collection = DefaultCollection
		}
		if !reCollection.MatchString(d.Collection) {
			return invalid("document %s: collection %q is not a lower-case name (a-z 0-9 _ -, up to 63)", d.ID, d.Collection)
		}
		if !reObject.MatchString(d.Object) {
			return invalid("document %s: object %q is not an OpenFGA object \"type:id\" (e.g. doc:2021-roadmap)", d.ID, d.Object)
		}
		switch {
		case len(d.Vector) > 0:
			if len(d.Vector) != dim {
				return invalid("document %s: a vector of %d dimensions, the index holds %d (embedder %s)", d.ID, len(d.Vector), dim, s.Embedder.Name())
			}
			v := slices.Clone(d.Vector)
			if !finite(v) || !normalize(v) {
				return invalid("document %s: the vector is zero or holds a NaN or an infinity", d.ID)
			}
			d.Vector, d.Embedder = v, ""
		case d.Text == "":
			return invalid("document %s has neither text nor vector", d.ID)
		default:
			d.Embedder = s.Embedder.Name()
			need = append(need, i)
			texts = append(texts, d.Text)
		}
		d.Updated = now
		prepared[i] = d
	}
	// Checked before embedding too, so that a refused batch costs no
	// embedder calls; again under the write lock.
	if err := s.checkWritable(prepared, writable); err != nil {
		return err
	}
	vecs, err := s.embed(ctx, texts)
	if err != nil {
		return err
	}
	for j, i := range need {
		prepared[i].Vector = vecs[j]
	}

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.checkWritable(prepared, writable); err != nil {
		return err
	}
	if err := s.Docs.PutBatch(prepared); err != nil {
		s.markStale()
		return fmt.Errorf("retrieval ingest: %w", err)
	}
	s.mu.Lock()
	for _, d := range prepared {
		if err := s.Index.Upsert(d.ID, d.Vector); err != nil { // validated above: cannot happen
			s.stale = true
			s.mu.Unlock()
			return fmt.Errorf("retrieval ingest: %w", err)
		}
		s.addRef(d.ID, docRef{Collection: d.Collection, Object: d.Object})
	}
	s.setGenerationLocked()
	s.mu.Unlock()
	s.scheduleSave()
	return nil
}

// checkWritable denies docs when writable refuses a document's
// collection or that of the stored document of its id. It names the
// caller's own collections only, never a stored document's.
func (s *Service) checkWritable(docs []Document, writable func(string) bool) error {
	if writable == nil {
		return nil
	}
	for _, d := range docs {
		coll := d.Collection // set by the validation
		if !writable(coll) {
			return &Error{Code: schemas.CodeDenied, Err: ErrDenied, Msg: fmt.Sprintf("document %s: collection %q may not be written by this principal; nothing was ingested", d.ID, coll)}
		}
		old, err := s.Docs.Get(d.ID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return fmt.Errorf("retrieval ingest: %w", err)
		case !writable(old.Collection):
			return &Error{Code: schemas.CodeDenied, Err: ErrDenied,
				Msg: fmt.Sprintf("document %s: the id belongs to a document this principal may not change; nothing was ingested", d.ID)}
		}
	}
	return nil
}

// Delete deletes documents by id and returns how many existed; unknown
// ids are ignored.
func (s *Service) Delete(ctx context.Context, ids []string) (int, error) {
	return s.DeleteIn(ctx, ids, nil)
}

// DeleteIn is Delete for a caller that may write only the collections
// writable accepts (nil: any): the ids of documents in other collections
// are ignored exactly like unknown ids (not deleted, not counted, never
// named). The documents are read under the write lock.
func (s *Service) DeleteIn(ctx context.Context, ids []string, writable func(collection string) bool) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if writable != nil {
		mine := make([]string, 0, len(ids))
		for _, id := range ids {
			d, err := s.Docs.Get(id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("retrieval delete: %w", err)
			}
			if writable(d.Collection) {
				mine = append(mine, id)
			}
		}
		if ids = mine; len(ids) == 0 {
			return 0, nil
		}
	}
	n, err := s.Docs.DeleteBatch(ids)
	s.mu.Lock()
	for _, id := range ids {
		if _, ok := s.refs[id]; !ok {
			continue
		}
		if err != nil { // some transactions may have committed: ask the store
			if _, gerr := s.Docs.Get(id); !errors.Is(gerr, ErrNotFound) {
				continue
			}
		}
		s.Index.Delete(id)
		s.removeRef(id)
	}
	s.setGenerationLocked()
	s.mu.Unlock()
	s.scheduleSave()
	if err != nil {
		return n, fmt.Errorf("retrieval delete: %w", err)
	}
	return n, nil
}

func (s *Service) markStale() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
	s.log().Warn("a document write failed half-way: the vector index may miss documents until `agentauth docs reindex` (or the next start) rebuilds it")
}

// setGenerationLocked records in the index the document change it
// reflects, unless a failed write left it behind (then the next Open
// rebuilds it). s.mu is held.
func (s *Service) setGenerationLocked() {
	if !s.stale {
		s.Index.SetGeneration(s.Docs.Seq())
	}
}

// Reindex rebuilds the index from the documents, re-embedding (and
// storing again) those embedded by another embedder than s.Embedder or
// without a vector. A document whose vector was given at ingest and has
// other dimensions than the embedder's is an error: re-ingest or delete
// it. progress, if not nil, is called with the documents done and the
// total. The new index replaces the old one only when it is complete;
// it is then saved to IndexPath at once. Queries run meanwhile on the
// old index; writes wait.
func (s *Service) Reindex(ctx context.Context, progress func(done, total int)) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.reindexLocked(ctx, progress)
}

func (s *Service) reindexLocked(ctx context.Context, progress func(done, total int)) error {
	if s.Docs == nil || s.Embedder == nil {
		return errors.New("retrieval: the Service needs Docs and an Embedder")
	}
	name, dim := s.Embedder.Name(), s.Embedder.Dimensions()
	total := s.Docs.Count()
	idx := NewIndex(dim)
	idx.SetEmbedder(name)
	refs := make(map[string]docRef, total)
	done, reembedded := 0, 0
	report := func() {
		if progress != nil {
			progress(done, total)
		}
	}
	var pending []Document
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		texts := make([]string, len(pending))
		for i, d := range pending {
			texts[i] = d.Text
		}
		vecs, err := s.embed(ctx, texts)
		if err != nil {
			return err
		}
		for i := range pending {
			pending[i].Vector, pending[i].Embedder = vecs[i], name
		}
		if err := s.Docs.PutBatch(pending); err != nil {
			return err
		}
		for _, d := range pending {
			if err := idx.Upsert(d.ID, d.Vector); err != nil {
				return err
			}
			refs[d.ID] = docRef{Collection: d.Collection, Object: d.Object}
		}
		done += len(pending)
		reembedded += len(pending)
		pending = pending[:0]
		report()
		return nil
	}
	err := s.Docs.Each(func(d Document) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Embedder == "" && len(d.Vector) > 0 {
			if len(d.Vector) != dim {
				return fmt.Errorf("%w: document %s has a %d-dimension vector given at ingest, the embedder %s makes %d: re-ingest or delete it", ErrDimensions, d.ID, len(d.Vector), name, dim)
			}
		} else if d.Embedder != name || len(d.Vector) != dim {
			pending = append(pending, d)
			if len(pending) == 64 {
				return flush()
			}
			return nil
		}
		if err := idx.Upsert(d.ID, d.Vector); err != nil {
			return fmt.Errorf("document %s: %w", d.ID, err)
		}
		refs[d.ID] = docRef{Collection: d.Collection, Object: d.Object}
		if done++; done%1000 == 0 {
			report()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("retrieval reindex: %w", err)
	}
	report()
	idx.SetGeneration(s.Docs.Seq())
	s.mu.Lock()
	if s.Index == nil {
		s.Index = idx
	} else {
		s.Index.replace(idx)
	}
	s.setRefs(refs)
	s.stale = false
	s.opened = true
	s.mu.Unlock()
	if reembedded > 0 {
		s.log().Info("re-embedded documents", "documents", reembedded, "embedder", name)
	}
	if s.IndexPath != "" {
		s.saveMu.Lock()
		s.dirty = true
		s.saveMu.Unlock()
		if err := s.flushSave(); err != nil {
			return fmt.Errorf("retrieval reindex: %w", err)
		}
	}
	return nil
}

func (s *Service) saveDelay() time.Duration {
	if s.SaveDelay > 0 {
		return s.SaveDelay
	}
	return 5 * time.Second
}

// scheduleSave saves the index SaveDelay from now (once for all the
// changes meanwhile).
func (s *Service) scheduleSave() {
	if s.IndexPath == "" {
		return
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.dirty = true
	if s.saveTimer != nil || s.closed {
		return
	}
	s.saveTimer = time.AfterFunc(s.saveDelay(), func() {
		s.saveMu.Lock()
		s.saveTimer = nil
		s.saveMu.Unlock()
		s.flushSave()
	})
}

// flushSave saves the index if it changed since the last save.
func (s *Service) flushSave() error {
	s.saveRun.Lock()
	defer s.saveRun.Unlock()
	s.saveMu.Lock()
	dirty := s.dirty
	s.dirty = false
	s.saveMu.Unlock()
	s.mu.RLock()
	idx := s.Index
	s.mu.RUnlock()
	if !dirty || idx == nil || s.IndexPath == "" {
		return nil
	}
	start := time.Now()
	if err := idx.Save(s.IndexPath); err != nil {
		s.saveMu.Lock()
		s.dirty = true
		s.saveMu.Unlock()
		s.log().Error("saving the vector index failed; it will be rebuilt from the documents on the next start if it stays behind", "path", s.IndexPath, "err", err)
		return err
	}
	s.log().Debug("saved the vector index", "path", s.IndexPath, "vectors", idx.Len(), "took", time.Since(start))
	return nil
}

// Close saves the index if it changed and stops the debounced saves. It
// does not close the DocStore.
func (s *Service) Close() error {
	s.saveMu.Lock()
	s.closed = true
	if s.saveTimer != nil {
		s.saveTimer.Stop()
		s.saveTimer = nil
	}
	s.saveMu.Unlock()
	return s.flushSave()
}

// Query returns, in rank order, the top q.K documents most similar to
// the query that q.User has q.Relation on (each by a positive OpenFGA
// answer), with counts of the work done and whether the answer is
// complete. Invalid queries give an *Error with code schema_violation
// (wrapping ErrInvalid); when OpenFGA cannot answer, no documents and an
// *Error with code unavailable.
func (s *Service) Query(ctx context.Context, q Query) (Result, error) {
	if err := s.ready(ctx); err != nil {
		return Result{}, err
	}
	if err := s.checkQuery(&q); err != nil {
		return Result{}, err
	}
	key := q.User + "\x00" + q.Relation + "\x00" + q.Type + "\x00" + q.Collection
	cctx := make(map[string]any, len(q.Context)+1)
	for k, v := range q.Context {
		if k != ContextCurrentTime {
			cctx[k] = v
		}
	}
	if len(cctx) > 0 {
		b, err := json.Marshal(cctx) // map keys sorted
		if err != nil {
			return Result{}, invalid("the condition context is not JSON: %v", err)
		}
		key += "\x00" + string(b) // what a user may see depends on it
	}
	// The clock is the Service's: a caller's current_time would let it
	// revive an expired grant (OpenFGA merges the request's context with
	// the tuple's). Left out of the key: every query has its own.
	cctx[ContextCurrentTime] = s.now().UTC().Format(time.RFC3339Nano)
	q.Context = cctx
	if s.Checker == nil {
		return Result{}, unavailable(errors.New("no Checker is configured"))
	}
	qv, err := s.queryVector(ctx, q)
	if err != nil {
		return Result{}, err
	}
	r := &run{s: s, q: q, qv: qv, key: key}
	hits, err := r.do(ctx)
	if err != nil {
		return Result{}, err
	}
	docs, err := s.readDocs(hits, q.Collection)
	if err != nil {
		return Result{}, err
	}
	res := Result{Docs: docs, Complete: r.complete, Candidates: r.candidates, Checks: r.checks, FGACalls: r.calls, Strategy: r.strategy}
	s.log().Debug("retrieval query", "strategy", res.Strategy, "k", q.K, "returned", len(docs), "complete", res.Complete,
		"candidates", res.Candidates, "checks", res.Checks, "fga_calls", res.FGACalls)
	return res, nil
}

func (s *Service) checkQuery(q *Query) error {
	if !reUser.MatchString(q.User) {
		return invalid("user %q is not an OpenFGA user \"type:id\" (e.g. user:alice)", q.User)
	}
	if q.K == 0 {
		q.K = DefaultK
	}
	if q.K < 1 || q.K > MaxK {
		return invalid("k is %d: give 1 to %d", q.K, MaxK)
	}
	if q.Relation == "" {
		q.Relation = DefaultRelation
	}
	if !reRelation.MatchString(q.Relation) {
		return invalid("relation %q is not an OpenFGA relation name", q.Relation)
	}
	if q.Type != "" && !reType.MatchString(q.Type) {
		return invalid("object type %q is not an OpenFGA type name", q.Type)
	}
	if q.Collection == "" {
		q.Collection = DefaultCollection
	}
	if !reCollection.MatchString(q.Collection) {
		return invalid("collection %q is not a lower-case name (a-z 0-9 _ -, up to 63)", q.Collection)
	}
	switch q.Consistency {
	case ConsistencyDefault, MinimizeLatency, HigherConsistency:
	default:
		return invalid("consistency %q is not MINIMIZE_LATENCY or HIGHER_CONSISTENCY", q.Consistency)
	}
	switch q.Strategy {
	case "":
		q.Strategy = StrategyAuto
	case StrategyAuto, StrategyPostFilter, StrategyPreFilter:
	default:
		return invalid("strategy %q is not auto, post-filter or pre-filter", q.Strategy)
	}
	if len(q.Vector) == 0 && strings.TrimSpace(q.Text) == "" {
		return invalid("the query has neither text nor vector")
	}
	if len(q.Context) > MaxContextKeys {
		return invalid("the condition context has %d keys: at most %d", len(q.Context), MaxContextKeys)
	}
	return nil
}

func (s *Service) queryVector(ctx context.Context, q Query) ([]float32, error) {
	dim := s.Embedder.Dimensions()
	var v []float32
	if len(q.Vector) > 0 {
		if len(q.Vector) != dim {
			return nil, invalid("the query vector has %d dimensions, the index holds %d (embedder %s)", len(q.Vector), dim, s.Embedder.Name())
		}
		v = slices.Clone(q.Vector)
	} else {
		vs, err := s.embed(ctx, []string{q.Text})
		if err != nil {
			return nil, err
		}
		v = vs[0]
	}
	if !finite(v) || !normalize(v) {
		return nil, invalid("the query has nothing to search for (a zero vector: no words the embedder knows)")
	}
	return v, nil
}

func unavailable(err error) error {
	if errors.Is(err, ErrFGAInvalid) { // a question OpenFGA refuses: asking again will not help
		return &Error{Code: schemas.CodeSchemaViolation, Err: err,
			Msg: "OpenFGA rejected the permission question (an unknown relation or type for this model, or a condition that needs context), so no documents are returned"}
	}
	msg := "OpenFGA could not answer the permission checks, so no documents are returned"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "OpenFGA did not answer the permission checks in time, so no documents are returned"
	}
	return &Error{Code: schemas.CodeUnavailable, Msg: msg, Err: err}
}

// readDocs reads the documents of hits, dropping any that was deleted or
// moved to another object or collection since its object was checked.
func (s *Service) readDocs(hits []cand, collection string) ([]ScoredDoc, error) {
	out := make([]ScoredDoc, 0, len(hits))
	for _, h := range hits {
		d, err := s.Docs.Get(h.id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("retrieval query: %w", err)
		}
		if d.Object != h.object || d.Collection != collection {
			s.log().Info("a document changed object or collection during a query; it is left out", "id", h.id)
			continue
		}
		d.Vector = nil
		out = append(out, ScoredDoc{Document: d, Score: h.score})
	}
	return out, nil
}

// Strategy tuning.
const (
	firstChunk     = 50   // the unknown user's first post-filter batch (one /batch-check chunk)
	minBatch       = 50   // the smallest refill
	maxBatch       = 1000 // the largest batch (20 chunks)
	minObserved    = 20   // candidates judged before "auto" trusts the observed selectivity
	bigSetRetry    = 10 * time.Minute
	estimatesLimit = 4096
)

// cand is a candidate document.
type cand struct {
	id, object string
	score      float32
}

// run is one query's strategy state.
type run struct {
	s   *Service
	q   Query
	qv  []float32
	key string

	candidates, checks, calls int
	complete                  bool
	strategy                  string
	triedPre                  bool
	bigSet                    bool // the permitted set was found too big to pre-filter, recently: do not list it again

	// post-filter
	pool      []cand
	poolN     int
	exhausted bool // pool holds every document in scope
	pos       int
	taken     map[string]bool // ids in order
	order     []cand          // candidates taken, rank order
	decided   map[string]bool // object → permitted
	emitted   int
	judged    int // order[:judged] have decided objects
	permitted int // of order[:judged], how many are permitted
	out       []cand
}

// fgaOptions are the query's consistency and condition context.
func (r *run) fgaOptions() FGAOptions {
	return FGAOptions{Consistency: r.q.Consistency, Context: r.q.Context}
}

func (r *run) low() float64 {
	if r.s.LowSelectivity > 0 {
		return r.s.LowSelectivity
	}
	return 0.05
}

func (r *run) do(ctx context.Context) ([]cand, error) {
	est, known := r.s.estimates().get(r.key)
	if known && est.big && r.s.now().Sub(est.bigAt) > bigSetRetry {
		est.big = false
	}
	r.bigSet = known && est.big
	if r.q.Strategy == StrategyPreFilter || (r.q.Strategy == StrategyAuto && known && !est.big && est.sel < r.low()) {
		hits, ok, err := r.preFilter(ctx)
		if err != nil || ok {
			return hits, err
		}
	}
	first := firstChunk
	switch {
	case known:
		first = int(math.Ceil(float64(r.q.K) / max(est.sel, 0.001) * 1.25))
	case r.q.K > first:
		first = r.q.K
	}
	first = min(max(first, r.q.K, 1), maxBatch)
	return r.postFilter(ctx, first)
}

// preFilter lists the objects the user may see and scores only their
// documents. ok is false when a list was truncated: the caller then
// falls back to the post-filter.
func (r *run) preFilter(ctx context.Context) (hits []cand, ok bool, err error) {
	r.triedPre = true
	s := r.s
	types := []string{r.q.Type}
	if r.q.Type == "" {
		types = s.typesIn(r.q.Collection)
	}
	maxObjects := s.PreFilterMax
	if maxObjects <= 0 {
		maxObjects = 1000
	}
	var objects []string
	for _, t := range types {
		objs, truncated, err := s.Checker.ListObjectsWith(ctx, r.q.User, r.q.Relation, t, maxObjects, r.fgaOptions())
		r.calls++
		if err != nil {
			return nil, false, unavailable(err)
		}
		if truncated {
			// The candidates judged so far are counted when the
			// post-filter this falls back to ends.
			e, _ := s.estimates().get(r.key)
			e.big, e.bigAt = true, s.now()
			s.estimates().put(r.key, e)
			return nil, false, nil
		}
		objects = append(objects, objs...)
	}
	s.mu.RLock()
	var ids []string
	inScope := 0
	for _, t := range types {
		inScope += s.scopeDocs[scopeKey{r.q.Collection, t}]
	}
	seen := make(map[string]bool, len(objects))
	for _, o := range objects {
		if seen[o] || (r.q.Type != "" && objectType(o) != r.q.Type) {
			continue
		}
		seen[o] = true
		for _, id := range s.objDocs[o] {
			if s.refs[id].Collection == r.q.Collection {
				ids = append(ids, id)
			}
		}
	}
	found := s.Index.SearchIn(r.qv, r.q.K, ids)
	hits = make([]cand, 0, len(found))
	for _, h := range found {
		hits = append(hits, cand{id: h.ID, object: s.refs[h.ID].Object, score: h.Score})
	}
	s.mu.RUnlock()
	r.candidates += len(ids)
	r.complete = true
	r.strategy = StrategyPreFilter
	sel := 0.0
	if inScope > 0 {
		sel = float64(len(ids)) / float64(inScope)
	}
	// Counted whole, but weighed as a few queries' worth of candidates,
	// so that a set that has grown since is seen within a few queries.
	r.s.estimates().put(r.key, estimate{sel: sel, permitted: sel * estimateWeight, judged: estimateWeight})
	return hits, true, nil
}

// observed is the share of judged candidates that were permitted, or
// def before any was judged.
func (r *run) observed(def float64) float64 {
	if r.judged == 0 {
		return def
	}
	return float64(r.permitted) / float64(r.judged)
}

// typesIn lists the object types of a collection's documents.
func (s *Service) typesIn(collection string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ts []string
	for k := range s.scopeDocs {
		if k.collection == collection {
			ts = append(ts, k.typ)
		}
	}
	slices.Sort(ts)
	return ts
}

// postFilter checks candidates in rank order, refilling with growing
// batches, until K are permitted or the candidates run out. In "auto" it
// switches to the pre-filter when the selectivity observed is low.
func (r *run) postFilter(ctx context.Context, batch int) ([]cand, error) {
	r.strategy = StrategyPostFilter
	r.taken = map[string]bool{}
	r.decided = map[string]bool{}
	k := r.q.K
	limited := false
	for {
		r.emit()
		if len(r.out) >= k {
			r.complete = true
			break
		}
		objs := r.gather(batch)
		if len(objs) == 0 { // every candidate taken, and judged
			r.complete = true
			break
		}
		if r.s.MaxChecks > 0 && r.checks+len(objs) > r.s.MaxChecks {
			objs = objs[:max(r.s.MaxChecks-r.checks, 0)]
			limited = true
			if len(objs) == 0 {
				break
			}
		}
		res, err := r.s.Checker.BatchCheckWith(ctx, r.q.User, r.q.Relation, objs, r.fgaOptions())
		r.calls++
		r.checks += len(objs)
		if err != nil {
			return nil, unavailable(err)
		}
		for _, o := range objs {
			ok, found := res[o]
			if !found {
				return nil, unavailable(fmt.Errorf("the batch check gave no answer for %s", o))
			}
			r.decided[o] = ok
		}
		r.judge()
		if limited {
			r.emit()
			r.complete = len(r.out) >= k
			break
		}
		sel := r.observed(1)
		if r.q.Strategy == StrategyAuto && !r.triedPre && !r.bigSet && len(r.out) < k && r.judged >= minObserved && sel < r.low() &&
			!(r.exhausted && r.pos == len(r.pool)) {
			r.emit()
			if len(r.out) < k {
				hits, ok, err := r.preFilter(ctx)
				if err != nil || ok {
					return hits, err
				}
			}
		}
		r.emit()
		need := k - len(r.out)
		if need <= 0 {
			continue // done: the loop's top completes
		}
		if sel == 0 {
			sel = 1 / float64(2*r.judged)
		}
		// Sized from the selectivity seen so far (with a margin), not
		// doubled: a refill that needs one more permitted document should
		// not check twice as many as the first batch.
		batch = min(max(int(math.Ceil(float64(need)/sel*1.25)), minBatch), maxBatch)
	}
	if r.judged > 0 {
		e, _ := r.s.estimates().get(r.key)
		e.observe(r.permitted, r.judged)
		r.s.estimates().put(r.key, e)
	}
	return r.out, nil
}

// gather takes candidates in rank order until n objects not yet decided
// are collected, and returns those objects.
func (r *run) gather(n int) []string {
	var objs []string
	pending := map[string]bool{}
	for len(objs) < n {
		if r.pos == len(r.pool) {
			if r.exhausted {
				break
			}
			r.fetch(max(2*r.poolN, len(r.order)+4*n, 256))
			continue
		}
		c := r.pool[r.pos]
		r.pos++
		if r.taken[c.id] {
			continue
		}
		r.taken[c.id] = true
		r.order = append(r.order, c)
		r.candidates++
		if _, ok := r.decided[c.object]; ok || pending[c.object] {
			continue
		}
		pending[c.object] = true
		objs = append(objs, c.object)
	}
	return objs
}

// fetch replaces the pool with the top n candidates in scope (the ones
// already taken are skipped by gather).
func (r *run) fetch(n int) {
	s := r.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	idx := s.Index
	coll, typ := r.q.Collection, r.q.Type
	var allow func(int32) bool
	if typ != "" || s.collDocs[coll] != len(s.refs) {
		allow = func(slot int32) bool {
			// Search holds idx's read lock: idx.ids is stable.
			d, ok := s.refs[idx.ids[slot]]
			return ok && d.Collection == coll && (typ == "" || objectType(d.Object) == typ)
		}
	}
	hits := idx.Search(r.qv, n, allow)
	r.pool = r.pool[:0]
	for _, h := range hits {
		if d, ok := s.refs[h.ID]; ok {
			r.pool = append(r.pool, cand{id: h.ID, object: d.Object, score: h.Score})
		}
	}
	r.pos, r.poolN = 0, n
	r.exhausted = len(hits) < n
}

// judge counts the taken candidates whose objects are decided.
func (r *run) judge() {
	for r.judged < len(r.order) {
		ok, found := r.decided[r.order[r.judged].object]
		if !found {
			break
		}
		if ok {
			r.permitted++
		}
		r.judged++
	}
}

// emit appends the permitted candidates, in rank order, up to K.
func (r *run) emit() {
	for r.emitted < len(r.order) && len(r.out) < r.q.K {
		c := r.order[r.emitted]
		ok, found := r.decided[c.object]
		if !found {
			return
		}
		if ok {
			r.out = append(r.out, c)
		}
		r.emitted++
	}
}

// estimate is what a (user, relation, type, collection, condition
// context) has been seen to be permitted on, lately.
type estimate struct {
	sel float64 // permitted share of candidates: permitted / judged
	// Candidates judged and permitted, summed over queries with a decay:
	// one unlucky query does not swing the next one's batch size.
	permitted, judged float64
	big               bool      // ListObjects was truncated: the permitted set is too big to pre-filter
	bigAt             time.Time // when big was learnt (retried after bigSetRetry)
}

// Estimate smoothing: each query's share of the sums decays by
// estimateDecay per later query (about five queries of memory); a
// pre-filter's exact count weighs as estimateWeight candidates.
const (
	estimateDecay  = 0.8
	estimateWeight = 200
)

// observe folds a query's judged candidates into the estimate.
func (e *estimate) observe(permitted, judged int) {
	if judged == 0 {
		return
	}
	e.permitted = e.permitted*estimateDecay + float64(permitted)
	e.judged = e.judged*estimateDecay + float64(judged)
	e.sel = e.permitted / e.judged
}

// estimates is a small LRU of selectivity estimates.
type estimates struct {
	mu  sync.Mutex
	ll  *list.List
	m   map[string]*list.Element
	max int
}

type estimateEntry struct {
	key string
	e   estimate
}

func (s *Service) estimates() *estimates {
	s.estOnce.Do(func() {
		s.est = &estimates{ll: list.New(), m: map[string]*list.Element{}, max: estimatesLimit}
	})
	return s.est
}

func (c *estimates) get(key string) (estimate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return estimate{}, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*estimateEntry).e, true
}

func (c *estimates) put(key string, e estimate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		el.Value.(*estimateEntry).e = e
		c.ll.MoveToFront(el)
		return
	}
	c.m[key] = c.ll.PushFront(&estimateEntry{key, e})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*estimateEntry).key)
	}
}
