package retrieval

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentauth/agentauth/schemas"
)

// The strategy's tests come in two kinds. The acceptance tests
// (TestQueryOpenFGA…) run against a real OpenFGA (pkg/server behind its
// HTTP gateway, fga_test.go's mustOpenFGA) through FGA. The pure-strategy
// tests (TestQueryStrategy…) use memChecker, a Checker over a tuple set in
// memory, only to observe and steer what the strategy asks: refill order,
// batch sizes, truncation fallback, injected errors.

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// mustService is a Service on a temporary DocStore and index file with
// the Lexical embedder, opened, closed at the end of the test.
func mustService(tb testing.TB, c Checker) *Service {
	tb.Helper()
	dir := tb.TempDir()
	s := &Service{
		Docs:      mustDocStoreIn(tb, filepath.Join(dir, "docs")),
		Embedder:  Lexical{},
		Checker:   c,
		IndexPath: filepath.Join(dir, "vectors.idx"),
		SaveDelay: 20 * time.Millisecond,
		Log:       quietLog,
	}
	if err := s.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// corpus is what a test ingested: each document's vector and object.
type corpus struct {
	vec map[string][]float32
	obj map[string]string
}

// ingestRandom ingests n documents with random vectors, perObject
// documents per object doc:0, doc:1, …
func ingestRandom(tb testing.TB, s *Service, n, perObject int, seed uint64) corpus {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	c := corpus{vec: map[string][]float32{}, obj: map[string]string{}}
	var batch []Document
	for i := range n {
		id := fmt.Sprintf("d%05d", i)
		d := Document{ID: id, Object: fmt.Sprintf("doc:%d", i/perObject), Text: "text of " + id, Vector: randomUnit(r, 384)}
		c.vec[id], c.obj[id] = d.Vector, d.Object
		batch = append(batch, d)
		if len(batch) == 1000 || i == n-1 {
			if err := s.Ingest(context.Background(), batch); err != nil {
				tb.Fatal(err)
			}
			batch = nil
		}
	}
	return c
}

// want is the brute-force answer: the top k documents whose object ok
// accepts.
func (c corpus) want(q []float32, k int, ok func(object string) bool) []string {
	return bruteForce(q, c.vec, k, func(id string) bool { return ok(c.obj[id]) })
}

func resultIDs(r Result) []string {
	ids := []string{}
	for _, d := range r.Docs {
		ids = append(ids, d.ID)
	}
	return ids
}

// memChecker is a Checker over a set of tuples in memory, for the
// pure-strategy tests only. It records the objects of every BatchCheck.
type memChecker struct {
	mu       sync.Mutex
	allowed  map[string]bool // "user relation object"
	batches  [][]string
	lists    int
	opts     []FGAOptions         // of every call
	listMax  int                  // > 0: ListObjects reports truncated from this many objects
	batchErr func(call int) error // call counts from 1
	listErr  error
	omit     string // an object BatchCheck leaves out of its answers
}

func newMemChecker() *memChecker { return &memChecker{allowed: map[string]bool{}} }

func (m *memChecker) allow(user, relation string, objects ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range objects {
		m.allowed[user+" "+relation+" "+o] = true
	}
}

func (m *memChecker) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches, m.lists, m.opts = nil, 0, nil
}

func (m *memChecker) calls() (batches [][]string, lists int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.batches), m.lists
}

