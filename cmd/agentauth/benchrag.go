package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/agentauth/agentauth/retrieval"
)

// The retrieval scale scenarios (issue 6, opt-in: --scenario
// retrieval.scale runs the four): FGA for RAG over --rag-docs documents of
// --rag-dim random unit vectors, one OpenFGA object each, on an embedded
// OpenFGA in a temporary dir, with four users permitted on 100%, 10%, 1%
// and 0.1% of the documents (direct viewer tuples, written in bulk). Each
// scenario is one user: the operation is Service.Query (strategy auto,
// k = 10) as that user, the limit the unfiltered Index.Search top 10 on
// the same index. Beside the table, on stderr, each scenario reports:
// recall@10 of the operation and of the naive top-k-then-check filter
// (search the top 10 unfiltered, batch-check those 10, keep the permitted
// ones: Auth0's FGARetriever) against the exact top 10 among permitted
// documents (brute force in float64 over the permitted set the bench
// wrote), the naive filter's latency and the documents it returns, and
// the OpenFGA work per query. The four share one fixture, built by the
// first of them to run.
var ragLevels = []ragLevel{
	{"retrieval@100%", 1, "user:rag-all"},
	{"retrieval@10%", 0.1, "user:rag-10pct"},
	{"retrieval@1%", 0.01, "user:rag-1pct"},
	{"retrieval@0.1%", 0.001, "user:rag-01pct"},
}

type ragLevel struct {
	scenario string
	share    float64 // of the documents the user may see
	user     string
}

// ragRecallQueries is how many fixed queries measure recall (a variable
// so that the test can keep its race-enabled run short).
var ragRecallQueries = 100

const (
	ragScaleName    = "retrieval.scale" // names the four scenarios at once
	ragPrefix       = "retrieval@"
	ragK            = 10
	ragTimedQueries = 1024 // distinct query vectors the timed operations cycle through
	ragModel        = `model
  schema 1.1

type user

type doc
  relations
    define viewer: [user]
    define can_view: viewer
`
)

// expandRAGScenarios replaces retrieval.scale with the four retrieval@
// scenarios.
func expandRAGScenarios(names []string) []string {
	var out []string
	for _, n := range names {
		if n == ragScaleName {
			for _, l := range ragLevels {
				out = append(out, l.scenario)
			}
			continue
		}
		out = append(out, n)
	}
	return out
}

// ragScenario is the setup of one retrieval@ scenario; the fixture is
// f's, built on first use and closed after the last selected retrieval@
// scenario (or by closeRAG).
func ragScenario(f *benchFlags, errw io.Writer, name string) func(context.Context, *benchEnv) (benchOp, benchOp, func(), error) {
	if f.rag == nil {
		rb := &ragBench{f: f, errw: errw, docs: f.ragDocs, dim: f.ragDim}
		if rb.docs <= 0 {
			rb.docs = 100000
		}
		if rb.dim <= 0 {
			rb.dim = 384
		}
		for _, n := range f.scenarios {
			if strings.HasPrefix(n, ragPrefix) {
				rb.remaining++
			}
		}
		f.rag = rb
	}
	level := slices.IndexFunc(ragLevels, func(l ragLevel) bool { return l.scenario == name })
	return func(ctx context.Context, _ *benchEnv) (benchOp, benchOp, func(), error) {
		return f.rag.setup(ctx, level)
	}
}

// closeRAG releases the fixture at the end of a run (it is already
// closed unless the run ended before its last retrieval@ scenario).
func closeRAG(f *benchFlags) {
	if f.rag != nil {
		f.rag.close()
		f.rag = nil
	}
}

// ragVectorsOnly is the Service's embedder: every document and query
// carries its vector, so it is never asked to embed.
type ragVectorsOnly int

func (d ragVectorsOnly) Dimensions() int { return int(d) }
func (ragVectorsOnly) Name() string      { return "bench-vectors" }
func (ragVectorsOnly) Embed(context.Context, []string) ([][]float32, error) {
	return nil, errors.New("the retrieval bench gives every vector")
}

type ragBench struct {
	f         *benchFlags
	errw      io.Writer
	docs, dim int
	remaining int

	once      sync.Once
	err       error
	closeOnce sync.Once

	dir     string
	stopFGA func()
	fga     *retrieval.FGA
	store   *retrieval.DocStore
	svc     *retrieval.Service
	idx     *retrieval.Index

	vecs    []float32 // docs·dim, the documents' unit vectors
	perm    []int     // level l's user may see documents perm[:counts[l]]
	counts  []int
	recallQ [][]float32
	truth   [][][]int // level → recall query → the exact top k among permitted, best first
	timedQ  [][]float32

	rows []ragRow
}

