package retrieval

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ragQueryText is the fixed query of TestSampleStoresRAG; every document
// shares its words, so that every document is a candidate and only the
// permission filter decides what comes back.
const ragQueryText = "quarterly planning report budget"

// ragStrategies are the queries TestSampleStoresRAG asks of each case:
// "auto" first (nothing learnt yet), each strategy forced, then "auto"
// again with the selectivity the first three taught it.
var ragStrategies = []string{StrategyAuto, StrategyPostFilter, StrategyPreFilter, StrategyAuto}

// switchChecker asks the FGA it is switched to: one Service serves the
// check groups of a store file, whose tests have their own OpenFGA stores.
type switchChecker struct{ f *FGA }

func (c *switchChecker) BatchCheckWith(ctx context.Context, user, relation string, objects []string, o FGAOptions) (map[string]bool, error) {
	return c.f.BatchCheckWith(ctx, user, relation, objects, o)
}

func (c *switchChecker) ListObjectsWith(ctx context.Context, user, relation, typ string, max int, o FGAOptions) ([]string, bool, error) {
	return c.f.ListObjectsWith(ctx, user, relation, typ, max, o)
}

// sampleStoreFiles lists the store test files TestSampleStores loads.
func sampleStoreFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(sampleStoresDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".fga.yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 10 {
		t.Fatalf("the sample stores must be at %s: %d store files, %v", sampleStoresDir, len(files), err)
	}
	return files
}