func (m *memChecker) BatchCheckWith(ctx context.Context, user, relation string, objects []string, o FGAOptions) (map[string]bool, error) {
	m.mu.Lock()
	m.batches = append(m.batches, slices.Clone(objects))
	m.opts = append(m.opts, o)
	n := len(m.batches)
	m.mu.Unlock()
	if m.batchErr != nil {
		if err := m.batchErr(n); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, o := range objects {
		if o != m.omit {
			out[o] = m.allowed[user+" "+relation+" "+o]
		}
	}
	return out, nil
}

func (m *memChecker) ListObjectsWith(ctx context.Context, user, relation, typ string, max int, o FGAOptions) ([]string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lists++
	m.opts = append(m.opts, o)
	if m.listErr != nil {
		return nil, false, m.listErr
	}
	var objs []string
	for k := range m.allowed {
		if rest, ok := strings.CutPrefix(k, user+" "+relation+" "); ok && strings.HasPrefix(rest, typ+":") {
			objs = append(objs, rest)
		}
	}
	sort.Strings(objs)
	truncated := m.listMax > 0 && len(objs) >= m.listMax
	if truncated {
		objs = objs[:m.listMax]
	}
	if max > 0 && len(objs) > max {
		objs, truncated = objs[:max], true
	}
	return objs, truncated, nil
}

// TestQueryStrategyRefill: the post-filter checks candidates in rank
// order, each object once, in growing batches, and returns exactly the
// top k permitted.
func TestQueryStrategyRefill(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	c := ingestRandom(t, s, 2000, 2, 1) // 1,000 objects, 2 documents each
	few := map[string]bool{}
	for i := 0; i < 1000; i += 100 { // 1% of the objects
		few[fmt.Sprint("doc:", i+7)] = true
	}
	m.allow("user:few", "can_view", slices.Collect(maps.Keys(few))...)
	r := rand.New(rand.NewPCG(2, 2))
	for n := range 3 {
		q := randomUnit(r, 384)
		m.reset()
		res, err := s.Query(ctx, Query{User: "user:few", Vector: q, K: 5, Strategy: StrategyPostFilter})
		if err != nil {
			t.Fatal(err)
		}
		want := c.want(q, 5, func(o string) bool { return few[o] })
		if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete || res.Strategy != StrategyPostFilter {
			t.Fatalf("got %v complete %v %s, want %v complete post-filter", got, res.Complete, res.Strategy, want)
		}
		batches, lists := m.calls()
		if lists != 0 || res.FGACalls != len(batches) {
			t.Errorf("%d ListObjects, FGACalls %d for %d batches", lists, res.FGACalls, len(batches))
		}
		checked := map[string]bool{}
		total := 0
		for i, b := range batches {
			// The first query knows nothing of the user: one chunk. The
			// next ones size their first batch from the selectivity seen.
			if i == 0 && n == 0 && len(b) != firstChunk {
				t.Errorf("first batch of %d objects, want %d", len(b), firstChunk)
			}
			if i == 0 && n > 0 && len(b) <= firstChunk {
				t.Errorf("query %d: first batch of %d objects, want more than %d for a selectivity of 1%%", n, len(b), firstChunk)
			}
			if i > 0 && i < len(batches)-1 && len(b) < len(batches[i-1]) {
				t.Errorf("batch %d (%d objects) smaller than batch %d (%d)", i, len(b), i-1, len(batches[i-1]))
			}
			if len(b) > maxBatch {
				t.Errorf("batch of %d objects", len(b))
			}
			for _, o := range b {
				if checked[o] {
					t.Errorf("%s checked twice", o)
				}
				checked[o] = true
			}
			total += len(b)
		}
		if res.Checks != total {
			t.Errorf("Checks %d, %d objects checked", res.Checks, total)
		}
		// What was checked is exactly the objects of the first
		// Candidates documents in rank order.
		ranked := c.want(q, res.Candidates, func(string) bool { return true })
		prefix := map[string]bool{}
		for _, id := range ranked {
			prefix[c.obj[id]] = true
		}
		if !maps.Equal(prefix, checked) {
			t.Errorf("checked %d objects, the first %d candidates have %d: not the rank-order prefix", len(checked), res.Candidates, len(prefix))
		}
		for _, d := range res.Docs {
			if d.Vector != nil || d.Text != "text of "+d.ID || d.Object != c.obj[d.ID] || d.Collection != DefaultCollection {
				t.Errorf("returned document %+v", d.Document)
			}
		}
	}
}

// TestQueryStrategyRefillSize: a refill is sized for the documents still
// missing, not for k again.
func TestQueryStrategyRefillSize(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	c := ingestRandom(t, s, 1000, 1, 3)
	q := randomUnit(rand.New(rand.NewPCG(3, 3)), 384)
	ranked := c.want(q, 1000, func(string) bool { return true })
	// 4 of the first chunk's 50 objects, then one far down the ranking.
	var allowed []string
	for _, rank := range []int{2, 11, 23, 40, 300} {
		allowed = append(allowed, c.obj[ranked[rank]])
	}
	m.allow("user:some", "can_view", allowed...)
	res, err := s.Query(ctx, Query{User: "user:some", Vector: q, K: 5, Strategy: StrategyPostFilter})
	if err != nil {
		t.Fatal(err)
	}
	batches, _ := m.calls()
	if got, want := resultIDs(res), c.want(q, 5, func(o string) bool { return slices.Contains(allowed, o) }); !slices.Equal(got, want) || !res.Complete {
		t.Fatalf("got %v complete %v, want %v complete", got, res.Complete, want)
	}
	// After 4 of 50: one missing at a selectivity of 8% is 1/0.08×1.25
	// ≈ 16 objects, so the smallest refill; sized for 5 it would be 79.
	if len(batches) < 2 || len(batches[0]) != firstChunk || len(batches[1]) != minBatch {
		sizes := []int{}
		for _, b := range batches {
			sizes = append(sizes, len(b))
		}
		t.Errorf("batches of %v objects, want %d then %d", sizes, firstChunk, minBatch)
	}
}

// TestQueryStrategyExhaustive: a user permitted on nothing gets an empty,
// complete answer after every object was checked once; one permitted on
// half gets k after one batch.
func TestQueryStrategyExhaustive(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	c := ingestRandom(t, s, 600, 3, 3) // 200 objects
	var half []string
	for i := 0; i < 200; i += 2 {
		half = append(half, fmt.Sprint("doc:", i))
	}
	m.allow("user:half", "can_view", half...)
	q := randomUnit(rand.New(rand.NewPCG(4, 4)), 384)

	res, err := s.Query(ctx, Query{User: "user:none", Vector: q, K: 10, Strategy: StrategyPostFilter})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Docs) != 0 || !res.Complete || res.Checks != 200 || res.Candidates != 600 {
		t.Errorf("user:none: %d docs, complete %v, %d checks, %d candidates; want 0, true, 200, 600", len(res.Docs), res.Complete, res.Checks, res.Candidates)
	}
	m.reset()
	res, err = s.Query(ctx, Query{User: "user:half", Vector: q, K: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := c.want(q, 10, func(o string) bool { return slices.Contains(half, o) })
	if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete || res.FGACalls != 1 || res.Strategy != StrategyPostFilter {
		t.Errorf("user:half: %v complete %v, %d FGA calls, %s; want %v, one call, post-filter", got, res.Complete, res.FGACalls, res.Strategy, want)
	}
	// The second query sizes its first batch from the selectivity seen.
	m.reset()
	res, err = s.Query(ctx, Query{User: "user:half", Vector: q, K: 10})
	if err != nil || !slices.Equal(resultIDs(res), want) {
		t.Fatalf("again: %v, %v", resultIDs(res), err)
	}
	if b, _ := m.calls(); len(b) != 1 || len(b[0]) >= firstChunk || len(b[0]) < 10 {
		t.Errorf("second query's first batch: %d objects, want fewer than %d (selectivity ≈ 0.5)", len(b[0]), firstChunk)
	}
}

// TestQueryStrategyPreFilter: the pre-filter scores only the permitted
// documents; a truncated list falls back to the post-filter; "auto"
// switches when selectivity is low and goes straight to the pre-filter
// for that user next time.
func TestQueryStrategyPreFilter(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	c := ingestRandom(t, s, 2000, 2, 5)
	few := map[string]bool{}
	for i := range 10 {
		few[fmt.Sprint("doc:", i*97+3)] = true
	}
	m.allow("user:few", "can_view", slices.Collect(maps.Keys(few))...)
	isFew := func(o string) bool { return few[o] }
	r := rand.New(rand.NewPCG(6, 6))

	q := randomUnit(r, 384)
	want := c.want(q, 8, isFew)
	res, err := s.Query(ctx, Query{User: "user:few", Vector: q, K: 8, Strategy: StrategyPreFilter})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete || res.Strategy != StrategyPreFilter ||
		res.FGACalls != 1 || res.Checks != 0 || res.Candidates != 20 {
		t.Errorf("pre-filter: %v complete %v %s, %d calls, %d checks, %d candidates; want %v, complete, 1 call, 0 checks, 20 candidates",
			got, res.Complete, res.Strategy, res.FGACalls, res.Checks, res.Candidates, want)
	}

	// Truncated: never "no more": the post-filter answers.
	m.mu.Lock()
	m.listMax = 5
	m.mu.Unlock()
	m.reset()
	res, err = s.Query(ctx, Query{User: "user:few", Vector: q, K: 8, Strategy: StrategyPreFilter})
	if err != nil {
		t.Fatal(err)
	}
	batches, lists := m.calls()
	if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete || res.Strategy != StrategyPostFilter || lists != 1 || res.FGACalls != 1+len(batches) {
		t.Errorf("truncated pre-filter: %v complete %v %s, %d lists, %d calls for %d batches; want %v complete post-filter",
			got, res.Complete, res.Strategy, lists, res.FGACalls, len(batches), want)
	}
	m.mu.Lock()
	m.listMax = 0
	m.mu.Unlock()

	// auto, a user never seen: one chunk, then the pre-filter.
	s2 := mustService(t, m)
	c2 := ingestRandom(t, s2, 2000, 2, 5)
	m.reset()
	res, err = s2.Query(ctx, Query{User: "user:few", Vector: q, K: 8})
	if err != nil {
		t.Fatal(err)
	}
	batches, lists = m.calls()
	if got := resultIDs(res); !slices.Equal(got, c2.want(q, 8, isFew)) || !res.Complete || res.Strategy != StrategyPreFilter ||
		len(batches) != 1 || len(batches[0]) != firstChunk || lists != 1 || res.FGACalls != 2 {
		t.Errorf("auto: %v complete %v %s, %d batches, %d lists, %d calls; want the pre-filter after one chunk", got, res.Complete, res.Strategy, len(batches), lists, res.FGACalls)
	}
	// Next time it goes straight to the pre-filter.
	m.reset()
	q2 := randomUnit(r, 384)
	res, err = s2.Query(ctx, Query{User: "user:few", Vector: q2, K: 3})
	batches, lists = m.calls()
	if err != nil || !slices.Equal(resultIDs(res), c2.want(q2, 3, isFew)) || res.Strategy != StrategyPreFilter || len(batches) != 0 || lists != 1 {
		t.Errorf("auto again: %v, %s, %d batches, %d lists, %v; want the pre-filter only", resultIDs(res), res.Strategy, len(batches), lists, err)
	}
	// A user with too many objects for the pre-filter: auto falls back
	// and remembers it.
	var many []string
	for i := range 1000 {
		if i%50 != 0 {
			continue
		}
		many = append(many, fmt.Sprint("doc:", i))
	}
	m.allow("user:many", "can_view", many...)
	m.mu.Lock()
	m.listMax = 10
	m.mu.Unlock()
	defer func() { m.mu.Lock(); m.listMax = 0; m.mu.Unlock() }()
	isMany := func(o string) bool { return slices.Contains(many, o) }
	for i := range 2 {
		m.reset()
		res, err = s2.Query(ctx, Query{User: "user:many", Vector: q, K: 5})
		batches, lists = m.calls()
		if err != nil || !slices.Equal(resultIDs(res), c2.want(q, 5, isMany)) || !res.Complete || res.Strategy != StrategyPostFilter {
			t.Errorf("query %d for a user with a big set: %v complete %v %s %v", i, resultIDs(res), res.Complete, res.Strategy, err)
		}
		if wantLists := 1 - i; lists != wantLists {
			t.Errorf("query %d for a user with a big set: %d ListObjects, want %d", i, lists, wantLists)
		}
	}
	// Nor does a query whose own candidates look sparse list it again
	// mid-query: the estimate says high, the batches see few.
	var key string
	s2.estimates().mu.Lock()
	for k := range s2.estimates().m {
		if strings.HasPrefix(k, "user:many\x00") {
			key = k
		}
	}
	s2.estimates().mu.Unlock()
	e, ok := s2.estimates().get(key)
	if !ok || !e.big {
		t.Fatalf("estimate of the big set: %+v, %v", e, ok)
	}
	e.sel = 0.5
	s2.estimates().put(key, e)
	m.reset()
	res, err = s2.Query(ctx, Query{User: "user:many", Vector: q, K: 15})
	batches, lists = m.calls()
	if err != nil || !slices.Equal(resultIDs(res), c2.want(q, 15, isMany)) || !res.Complete || len(batches) < 2 || lists != 0 {
		t.Errorf("sparse-looking query for a user with a big set: %v complete %v, %d batches, %d ListObjects, %v; want the post-filter refilling without listing",
			resultIDs(res), res.Complete, len(batches), lists, err)
	}
}

// TestQueryStrategyScope: documents of another collection or another
// object type are neither checked nor returned.
func TestQueryStrategyScope(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	q := []float32{1}
	q = append(q, make([]float32, 383)...)
	near := func(x float32) []float32 { v := slices.Clone(q); v[1] = x; return v }
	docs := []Document{
		{ID: "a", Object: "doc:a", Vector: near(0.1)},
		{ID: "b", Object: "folder:b", Vector: near(0.2)},
		{ID: "c", Collection: "hr", Object: "doc:c", Vector: near(0.0)},
		{ID: "d", Object: "doc:d", Vector: near(0.3)},
	}
	if err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	m.allow("user:u", "can_view", "doc:a", "folder:b", "doc:c", "doc:d")
	for _, tt := range []struct {
		name     string
		q        Query
		want     []string
		checked  []string
		strategy string
	}{
		{"default collection, any type", Query{Strategy: StrategyPostFilter}, []string{"a", "b", "d"}, []string{"doc:a", "doc:d", "folder:b"}, StrategyPostFilter},
		{"type doc", Query{Type: "doc", Strategy: StrategyPostFilter}, []string{"a", "d"}, []string{"doc:a", "doc:d"}, StrategyPostFilter},
		{"collection hr", Query{Collection: "hr", Strategy: StrategyPostFilter}, []string{"c"}, []string{"doc:c"}, StrategyPostFilter},
		{"pre-filter, type doc", Query{Type: "doc", Strategy: StrategyPreFilter}, []string{"a", "d"}, nil, StrategyPreFilter},
		{"pre-filter, any type", Query{Strategy: StrategyPreFilter}, []string{"a", "b", "d"}, nil, StrategyPreFilter},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.reset()
			tt.q.User, tt.q.Vector, tt.q.K = "user:u", q, 10
			res, err := s.Query(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var checked []string
			batches, _ := m.calls()
			for _, b := range batches {
				checked = append(checked, b...)
			}
			slices.Sort(checked)
			if got := resultIDs(res); !slices.Equal(got, tt.want) || !slices.Equal(checked, tt.checked) || res.Strategy != tt.strategy || !res.Complete {
				t.Errorf("got %v (checked %v, %s, complete %v), want %v (checked %v, %s)", got, checked, res.Strategy, res.Complete, tt.want, tt.checked, tt.strategy)
			}
		})
	}
}

// TestQueryStrategyFailClosed: any Checker error, or a check without an
// answer, gives no documents and an unavailable error.
func TestQueryStrategyFailClosed(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	ingestRandom(t, s, 1000, 1, 7)
	var objs []string
	for i := 0; i < 1000; i += 40 {
		objs = append(objs, fmt.Sprint("doc:", i))
	}
	m.allow("user:u", "can_view", objs...)
	injected := errors.New("connection refused")
	q := randomUnit(rand.New(rand.NewPCG(8, 8)), 384)
	for _, tt := range []struct {
		name  string
		setup func()
		q     Query
	}{
		{"first batch fails", func() { m.batchErr = func(int) error { return injected } }, Query{Strategy: StrategyPostFilter}},
		{"a refill fails", func() {
			m.batchErr = func(n int) error {
				if n >= 2 {
					return injected
				}
				return nil
			}
		}, Query{Strategy: StrategyPostFilter, K: 20}},
		{"a check without an answer", func() { m.omit = "doc:40" }, Query{Strategy: StrategyPostFilter, K: 25}},
		{"ListObjects fails", func() { m.listErr = injected }, Query{Strategy: StrategyPreFilter}},
		{"ListObjects fails after auto switched", func() { m.listErr = injected }, Query{User: "user:new", Strategy: StrategyAuto}},
		{"a deadline", func() { m.batchErr = func(int) error { return context.DeadlineExceeded } }, Query{Strategy: StrategyAuto}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m.mu.Lock()
			m.batchErr, m.omit, m.listErr = nil, "", nil
			m.mu.Unlock()
			tt.setup()
			if tt.q.User == "" {
				tt.q.User = "user:u"
			}
			tt.q.Vector = q
			res, err := s.Query(ctx, tt.q)
			var e *Error
			if !errors.As(err, &e) || e.Code != schemas.CodeUnavailable || !strings.Contains(e.Msg, "OpenFGA") {
				t.Fatalf("Query: %v, want an unavailable *Error naming OpenFGA", err)
			}
			if tt.name != "a check without an answer" && !errors.Is(err, injected) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the cause is not wrapped: %v", err)
			}
			if len(res.Docs) != 0 || res.Complete {
				t.Errorf("fail closed returned %d documents, complete %v", len(res.Docs), res.Complete)
			}
		})
	}
	m.batchErr, m.omit, m.listErr = nil, "", nil
}

