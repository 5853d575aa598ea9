package retrieval

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

func randomUnit(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	normalize(v)
	return v
}

// bruteForce is the reference ranking: every vector scored in float64,
// best first, ties by id.
func bruteForce(q []float32, vecs map[string][]float32, k int, keep func(id string) bool) []string {
	type s struct {
		id    string
		score float64
	}
	var all []s
	for id, v := range vecs {
		if keep != nil && !keep(id) {
			continue
		}
		n := norm2(v)
		var d float64
		for i := range q {
			d += float64(q[i]) * float64(v[i])
		}
		all = append(all, s{id, d / n})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].id < all[j].id
	})
	var ids []string
	for i := 0; i < k && i < len(all); i++ {
		ids = append(ids, all[i].id)
	}
	return ids
}

func hitIDs(hs []Hit) []string {
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.ID
	}
	return ids
}

func TestIndexSearchMatchesBruteForce(t *testing.T) {
	for _, n := range []int{0, 1, 100, 40000} { // 40,000 takes the parallel scan
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(n)))
			const dim = 16
			x := NewIndex(dim)
			vecs := map[string][]float32{}
			for i := range n {
				id := fmt.Sprintf("d%05d", i)
				v := make([]float32, dim)
				for j := range v {
					v[j] = float32(r.NormFloat64()) * 3 // not unit: Upsert normalizes
				}
				vecs[id] = v
				if err := x.Upsert(id, v); err != nil {
					t.Fatal(err)
				}
			}
			if got := x.Len(); got != n {
				t.Fatalf("Len() = %d, want %d", got, n)
			}
			for range 5 {
				q := randomUnit(r, dim)
				got := x.Search(q, 10, nil)
				if want := bruteForce(q, vecs, 10, nil); !slices.Equal(hitIDs(got), want) {
					t.Errorf("Search = %v, want %v", hitIDs(got), want)
				}
				for i := 1; i < len(got); i++ {
					if got[i].Score > got[i-1].Score {
						t.Errorf("hits out of order: %v", got)
					}
				}
				if len(got) > 0 {
					if want := cosine(q, vecs[got[0].ID]); math.Abs(float64(got[0].Score)-want) > 1e-5 {
						t.Errorf("score %v, want the cosine %v", got[0].Score, want)
					}
				}
				// A filter: only even ids.
				even := func(id string) bool { return (id[len(id)-1]-'0')%2 == 0 }
				allow := func(slot int32) bool { return even(x.ids[slot]) }
				if got, want := hitIDs(x.Search(q, 7, allow)), bruteForce(q, vecs, 7, even); !slices.Equal(got, want) {
					t.Errorf("Search with a filter = %v, want %v", got, want)
				}
				if got, want := hitIDs(x.Candidates(q, 25)), bruteForce(q, vecs, 25, nil); !slices.Equal(got, want) {
					t.Errorf("Candidates = %v, want %v", got, want)
				}
			}
		})
	}
}

func TestIndexSearchIn(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	x := NewIndex(8)
	vecs := map[string][]float32{}
	for i := range 500 {
		id := fmt.Sprint("d", i)
		vecs[id] = randomUnit(r, 8)
		x.Upsert(id, vecs[id])
	}
	set := []string{"d3", "d7", "d7", "d99", "d250", "nope", "d499", "d3"}
	in := map[string]bool{}
	for _, id := range set {
		in[id] = true
	}
	q := randomUnit(r, 8)
	got := x.SearchIn(q, 10, set)
	want := bruteForce(q, vecs, 10, func(id string) bool { return in[id] })
	if !slices.Equal(hitIDs(got), want) {
		t.Errorf("SearchIn = %v, want %v (repeats once, unknown ids ignored)", hitIDs(got), want)
	}
	if got := x.SearchIn(q, 2, set); len(got) != 2 || got[0].ID != want[0] || got[1].ID != want[1] {
		t.Errorf("SearchIn k=2 = %v, want %v", hitIDs(got), want[:2])
	}
	if got := x.SearchIn(q, 10, nil); len(got) != 0 {
		t.Errorf("SearchIn over no ids = %v", got)
	}
}

func TestIndexTiesRankByID(t *testing.T) {
	x := NewIndex(2)
	for _, id := range []string{"c", "a", "d", "b"} {
		x.Upsert(id, []float32{1, 0})
	}
	x.Upsert("z", []float32{0, 1})
	if got, want := hitIDs(x.Search([]float32{1, 0}, 3, nil)), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("equal scores: %v, want %v", got, want)
	}
}