// tupleObjectsOfType lists, sorted, the objects of type typ that the
// tuples mention, as object or as user ("folder:x#viewer" → folder:x;
// wildcards are not objects).
func tupleObjectsOfType(ts []Tuple, typ string) []string {
	seen := map[string]bool{}
	for _, tu := range ts {
		u, _, _ := strings.Cut(tu.User, "#")
		for _, o := range []string{tu.Object, u} {
			if objectType(o) == typ && !strings.HasSuffix(o, ":*") {
				seen[o] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// ragDocs is one document per object, in collection coll, each sharing
// the query's words.
func ragDocs(coll string, objs []string) []Document {
	docs := make([]Document, len(objs))
	for i, obj := range objs {
		docs[i] = Document{
			ID:         fmt.Sprintf("%s-d%03d", coll, i),
			Collection: coll,
			Object:     obj,
			Text:       fmt.Sprintf("%s for %s, page %d", ragQueryText, obj, i),
		}
	}
	return docs
}

// ragService is a fresh Service (DocStore in a temporary directory, the
// Lexical embedder) on checker, holding docs.
func ragService(t *testing.T, checker Checker, docs []Document) *Service {
	t.Helper()
	ds, err := OpenDocStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	s := &Service{Docs: ds, Embedder: Lexical{}, Checker: checker, Log: quietLog}
	t.Cleanup(func() { s.Close() })
	if err := s.Ingest(context.Background(), docs); err != nil {
		t.Fatal(err)
	}
	return s
}

// ragQueries asks s, with each of ragStrategies, for the top k documents
// of collection coll that user has relation on, among objects of type
// typ, under the condition context cctx, and requires exactly the objects
// want (one document each), complete, in rank order. It returns the
// number of queries run.
func ragQueries(t *testing.T, s *Service, user, relation, typ, coll string, cctx map[string]any, k int, want []string, oracle string) int {
	t.Helper()
	// The Service sets current_time from its clock: the assertion's time
	// is the clock's.
	if ct, ok := cctx[ContextCurrentTime].(string); ok {
		at, err := time.Parse(time.RFC3339, ct)
		if err != nil {
			t.Fatalf("current_time %q: %v", ct, err)
		}
		prev := s.Now
		s.Now = func() time.Time { return at }
		defer func() { s.Now = prev }()
	}
	for qi, strategy := range ragStrategies {
		label := strategy
		if qi == len(ragStrategies)-1 {
			label += " (again, with the selectivity learnt)"
		}
		res, err := s.Query(context.Background(), Query{
			User: user, Text: ragQueryText, K: k, Relation: relation, Type: typ, Collection: coll,
			Consistency: HigherConsistency, Strategy: strategy, Context: cctx,
		})
		if err != nil {
			t.Errorf("%s: %v", label, err)
			continue
		}
		got := make([]string, len(res.Docs))
		for i, d := range res.Docs {
			got[i] = d.Object
		}
		if !sameSet(got, want) {
			t.Errorf("%s: objects %v, want %v (%s)", label, got, want, oracle)
		}
		if !res.Complete {
			t.Errorf("%s: Complete = false with k = %d = every document", label, k)
		}
		if strategy != StrategyAuto && res.Strategy != strategy {
			t.Errorf("%s: answered by %s", label, res.Strategy)
		}
		for i := 1; i < len(res.Docs); i++ {
			if res.Docs[i].Score > res.Docs[i-1].Score {
				t.Errorf("%s: not in rank order at %d: %v > %v", label, i, res.Docs[i].Score, res.Docs[i-1].Score)
			}
		}
	}
	return len(ragStrategies)
}

// checkGroup is the check assertions of one test for one (user,
// relation, object type, context): the objects asserted, and which of
// them are permitted.
type checkGroup struct {
	test                string
	f                   *FGA // the test's OpenFGA store
	user, relation, typ string
	ctx                 map[string]any
	objects             map[string]bool // object → asserted permitted
	coll                string          // its documents' collection
}

// TestSampleStoresRAG is the "tests against external data".
//
// For every list_objects assertion OpenFGA's authors wrote in the sample
// stores, a fresh Service holding one document per object the store's
// list_objects assertions expect for that type, plus up to 3 objects of
// that type that the tuples mention and no assertion expects and one
// object nobody was ever granted, answers a query as the asserted user
// with the asserted relation and type (k = every document) with exactly
// the expected objects, complete, with each strategy.
//
// Most store files have check assertions only: for each test and (user,
// relation, type, context) of its check assertions, a collection holding
// one document per object checked, plus the never-granted one, must
// answer with exactly the objects asserted true — an exact answer too,
// since every document's object has an asserted outcome.
//
// As in TestSampleStores each test of a store file runs on a fresh
// OpenFGA store holding the store's tuples and the test's own.
func TestSampleStoresRAG(t *testing.T) {
	start := time.Now()
	o := mustOpenFGA(t)
	ctx := context.Background()
	var stores, tests, assertions, checkGroups, checkAssertions, loContext, checkContext, queries, documents int
	var noListObjects []string
	for fi, p := range sampleStoreFiles(t) {
		rel, _ := filepath.Rel(sampleStoresDir, p)
		rel = filepath.ToSlash(rel)
		t.Run(rel, func(t *testing.T) {
			sf, model, mods := loadStoreFile(t, p)
			stores++
			// Every object the store's list_objects assertions expect, by type.
			expected := map[string]map[string]bool{}
			for _, st := range sf.Tests {
				for _, lo := range st.ListObjects {
					if expected[lo.Type] == nil {
						expected[lo.Type] = map[string]bool{}
					}
					for _, want := range lo.Assertions {
						for _, obj := range want {
							if objectType(obj) != lo.Type {
								t.Fatalf("list_objects %s %s: expected object %s is not of that type", lo.User, lo.Type, obj)
							}
							expected[lo.Type][obj] = true
						}
					}
				}
			}
			if len(expected) == 0 {
				noListObjects = append(noListObjects, rel)
			}
			var groups []*checkGroup
			for ti, st := range sf.Tests {
				if len(st.ListObjects) == 0 && len(st.Check) == 0 {
					continue
				}
				tests++
				name := st.Name
				if name == "" {
					name = fmt.Sprintf("test %d", ti+1)
				}
				f := mustFGA(t, o.URL, fmt.Sprintf("rag %d %d", fi, ti)) // store names are at most 64 characters
				if _, err := f.WriteModel(ctx, model, mods); err != nil {
					t.Fatalf("model: %v", err)
				}
				tuples := append(slices.Clone(sf.Tuples), st.Tuples...)
				if err := f.WriteTuples(ctx, tuples); err != nil {
					t.Fatalf("tuples: %v", err)
				}

				for li, lo := range st.ListObjects {
					objs := slices.Sorted(maps.Keys(expected[lo.Type]))
					extra := 0
					for _, obj := range tupleObjectsOfType(tuples, lo.Type) {
						if !expected[lo.Type][obj] && extra < 3 {
							objs = append(objs, obj)
							extra++
						}
					}
					objs = append(objs, lo.Type+":rag-never-granted")
					docs := ragDocs(DefaultCollection, objs)
					if lo.Context != nil {
						loContext += len(lo.Assertions)
					}
					for _, relation := range slices.Sorted(maps.Keys(lo.Assertions)) {
						want := slices.Compact(slices.Sorted(slices.Values(lo.Assertions[relation])))
						assertions++
						t.Run(fmt.Sprintf("%s/list_objects %d %s %s %s", name, li+1, lo.User, relation, lo.Type), func(t *testing.T) {
							s := ragService(t, f, docs)
							documents += len(docs)
							queries += ragQueries(t, s, lo.User, relation, lo.Type, DefaultCollection, lo.Context, len(docs), want, "OpenFGA's authors' list_objects")
						})
					}
				}

				// The check assertions, grouped by (user, relation, type,
				// context); each group is a collection of the store file's
				// check Service.
				byKey := map[string]*checkGroup{}
				for _, c := range st.Check {
					cj, _ := json.Marshal(c.Context)
					for relation, ok := range c.Assertions {
						checkAssertions++
						if c.Context != nil {
							checkContext++
						}
						key := strings.Join([]string{string(cj), c.User, relation, objectType(c.Object)}, "\x00")
						g := byKey[key]
						if g == nil {
							g = &checkGroup{test: name, f: f, user: c.User, relation: relation, typ: objectType(c.Object), ctx: c.Context, objects: map[string]bool{}}
							byKey[key] = g
						}
						if prev, seen := g.objects[c.Object]; seen && prev != ok {
							t.Fatalf("%s: check %s %s %s asserted both %v and %v", name, c.User, relation, c.Object, prev, ok)
						}
						g.objects[c.Object] = ok
					}
				}
				for _, key := range slices.Sorted(maps.Keys(byKey)) {
					groups = append(groups, byKey[key])
				}
			}
			if len(groups) == 0 {
				return
			}
			// One Service for the store file's check groups, its Checker
			// switched to each group's OpenFGA store in turn.
			checker := &switchChecker{}
			var docs []Document
			for gi, g := range groups {
				g.coll = fmt.Sprintf("g%d", gi)
				docs = append(docs, ragDocs(g.coll, append(slices.Sorted(maps.Keys(g.objects)), g.typ+":rag-never-granted"))...)
			}
			s := ragService(t, checker, docs)
			documents += len(docs)
			for _, g := range groups {
				checkGroups++
				checker.f = g.f
				var want []string
				for obj, ok := range g.objects {
					if ok {
						want = append(want, obj)
					}
				}
				cj := ""
				if g.ctx != nil {
					b, _ := json.Marshal(g.ctx)
					cj = " context " + string(b)
				}
				t.Run(fmt.Sprintf("%s/check %s %s %s%s", g.test, g.user, g.relation, g.typ, cj), func(t *testing.T) {
					queries += ragQueries(t, s, g.user, g.relation, g.typ, g.coll, g.ctx, len(g.objects)+1, want, "OpenFGA's authors' check assertions")
				})
			}
		})
	}
	t.Logf("sample stores RAG: %d store files, %d tests; %d list_objects assertions (%d needing a condition context), %d check assertions (%d needing a condition context) in %d (user, relation, type, context) groups; %d documents ingested, %d queries run, in %s",
		stores, tests, assertions, loContext, checkAssertions, checkContext, checkGroups, documents, queries, time.Since(start).Round(time.Millisecond))
	if len(noListObjects) > 0 {
		t.Logf("store files without list_objects assertions (covered by their check assertions only): %s", strings.Join(noListObjects, ", "))
	}
	if assertions == 0 || checkGroups == 0 {
		t.Fatal("no list_objects or check assertions were run")
	}
}