// TestQueryStrategyMaxChecks: a bounded post-filter says it is not
// complete, and what it returns is still the top of the permitted ones.
func TestQueryStrategyMaxChecks(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	s.MaxChecks = 60
	c := ingestRandom(t, s, 1000, 1, 9)
	allowed := map[string]bool{}
	for i := 0; i < 1000; i += 25 {
		allowed[fmt.Sprint("doc:", i)] = true
	}
	m.allow("user:u", "can_view", slices.Collect(maps.Keys(allowed))...)
	q := randomUnit(rand.New(rand.NewPCG(10, 10)), 384)
	res, err := s.Query(ctx, Query{User: "user:u", Vector: q, K: 10, Strategy: StrategyPostFilter})
	if err != nil {
		t.Fatal(err)
	}
	want := c.want(q, 10, func(o string) bool { return allowed[o] })
	got := resultIDs(res)
	if res.Complete || res.Checks > 60 || len(got) >= 10 || !slices.Equal(got, want[:len(got)]) {
		t.Errorf("bounded: %v complete %v, %d checks; want a prefix of %v, incomplete, ≤ 60 checks", got, res.Complete, res.Checks, want)
	}
}

func TestIngestValidation(t *testing.T) {
	ctx := context.Background()
	s := mustService(t, newMemChecker())
	if err := s.Ingest(ctx, []Document{{ID: "ok", Object: "doc:ok", Text: "fine"}}); err != nil {
		t.Fatal(err)
	}
	v := make([]float32, 384)
	v[0] = 1
	nan := slices.Clone(v)
	nan[3] = float32(nanValue())
	for _, tt := range []struct {
		name string
		doc  Document
		msg  string
	}{
		{"empty id", Document{Object: "doc:a", Text: "x"}, "id"},
		{"bad id", Document{ID: "a b", Object: "doc:a", Text: "x"}, "id"},
		{"bad collection", Document{ID: "a", Collection: "HR", Object: "doc:a", Text: "x"}, "collection"},
		{"no object", Document{ID: "a", Text: "x"}, "object"},
		{"object without type", Document{ID: "a", Object: "2021-roadmap", Text: "x"}, "object"},
		{"object with a relation", Document{ID: "a", Object: "group:eng#member", Text: "x"}, "object"},
		{"nothing to index", Document{ID: "a", Object: "doc:a"}, "neither text nor vector"},
		{"wrong dimensions", Document{ID: "a", Object: "doc:a", Vector: []float32{1, 2, 3}}, "3 dimensions"},
		{"a NaN", Document{ID: "a", Object: "doc:a", Vector: nan}, "NaN"},
		{"zero vector", Document{ID: "a", Object: "doc:a", Vector: make([]float32, 384)}, "zero"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			good := Document{ID: "good", Object: "doc:good", Text: "good"}
			err := s.Ingest(ctx, []Document{good, tt.doc})
			var e *Error
			if !errors.As(err, &e) || e.Code != schemas.CodeSchemaViolation || !errors.Is(err, ErrInvalid) || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("Ingest: %v; want a schema_violation mentioning %q", err, tt.msg)
			}
			if s.Docs.Count() != 1 || s.Index.Len() != 1 {
				t.Errorf("an invalid batch changed something: %d documents, %d vectors", s.Docs.Count(), s.Index.Len())
			}
		})
	}
	err := s.Ingest(ctx, []Document{{ID: "a", Object: "doc:a", Text: "x"}, {ID: "a", Object: "doc:b", Text: "y"}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("a repeated id: %v", err)
	}
	for _, q := range []Query{
		{User: "alice", Text: "x"},
		{User: "user:alice"},
		{User: "user:alice", Text: "x", K: MaxK + 1},
		{User: "user:alice", Text: "x", K: -1},
		{User: "user:alice", Text: "x", Relation: "can view"},
		{User: "user:alice", Text: "x", Strategy: "magic"},
		{User: "user:alice", Text: "x", Consistency: "STRONG"},
		{User: "user:alice", Vector: []float32{1, 2}},
		{User: "user:alice", Text: "!!! ???"}, // no words: a zero vector
	} {
		if _, err := s.Query(ctx, q); !errors.Is(err, ErrInvalid) {
			t.Errorf("Query(%+v): %v, want ErrInvalid", q, err)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

// TestServiceText: texts are embedded by the Lexical embedder, and the
// document it comes back with is the one ingested.
func TestServiceText(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	s.Now = func() time.Time { return time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC) }
	docs := []Document{
		{ID: "roadmap-2021", Object: "doc:roadmap-2021", Text: "The 2021 product roadmap: search, sharing and mobile.", Metadata: map[string]any{"owner": "anne"}},
		{ID: "roadmap-2022", Object: "doc:roadmap-2022", Text: "The 2022 product roadmap: agents and approvals."},
		{ID: "salaries", Object: "doc:salaries", Text: "Salaries of the product team in 2021."},
		{ID: "recipes", Object: "doc:recipes", Text: "Chocolate cake and lemon tart."},
	}
	if err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	m.allow("user:anne", "can_view", "doc:roadmap-2021", "doc:roadmap-2022", "doc:recipes")
	res, err := s.Query(ctx, Query{User: "user:anne", Text: "product roadmap 2021", K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIDs(res); !slices.Equal(got, []string{"roadmap-2021", "roadmap-2022"}) || !res.Complete {
		t.Fatalf("got %v complete %v, want [roadmap-2021 roadmap-2022]", got, res.Complete)
	}
	d := res.Docs[0]
	if d.Text != docs[0].Text || d.Metadata["owner"] != "anne" || d.Embedder != "lexical-384-v1" || !d.Updated.Equal(s.Now()) ||
		d.Collection != "default" || d.Score < res.Docs[1].Score || d.Score > 1.0001 {
		t.Errorf("returned %+v score %v (next %v), updated %v", d.Document, d.Score, res.Docs[1].Score, d.Updated.Equal(s.Now()))
	}
	// Delete: gone from the answers, unknown ids ignored.
	n, err := s.Delete(ctx, []string{"roadmap-2021", "nope"})
	if err != nil || n != 1 {
		t.Fatalf("Delete: %d, %v", n, err)
	}
	res, err = s.Query(ctx, Query{User: "user:anne", Text: "product roadmap 2021", K: 2})
	if err != nil || !slices.Equal(resultIDs(res), []string{"roadmap-2022", "recipes"}) {
		t.Errorf("after delete: %v, %v", resultIDs(res), err)
	}
	// Re-ingesting a document under another object moves it.
	if err := s.Ingest(ctx, []Document{{ID: "salaries", Object: "doc:roadmap-2022", Text: "Salaries of the product team in 2021."}}); err != nil {
		t.Fatal(err)
	}
	res, err = s.Query(ctx, Query{User: "user:anne", Text: "salaries", K: 1})
	if err != nil || !slices.Equal(resultIDs(res), []string{"salaries"}) {
		t.Errorf("after the move: %v, %v", resultIDs(res), err)
	}
}

// TestServicePersistence: the index survives a restart; an index left
// behind by a stop without Close is rebuilt; a damaged one is an error
// that says to reindex, and Reindex repairs it.
func TestServicePersistence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := newMemChecker()
	open := func() *Service {
		ds, err := OpenDocStore(filepath.Join(dir, "docs"))
		if err != nil {
			t.Fatal(err)
		}
		return &Service{Docs: ds, Embedder: Lexical{}, Checker: m, IndexPath: filepath.Join(dir, "vectors.idx"), SaveDelay: time.Hour, Log: quietLog}
	}
	s := open()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	c := ingestRandom(t, s, 500, 1, 11)
	var all []string
	for i := range 500 {
		all = append(all, fmt.Sprint("doc:", i))
	}
	m.allow("user:u", "can_view", all...)
	q := randomUnit(rand.New(rand.NewPCG(12, 12)), 384)
	want := c.want(q, 5, func(string) bool { return true })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Docs.Close()
	st, err := os.Stat(filepath.Join(dir, "vectors.idx"))
	if err != nil {
		t.Fatal(err)
	}

	// Restart: loaded, not rebuilt (the file is not rewritten).
	s = open()
	res, err := s.Query(ctx, Query{User: "user:u", Vector: q, K: 5})
	if err != nil || !slices.Equal(resultIDs(res), want) {
		t.Fatalf("after a restart: %v, %v; want %v", resultIDs(res), err, want)
	}
	if st2, _ := os.Stat(filepath.Join(dir, "vectors.idx")); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("the index was rewritten at a clean restart")
	}
	// A stop without Close: the documents are durable, the index file is
	// behind them; the next start rebuilds it.
	r := rand.New(rand.NewPCG(13, 13))
	top := slices.Clone(q)
	if err := s.Ingest(ctx, []Document{{ID: "late", Object: "doc:late", Vector: top}}); err != nil {
		t.Fatal(err)
	}
	m.allow("user:u", "can_view", "doc:late")
	s.Docs.Close() // no s.Close: the debounced save never ran
	s = open()
	res, err = s.Query(ctx, Query{User: "user:u", Vector: q, K: 5})
	if err != nil || len(res.Docs) == 0 || res.Docs[0].ID != "late" {
		t.Fatalf("after a stop without Close: %v, %v; want late first", resultIDs(res), err)
	}
	s.Close()
	s.Docs.Close()

	// A damaged index: Open says to reindex; Reindex repairs.
	b, _ := os.ReadFile(filepath.Join(dir, "vectors.idx"))
	b[len(b)/2] ^= 1
	os.WriteFile(filepath.Join(dir, "vectors.idx"), b, 0o600)
	s = open()
	defer s.Docs.Close()
	_, err = s.Query(ctx, Query{User: "user:u", Vector: randomUnit(r, 384)})
	if !errors.Is(err, ErrIndexCorrupt) || !strings.Contains(err.Error(), "agentauth docs reindex") {
		t.Fatalf("a damaged index: %v, want ErrIndexCorrupt saying to reindex", err)
	}
	var calls, last, total atomic.Int64
	if err := s.Reindex(ctx, func(done, tot int) { calls.Add(1); last.Store(int64(done)); total.Store(int64(tot)) }); err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 || last.Load() != 501 || total.Load() != 501 {
		t.Errorf("progress: %d calls, last %d of %d; want 501 of 501", calls.Load(), last.Load(), total.Load())
	}
	res, err = s.Query(ctx, Query{User: "user:u", Vector: q, K: 1})
	if err != nil || !slices.Equal(resultIDs(res), []string{"late"}) {
		t.Errorf("after Reindex: %v, %v", resultIDs(res), err)
	}
	if _, err := LoadIndex(filepath.Join(dir, "vectors.idx")); err != nil {
		t.Errorf("Reindex did not save a good index: %v", err)
	}
	s.Close()
}

// TestServiceReindexEmbedder: Reindex re-embeds the documents another
// embedder made, keeps the vectors callers gave, and refuses caller
// vectors of other dimensions without touching the index.
func TestServiceReindexEmbedder(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	old := make([]float32, 384)
	old[5] = 1
	given := make([]float32, 384)
	given[7] = 1
	for _, d := range []Document{
		{ID: "old", Collection: "default", Object: "doc:old", Text: "quarterly revenue report", Vector: old, Embedder: "some-old-model"},
		{ID: "bare", Collection: "default", Object: "doc:bare", Text: "quarterly revenue forecast", Embedder: "lexical-384-v1"},
		{ID: "given", Collection: "default", Object: "doc:given", Vector: given},
	} {
		if err := s.Docs.Put(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reindex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	lex, _ := Lexical{}.Embed(ctx, []string{"quarterly revenue report"})
	d, _ := s.Docs.Get("old")
	if d.Embedder != "lexical-384-v1" || !slices.Equal(d.Vector, lex[0]) {
		t.Errorf("old document: embedder %q, re-embedded %v", d.Embedder, slices.Equal(d.Vector, lex[0]))
	}
	if d, _ := s.Docs.Get("bare"); len(d.Vector) != 384 {
		t.Errorf("a document without a vector was not embedded")
	}
	if d, _ := s.Docs.Get("given"); d.Embedder != "" || !slices.Equal(d.Vector, given) {
		t.Errorf("the caller's vector changed: %+v", d)
	}
	m.allow("user:u", "can_view", "doc:old", "doc:bare", "doc:given")
	res, err := s.Query(ctx, Query{User: "user:u", Text: "quarterly revenue report", K: 3})
	if err != nil || len(res.Docs) != 3 || res.Docs[0].ID != "old" {
		t.Fatalf("after reindex: %v, %v", resultIDs(res), err)
	}
	if err := s.Docs.Put(Document{ID: "odd", Collection: "default", Object: "doc:odd", Vector: []float32{1, 0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reindex(ctx, nil); !errors.Is(err, ErrDimensions) || !strings.Contains(err.Error(), "odd") {
		t.Errorf("Reindex with a 2-dimension caller vector: %v", err)
	}
	if s.Index.Len() != 3 {
		t.Errorf("a failed reindex changed the index: %d vectors", s.Index.Len())
	}
}

// TestServiceConcurrent: queries, ingests and deletes at once (for -race).
func TestServiceConcurrent(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	ingestRandom(t, s, 500, 1, 14)
	var objs []string
	for i := range 600 {
		objs = append(objs, fmt.Sprint("doc:", i))
	}
	m.allow("user:u", "can_view", objs[:300]...)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 15))
			for i := range 20 {
				res, err := s.Query(ctx, Query{User: "user:u", Vector: randomUnit(r, 384), K: 5, Collection: []string{"", "other"}[i%2]})
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range res.Docs {
					if !slices.Contains(objs[:300], d.Object) {
						t.Errorf("returned %s on %s", d.ID, d.Object)
					}
				}
			}
		})
	}
	wg.Go(func() {
		r := rand.New(rand.NewPCG(16, 16))
		for i := range 30 {
			id := fmt.Sprint("n", i)
			if err := s.Ingest(ctx, []Document{{ID: id, Collection: []string{"default", "other"}[i%2], Object: fmt.Sprint("doc:", 500+i), Vector: randomUnit(r, 384)}}); err != nil {
				t.Error(err)
			}
			if i%3 == 0 {
				s.Delete(ctx, []string{fmt.Sprintf("d%05d", i)})
			}
		}
	})
	wg.Wait()
}

// ---- Acceptance: a real OpenFGA ----

// stopAfter passes questions to a real OpenFGA and stops that OpenFGA
// (its HTTP server) before the n-th BatchCheck or ListObjects call.
type stopAfter struct {
	Checker
	n     int32
	calls atomic.Int32
	stop  func()
}

func (c *stopAfter) BatchCheckWith(ctx context.Context, user, relation string, objects []string, o FGAOptions) (map[string]bool, error) {
	if c.calls.Add(1) == c.n {
		c.stop()
	}
	return c.Checker.BatchCheckWith(ctx, user, relation, objects, o)
}

func (c *stopAfter) ListObjectsWith(ctx context.Context, user, relation, typ string, max int, o FGAOptions) ([]string, bool, error) {
	if c.calls.Add(1) == c.n {
		c.stop()
	}
	return c.Checker.ListObjectsWith(ctx, user, relation, typ, max, o)
}

// ragFixture is 5,000 documents (two per object, doc:0 … doc:2499) on a
// real OpenFGA with the docs model: user:sparse may view 1% of the
// documents (25 objects), user:anne 10% through group:eng, user:none
// nothing.
type ragFixture struct {
	o    *testOpenFGA
	fga  *FGA
	s    *Service
	c    corpus
	perm map[string]map[string]bool // user → permitted objects
}

func mustRAG(t *testing.T) *ragFixture {
	t.Helper()
	ctx := context.Background()
	o := mustOpenFGA(t)
	f := mustFGA(t, o.URL, "rag")
	if _, err := f.WriteModel(ctx, []byte(docsModel), nil); err != nil {
		t.Fatal(err)
	}
	fx := &ragFixture{o: o, fga: f, perm: map[string]map[string]bool{"user:sparse": {}, "user:anne": {}, "user:none": {}}}
	ts := []Tuple{{User: "user:anne", Relation: "member", Object: "group:eng"}}
	for i := range 2500 {
		obj := fmt.Sprint("doc:", i)
		if i%100 == 37 {
			ts = append(ts, Tuple{User: "user:sparse", Relation: "viewer", Object: obj})
			fx.perm["user:sparse"][obj] = true
		}
		if i%10 == 3 {
			ts = append(ts, Tuple{User: "group:eng#member", Relation: "viewer", Object: obj})
			fx.perm["user:anne"][obj] = true
		}
		if i%7 == 0 {
			ts = append(ts, Tuple{User: "user:other", Relation: "owner", Object: obj})
		}
	}
	if err := f.WriteTuples(ctx, ts); err != nil {
		t.Fatal(err)
	}
	fx.s = mustService(t, f)
	fx.c = ingestRandom(t, fx.s, 5000, 2, 21)
	return fx
}

func (fx *ragFixture) batchRequests() int {
	fx.o.mu.Lock()
	defer fx.o.mu.Unlock()
	return len(fx.o.reqs)
}

// checkedSince returns the objects of the batch-check requests since
// request number from, and the largest request.
func (fx *ragFixture) checkedSince(t *testing.T, from int) (objects []string, largest int) {
	fx.o.mu.Lock()
	reqs := slices.Clone(fx.o.reqs[from:])
	fx.o.mu.Unlock()
	for _, b := range reqs {
		var req batchCheckRequestJSON
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
		largest = max(largest, len(req.Checks))
		for _, c := range req.Checks {
			objects = append(objects, c.TupleKey.Object)
		}
	}
	return objects, largest
}

// TestQueryOpenFGAComplete: (a) a user permitted on 1% of 5,000
// documents gets exactly the top k permitted (brute force over the
// permitted set), complete, with every strategy — and so does one who
// sees 10% through a group; (b) a user permitted on nothing gets an
// empty, complete answer.
func TestQueryOpenFGAComplete(t *testing.T) {
	fx := mustRAG(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(22, 22))
	for _, user := range []string{"user:sparse", "user:anne", "user:none"} {
		for _, strategy := range []string{StrategyPostFilter, StrategyPreFilter, StrategyAuto} {
			t.Run(user+"/"+strategy, func(t *testing.T) {
				for i := range 3 {
					q := randomUnit(r, 384)
					k := []int{10, 1, 37}[i]
					from := fx.batchRequests()
					res, err := fx.s.Query(ctx, Query{User: user, Vector: q, K: k, Strategy: strategy})
					if err != nil {
						t.Fatal(err)
					}
					want := fx.c.want(q, k, func(o string) bool { return fx.perm[user][o] })
					if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete {
						t.Fatalf("k=%d: got %v complete %v, want %v complete", k, got, res.Complete, want)
					}
					for j, d := range res.Docs {
						if want := float32(cosine(q, fx.c.vec[d.ID])); d.Score-want > 1e-5 || want-d.Score > 1e-5 {
							t.Errorf("doc %d score %v, cosine %v", j, d.Score, want)
						}
					}
					checked, largest := fx.checkedSince(t, from)
					if largest > 50 {
						t.Errorf("a batch-check request of %d checks", largest)
					}
					seen := map[string]bool{}
					for _, o := range checked {
						if seen[o] {
							t.Errorf("%s checked twice in one query", o)
						}
						seen[o] = true
					}
					if len(checked) != res.Checks {
						t.Errorf("OpenFGA saw %d checks, the result says %d", len(checked), res.Checks)
					}
					if strategy == StrategyPreFilter && (res.Strategy != StrategyPreFilter || res.Checks != 0 || res.FGACalls != 1) {
						t.Errorf("pre-filter: strategy %s, %d checks, %d calls", res.Strategy, res.Checks, res.FGACalls)
					}
					if user == "user:none" && strategy == StrategyPostFilter && res.Checks != 2500 {
						t.Errorf("user:none post-filter checked %d objects, want all 2,500 once", res.Checks)
					}
					t.Logf("k=%d: %s, %d candidates, %d checks, %d FGA calls", k, res.Strategy, res.Candidates, res.Checks, res.FGACalls)
				}
			})
		}
	}
}

// TestQueryOpenFGADeletedTuple: (c) a tuple deleted is honoured by the
// next query at higher consistency, with every strategy.
func TestQueryOpenFGADeletedTuple(t *testing.T) {
	fx := mustRAG(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(23, 23))
	for _, strategy := range []string{StrategyPostFilter, StrategyPreFilter, StrategyAuto} {
		q := randomUnit(r, 384)
		perm := fx.perm["user:sparse"]
		res, err := fx.s.Query(ctx, Query{User: "user:sparse", Vector: q, K: 5, Strategy: strategy, Consistency: HigherConsistency})
		if err != nil || len(res.Docs) == 0 {
			t.Fatalf("%s: %v, %v", strategy, resultIDs(res), err)
		}
		gone := res.Docs[0].Object
		if err := fx.fga.DeleteTuples(ctx, []Tuple{{User: "user:sparse", Relation: "viewer", Object: gone}}); err != nil {
			t.Fatal(err)
		}
		delete(perm, gone)
		res, err = fx.s.Query(ctx, Query{User: "user:sparse", Vector: q, K: 5, Strategy: strategy, Consistency: HigherConsistency})
		if err != nil {
			t.Fatal(err)
		}
		want := fx.c.want(q, 5, func(o string) bool { return perm[o] })
		if got := resultIDs(res); !slices.Equal(got, want) || !res.Complete {
			t.Errorf("%s after deleting %s: %v, want %v", strategy, gone, got, want)
		}
		for _, d := range res.Docs {
			if d.Object == gone {
				t.Errorf("%s: %s returned after its tuple was deleted", strategy, d.ID)
			}
		}
	}
}

// TestQueryOpenFGAStopped: (d) OpenFGA stopped mid-query: an error that
// says OpenFGA could not answer, and no documents.
func TestQueryOpenFGAStopped(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		strategy string
		stopAt   int32
	}{
		{"post-filter, before a refill", StrategyPostFilter, 2},
		{"pre-filter", StrategyPreFilter, 1},
		{"auto, when switching to the pre-filter", StrategyAuto, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := mustOpenFGA(t)
			f, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreName: "stop", Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteModel(ctx, []byte(docsModel), nil); err != nil {
				t.Fatal(err)
			}
			var ts []Tuple
			for i := 0; i < 1000; i += 100 {
				ts = append(ts, Tuple{User: "user:sparse", Relation: "viewer", Object: fmt.Sprint("doc:", i)})
			}
			if err := f.WriteTuples(ctx, ts); err != nil {
				t.Fatal(err)
			}
			c := &stopAfter{Checker: f, n: tt.stopAt, stop: o.srv.Close}
			s := mustService(t, c)
			ingestRandom(t, s, 1000, 1, 24)
			res, err := s.Query(ctx, Query{User: "user:sparse", Vector: randomUnit(rand.New(rand.NewPCG(25, 25)), 384), K: 10, Strategy: tt.strategy})
			var e *Error
			if !errors.As(err, &e) || e.Code != schemas.CodeUnavailable || !strings.Contains(err.Error(), "OpenFGA") {
				t.Fatalf("Query with OpenFGA stopped: %v, want an unavailable error naming OpenFGA", err)
			}
			if !errors.Is(err, ErrFGAUnavailable) {
				t.Errorf("the cause is not FGA's: %v", err)
			}
			if len(res.Docs) != 0 || res.Complete {
				t.Errorf("%d documents, complete %v; want none", len(res.Docs), res.Complete)
			}
			if c.calls.Load() < tt.stopAt {
				t.Errorf("only %d calls: OpenFGA was not stopped mid-query", c.calls.Load())
			}
		})
	}
}