// ragRow is one scenario's report.
type ragRow struct {
	scenario                   string
	permitted                  int
	recall, naiveRecall        float64
	naiveReturned              float64
	incomplete                 int
	queries, failed            int64
	fgaCalls, checks, pre, out float64
	naive                      []string // per concurrency: p50/p99
}

func ragID(i int) string         { return "d" + strconv.Itoa(i) }
func ragObject(id string) string { return "doc:" + id }

func (rb *ragBench) logf(format string, a ...any) {
	fmt.Fprintf(rb.errw, "retrieval: "+format+"\n", a...)
}

// build makes the fixture: OpenFGA and its tuples, the documents, the
// queries and the ground truth.
func (rb *ragBench) build(ctx context.Context) (err error) {
	n, dim := rb.docs, rb.dim
	rb.logf("building %d documents of %d dimensions, users permitted on 100%%, 10%%, 1%% and 0.1%% of them", n, dim)
	if rb.dir, err = os.MkdirTemp("", "agentauth-rag-scale-"); err != nil {
		return err
	}
	log := newLogger(rb.errw, "warn", "text")
	start := time.Now()
	url, stop, err := startOpenFGA(rb.dir, log)
	if err != nil {
		return err
	}
	rb.stopFGA = stop
	token, err := readOpenFGAToken(rb.dir)
	if err != nil {
		return err
	}
	if rb.fga, err = retrieval.NewFGA(ctx, retrieval.FGAConfig{URL: url, APIToken: token, StoreName: "rag-bench", ListObjectsMax: openFGAListObjectsMax}); err != nil {
		return err
	}
	if _, err := rb.fga.WriteModel(ctx, []byte(ragModel), nil); err != nil {
		return err
	}
	rb.logf("embedded OpenFGA (sqlite) started, store and model written in %v", time.Since(start).Round(time.Millisecond))

	// Vectors and permissions from one seeded generator.
	r := rand.New(rand.NewPCG(6, 6))
	rb.vecs = make([]float32, n*dim)
	for i := range n {
		randomUnitInto(r, rb.vecs[i*dim:(i+1)*dim])
	}
	rb.perm = r.Perm(n)
	var tuples []retrieval.Tuple
	for _, l := range ragLevels {
		c := max(1, int(math.Round(float64(n)*l.share)))
		rb.counts = append(rb.counts, c)
		for _, i := range rb.perm[:c] {
			tuples = append(tuples, retrieval.Tuple{User: l.user, Relation: "viewer", Object: ragObject(ragID(i))})
		}
	}
	rb.timedQ = make([][]float32, ragTimedQueries)
	for i := range rb.timedQ {
		rb.timedQ[i] = randomUnitInto(r, make([]float32, dim))
	}
	rb.recallQ = make([][]float32, ragRecallQueries)
	for i := range rb.recallQ {
		rb.recallQ[i] = randomUnitInto(r, make([]float32, dim))
	}

	// Tuples: calls of 100 (FGA.WriteTuples), from a few writers at once.
	start = time.Now()
	const part, writers = 2000, 4
	var next atomic.Int64
	errs := make(chan error, writers)
	for range writers {
		go func() {
			for {
				lo := int(next.Add(part)) - part
				if lo >= len(tuples) {
					errs <- nil
					return
				}
				if err := rb.fga.WriteTuples(ctx, tuples[lo:min(lo+part, len(tuples))]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range writers {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return fmt.Errorf("writing tuples: %w", err)
	}
	took := time.Since(start)
	rb.logf("wrote %d tuples (one OpenFGA object per document) in %v: %.0f tuples/s (calls of 100, %d writers)", len(tuples), took.Round(time.Millisecond), float64(len(tuples))/took.Seconds(), writers)

	// Documents: a DocStore in the temporary dir, the index in memory.
	if rb.store, err = retrieval.OpenDocStore(filepath.Join(rb.dir, "docs")); err != nil {
		return err
	}
	rb.idx = retrieval.NewIndex(dim)
	rb.svc = &retrieval.Service{Docs: rb.store, Index: rb.idx, Embedder: ragVectorsOnly(dim), Checker: rb.fga, Log: log, PreFilterMax: openFGAListObjectsMax}
	if err := rb.svc.Open(ctx); err != nil {
		return err
	}
	start = time.Now()
	const batch = 1000
	for lo := 0; lo < n; lo += batch {
		docs := make([]retrieval.Document, 0, batch)
		for i := lo; i < min(lo+batch, n); i++ {
			id := ragID(i)
			docs = append(docs, retrieval.Document{ID: id, Object: ragObject(id), Text: "bench document " + id, Vector: rb.vecs[i*dim : (i+1)*dim]})
		}
		if err := rb.svc.Ingest(ctx, docs); err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
	}
	took = time.Since(start)
	rb.logf("ingested %d documents (synced batches of %d) in %v: %.0f documents/s", n, batch, took.Round(time.Millisecond), float64(n)/took.Seconds())

	// The exact top k among each user's permitted documents.
	start = time.Now()
	rb.truth = make([][][]int, len(ragLevels))
	for l := range ragLevels {
		rb.truth[l] = make([][]int, len(rb.recallQ))
	}
	var wg sync.WaitGroup
	var qn atomic.Int64
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			scores := make([]float64, n)
			for {
				j := int(qn.Add(1)) - 1
				if j >= len(rb.recallQ) {
					return
				}
				q := rb.recallQ[j]
				for i := range n {
					scores[i] = dot64(q, rb.vecs[i*dim:(i+1)*dim])
				}
				for l := range ragLevels {
					rb.truth[l][j] = topAmong(scores, rb.perm[:rb.counts[l]], ragK)
				}
			}
		})
	}
	wg.Wait()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rb.logf("exact top %d of %d recall queries computed in %v; process resident memory %s (Go heap in use %d MiB: the index's vectors, the bench's own copy for the ground truth, the service)",
		ragK, len(rb.recallQ), time.Since(start).Round(time.Millisecond), rss(), ms.HeapInuse>>20)
	return nil
}

// setup runs the recall pass and the naive filter's timing for level,
// and returns the timed operation and its limit.
func (rb *ragBench) setup(ctx context.Context, level int) (benchOp, benchOp, func(), error) {
	rb.once.Do(func() { rb.err = rb.build(ctx) })
	if rb.err != nil {
		rb.close()
		return nil, nil, nil, rb.err
	}
	l := ragLevels[level]
	row := ragRow{scenario: l.scenario, permitted: rb.counts[level]}
	q := func(v []float32) retrieval.Query {
		return retrieval.Query{User: l.user, Vector: v, K: ragK}
	}
	naive := func(ctx context.Context, v []float32) ([]string, error) {
		hits := rb.idx.Search(v, ragK, nil)
		objs := make([]string, len(hits))
		for i, h := range hits {
			objs[i] = ragObject(h.ID)
		}
		ok, err := rb.fga.BatchCheck(ctx, l.user, retrieval.DefaultRelation, objs, retrieval.ConsistencyDefault)
		if err != nil {
			return nil, err
		}
		var kept []string
		for i, h := range hits {
			if ok[objs[i]] {
				kept = append(kept, h.ID)
			}
		}
		return kept, nil
	}

	// Recall, against the exact top k among the permitted documents.
	var recall, naiveRecall, naiveReturned float64
	for j, v := range rb.recallQ {
		truth := make(map[string]bool, ragK)
		for _, i := range rb.truth[level][j] {
			truth[ragID(i)] = true
		}
		res, err := rb.svc.Query(ctx, q(v))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("recall query: %w", err)
		}
		ids := make([]string, len(res.Docs))
		for i, d := range res.Docs {
			ids[i] = d.ID
		}
		recall += overlap(ids, truth)
		kept, err := naive(ctx, v)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("naive query: %w", err)
		}
		naiveRecall += overlap(kept, truth)
		naiveReturned += float64(len(kept))
	}
	nq := float64(len(rb.recallQ))
	row.recall, row.naiveRecall, row.naiveReturned = recall/nq, naiveRecall/nq, naiveReturned/nq
	rb.logf("%s: %d of %d documents permitted; over %d queries recall@%d %.3f, naive top-%d-then-check %.3f (returns %.2f documents on average)",
		l.scenario, row.permitted, rb.docs, len(rb.recallQ), ragK, row.recall, ragK, row.naiveRecall, row.naiveReturned)

	// The naive filter's latency, measured like the table's rows.
	var next atomic.Int64
	pick := func() []float32 { return rb.timedQ[int(next.Add(1))%len(rb.timedQ)] }
	naiveOp := func(ctx context.Context) error {
		_, err := naive(ctx, pick())
		return err
	}
	for _, c := range rb.f.concurrency {
		if c <= 0 {
			continue
		}
		measure(ctx, naiveOp, rb.f.warmup, c, nil)
		var st []Stats
		for range rb.f.rounds {
			st = append(st, measure(ctx, naiveOp, rb.f.n, c, nil))
		}
		s := medianStats(st)
		row.naive = append(row.naive, fmt.Sprintf("c=%d %s/%s", c, fmtDur(s.P50), fmtDur(s.P99)))
		rb.logf("%s: naive top-%d-then-check c=%d %d×%d: p50 %s p99 %s %.0f req/s, %d errors", l.scenario, ragK, c, rb.f.n, rb.f.rounds, fmtDur(s.P50), fmtDur(s.P99), s.Throughput, s.Errors)
	}

	var queries, calls, checks, pre, incomplete, failed atomic.Int64
	var firstErr atomic.Value
	op := func(ctx context.Context) error {
		res, err := rb.svc.Query(ctx, q(pick()))
		if err != nil {
			if failed.Add(1) == 1 {
				firstErr.Store(err.Error())
			}
			return err
		}
		queries.Add(1)
		calls.Add(int64(res.FGACalls))
		checks.Add(int64(res.Checks))
		if res.Strategy == retrieval.StrategyPreFilter {
			pre.Add(1)
		}
		if !res.Complete {
			incomplete.Add(1)
		}
		return nil
	}
	base := func(context.Context) error {
		rb.idx.Search(pick(), ragK, nil)
		return nil
	}
	cleanup := func() {
		row.queries, row.failed = queries.Load(), failed.Load()
		if row.queries > 0 {
			d := float64(row.queries)
			row.fgaCalls, row.checks, row.pre = float64(calls.Load())/d, float64(checks.Load())/d, float64(pre.Load())/d
		}
		row.incomplete = int(incomplete.Load())
		rb.logf("%s: %d timed queries (warm-up included): %.2f FGA calls and %.0f objects checked per query, pre-filter %.0f%%, %d incomplete",
			l.scenario, row.queries, row.fgaCalls, row.checks, 100*row.pre, row.incomplete)
		if n := failed.Load(); n > 0 {
			rb.logf("%s: %d queries failed, the first with: %v", l.scenario, n, firstErr.Load())
		}
		rb.rows = append(rb.rows, row)
		if rb.remaining--; rb.remaining <= 0 {
			rb.summary()
			rb.close()
		}
	}
	return op, base, cleanup, nil
}

