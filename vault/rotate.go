package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/dgraph-io/badger/v4"
)

// Test hooks: values per transaction, and stop (as if killed) once at
// least this many values are done (0: never).
var (
	rotateBatch     = 1000
	rotateStopAfter = 0
)

var errRotateStopped = errors.New("vault rotate-key: stopped by test hook")

// RotateKey re-encrypts every value in the vault at dir from old to new. It can be interrupted and
// run again with the same keys: it records the rotation in m/rotation first, skips values already
// sealed with the new key, and finishes by re-sealing the canary and removing m/rotation.
// progress(done, total) is called as it goes (total counted first).
//
// The vault must not be open elsewhere (Badger locks the directory). A
// vault already sealed with new and not mid-rotation is left alone. A
// value that old cannot open is left as it is and logged: after the
// rotation it reads as corrupt. Temps keep their expiry.
func RotateKey(dir string, old, new *Keyring, o StoreOptions, progress func(done, total int)) error {
	if old.ID() == new.ID() {
		return fmt.Errorf("vault rotate-key: the old and new keys are the same (key id %s)", old.ID())
	}
	if progress == nil {
		progress = func(int, int) {}
	}
	if !o.InMemory {
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("vault rotate-key: %w", err)
		}
	}
	db, log, err := openBadger(dir, o)
	if err != nil {
		return err
	}
	defer db.Close()

	// Check the keys against the vault, then record the rotation.
	var rot, canary []byte
	err = db.View(func(txn *badger.Txn) error {
		if rot, err = getValue(txn, keyRotation); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if canary, err = getValue(txn, keyCanary); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("vault rotate-key: %w", err)
	}
	want := rotation{From: old.ID(), To: new.ID()}
	if rot != nil {
		var r rotation
		if err := json.Unmarshal(rot, &r); err != nil || r != want {
			return fmt.Errorf("%w: the vault in %s is being rotated from key id %s to %s, not from %s to %s: run `agentauth vault rotate-key` with those keys", ErrRotationInterrupted, dir, r.From, r.To, want.From, want.To)
		}
	} else if canary != nil {
		if checkCanary(dir, new, canary) == nil {
			return nil // already rotated
		}
		if err := checkCanary(dir, old, canary); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(want)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyRotation), b) }); err != nil {
		return fmt.Errorf("vault rotate-key: %w", err)
	}

	total := 0
	if err := eachSealed(db, func(*badger.Item) error { total++; return nil }); err != nil {
		return fmt.Errorf("vault rotate-key: %w", err)
	}
	progress(0, total)

	done := 0
	txn := db.NewTransaction(true)
	defer func() { txn.Discard() }()
	pending := 0
	commit := func() error {
		if err := txn.Commit(); err != nil {
			return err
		}
		done += pending
		pending = 0
		progress(done, total)
		txn = db.NewTransaction(true)
		if rotateStopAfter > 0 && done >= rotateStopAfter {
			return errRotateStopped
		}
		return nil
	}
	err = eachSealed(db, func(item *badger.Item) error {
		key := item.KeyCopy(nil)
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		var e *badger.Entry
		if id, _ := envelopeKeyID(v); id != new.ID() {
			pt, err := old.Open(key, v)
			if err != nil {
				log.Warn("vault rotate-key: leaving a value the old key cannot open", "key", string(key), "err", err)
			} else {
				e = &badger.Entry{Key: key, Value: new.Seal(key, pt), ExpiresAt: item.ExpiresAt()}
			}
		}
		pending++
		if e != nil {
			if err := txn.SetEntry(e); errors.Is(err, badger.ErrTxnTooBig) {
				pending--
				if err := commit(); err != nil {
					return err
				}
				pending++
				err = txn.SetEntry(e)
			}
			if err != nil {
				return err
			}
		}
		if pending >= rotateBatch {
			return commit()
		}
		return nil
	})
	if err == nil {
		err = commit()
	}
	if err != nil {
		return fmt.Errorf("vault rotate-key: %w", err)
	}

	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(keyCanary), new.Seal([]byte(keyCanary), []byte(canaryText))); err != nil {
			return err
		}
		return txn.Delete([]byte(keyRotation))
	})
	if err != nil {
		return fmt.Errorf("vault rotate-key: %w", err)
	}
	return nil
}

// eachSealed calls fn for every live record and temp, in key order.
func eachSealed(db *badger.DB, fn func(*badger.Item) error) error {
	return db.View(func(txn *badger.Txn) error {
		for _, prefix := range []string{prefixRecord, prefixTemp} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true, PrefetchSize: 100})
			for it.Rewind(); it.Valid(); it.Next() {
				if err := fn(it.Item()); err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
}