// TestEstimateSmoothing: one unlucky query moves the estimate a little;
// a lasting change moves it all the way within a few queries.
func TestEstimateSmoothing(t *testing.T) {
	var e estimate
	for range 10 {
		e.observe(10, 100)
	}
	if math.Abs(e.sel-0.1) > 1e-9 {
		t.Fatalf("steady 10%%: estimate %v", e.sel)
	}
	e.observe(4, 100)
	if e.sel < 0.085 || e.sel >= 0.1 {
		t.Errorf("after one query at 4%%: estimate %v, want a little under 10%%", e.sel)
	}
	for range 20 {
		e.observe(40, 100)
	}
	if math.Abs(e.sel-0.4) > 0.01 {
		t.Errorf("after twenty queries at 40%%: estimate %v", e.sel)
	}
	e.observe(0, 0) // nothing judged: no change
	if math.Abs(e.sel-0.4) > 0.01 || math.IsNaN(e.sel) {
		t.Errorf("a query that judged nothing moved the estimate to %v", e.sel)
	}
}

// TestQueryConditionContext: a query's condition context goes with every
// check and list it makes, what was learnt under one context is not used
// under another, and a context that cannot be sent is refused.
func TestQueryConditionContext(t *testing.T) {
	ctx := context.Background()
	m := newMemChecker()
	s := mustService(t, m)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	c := ingestRandom(t, s, 400, 1, 9)
	var objs []string
	for i := 0; i < 400; i += 40 {
		objs = append(objs, fmt.Sprint("doc:", i))
	}
	m.allow("user:c", "can_view", objs...)
	q := randomUnit(rand.New(rand.NewPCG(9, 9)), 384)
	// The caller's current_time is replaced by the Service's clock.
	given := map[string]any{"current_time": "2020-01-01T00:00:00Z", "ip": "10.0.0.1"}
	at := map[string]any{"current_time": "2026-11-27T12:00:00Z", "ip": "10.0.0.1"}
	for _, strategy := range []string{StrategyPostFilter, StrategyPreFilter, StrategyAuto} {
		m.reset()
		res, err := s.Query(ctx, Query{User: "user:c", Vector: q, K: 3, Strategy: strategy, Context: given})
		if err != nil {
			t.Fatal(err)
		}
		if want := c.want(q, 3, func(o string) bool { return slices.Contains(objs, o) }); !slices.Equal(resultIDs(res), want) {
			t.Errorf("%s: %v, want %v", strategy, resultIDs(res), want)
		}
		m.mu.Lock()
		opts := slices.Clone(m.opts)
		m.mu.Unlock()
		if len(opts) == 0 {
			t.Fatalf("%s: no FGA call", strategy)
		}
		for _, o := range opts {
			if !maps.Equal(o.Context, at) {
				t.Errorf("%s: an FGA call with context %v, want %v", strategy, o.Context, at)
			}
		}
	}
	var keys []string
	s.estimates().mu.Lock()
	for k := range s.estimates().m {
		keys = append(keys, k)
	}
	s.estimates().mu.Unlock()
	// Kept per context, but not per clock reading: every query has its own.
	if len(keys) != 1 || !strings.Contains(keys[0], `"ip":"10.0.0.1"`) || strings.Contains(keys[0], "current_time") {
		t.Errorf("estimates kept under %q, want one key that names the context but not its time", keys)
	}

	many := map[string]any{}
	for i := range MaxContextKeys + 1 {
		many[fmt.Sprint("k", i)] = i
	}
	for name, bad := range map[string]map[string]any{
		"too many keys": many,
		"not JSON":      {"f": func() {}},
	} {
		m.reset()
		_, err := s.Query(ctx, Query{User: "user:c", Vector: q, K: 3, Context: bad})
		batches, lists := m.calls()
		if !errors.Is(err, ErrInvalid) || len(batches)+lists != 0 {
			t.Errorf("context %s: %v after %d FGA calls; want ErrInvalid and none", name, err, len(batches)+lists)
		}
	}
}

