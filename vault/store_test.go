package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/agentauth/agentauth/schemas"
)

// MustStore opens a Store in a new temp dir with a new key, closed at
// the end of the test.
func MustStore(tb testing.TB) *Store {
	tb.Helper()
	s, err := OpenStore(tb.TempDir(), MustKeyring(tb), StoreOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

var (
	alice = UserRef{Issuer: "https://idp.example", Subject: "alice"}
	bob   = UserRef{Issuer: "https://idp.example", Subject: "bob"}
	t0    = time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
)

// testRecord is an active record that expires an hour after t0 and is
// due for refresh 5 minutes before.
func testRecord(u UserRef, conn string) Record {
	return Record{
		User:         u,
		Connection:   conn,
		Scopes:       []string{"read", "write"},
		AccessToken:  "at-" + u.Subject + "-" + conn,
		RefreshToken: "rt-" + u.Subject + "-" + conn,
		TokenType:    "Bearer",
		Expiry:       t0.Add(time.Hour),
		Status:       StatusActive,
		LinkedAt:     t0,
		LinkedBy:     "agent-1",
	}
}

func equalRecords(tb testing.TB, got, want Record) {
	tb.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		tb.Errorf("record = %s\nwant %s", g, w)
	}
}

func TestStorePutGet(t *testing.T) {
	s := MustStore(t)
	r := testRecord(alice, "google")
	if _, err := s.Get(alice, "google"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
	}
	if err := s.Put(&r, 0); err != nil || r.Version != 1 {
		t.Fatalf("Put new = %v, version %d; want nil, 1", err, r.Version)
	}
	got, err := s.Get(alice, "google")
	if err != nil {
		t.Fatal(err)
	}
	equalRecords(t, got, r)

	r.AccessToken = "at-2"
	if err := s.Put(&r, 1); err != nil || r.Version != 2 {
		t.Fatalf("Put update = %v, version %d; want nil, 2", err, r.Version)
	}
	got, _ = s.Get(alice, "google")
	equalRecords(t, got, r)

	for name, tc := range map[string]struct {
		r      Record
		expect uint64
	}{
		"create existing": {testRecord(alice, "google"), 0},
		"stale version":   {testRecord(alice, "google"), 1},
		"future version":  {testRecord(alice, "google"), 3},
		"update missing":  {testRecord(bob, "google"), 1},
	} {
		t.Run(name, func(t *testing.T) {
			v := tc.r.Version
			if err := s.Put(&tc.r, tc.expect); !errors.Is(err, ErrVersionConflict) {
				t.Errorf("Put err = %v, want ErrVersionConflict", err)
			}
			if tc.r.Version != v {
				t.Errorf("failed Put changed Version to %d", tc.r.Version)
			}
		})
	}
	if _, err := s.Get(bob, "google"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed Put created a record: %v", err)
	}
	for _, conn := range []string{"", "a/b"} {
		r := testRecord(alice, conn)
		if err := s.Put(&r, 0); err == nil {
			t.Errorf("Put with connection %q succeeded", conn)
		}
	}
}

func TestStoreConcurrentPut(t *testing.T) {
	s := MustStore(t)
	r := testRecord(alice, "slack")
	if err := s.Put(&r, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			r := r
			r.AccessToken = fmt.Sprint("at-", i)
			errs[i] = s.Put(&r, 1)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrVersionConflict):
			t.Errorf("Put err = %v, want ErrVersionConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d Puts succeeded, want 1", won)
	}
	if got, _ := s.Get(alice, "slack"); got.Version != 2 {
		t.Errorf("version = %d, want 2", got.Version)
	}
}