func TestIndexUpsertDelete(t *testing.T) {
	x := NewIndex(3)
	if err := x.Upsert("a", []float32{1, 2}); !errors.Is(err, ErrDimensions) {
		t.Errorf("a 2-element vector: %v, want ErrDimensions", err)
	}
	if err := x.Upsert("a", []float32{1, float32(math.NaN()), 0}); err == nil {
		t.Error("a NaN was accepted")
	}
	if err := x.Upsert("", []float32{1, 0, 0}); err == nil {
		t.Error("an empty id was accepted")
	}
	if x.Len() != 0 {
		t.Fatalf("failed upserts changed the index: Len %d", x.Len())
	}
	x.Upsert("a", []float32{1, 0, 0})
	x.Upsert("b", []float32{0, 1, 0})
	x.Upsert("a", []float32{0, 0, 5}) // replaces
	if x.Len() != 2 {
		t.Errorf("Len() = %d, want 2", x.Len())
	}
	if got := x.Search([]float32{0, 0, 1}, 1, nil); got[0].ID != "a" || math.Abs(float64(got[0].Score)-1) > 1e-6 {
		t.Errorf("after replacing a: %v", got)
	}
	if !x.Delete("a") || x.Delete("a") || x.Has("a") {
		t.Error("Delete a: want true once, then false, and gone")
	}
	if got := hitIDs(x.Search([]float32{0, 0, 1}, 5, nil)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after Delete: %v, want [b]", got)
	}
	x.Upsert("c", []float32{0, 0, 1}) // reuses a's slot
	if got := len(x.ids); got != 2 {
		t.Errorf("%d slots after a delete and an insert, want 2 (slot reuse)", got)
	}

	// Many deletes compact the slots; searches still agree.
	r := rand.New(rand.NewPCG(3, 3))
	y := NewIndex(4)
	vecs := map[string][]float32{}
	for i := range 5000 {
		id := fmt.Sprint("d", i)
		vecs[id] = randomUnit(r, 4)
		y.Upsert(id, vecs[id])
	}
	for i := range 4000 {
		id := fmt.Sprint("d", i)
		y.Delete(id)
		delete(vecs, id)
	}
	if len(y.ids) >= 5000 || y.Len() != 1000 {
		t.Errorf("after 4,000 deletes: %d slots, Len %d; want compaction and 1,000", len(y.ids), y.Len())
	}
	q := randomUnit(r, 4)
	if got, want := hitIDs(y.Search(q, 20, nil)), bruteForce(q, vecs, 20, nil); !slices.Equal(got, want) {
		t.Errorf("after compaction: %v, want %v", got, want)
	}
}

func TestIndexSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vectors.idx")
	r := rand.New(rand.NewPCG(4, 4))
	x := NewIndex(32)
	vecs := map[string][]float32{}
	for i := range 3000 {
		id := fmt.Sprintf("doc/%d", i)
		vecs[id] = randomUnit(r, 32)
		x.Upsert(id, vecs[id])
	}
	x.Delete("doc/7") // a free slot is not saved
	delete(vecs, "doc/7")
	x.SetGeneration(42)
	if err := x.Save(path); err != nil {
		t.Fatal(err)
	}
	y, err := LoadIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	if y.Len() != 2999 || y.Dimensions() != 32 || y.Generation() != 42 {
		t.Errorf("loaded: Len %d, Dimensions %d, Generation %d; want 2999, 32, 42", y.Len(), y.Dimensions(), y.Generation())
	}
	for range 5 {
		q := randomUnit(r, 32)
		a, b := x.Search(q, 10, nil), y.Search(q, 10, nil)
		if !slices.Equal(a, b) {
			t.Errorf("saved %v, loaded %v", a, b)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the directory: %v", entries)
	}
	// Saving again replaces the file.
	x.Upsert("new", randomUnit(r, 32))
	if err := x.Save(path); err != nil {
		t.Fatal(err)
	}
	if y, err := LoadIndex(path); err != nil || !y.Has("new") {
		t.Errorf("after a second Save: %v, has new %v", err, err == nil && y.Has("new"))
	}
}

func TestLoadIndexDamaged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vectors.idx")
	x := NewIndex(4)
	for i := range 100 {
		x.Upsert(fmt.Sprint("d", i), []float32{float32(i), 1, 2, 3})
	}
	if err := x.Save(path); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	if _, err := LoadIndex(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want fs.ErrNotExist", err)
	}
	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"a flipped bit in a vector", flip(len(good) - 20)},
		{"a flipped bit in an id", flip(indexHeader + 3)},
		{"a flipped checksum", flip(len(good) - 1)},
		{"truncated in the vectors", good[:len(good)-100]},
		{"truncated checksum", good[:len(good)-2]},
		{"truncated header", good[:10]},
		{"not an index", []byte(strings.Repeat("hello world ", 20))},
		{"a huge count", func() []byte { b := slices.Clone(good); b[19] = 0x7f; return b }()},
		{"another version", func() []byte { b := slices.Clone(good); b[8] = 9; return b }()},
		{"extra bytes", append(slices.Clone(good[:len(good)-4]), append([]byte{1, 2, 3, 4}, good[len(good)-4:]...)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.idx")
			os.WriteFile(p, tt.data, 0o600)
			_, err := LoadIndex(p)
			if !errors.Is(err, ErrIndexCorrupt) {
				t.Fatalf("LoadIndex: %v, want ErrIndexCorrupt", err)
			}
			if !strings.Contains(err.Error(), "agentauth docs reindex") {
				t.Errorf("error %q does not say to run agentauth docs reindex", err)
			}
		})
	}
}

func TestIndexConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	x := NewIndex(8)
	qs := make([][]float32, 8)
	for i := range qs {
		qs[i] = randomUnit(r, 8)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rr := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range 2000 {
				id := fmt.Sprint("w", w, "-", i%300)
				if i%5 == 4 {
					x.Delete(id)
				} else {
					x.Upsert(id, randomUnit(rr, 8))
				}
			}
		})
		wg.Go(func() {
			for i := range 300 {
				hs := x.Search(qs[i%len(qs)], 5, func(slot int32) bool { return slot%2 == 0 })
				for j := 1; j < len(hs); j++ {
					if hs[j].Score > hs[j-1].Score {
						t.Errorf("out of order: %v", hs)
						return
					}
				}
				x.SearchIn(qs[i%len(qs)], 3, []string{"w0-1", "w1-2"})
			}
		})
	}
	wg.Wait()
	if err := x.Save(filepath.Join(t.TempDir(), "i")); err != nil {
		t.Fatal(err)
	}
}
