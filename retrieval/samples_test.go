package retrieval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/openfga/language/pkg/go/transformer"
	"gopkg.in/yaml.v3"
)

// sampleStoresDir holds OpenFGA's sample stores (openfga/sample-stores):
// models, tuples and assertions written by OpenFGA's authors.
const sampleStoresDir = "../../shared/testdata/openfga-sample-stores"

// storeFile is the fga CLI's store test file (store.fga.yaml). Decoding
// rejects unknown fields, so a feature this loader does not know fails
// the test instead of being skipped.
type storeFile struct {
	Name       string      `yaml:"name"`
	Model      string      `yaml:"model"`
	ModelFile  string      `yaml:"model_file"`
	Tuples     []Tuple     `yaml:"tuples"`
	TupleFile  string      `yaml:"tuple_file"`
	TupleFiles []string    `yaml:"tuple_files"`
	Tests      []storeTest `yaml:"tests"`
}

type storeTest struct {
	Name        string  `yaml:"name"`
	Description string  `yaml:"description"`
	Tuples      []Tuple `yaml:"tuples"`
	TupleFile   string  `yaml:"tuple_file"`
	Check       []struct {
		User       string          `yaml:"user"`
		Object     string          `yaml:"object"`
		Context    map[string]any  `yaml:"context"`
		Assertions map[string]bool `yaml:"assertions"`
	} `yaml:"check"`
	ListObjects []struct {
		User       string              `yaml:"user"`
		Type       string              `yaml:"type"`
		Context    map[string]any      `yaml:"context"`
		Assertions map[string][]string `yaml:"assertions"`
	} `yaml:"list_objects"`
	ListUsers []struct {
		Object     string         `yaml:"object"`
		Context    map[string]any `yaml:"context"`
		UserFilter []struct {
			Type     string `yaml:"type"`
			Relation string `yaml:"relation"`
		} `yaml:"user_filter"`
		Assertions map[string]struct {
			Users []string `yaml:"users"`
		} `yaml:"assertions"`
	} `yaml:"list_users"`
}

// loadStoreFile reads a store test file and everything it refers to: the
// model (DSL, JSON or a modular fga.mod with its modules) and the tuple
// files (of the store and of each test).
func loadStoreFile(t *testing.T, p string) (sf storeFile, model []byte, mods map[string][]byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&sf); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", p, err)
	}
	dir := filepath.Dir(p)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return b
	}
	switch {
	case sf.Model != "":
		model = []byte(sf.Model)
	case filepath.Ext(sf.ModelFile) == ".mod":
		model = read(sf.ModelFile)
		mf, err := transformer.TransformModFile(string(model))
		if err != nil {
			t.Fatalf("%s: %v", sf.ModelFile, err)
		}
		mods = map[string][]byte{}
		modDir := filepath.Dir(sf.ModelFile)
		for _, c := range mf.Contents.Value {
			mods[c.Value] = read(filepath.ToSlash(filepath.Join(modDir, c.Value)))
		}
	case sf.ModelFile != "":
		model = read(sf.ModelFile)
	default:
		t.Fatalf("%s: no model and no model_file", p)
	}
	tupleFile := func(name string) []Tuple {
		ts, err := ParseTuples(name, read(name))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return ts
	}
	if sf.TupleFile != "" {
		sf.Tuples = append(sf.Tuples, tupleFile(sf.TupleFile)...)
	}
	for _, f := range sf.TupleFiles {
		sf.Tuples = append(sf.Tuples, tupleFile(f)...)
	}
	for i := range sf.Tests {
		if sf.Tests[i].TupleFile != "" {
			sf.Tests[i].Tuples = append(sf.Tests[i].Tuples, tupleFile(sf.Tests[i].TupleFile)...)
		}
	}
	return sf, model, mods
}

func sameSet(got, want []string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(slices.Compact(g), slices.Compact(w)) && len(g) == len(w)
}