// grantModel lets a viewer see a document for grant_duration from
// grant_time.
const grantModel = `model
  schema 1.1

type user

type doc
  relations
    define viewer: [user with non_expired_grant]
    define can_view: viewer

condition non_expired_grant(current_time: timestamp, grant_time: timestamp, grant_duration: duration) {
  current_time < grant_time + grant_duration
}
`

// TestQueryCurrentTimeIsTheServices: current_time in the condition
// context is the Service's clock. A grant works while it is valid, with
// no context from the caller; once it has expired, a caller's back-dated
// current_time does not revive it.
func TestQueryCurrentTimeIsTheServices(t *testing.T) {
	ctx := context.Background()
	o := mustOpenFGA(t)
	f := mustFGA(t, o.URL, "grants")
	if _, err := f.WriteModel(ctx, []byte(grantModel), nil); err != nil {
		t.Fatal(err)
	}
	granted := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := f.WriteTuples(ctx, []Tuple{{User: "user:anne", Relation: "viewer", Object: "doc:granted",
		Condition: &TupleCondition{Name: "non_expired_grant", Context: map[string]any{"grant_time": granted.Format(time.RFC3339), "grant_duration": "1h"}}}}); err != nil {
		t.Fatal(err)
	}
	s := mustService(t, f)
	if err := s.Ingest(ctx, []Document{
		{ID: "granted", Object: "doc:granted", Text: "the granted plan"},
		{ID: "other", Object: "doc:other", Text: "the other plan"},
	}); err != nil {
		t.Fatal(err)
	}
	backDated := map[string]any{"current_time": granted.Add(10 * time.Minute).Format(time.RFC3339)}
	for _, tc := range []struct {
		name  string
		clock time.Time
		cctx  map[string]any
		want  []string
	}{
		{"valid, no context", granted.Add(30 * time.Minute), nil, []string{"granted"}},
		{"valid, a later time from the caller", granted.Add(30 * time.Minute), map[string]any{"current_time": granted.Add(5 * time.Hour).Format(time.RFC3339)}, []string{"granted"}},
		{"expired, no context", granted.Add(2 * time.Hour), nil, nil},
		{"expired, back-dated by the caller", granted.Add(2 * time.Hour), backDated, nil},
	} {
		s.Now = func() time.Time { return tc.clock }
		for _, strategy := range []string{StrategyPostFilter, StrategyPreFilter} {
			res, err := s.Query(ctx, Query{User: "user:anne", Text: "plan", K: 10, Strategy: strategy, Consistency: HigherConsistency, Context: tc.cctx})
			if err != nil {
				t.Errorf("%s (%s): %v", tc.name, strategy, err)
				continue
			}
			if got := resultIDs(res); !slices.Equal(got, tc.want) || !res.Complete {
				t.Errorf("%s (%s): %v complete=%v, want %v complete", tc.name, strategy, got, res.Complete, tc.want)
			}
		}
	}
}