func TestStoreDelete(t *testing.T) {
	s := MustStore(t)
	r := testRecord(alice, "google")
	s.Put(&r, 0)
	s.Put(&r, 1)
	if err := s.Delete(alice, "google", 1); !errors.Is(err, ErrVersionConflict) {
		t.Errorf("Delete stale: err = %v, want ErrVersionConflict", err)
	}
	if err := s.Delete(alice, "google", 2); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := s.Get(alice, "google"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete(alice, "google", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete missing: err = %v, want ErrNotFound", err)
	}
	if due, _ := s.Due(t0.Add(24*time.Hour), 0); len(due) != 0 {
		t.Errorf("Due after Delete = %v, want none", due)
	}

	// Unconditional Delete removes a corrupt record.
	r = testRecord(alice, "jira")
	s.Put(&r, 0)
	corrupt(t, s, "r/"+alice.Key()+"/jira")
	if err := s.Delete(alice, "jira", 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Delete corrupt with version: err = %v, want ErrCorrupt", err)
	}
	if err := s.Delete(alice, "jira", 0); err != nil {
		t.Errorf("Delete corrupt: %v", err)
	}
	if due, err := s.Due(t0.Add(24*time.Hour), 0); err != nil || len(due) != 0 {
		t.Errorf("Due after Delete of a corrupt record = %v, %v; want none", due, err)
	}
	if n := countPrefix(t, s, prefixIndex); n != 0 {
		t.Errorf("%d index entries left, want 0", n)
	}
}

func TestStoreMoveIntegrity(t *testing.T) {
	s := MustStore(t)
	a, b := testRecord(alice, "google"), testRecord(bob, "google")
	s.Put(&a, 0)
	s.Put(&b, 0)
	keyA, keyB := []byte("r/"+alice.Key()+"/google"), []byte("r/"+bob.Key()+"/google")
	err := s.db.Update(func(txn *badger.Txn) error {
		v, err := getValue(txn, string(keyA))
		if err != nil {
			return err
		}
		return txn.Set(keyB, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := s.Get(bob, "google"); !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a moved value: err = %v, want *CorruptError", err)
	}
	if ce.User != bob || ce.Connection != "google" {
		t.Errorf("CorruptError names %v %q", ce.User, ce.Connection)
	}

	corrupt(t, s, string(keyA))
	if _, err := s.Get(alice, "google"); !errors.As(err, &ce) {
		t.Errorf("Get of a flipped value: err = %v, want *CorruptError", err)
	}
	msg := ce.Error()
	for _, want := range []string{`connection "google"`, "disconnect and connect it again", "restore the data dir"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestStoreList(t *testing.T) {
	s := MustStore(t)
	var want []Record
	for _, conn := range []string{"slack", "github", "jira", "google"} {
		r := testRecord(alice, conn)
		s.Put(&r, 0)
		if conn != "jira" {
			want = append(want, r)
		}
	}
	other := testRecord(bob, "notion")
	s.Put(&other, 0)
	corrupt(t, s, "r/"+alice.Key()+"/jira")

	got, bad, err := s.List(alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("List = %d records, want 3", len(got))
	}
	for i, conn := range []string{"github", "google", "slack"} {
		for _, w := range want {
			if w.Connection == conn {
				equalRecords(t, got[i], w)
			}
		}
	}
	var ce *CorruptError
	if len(bad) != 1 || !errors.As(bad[0], &ce) || ce.Connection != "jira" || ce.User != alice {
		t.Errorf("corrupt = %v, want jira's *CorruptError", bad)
	}
	if got, bad, err := s.List(UserRef{Issuer: "x", Subject: "nobody"}); len(got)+len(bad) != 0 || err != nil {
		t.Errorf("List of nobody = %v, %v, %v", got, bad, err)
	}
}

func TestStoreDue(t *testing.T) {
	s := MustStore(t)
	put := func(r Record) Record {
		t.Helper()
		if err := s.Put(&r, 0); err != nil {
			t.Fatal(err)
		}
		return r
	}
	google := put(testRecord(alice, "google")) // due t0+55m
	early := testRecord(bob, "google")
	early.Expiry = t0.Add(10 * time.Minute) // due t0+9m
	put(early)
	backoff := testRecord(alice, "slack")
	backoff.NextAttempt = t0.Add(2 * time.Hour) // due t0+2h
	put(backoff)
	noExpiry := testRecord(alice, "notion")
	noExpiry.Expiry = time.Time{}
	put(noExpiry)
	reauth := testRecord(alice, "jira")
	reauth.Status = StatusNeedsReauth
	put(reauth)

	check := func(before time.Time, limit int, want ...string) {
		t.Helper()
		due, err := s.Due(before, limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, d := range due {
			got = append(got, d.User.Subject+"/"+d.Connection)
			if i > 0 && d.At.Before(due[i-1].At) {
				t.Errorf("Due not in time order: %v", due)
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("Due(t0%+v, %d) = %v, want %v", before.Sub(t0), limit, got, want)
		}
	}
	check(t0, 0)
	check(t0.Add(9*time.Minute), 0)
	check(t0.Add(9*time.Minute+1), 0, "bob/google")
	check(t0.Add(3*time.Hour), 0, "bob/google", "alice/google", "alice/slack")
	check(t0.Add(3*time.Hour), 2, "bob/google", "alice/google")

	due, _ := s.Due(t0.Add(time.Hour), 1)
	if len(due) != 1 || due[0].User != bob || !due[0].At.Equal(t0.Add(9*time.Minute)) {
		t.Errorf("Due = %+v, want bob's google at t0+9m", due)
	}

	// An update moves the index entry.
	google.Expiry = t0.Add(4 * time.Hour)
	if err := s.Put(&google, google.Version); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(3*time.Hour), 0, "bob/google", "alice/slack")
	if n := countPrefix(t, s, prefixIndex); n != 3 {
		t.Errorf("%d index entries, want 3", n)
	}

	// A batch overwrite leaves a stale entry that Due skips and removes.
	early.Expiry = t0.Add(5 * time.Hour)
	if err := s.PutBatch([]Record{early}); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(3*time.Hour), 0, "alice/slack")
	if n := countPrefix(t, s, prefixIndex); n != 3 {
		t.Errorf("%d index entries after Due, want 3", n)
	}
	check(t0.Add(6*time.Hour), 0, "alice/slack", "alice/google", "bob/google")
}

func TestStorePutBatchCount(t *testing.T) {
	s := MustStore(t)
	var recs []Record
	for i := range 50 {
		recs = append(recs, testRecord(UserRef{Issuer: "https://idp", Subject: fmt.Sprint("u", i)}, "google"))
	}
	if err := s.PutBatch(recs); err != nil {
		t.Fatal(err)
	}
	s.PutTemp(TempLink, "l1", []byte("x"), time.Minute)
	s.PutTemp(TempState, "s1", []byte("x"), time.Minute)
	if n, err := s.Count(); n != 50 || err != nil {
		t.Errorf("Count = %d, %v; want 50", n, err)
	}
	for _, r := range recs {
		got, err := s.Get(r.User, "google")
		if err != nil || got.Version != 1 {
			t.Fatalf("Get = %+v, %v; want version 1", got, err)
		}
		equalRecords(t, got, r)
	}
	if due, _ := s.Due(t0.Add(time.Hour), 0); len(due) != 50 {
		t.Errorf("Due = %d records, want 50", len(due))
	}
}

// TestStoreSettle: after a reopen, level 0 (the memtable flushed at
// close) is compacted away, and Settle waits for it; the records read
// back the same. A context that has ended is an error while level 0 is
// not empty.
func TestStoreSettle(t *testing.T) {
	dir, kr := t.TempDir(), MustKeyring(t)
	s, err := OpenStore(dir, kr, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := range 2000 {
		recs = append(recs, testRecord(UserRef{Issuer: "https://idp", Subject: fmt.Sprint("u", i)}, "google"))
	}
	if err := s.PutBatch(recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenStore(dir, kr, StoreOptions{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	level0 := func() int {
		n := 0
		for _, l := range s.db.Levels() {
			if l.Level == 0 {
				n += l.NumTables
			}
		}
		return n
	}
	if level0() > 0 {
		ended, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Settle(ended); err == nil && level0() > 0 {
			t.Error("Settle with an ended context returned nil while level 0 holds tables")
		}
	}
	if err := s.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := level0(); n != 0 {
		t.Errorf("level 0 holds %d tables after Settle", n)
	}
	for _, r := range recs[:100] {
		got, err := s.Get(r.User, "google")
		if err != nil {
			t.Fatal(err)
		}
		equalRecords(t, got, r)
	}
}

func TestStoreTemp(t *testing.T) {
	s := MustStore(t)
	if err := s.PutTemp(TempLink, "abc", []byte("link-secret"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := s.PeekTemp(TempLink, "abc"); err != nil || string(v) != "link-secret" {
		t.Errorf("PeekTemp = %q, %v", v, err)
	}
	if _, err := s.PeekTemp(TempState, "abc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("PeekTemp of another kind: err = %v, want ErrNotFound", err)
	}
	if v, err := s.TakeTemp(TempLink, "abc"); err != nil || string(v) != "link-secret" {
		t.Errorf("TakeTemp = %q, %v", v, err)
	}
	if _, err := s.TakeTemp(TempLink, "abc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second TakeTemp: err = %v, want ErrNotFound", err)
	}
	for _, kind := range []string{"", "record", "link/x"} {
		if err := s.PutTemp(kind, "x", nil, time.Minute); err == nil {
			t.Errorf("PutTemp kind %q succeeded", kind)
		}
	}
	if err := s.PutTemp(TempLink, "x", nil, 0); err == nil {
		t.Error("PutTemp with no ttl succeeded")
	}

	// Of concurrent Takes, exactly one wins.
	s.PutTemp(TempState, "st", []byte("v"), time.Minute)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.TakeTemp(TempState, "st") })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrNotFound):
			t.Errorf("TakeTemp err = %v, want ErrNotFound", err)
		}
	}
	if won != 1 {
		t.Errorf("%d Takes won, want 1", won)
	}

	// A moved temp does not open.
	s.PutTemp(TempLink, "a", []byte("va"), time.Minute)
	s.db.Update(func(txn *badger.Txn) error {
		v, _ := getValue(txn, "t/link/a")
		return txn.Set([]byte("t/link/b"), v)
	})
	if _, err := s.PeekTemp(TempLink, "b"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PeekTemp of a moved value: err = %v, want ErrCorrupt", err)
	}

	// Expiry (Badger's TTL has second granularity).
	s.PutTemp(TempLink, "short", []byte("v"), time.Second)
	time.Sleep(2 * time.Second)
	if _, err := s.TakeTemp(TempLink, "short"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TakeTemp of an expired secret: err = %v, want ErrNotFound", err)
	}
}

func TestStoreNotPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, MustKeyring(t), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := testRecord(alice, "google")
	r.AccessToken = "ya29.DISTINCTIVE-access-token-4f1d"
	r.RefreshToken = "1//DISTINCTIVE-refresh-token-9c2e"
	if err := s.Put(&r, 0); err != nil {
		t.Fatal(err)
	}
	s.PutTemp(TempState, "s", []byte("DISTINCTIVE-state-secret"), time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, sawKey := 0, false // the record's key is plain: proof the walk sees the data
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files++
		sawKey = sawKey || bytes.Contains(b, []byte("r/"+alice.Key()+"/google"))
		for _, secret := range []string{r.AccessToken, r.RefreshToken, "DISTINCTIVE", alice.Subject + `"`} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains %q", path, secret)
			}
		}
		return nil
	})
	if files == 0 || !sawKey {
		t.Fatalf("%d files in the data dir, record key found: %v", files, sawKey)
	}
}

func TestStoreWrongKey(t *testing.T) {
	dir := t.TempDir()
	kr, other := MustKeyring(t), MustKeyring(t)
	s, err := OpenStore(dir, kr, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = OpenStore(dir, other, StoreOptions{})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("OpenStore with another key: err = %v, want ErrWrongKey", err)
	}
	for _, want := range []string{dir, kr.ID(), other.ID(), "AGENTAUTH_VAULT_KEY", "--vault-key-file", "rotate-key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	s, err = OpenStore(dir, kr, StoreOptions{})
	if err != nil {
		t.Fatalf("reopen with the right key: %v", err)
	}
	s.Close()
}

func TestStoreInMemory(t *testing.T) {
	s, err := OpenStore("", MustKeyring(t), StoreOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := testRecord(alice, "google")
	if err := s.Put(&r, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(alice, "google"); err != nil {
		t.Fatal(err)
	}
}

// corrupt flips a byte of the value at key.
func corrupt(tb testing.TB, s *Store, key string) {
	tb.Helper()
	err := s.db.Update(func(txn *badger.Txn) error {
		v, err := getValue(txn, key)
		if err != nil {
			return err
		}
		return txn.Set([]byte(key), flip(v, len(v)/2))
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func countPrefix(tb testing.TB, s *Store, prefix string) int {
	tb.Helper()
	n := 0
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n
}

// TestStoreCache: the record cache is write-through (a Get after Put,
// Delete or PutBatch sees the write) and bounded; concurrent reads and
// writes never leave a stale record cached.
func TestStoreCache(t *testing.T) {
	s, err := OpenStore(t.TempDir(), MustKeyring(t), StoreOptions{CacheRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := testRecord(alice, "google")
	if err := s.Put(&r, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(alice, "google"); err != nil {
		t.Fatal(err)
	}
	r.AccessToken = "at-2"
	if err := s.Put(&r, r.Version); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(alice, "google"); got.AccessToken != "at-2" || got.Version != 2 {
		t.Fatalf("after Put: %+v", got)
	}
	b := testRecord(alice, "google")
	b.AccessToken = "at-batch"
	if err := s.PutBatch([]Record{b}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(alice, "google"); got.AccessToken != "at-batch" {
		t.Fatalf("after PutBatch: %+v", got)
	}
	if err := s.Delete(alice, "google", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(alice, "google"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	for i := range 5 { // more than the cache holds
		r := testRecord(UserRef{Issuer: "i", Subject: strconv.Itoa(i)}, "c")
		if err := s.Put(&r, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(r.User, "c"); err != nil {
			t.Fatal(err)
		}
	}
	// A full cache makes room for the new record by dropping one, not
	// all: it stays full, and the record just read is in it.
	if n := len(s.cache); n != 2 {
		t.Fatalf("cache holds %d records, want its bound, 2", n)
	}
	if _, ok := s.Cached(UserRef{Issuer: "i", Subject: "4"}, "c"); !ok {
		t.Fatal("the record read last is not cached")
	}
	if n := len(s.userKeys); n > 2 {
		t.Fatalf("%d user keys remembered, bound 2", n)
	}
	// Readers racing a writer: once the writer is done, everyone sees
	// its last version.
	w := testRecord(bob, "slack")
	if err := s.Put(&w, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = s.Get(bob, "slack")
				}
			}
		}()
	}
	for range 50 {
		if err := s.Put(&w, w.Version); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got, _ := s.Get(bob, "slack"); got.Version != w.Version {
		t.Fatalf("cached version %d, stored %d", got.Version, w.Version)
	}
}

// TestRecordFingerprint: a record carrying its fingerprint answers with
// it only for the very token it was computed for.
func TestRecordFingerprint(t *testing.T) {
	r := Record{AccessToken: "token-one"}.withFingerprint()
	if got, want := r.Fingerprint(), schemas.Fingerprint("token-one"); got != want {
		t.Errorf("carried fingerprint %s, want %s", got, want)
	}
	r.AccessToken = "token-two" // same length, another token
	if got, want := r.Fingerprint(), schemas.Fingerprint("token-two"); got != want {
		t.Errorf("after the token changed: %s, want %s", got, want)
	}
	if got, want := (&Record{AccessToken: "x"}).Fingerprint(), schemas.Fingerprint("x"); got != want {
		t.Errorf("without a carried fingerprint: %s, want %s", got, want)
	}
}