// TestSampleStores loads every sample store's model and tuples through
// FGA into a real OpenFGA and requires every assertion its authors wrote
// to hold: list_objects exactly (order aside, and never truncated),
// check (through Check and BatchCheck), and list_users. As with the fga
// CLI, each test runs in a fresh store holding the store's tuples and the
// test's own.
func TestSampleStores(t *testing.T) {
	files := sampleStoreFiles(t)
	o := mustOpenFGA(t)
	ctx := context.Background()
	var stores, tests, listObjects, checks, listUsers, tuples int
	for _, p := range files {
		rel, _ := filepath.Rel(sampleStoresDir, p)
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			sf, model, mods := loadStoreFile(t, p)
			if len(sf.Tests) == 0 {
				t.Fatal("no tests")
			}
			stores++
			for ti, st := range sf.Tests {
				tests++
				f := mustFGA(t, o.URL, fmt.Sprintf("%s %d", rel, ti))
				if _, err := f.WriteModel(ctx, model, mods); err != nil {
					t.Fatalf("model: %v", err)
				}
				all := append(slices.Clone(sf.Tuples), st.Tuples...)
				if err := f.WriteTuples(ctx, all); err != nil {
					t.Fatalf("tuples: %v", err)
				}
				tuples += len(all)
				name := st.Name
				if name == "" {
					name = fmt.Sprintf("test %d", ti+1)
				}
				n := 0
				for _, lo := range st.ListObjects {
					for rel, want := range lo.Assertions {
						n++
						listObjects++
						opts := FGAOptions{Context: lo.Context, Consistency: HigherConsistency}
						got, truncated, err := f.ListObjectsWith(ctx, lo.User, rel, lo.Type, 0, opts)
						if err != nil || truncated || !sameSet(got, want) {
							t.Errorf("%s: list_objects %s %s %s = %v (truncated %v), %v; want %v", name, lo.User, rel, lo.Type, got, truncated, err, want)
						}
						// What ListObjects lists, BatchCheck allows.
						if len(want) > 0 {
							m, err := f.BatchCheckWith(ctx, lo.User, rel, want, opts)
							for _, obj := range want {
								if err != nil || !m[obj] {
									t.Errorf("%s: batch-check %s %s %s = %v, %v; want true", name, lo.User, rel, obj, m[obj], err)
								}
							}
						}
					}
				}
				for _, c := range st.Check {
					for rel, want := range c.Assertions {
						n++
						checks++
						opts := FGAOptions{Context: c.Context}
						got, err := f.CheckWith(ctx, c.User, rel, c.Object, opts)
						if err != nil || got != want {
							t.Errorf("%s: check %s %s %s = %v, %v; want %v", name, c.User, rel, c.Object, got, err, want)
						}
						m, err := f.BatchCheckWith(ctx, c.User, rel, []string{c.Object}, opts)
						if err != nil || m[c.Object] != want {
							t.Errorf("%s: batch-check %s %s %s = %v, %v; want %v", name, c.User, rel, c.Object, m[c.Object], err, want)
						}
					}
				}
				for _, lu := range st.ListUsers {
					if len(lu.UserFilter) != 1 {
						t.Fatalf("%s: list_users %s: %d user filters, OpenFGA takes exactly 1", name, lu.Object, len(lu.UserFilter))
					}
					filter := lu.UserFilter[0].Type
					if lu.UserFilter[0].Relation != "" {
						filter += "#" + lu.UserFilter[0].Relation
					}
					for rel, want := range lu.Assertions {
						n++
						listUsers++
						got, err := f.ListUsers(ctx, lu.Object, rel, filter, FGAOptions{Context: lu.Context})
						if err != nil || !sameSet(got, want.Users) {
							t.Errorf("%s: list_users %s %s %s = %v, %v; want %v", name, lu.Object, rel, filter, got, err, want.Users)
						}
					}
				}
				if n == 0 {
					t.Errorf("%s: no assertions", name)
				}
			}
		})
	}
	t.Logf("sample stores: %d store files, %d tests, %d tuples written; assertions checked: %d list_objects, %d check, %d list_users",
		stores, tests, tuples, listObjects, checks, listUsers)
	if listObjects == 0 || checks == 0 {
		t.Fatal("no list_objects or check assertions were run")
	}
}
