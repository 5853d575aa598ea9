package retrieval

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
)

// benchIndex is 100,000 random unit vectors of 384 dimensions, built once.
var benchIndex = sync.OnceValue(func() *Index {
	r := rand.New(rand.NewPCG(7, 7))
	x := NewIndex(384)
	for i := range 100000 {
		x.Upsert(fmt.Sprintf("doc-%06d", i), randomUnit(r, 384))
	}
	return x
})

func benchQueries(n int) [][]float32 {
	r := rand.New(rand.NewPCG(8, 8))
	qs := make([][]float32, n)
	for i := range qs {
		qs[i] = randomUnit(r, 384)
	}
	return qs
}

// BenchmarkIndexSearch: exact top 10 over 100,000 × 384 (the
// unfiltered limit of every strategy).
func BenchmarkIndexSearch(b *testing.B) {
	x := benchIndex()
	qs := benchQueries(64)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x.Search(qs[i%len(qs)], 10, nil)
	}
}

// BenchmarkIndexSearchFiltered: the same scan with an allow function
// passing 10% of the slots (the post-filter's collection/type scope).
func BenchmarkIndexSearchFiltered(b *testing.B) {
	x := benchIndex()
	qs := benchQueries(64)
	allow := func(slot int32) bool { return slot%10 == 0 }
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x.Search(qs[i%len(qs)], 10, allow)
	}
}

// BenchmarkIndexCandidates1000: the over-fetch of a post-filter refill.
func BenchmarkIndexCandidates1000(b *testing.B) {
	x := benchIndex()
	qs := benchQueries(64)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x.Candidates(qs[i%len(qs)], 1000)
	}
}

// BenchmarkIndexSearchIn100: the pre-filter path, top 10 among 100
// permitted documents of the 100,000.
func BenchmarkIndexSearchIn100(b *testing.B) {
	x := benchIndex()
	qs := benchQueries(64)
	r := rand.New(rand.NewPCG(9, 9))
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("doc-%06d", r.IntN(100000))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		x.SearchIn(qs[i%len(qs)], 10, ids)
	}
}

// BenchmarkIndexSaveLoad: persisting and reading 100,000 × 384 (147 MiB).
func BenchmarkIndexSaveLoad(b *testing.B) {
	x := benchIndex()
	path := filepath.Join(b.TempDir(), "vectors.idx")
	for b.Loop() {
		if err := x.Save(path); err != nil {
			b.Fatal(err)
		}
		if _, err := LoadIndex(path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLexicalEmbed: the built-in embedder on a 100-word text.
func BenchmarkLexicalEmbed(b *testing.B) {
	text := ""
	for i := range 100 {
		text += fmt.Sprintf("word%d ", i%37)
	}
	var l Lexical
	for b.Loop() {
		l.embed(text)
	}
}
