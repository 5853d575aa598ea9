package retrieval

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// MustDocStore opens a DocStore in a temporary directory, closed at the
// end of the test.
func MustDocStore(tb testing.TB) *DocStore {
	tb.Helper()
	return mustDocStoreIn(tb, tb.TempDir())
}

func mustDocStoreIn(tb testing.TB, dir string) *DocStore {
	tb.Helper()
	s, err := OpenDocStore(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestDocStore(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenDocStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := Document{ID: "a", Collection: "default", Object: "doc:a", Text: "alpha", Metadata: map[string]any{"n": 1.5, "tag": "x"},
		Vector: []float32{0.6, 0.8}, Embedder: "lexical-384-v1", Updated: when}
	b := Document{ID: "b/2", Collection: "hr", Object: "doc:b", Text: "beta", Updated: when}
	if err := s.Put(a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBatch([]Document{b, {ID: "c", Collection: "default", Object: "doc:c", Vector: []float32{1, 0}}}); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 3 {
		t.Errorf("Count() = %d, want 3", got)
	}
	got, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get(a) = %+v, want %+v", got, a)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope): %v, want ErrNotFound", err)
	}
	// Replacing keeps the count.
	a2 := a
	a2.Text, a2.Object = "alpha two", "doc:a2"
	if err := s.Put(a2); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != 3 {
		t.Errorf("Count() after a replace = %d, want 3", got)
	}
	if err := s.Delete("c"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(c) twice: %v, want ErrNotFound", err)
	}
	seq := s.Seq()
	if seq != 4 {
		t.Errorf("Seq() = %d after 4 changes", seq)
	}
	if n, err := s.DeleteBatch([]string{"x", "y"}); n != 0 || err != nil || s.Seq() != seq {
		t.Errorf("deleting unknown ids: %d, %v, Seq %d→%d; want nothing changed", n, err, seq, s.Seq())
	}
	s.Close()

	// Reopened: everything is still there.
	s = mustDocStoreIn(t, dir)
	if s.Count() != 2 || s.Seq() != seq {
		t.Errorf("reopened: Count %d, Seq %d; want 2, %d", s.Count(), s.Seq(), seq)
	}
	var ids []string
	err = s.Each(func(d Document) error {
		ids = append(ids, d.ID)
		if d.ID == "a" && (d.Text != "alpha two" || d.Object != "doc:a2" || len(d.Vector) != 2) {
			t.Errorf("Each gave %+v", d)
		}
		return nil
	})
	if err != nil || strings.Join(ids, ",") != "a,b/2" {
		t.Errorf("Each: %v, %v; want a,b/2 in order", ids, err)
	}
	refs := map[string]docRef{}
	rseq, err := s.eachRef(func(id string, r docRef) { refs[id] = r })
	if err != nil || rseq != seq || len(refs) != 2 || refs["b/2"] != (docRef{"hr", "doc:b"}) || refs["a"] != (docRef{"default", "doc:a2"}) {
		t.Errorf("eachRef: %v, %d, %v", refs, rseq, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Each(func(Document) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Each stopping: %v after %d", err, n)
	}
}

func TestDocStoreLargeBatch(t *testing.T) {
	s := MustDocStore(t)
	// Enough to exceed one Badger transaction: PutBatch splits it.
	docs := make([]Document, 30000)
	vec := make([]float32, 384)
	for i := range docs {
		docs[i] = Document{ID: fmt.Sprint("d", i), Collection: "default", Object: fmt.Sprint("doc:", i%100), Text: strings.Repeat("x", 200), Vector: vec}
	}
	if err := s.PutBatch(docs); err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != len(docs) {
		t.Errorf("Count() = %d, want %d", got, len(docs))
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
	}
	n, err := s.DeleteBatch(ids)
	if err != nil || n != len(docs) || s.Count() != 0 {
		t.Errorf("DeleteBatch: %d, %v, Count %d", n, err, s.Count())
	}
}

func TestDecodeDocDamaged(t *testing.T) {
	good, _ := encodeDoc(Document{ID: "a", Object: "doc:a", Vector: []float32{1, 2}})
	for _, b := range [][]byte{nil, {2}, good[:len(good)-1], append(good[:len(good):len(good)], 0), good[:5]} {
		if _, err := decodeDoc(b); err == nil {
			t.Errorf("decodeDoc(%x) succeeded", b)
		}
	}
	if d, err := decodeDoc(good); err != nil || d.ID != "a" || len(d.Vector) != 2 {
		t.Errorf("decodeDoc(good) = %+v, %v", d, err)
	}
}