// hashEmbedder embeds a text as 8 pseudo-random floats seeded by its
// name and the text: two of them with other names make unrelated vectors
// of the same size.
type hashEmbedder struct{ name string }

func (h hashEmbedder) Name() string    { return h.name }
func (h hashEmbedder) Dimensions() int { return 8 }
func (h hashEmbedder) Embed(_ context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		f := fnv.New64a()
		f.Write([]byte(h.name + "\x00" + t))
		r := rand.New(rand.NewPCG(f.Sum64(), 1))
		v := make([]float32, 8)
		for j := range v {
			v[j] = float32(r.NormFloat64())
		}
		out[i] = v
	}
	return out, nil
}

// TestServiceEmbedderChange: an index built by one embedder is rebuilt
// when the Service is opened with another of the same dimensions, and
// the documents are re-embedded with it; an index file of format
// version 1, which names no embedder, is rebuilt too.
func TestServiceEmbedderChange(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "vectors.idx")
	open := func(e Embedder) *Service {
		ds, err := OpenDocStore(filepath.Join(dir, "docs"))
		if err != nil {
			t.Fatal(err)
		}
		s := &Service{Docs: ds, Embedder: e, Checker: newMemChecker(), IndexPath: path, SaveDelay: time.Hour, Log: quietLog}
		if err := s.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	shut := func(s *Service) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s.Docs.Close()
	}
	a, b := hashEmbedder{"embedder-a"}, hashEmbedder{"embedder-b"}
	s := open(a)
	if err := s.Ingest(ctx, []Document{{ID: "d1", Object: "doc:1", Text: "the launch plan"}, {ID: "d2", Object: "doc:2", Text: "the budget"}}); err != nil {
		t.Fatal(err)
	}
	shut(s)

	// Reopened with b: the documents are b's, and so is the index.
	s = open(b)
	for _, id := range []string{"d1", "d2"} {
		d, err := s.Docs.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := b.Embed(ctx, []string{d.Text})
		if d.Embedder != b.name || !slices.Equal(d.Vector, want[0]) {
			t.Errorf("%s after reopening with %s: embedder %q, its vector b's: %v", id, b.name, d.Embedder, slices.Equal(d.Vector, want[0]))
		}
	}
	if got := s.Index.Embedder(); got != b.name {
		t.Errorf("the index's embedder is %q, want %q", got, b.name)
	}
	s.Checker.(*memChecker).allow("user:u", "can_view", "doc:1", "doc:2")
	res, err := s.Query(ctx, Query{User: "user:u", Text: "the launch plan", K: 1})
	if err != nil || len(res.Docs) != 1 || res.Docs[0].ID != "d1" || res.Docs[0].Score < 0.999 {
		t.Errorf("the document's own text with %s: %+v, %v; want d1 with a score of 1", b.name, res.Docs, err)
	}
	shut(s)
	if x, err := LoadIndex(path); err != nil || x.Embedder() != b.name {
		t.Fatalf("the saved index: %v; want it to name %s", err, b.name)
	}

	// An index file of format version 1 (no embedder name) is rebuilt.
	writeIndexV1(t, path)
	s = open(b)
	shut(s)
	if x, err := LoadIndex(path); err != nil || x.Embedder() != b.name || x.Len() != 2 {
		t.Fatalf("the index after opening a version 1 file: %v; want it rebuilt, naming %s", err, b.name)
	}
}

// writeIndexV1 rewrites the index file at path in format version 1: the
// version 2 header without the embedder name.
func writeIndexV1(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int(binary.LittleEndian.Uint16(b[indexHeader:]))
	v1 := slices.Concat(b[:indexHeader], b[indexHeader+2+n:len(b)-4])
	binary.LittleEndian.PutUint32(v1[8:], 1)
	v1 = binary.LittleEndian.AppendUint32(v1, crc32.Checksum(v1, crc32.MakeTable(crc32.Castagnoli)))
	if x, err := LoadIndex(writeFile(t, path, v1)); err != nil || x.Embedder() != "" || x.Len() != 2 {
		t.Fatalf("the version 1 file: %v", err)
	}
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
