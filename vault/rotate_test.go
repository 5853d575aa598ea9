package vault

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// fillVault creates a vault in a temp dir sealed with kr: n records of
// different people and two temps (one with a TTL of an hour).
func fillVault(tb testing.TB, kr *Keyring, n int) (string, []Record) {
	tb.Helper()
	dir := tb.TempDir()
	s, err := OpenStore(dir, kr, StoreOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	var recs []Record
	for i := range n {
		r := testRecord(UserRef{Issuer: "https://idp", Subject: fmt.Sprint("u", i)}, "google")
		if err := s.Put(&r, 0); err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, r)
	}
	s.PutTemp(TempLink, "l1", []byte("link"), time.Hour)
	s.PutTemp(TempState, "s1", []byte("state"), time.Hour)
	return dir, recs
}

// checkRotated requires the vault at dir to open with kr only and hold
// recs and the temps of fillVault.
func checkRotated(tb testing.TB, dir string, old, kr *Keyring, recs []Record) {
	tb.Helper()
	if _, err := OpenStore(dir, old, StoreOptions{}); !errors.Is(err, ErrWrongKey) {
		tb.Errorf("OpenStore with the old key: err = %v, want ErrWrongKey", err)
	}
	s, err := OpenStore(dir, kr, StoreOptions{})
	if err != nil {
		tb.Fatalf("OpenStore with the new key: %v", err)
	}
	defer s.Close()
	for _, r := range recs {
		got, err := s.Get(r.User, r.Connection)
		if err != nil {
			tb.Fatalf("Get %s: %v", r.User.Subject, err)
		}
		equalRecords(tb, got, r)
	}
	if n, _ := s.Count(); n != len(recs) {
		tb.Errorf("Count = %d, want %d", n, len(recs))
	}
	if due, _ := s.Due(t0.Add(time.Hour), 0); len(due) != len(recs) {
		tb.Errorf("Due = %d records, want %d", len(due), len(recs))
	}
	if v, err := s.PeekTemp(TempLink, "l1"); err != nil || string(v) != "link" {
		tb.Errorf("PeekTemp = %q, %v", v, err)
	}
	s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("t/state/s1"))
		if err != nil {
			tb.Errorf("state after rotation: %v", err)
		} else if exp := time.Unix(int64(item.ExpiresAt()), 0); time.Until(exp) < 50*time.Minute || time.Until(exp) > time.Hour {
			tb.Errorf("state expires at %v, want in about an hour", exp)
		}
		return nil
	})
}

func TestRotateKey(t *testing.T) {
	old, kr := MustKeyring(t), MustKeyring(t)
	dir, recs := fillVault(t, old, 25)
	var calls [][2]int
	err := RotateKey(dir, old, kr, StoreOptions{}, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 2 || calls[0] != [2]int{0, 27} || calls[len(calls)-1] != [2]int{27, 27} {
		t.Errorf("progress calls = %v, want 0/27 … 27/27", calls)
	}
	checkRotated(t, dir, old, kr, recs)

	// Running it again does nothing.
	if err := RotateKey(dir, old, kr, StoreOptions{}, nil); err != nil {
		t.Errorf("second RotateKey: %v", err)
	}
}

func TestRotateKeyResume(t *testing.T) {
	old, kr := MustKeyring(t), MustKeyring(t)
	dir, recs := fillVault(t, old, 25)
	rotateBatch, rotateStopAfter = 4, 10
	t.Cleanup(func() { rotateBatch, rotateStopAfter = 1000, 0 })
	if err := RotateKey(dir, old, kr, StoreOptions{}, nil); !errors.Is(err, errRotateStopped) {
		t.Fatalf("RotateKey with a stop: err = %v", err)
	}
	rotateStopAfter = 0

	for _, k := range []*Keyring{old, kr} {
		_, err := OpenStore(dir, k, StoreOptions{})
		if !errors.Is(err, ErrRotationInterrupted) {
			t.Fatalf("OpenStore mid-rotation: err = %v, want ErrRotationInterrupted", err)
		}
		for _, want := range []string{old.ID(), kr.ID(), "agentauth vault rotate-key"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		}
	}
	if err := RotateKey(dir, old, MustKeyring(t), StoreOptions{}, nil); !errors.Is(err, ErrRotationInterrupted) {
		t.Errorf("RotateKey to a third key mid-rotation: err = %v, want ErrRotationInterrupted", err)
	}

	var last int
	if err := RotateKey(dir, old, kr, StoreOptions{}, func(done, total int) { last = done }); err != nil {
		t.Fatalf("resumed RotateKey: %v", err)
	}
	if last != 27 {
		t.Errorf("last progress = %d, want 27", last)
	}
	checkRotated(t, dir, old, kr, recs)
}

func TestRotateKeyRefuses(t *testing.T) {
	old := MustKeyring(t)
	dir, _ := fillVault(t, old, 1)
	if err := RotateKey(dir, old, old, StoreOptions{}, nil); err == nil {
		t.Error("RotateKey to the same key succeeded")
	}
	wrong := MustKeyring(t)
	if err := RotateKey(dir, wrong, MustKeyring(t), StoreOptions{}, nil); !errors.Is(err, ErrWrongKey) {
		t.Errorf("RotateKey from a wrong key: err = %v, want ErrWrongKey", err)
	}
	s, err := OpenStore(dir, old, StoreOptions{})
	if err != nil {
		t.Fatalf("the vault no longer opens after refused rotations: %v", err)
	}
	s.Close()
}
