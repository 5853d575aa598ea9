package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/agentauth/agentauth/internal/badgerlog"
)

// Errors returned by the Store and RotateKey.
var (
	ErrNotFound            = errors.New("vault: not found")
	ErrVersionConflict     = errors.New("vault: version conflict")
	ErrWrongKey            = errors.New("vault: wrong master key")
	ErrRotationInterrupted = errors.New("vault: master key rotation interrupted")
)

// CorruptError reports a stored record that could not be decrypted or
// decoded. errors.Is(err, ErrCorrupt) is true for it.
type CorruptError struct {
	User       UserRef
	Connection string
	Err        error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("the vault record for connection %q could not be decrypted (%v): disconnect and connect it again, or restore the data dir", e.Connection, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes every CorruptError match ErrCorrupt, whatever its cause.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Due names a record whose access token should be refreshed.
type Due struct {
	User       UserRef
	Connection string
	At         time.Time
}

// StoreOptions configure OpenStore and RotateKey.
type StoreOptions struct {
	Logger   *slog.Logger // Badger's warnings and errors; slog.Default() if nil
	InMemory bool         // no files at all: tests and benchmarks only
	// CacheRecords keeps up to this many opened records in memory, so
	// that reading a stored token does not open Badger, GCM and JSON
	// each time (0: no cache). The cache is write-through: this process
	// holds Badger's directory lock, so no other writer exists.
	CacheRecords int
}

// Temp kinds.
const (
	TempLink  = "link"  // connect links
	TempState = "state" // OAuth states
)

// Key layout. Every value under r/ and t/ is sealed with the key as
// associated data; i/ values are empty; m/rotation is plain JSON (key ids
// only).
const (
	prefixRecord = "r/" // r/<userKey>/<connection>
	prefixIndex  = "i/" // i/<16 hex digits: unix nanos>/<userKey>/<connection>
	prefixTemp   = "t/" // t/<kind>/<id>
	keyCanary    = "m/canary"
	keyRotation  = "m/rotation"
	canaryText   = "agentauth vault canary v1"
)

// Store is the vault's encrypted Badger store of records and of the
// linking flow's short-lived secrets. Every write is synced before it
// returns. A Store is safe for concurrent use.
//
// The expiry index (i/…) holds one empty-valued key per record that will
// need a refresh; Due reads the record behind it to learn the UserRef and
// to check the entry is current. Entries go stale only when a corrupt
// record is deleted or PutBatch overwrites a record; Due skips stale
// entries and removes them.
type Store struct {
	db  *badger.DB
	kr  *Keyring
	log *slog.Logger

	cacheMax int
	mu       sync.Mutex
	cache    map[string]Record  // by record key
	userKeys map[UserRef]string // UserRef.Key of the users in the cache (a hash: not recomputed per lookup)
	gen      uint64             // +1 on every committed write; a read that saw another generation does not fill the cache
}

// OpenStore opens (creating if needed) the vault in dir, sealed with kr.
// It returns an error wrapping ErrWrongKey when the vault was created
// with another key and ErrRotationInterrupted when a RotateKey did not
// finish.
func OpenStore(dir string, kr *Keyring, o StoreOptions) (*Store, error) {
	db, log, err := openBadger(dir, o)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, kr: kr, log: log, cacheMax: o.CacheRecords, cache: map[string]Record{}, userKeys: map[UserRef]string{}}
	if err := s.checkMeta(dir); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func openBadger(dir string, o StoreOptions) (*badger.DB, *slog.Logger, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.InMemory {
		dir = ""
	}
	opts := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(true).
		WithLogger(badgerlog.New(log.With("component", "badger"))).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(true).
		WithCompression(options.None). // values are ciphertext
		WithNumMemtables(2).
		WithMemTableSize(16 << 20).
		WithBlockCacheSize(128 << 20).
		WithIndexCacheSize(0).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		// Read-optimized: level 0 is compacted as soon as it holds a
		// table, so a lookup never searches several overlapping level-0
		// tables, and the first 256 MiB of keys and pointers (about
		// 1.7 million connections) live in one level. The price is write
		// amplification (a memtable flush rewrites the level below it),
		// which a vault, written on link and refresh only, can afford.
		WithNumLevelZeroTables(1).
		WithBaseLevelSize(256 << 20).
		WithMetricsEnabled(false)
	if !o.InMemory {
		// Records go to the value log, the LSM tree keeps keys and
		// pointers: it stays small enough to cache at a million records.
		// (In memory there is no value log.)
		opts = opts.WithValueThreshold(256)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("vault open %s: %w", dir, err)
	}
	return db, log, nil
}

type rotation struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func (s *Store) checkMeta(dir string) error {
	if dir == "" {
		dir = "(memory)"
	}
	var canary []byte
	err := s.db.View(func(txn *badger.Txn) error {
		if v, err := getValue(txn, keyRotation); err == nil {
			var r rotation
			json.Unmarshal(v, &r)
			return fmt.Errorf("%w: a master key rotation from %s to %s was interrupted: run `agentauth vault rotate-key` again with the same keys to finish it", ErrRotationInterrupted, r.From, r.To)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		v, err := getValue(txn, keyCanary)
		canary = v
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if canary == nil {
		return s.db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(keyCanary), s.kr.Seal([]byte(keyCanary), []byte(canaryText)))
		})
	}
	return checkCanary(dir, s.kr, canary)
}

func checkCanary(dir string, kr *Keyring, canary []byte) error {
	_, err := kr.Open([]byte(keyCanary), canary)
	if err == nil {
		return nil
	}
	if id, ok := envelopeKeyID(canary); ok && errors.Is(err, ErrSealedWithOtherKey) {
		return fmt.Errorf("%w: the vault in %s was sealed with master key id %s, not the configured key id %s: set AGENTAUTH_VAULT_KEY or --vault-key-file to the key it was created with (or run `agentauth vault rotate-key` to change keys)", ErrWrongKey, dir, id, kr.ID())
	}
	return fmt.Errorf("%w: the vault in %s has a canary that master key id %s cannot open (%v): the data dir is damaged; restore it from a backup", ErrWrongKey, dir, kr.ID(), err)
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Settle waits until level 0 is compacted away (right after opening or a
// bulk load, compaction is still moving tables down), or ctx ends. Reads
// are correct at any time; Settle is for measuring the settled store.
func (s *Store) Settle(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		settled := true
		for _, l := range s.db.Levels() {
			if l.Level == 0 && l.NumTables > 0 {
				settled = false
			}
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vault: compaction did not settle: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Cached returns the record of u's connection conn when the store's cache
// holds it: no disk read, no wait.
func (s *Store) Cached(u UserRef, conn string) (Record, bool) {
	if s.cacheMax <= 0 {
		return Record{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	uk, ok := s.userKeys[u]
	if !ok {
		if len(s.userKeys) >= s.cacheMax {
			evictOne(s.userKeys)
		}
		uk = u.Key()
		s.userKeys[u] = uk
	}
	var buf [160]byte
	r, ok := s.cache[string(appendRecordKey(buf[:0], uk, conn))] // no string is built for the lookup
	return r, ok
}

// Get returns the record of u's connection conn: ErrNotFound if there is
// none, a *CorruptError if it cannot be opened.
func (s *Store) Get(u UserRef, conn string) (Record, error) {
	key, err := recordKey(u, conn)
	if err != nil {
		return Record{}, err
	}
	s.mu.Lock()
	r, ok := s.cache[string(key)]
	gen := s.gen
	s.mu.Unlock()
	if ok {
		return r, nil
	}
	err = s.db.View(func(txn *badger.Txn) error {
		r, err = s.getRecord(txn, key, u, conn)
		return err
	})
	if err != nil {
		return Record{}, fmt.Errorf("vault get %s: %w", conn, err)
	}
	if s.cacheMax > 0 {
		s.mu.Lock()
		if s.gen == gen { // no write committed since the read began
			if len(s.cache) >= s.cacheMax {
				evictOne(s.cache)
			}
			s.cache[string(key)] = r.withFingerprint()
		}
		s.mu.Unlock()
	}
	return r, nil
}

// evictOne makes room in a full cache by dropping one entry. A range
// over a map starts at a random place, so this is random eviction: with
// more users than the cache holds, most of the cached working set stays,
// where clearing the whole cache would send every reader to the disk at
// once.
func evictOne[K comparable, V any](m map[K]V) {
	for k := range m {
		delete(m, k)
		return
	}
}

// written records a committed write of key: the cached record is
// replaced (r) or dropped (nil), and reads in flight do not fill the cache.
func (s *Store) written(key []byte, r *Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if r != nil && s.cacheMax > 0 && len(s.cache) < s.cacheMax {
		s.cache[string(key)] = r.withFingerprint()
	} else {
		delete(s.cache, string(key))
	}
}

// Put writes r if the stored record's Version equals expect (0: there
// must be no record) and sets r.Version to expect+1. It returns
// ErrVersionConflict otherwise, also when a concurrent write wins, and a
// *CorruptError when the stored record cannot be opened. The expiry
// index is updated in the same transaction.
func (s *Store) Put(r *Record, expect uint64) error {
	key, err := putKey(r)
	if err != nil {
		return err
	}
	next := *r
	next.Version = expect + 1
	err = s.update(func(txn *badger.Txn) error {
		old, err := s.getRecord(txn, key, r.User, r.Connection)
		switch {
		case errors.Is(err, ErrNotFound):
			if expect != 0 {
				return fmt.Errorf("%w: no record, want version %d", ErrVersionConflict, expect)
			}
		case err != nil:
			return err
		case expect == 0:
			return fmt.Errorf("%w: the record exists (version %d)", ErrVersionConflict, old.Version)
		case old.Version != expect:
			return fmt.Errorf("%w: version %d, want %d", ErrVersionConflict, old.Version, expect)
		default:
			if err := deleteIndex(txn, &old); err != nil {
				return err
			}
		}
		return s.setRecord(txn, key, &next)
	}, ErrVersionConflict)
	if err != nil {
		return fmt.Errorf("vault put %s: %w", r.Connection, err)
	}
	s.written(key, &next)
	r.Version = next.Version
	return nil
}

// Delete removes u's record of conn if its Version equals expect (0:
// whatever its version, even when it is corrupt). It returns ErrNotFound,
// ErrVersionConflict or a *CorruptError.
func (s *Store) Delete(u UserRef, conn string, expect uint64) error {
	key, err := recordKey(u, conn)
	if err != nil {
		return err
	}
	err = s.update(func(txn *badger.Txn) error {
		old, err := s.getRecord(txn, key, u, conn)
		var ce *CorruptError
		switch {
		case errors.As(err, &ce) && expect == 0:
			// Its index entry, if any, goes stale; Due removes it.
			return txn.Delete(key)
		case err != nil:
			return err
		case expect != 0 && old.Version != expect:
			return fmt.Errorf("%w: version %d, want %d", ErrVersionConflict, old.Version, expect)
		}
		if err := deleteIndex(txn, &old); err != nil {
			return err
		}
		return txn.Delete(key)
	}, ErrVersionConflict)
	if err != nil {
		return fmt.Errorf("vault delete %s: %w", conn, err)
	}
	s.written(key, nil)
	return nil
}

// List returns u's records sorted by connection. Records that cannot be
// opened are left out and reported, each as a *CorruptError, in the
// second result; the error is for the database itself.
func (s *Store) List(u UserRef) ([]Record, []error, error) {
	prefix := []byte(prefixRecord + u.Key() + "/")
	var recs []Record
	var corrupt []error
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			conn := string(item.Key()[len(prefix):])
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			r, err := s.openRecord(item.Key(), v, u, conn)
			if err != nil {
				corrupt = append(corrupt, err)
				continue
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("vault list: %w", err)
	}
	return recs, corrupt, nil
}

// Due returns up to limit (no limit if limit <= 0) records whose refresh
// time is before before, earliest first. The refresh time is
// Record.RefreshAt, or NextAttempt if that is later; records that do not
// need refreshing are not indexed. Corrupt records are skipped and logged.
func (s *Store) Due(before time.Time, limit int) ([]Due, error) {
	return s.DueMatching(before, limit, nil)
}

// DueMatching is Due for the records of the connections match accepts
// (all when match is nil). Records of other connections are passed over
// without being read and do not count toward limit, so that records which
// cannot be refreshed (a connection no longer configured) never take the
// places of those that can.
func (s *Store) DueMatching(before time.Time, limit int, match func(connection string) bool) ([]Due, error) {
	end := []byte(prefixIndex + indexTime(before))
	var due []Due
	var stale [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixIndex)})
		defer it.Close()
		for it.Rewind(); it.Valid() && (limit <= 0 || len(due) < limit); it.Next() {
			ikey := it.Item().KeyCopy(nil)
			if bytes.Compare(ikey, end) >= 0 {
				break
			}
			if match != nil && !match(string(ikey[bytes.LastIndexByte(ikey, '/')+1:])) {
				continue
			}
			r, ok, err := s.indexed(txn, ikey)
			switch {
			case errors.Is(err, ErrCorrupt):
				s.log.Warn("vault: skipping a corrupt record due for refresh", "key", string(ikey), "err", err)
			case err != nil:
				return err
			case !ok:
				stale = append(stale, ikey)
			default:
				at, _ := dueAt(&r)
				due = append(due, Due{User: r.User, Connection: r.Connection, At: at})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vault due: %w", err)
	}
	if len(stale) > 0 {
		err := s.update(func(txn *badger.Txn) error {
			for _, ikey := range stale {
				if _, ok, err := s.indexed(txn, ikey); err == nil && !ok {
					if err := txn.Delete(ikey); err != nil {
						return err
					}
				}
			}
			return nil
		}, nil)
		if err != nil {
			s.log.Warn("vault: could not remove stale index entries", "err", err)
		}
	}
	return due, nil
}

// indexed returns the record an index key points at and whether the
// entry is current (the record exists and is due at the key's time).
func (s *Store) indexed(txn *badger.Txn, ikey []byte) (Record, bool, error) {
	parts := strings.SplitN(string(ikey), "/", 4)
	if len(parts) != 4 {
		return Record{}, false, nil
	}
	rkey := []byte(prefixRecord + parts[2] + "/" + parts[3])
	v, err := getValue(txn, string(rkey))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Record{}, false, nil
	} else if err != nil {
		return Record{}, false, err
	}
	r, err := s.openRecord(rkey, v, UserRef{}, parts[3])
	if err != nil {
		return Record{}, false, err
	}
	at, ok := dueAt(&r)
	return r, ok && indexTime(at) == parts[1], nil
}

// Count returns the number of records.
func (s *Store) Count() (int, error) {
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// PutBatch writes recs without compare-and-set, each with Version 1
// (set in recs), and syncs at the end: bulk import and benchmarks. The
// index entries of records it overwrites go stale (Due removes them).
func (s *Store) PutBatch(recs []Record) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := range recs {
		r := &recs[i]
		key, err := putKey(r)
		if err != nil {
			return err
		}
		r.Version = 1
		v, err := s.seal(key, r)
		if err != nil {
			return err
		}
		if err := wb.Set(key, v); err != nil {
			return fmt.Errorf("vault put batch: %w", err)
		}
		if at, ok := dueAt(r); ok {
			if err := wb.Set(indexKey(at, key), nil); err != nil {
				return fmt.Errorf("vault put batch: %w", err)
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("vault put batch: %w", err)
	}
	s.mu.Lock()
	s.gen++
	clear(s.cache)
	s.mu.Unlock()
	return s.db.Sync()
}

// PutTemp stores a short-lived secret of the linking flow, sealed, for
// ttl (Badger expiry has a granularity of one second). kind is TempLink
// or TempState.
func (s *Store) PutTemp(kind, id string, value []byte, ttl time.Duration) error {
	key, err := tempKey(kind, id)
	if err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("vault put %s: ttl %v must be positive", kind, ttl)
	}
	e := badger.NewEntry(key, s.kr.Seal(key, value)).WithTTL(ttl)
	return s.db.Update(func(txn *badger.Txn) error { return txn.SetEntry(e) })
}

// TakeTemp returns a secret stored by PutTemp and deletes it in the same
// transaction: of concurrent Takes exactly one gets it, the others get
// ErrNotFound, as do Takes of missing or expired secrets.
func (s *Store) TakeTemp(kind, id string) ([]byte, error) {
	return s.temp(kind, id, true)
}

// PeekTemp returns a secret stored by PutTemp without deleting it, or
// ErrNotFound.
func (s *Store) PeekTemp(kind, id string) ([]byte, error) {
	return s.temp(kind, id, false)
}

func (s *Store) temp(kind, id string, take bool) ([]byte, error) {
	key, err := tempKey(kind, id)
	if err != nil {
		return nil, err
	}
	var v []byte
	fn := func(txn *badger.Txn) error {
		sealed, err := getValue(txn, string(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if v, err = s.kr.Open(key, sealed); err != nil {
			return err
		}
		if take {
			return txn.Delete(key)
		}
		return nil
	}
	if take {
		err = s.update(fn, ErrNotFound)
	} else {
		err = s.db.View(fn)
	}
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", kind, err)
	}
	return v, nil
}

// update runs fn in a read-write transaction; a conflict with a
// concurrent transaction becomes onConflict (when not nil).
func (s *Store) update(fn func(*badger.Txn) error, onConflict error) error {
	err := s.db.Update(fn)
	if errors.Is(err, badger.ErrConflict) && onConflict != nil {
		return fmt.Errorf("%w: a concurrent write won", onConflict)
	}
	return err
}

func (s *Store) getRecord(txn *badger.Txn, key []byte, u UserRef, conn string) (Record, error) {
	v, err := getValue(txn, string(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Record{}, ErrNotFound
	} else if err != nil {
		return Record{}, err
	}
	return s.openRecord(key, v, u, conn)
}

func (s *Store) openRecord(key, sealed []byte, u UserRef, conn string) (Record, error) {
	var r Record
	pt, err := s.kr.Open(key, sealed)
	if err == nil {
		err = json.Unmarshal(pt, &r)
	}
	if err != nil {
		return Record{}, &CorruptError{User: u, Connection: conn, Err: err}
	}
	return r, nil
}

func (s *Store) setRecord(txn *badger.Txn, key []byte, r *Record) error {
	v, err := s.seal(key, r)
	if err != nil {
		return err
	}
	if err := txn.Set(key, v); err != nil {
		return err
	}
	if at, ok := dueAt(r); ok {
		return txn.Set(indexKey(at, key), nil)
	}
	return nil
}

func (s *Store) seal(key []byte, r *Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return s.kr.Seal(key, b), nil
}

func deleteIndex(txn *badger.Txn, r *Record) error {
	at, ok := dueAt(r)
	if !ok {
		return nil
	}
	key, err := recordKey(r.User, r.Connection)
	if err != nil {
		return err
	}
	return txn.Delete(indexKey(at, key))
}

// dueAt is when r should be refreshed: RefreshAt, or NextAttempt if
// later; false when it needs no refresh.
func dueAt(r *Record) (time.Time, bool) {
	at := r.RefreshAt()
	if at.IsZero() {
		return time.Time{}, false
	}
	if r.NextAttempt.After(at) {
		at = r.NextAttempt
	}
	return at, true
}

func getValue(txn *badger.Txn, key string) ([]byte, error) {
	item, err := txn.Get([]byte(key))
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func recordKey(u UserRef, conn string) ([]byte, error) {
	if conn == "" || strings.Contains(conn, "/") {
		return nil, fmt.Errorf("vault: invalid connection name %q", conn)
	}
	return appendRecordKey(nil, u.Key(), conn), nil
}

// appendRecordKey appends r/<userKey>/<connection>.
func appendRecordKey(b []byte, userKey, conn string) []byte {
	return append(append(append(append(b, prefixRecord...), userKey...), '/'), conn...)
}

func putKey(r *Record) ([]byte, error) {
	if r.User == (UserRef{}) {
		return nil, fmt.Errorf("vault put %s: the record has no user", r.Connection)
	}
	return recordKey(r.User, r.Connection)
}

// indexKey is i/<time>/<userKey>/<connection> for the record key
// r/<userKey>/<connection>.
func indexKey(at time.Time, recordKey []byte) []byte {
	return append([]byte(prefixIndex+indexTime(at)+"/"), recordKey[len(prefixRecord):]...)
}

// indexTime is 16 hex digits of unix nanos (0 before 1970): they sort
// as the times do.
func indexTime(t time.Time) string {
	return fmt.Sprintf("%016x", uint64(max(t.UnixNano(), 0)))
}

func tempKey(kind, id string) ([]byte, error) {
	if kind != TempLink && kind != TempState {
		return nil, fmt.Errorf("vault: unknown temp kind %q", kind)
	}
	if id == "" {
		return nil, fmt.Errorf("vault %s: empty id", kind)
	}
	return []byte(prefixTemp + kind + "/" + id), nil
}