// summary prints the side-by-side recall and OpenFGA work of the
// scenarios run.
func (rb *ragBench) summary() {
	fmt.Fprintf(rb.errw, "retrieval: %d documents × %d dimensions, k = %d, recall over %d queries; naive = top %d unfiltered, then one batch check (p50/p99)\n",
		rb.docs, rb.dim, ragK, len(rb.recallQ), ragK)
	tw := tabwriter.NewWriter(rb.errw, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tpermitted\trecall@10\tFGA calls/q\tchecks/q\tpre-filter\tincomplete\tfailed\t|\tnaive recall@10\tnaive returned\tnaive latency\t")
	for _, r := range rb.rows {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.2f\t%.0f\t%.0f%%\t%d\t%d\t|\t%.3f\t%.2f\t%s\t\n", r.scenario, r.permitted, r.recall, r.fgaCalls, r.checks, 100*r.pre, r.incomplete, r.failed,
			r.naiveRecall, r.naiveReturned, strings.Join(r.naive, ", "))
	}
	_ = tw.Flush()
}

func (rb *ragBench) close() {
	rb.closeOnce.Do(func() {
		if rb.svc != nil {
			_ = rb.svc.Close()
		}
		if rb.store != nil {
			_ = rb.store.Close()
		}
		if rb.stopFGA != nil {
			rb.stopFGA()
		}
		if rb.dir != "" {
			_ = os.RemoveAll(rb.dir)
		}
		rb.vecs, rb.truth = nil, nil
	})
}

// randomUnitInto fills v with a random unit vector (normal components,
// normalized in float64) and returns it.
func randomUnitInto(r *rand.Rand, v []float32) []float32 {
	var ss float64
	f := make([]float64, len(v))
	for i := range f {
		f[i] = r.NormFloat64()
		ss += f[i] * f[i]
	}
	inv := 1 / math.Sqrt(ss)
	for i := range v {
		v[i] = float32(f[i] * inv)
	}
	return v
}

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// topAmong returns the k best of candidates by score, best first, equal
// scores by id (as the index ranks them).
func topAmong(scores []float64, candidates []int, k int) []int {
	better := func(a, b int) bool {
		if scores[a] != scores[b] {
			return scores[a] > scores[b]
		}
		return ragID(a) < ragID(b)
	}
	top := make([]int, 0, k+1)
	for _, c := range candidates {
		if len(top) == k && !better(c, top[k-1]) {
			continue
		}
		i := sort.Search(len(top), func(i int) bool { return better(c, top[i]) })
		top = slices.Insert(top, i, c)
		if len(top) > k {
			top = top[:k]
		}
	}
	return top
}

// overlap is the share of truth found in got (1 when truth is empty).
func overlap(got []string, truth map[string]bool) float64 {
	if len(truth) == 0 {
		return 1
	}
	n := 0
	for _, id := range got {
		if truth[id] {
			n++
		}
	}
	return float64(n) / float64(len(truth))
}
