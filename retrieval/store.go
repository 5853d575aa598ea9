package retrieval

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/agentauth/agentauth/internal/badgerlog"
)

// ErrNotFound is returned for a document that does not exist.
var ErrNotFound = errors.New("retrieval: document not found")

// Key layout of the DocStore.
const (
	prefixDoc = "d/" // d/<id> → encoded Document
	prefixRef = "r/" // r/<id> → <collection> NUL <object>
	keySeq    = "m/seq"
)

// DocStore holds the documents on Badger: the durable truth, from which
// the vector index can always be rebuilt. Every write is synced before it
// returns and bumps Seq, a counter of changes that the index records so
// that an index saved before a crash is known to be behind. A DocStore is
// safe for concurrent use; writes are serialized.
type DocStore struct {
	db *badger.DB

	mu    sync.Mutex // serializes writes
	seq   uint64
	count int
}

// OpenDocStore opens (creating if needed) the document store in dir,
// which it must have to itself.
func OpenDocStore(dir string) (*DocStore, error) {
	return openDocStore(dir, slog.Default())
}

func openDocStore(dir string, log *slog.Logger) (*DocStore, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerlog.New(log.With("component", "badger", "store", "documents"))).
		WithNumVersionsToKeep(1).
		WithCompression(options.Snappy).
		WithNumMemtables(2).
		WithMemTableSize(32 << 20).
		WithBlockCacheSize(64 << 20).
		WithIndexCacheSize(0).
		WithValueLogFileSize(256 << 20).
		WithValueThreshold(1 << 10). // texts and vectors to the value log, references in the tree
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("retrieval: open document store %s: %w", dir, err)
	}
	s := &DocStore{db: db}
	err = db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(keySeq))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := it.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("sequence of %d bytes", len(v))
				}
				s.seq = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		}
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte(prefixRef)
		iter := txn.NewIterator(o)
		defer iter.Close()
		for iter.Rewind(); iter.Valid(); iter.Next() {
			s.count++
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("retrieval: open document store %s: %w", dir, err)
	}
	return s, nil
}

// Close closes the store.
func (s *DocStore) Close() error { return s.db.Close() }

// Seq is the number of changes ever written (Put, Delete): it grows with
// every write.
func (s *DocStore) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Count is the number of documents.
func (s *DocStore) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Put adds or replaces a document (d.ID must not be empty).
func (s *DocStore) Put(d Document) error { return s.PutBatch([]Document{d}) }

// PutBatch adds or replaces documents in one synced transaction (several
// when they do not fit in one: a failure may then leave the first ones
// written).
func (s *DocStore) PutBatch(docs []Document) error {
	vals := make([][]byte, len(docs))
	for i, d := range docs {
		if d.ID == "" {
			return errors.New("retrieval: put document: empty id")
		}
		v, err := encodeDoc(d)
		if err != nil {
			return fmt.Errorf("retrieval: put document %s: %w", d.ID, err)
		}
		vals[i] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(docs); {
		n, added, err := s.putSome(docs[i:], vals[i:])
		if err != nil {
			return fmt.Errorf("retrieval: put document %s: %w", docs[i].ID, err)
		}
		s.count += added
		i += n
	}
	return nil
}

// putSome writes as many documents as fit in one transaction and reports
// how many, and how many of them are new. s.mu is held.
func (s *DocStore) putSome(docs []Document, vals [][]byte) (n, added int, err error) {
	for limit := len(docs); ; {
		n, added, err = s.putTxn(docs[:limit], vals[:limit])
		var tooBig txnTooBig
		if !errors.As(err, &tooBig) {
			return n, added, err
		}
		limit = int(tooBig)
	}
}

// txnTooBig says a transaction fits only the first so many writes (> 0).
type txnTooBig int

func (t txnTooBig) Error() string { return badger.ErrTxnTooBig.Error() }

func (s *DocStore) putTxn(docs []Document, vals [][]byte) (n, added int, err error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for i, d := range docs {
		key := []byte(prefixRef + d.ID)
		_, err := txn.Get(key) // sees this transaction's own writes
		isNew := errors.Is(err, badger.ErrKeyNotFound)
		if err != nil && !isNew {
			return 0, 0, err
		}
		err = txn.Set([]byte(prefixDoc+d.ID), vals[i])
		if err == nil {
			err = txn.Set(key, []byte(refValue(d)))
		}
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			return 0, 0, txnTooBig(i)
		}
		if err != nil {
			return 0, 0, err
		}
		if isNew {
			added++
		}
	}
	if err := s.commit(txn); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) && len(docs) > 1 {
			return 0, 0, txnTooBig(len(docs) - 1)
		}
		return 0, 0, err
	}
	return len(docs), added, nil
}

// commit bumps the sequence in txn and commits it. s.mu is held.
func (s *DocStore) commit(txn *badger.Txn) error {
	if err := txn.Set([]byte(keySeq), binary.BigEndian.AppendUint64(nil, s.seq+1)); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	s.seq++
	return nil
}

// Get returns the document id, or an error wrapping ErrNotFound.
func (s *DocStore) Get(id string) (Document, error) {
	var d Document
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(prefixDoc + id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			d, err = decodeDoc(v)
			return err
		})
	})
	if err != nil {
		return Document{}, fmt.Errorf("retrieval: get document %s: %w", id, err)
	}
	return d, nil
}

// Delete removes a document; it returns an error wrapping ErrNotFound
// when there is none.
func (s *DocStore) Delete(id string) error {
	n, err := s.DeleteBatch([]string{id})
	if err == nil && n == 0 {
		err = fmt.Errorf("retrieval: delete document %s: %w", id, ErrNotFound)
	}
	return err
}

// DeleteBatch removes the documents that exist among ids in one synced
// transaction and returns how many there were.
func (s *DocStore) DeleteBatch(ids []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for i := 0; i < len(ids); {
		n, deleted, err := s.deleteSome(ids[i:])
		if err != nil {
			return total, fmt.Errorf("retrieval: delete documents: %w", err)
		}
		total += deleted
		s.count -= deleted
		i += n
	}
	return total, nil
}

func (s *DocStore) deleteSome(ids []string) (n, deleted int, err error) {
	for limit := len(ids); ; {
		n, deleted, err = s.deleteTxn(ids[:limit])
		var tooBig txnTooBig
		if !errors.As(err, &tooBig) {
			return n, deleted, err
		}
		limit = int(tooBig)
	}
}

func (s *DocStore) deleteTxn(ids []string) (n, deleted int, err error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for i, id := range ids {
		key := []byte(prefixRef + id)
		_, err := txn.Get(key) // sees this transaction's own deletes
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		err = txn.Delete([]byte(prefixDoc + id))
		if err == nil {
			err = txn.Delete(key)
		}
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			return 0, 0, txnTooBig(i)
		}
		if err != nil {
			return 0, 0, err
		}
		deleted++
	}
	if deleted > 0 {
		if err := s.commit(txn); err != nil {
			if errors.Is(err, badger.ErrTxnTooBig) && len(ids) > 1 {
				return 0, 0, txnTooBig(len(ids) - 1)
			}
			return 0, 0, err
		}
	}
	return len(ids), deleted, nil
}

// Each calls fn for every document in id order (a snapshot: writes made
// meanwhile are not seen) and stops at fn's first error, which it
// returns.
func (s *DocStore) Each(fn func(Document) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte(prefixDoc)
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d Document
			err := it.Item().Value(func(v []byte) (err error) {
				d, err = decodeDoc(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("retrieval: read document %s: %w", it.Item().Key()[len(prefixDoc):], err)
			}
			if err := fn(d); err != nil {
				return err
			}
		}
		return nil
	})
}

// docRef is what a query needs to know of a document without reading it.
type docRef struct {
	Collection string
	Object     string
}

// eachRef calls fn for every document's reference, without reading the
// documents, and returns the Seq the snapshot reflects.
func (s *DocStore) eachRef(fn func(id string, r docRef)) (uint64, error) {
	s.mu.Lock()
	seq := s.seq
	txn := s.db.NewTransaction(false) // the snapshot at seq: writes hold s.mu
	s.mu.Unlock()
	defer txn.Discard()
	o := badger.DefaultIteratorOptions
	o.Prefix = []byte(prefixRef)
	it := txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id := string(it.Item().Key()[len(prefixRef):])
		err := it.Item().Value(func(v []byte) error {
			coll, obj, ok := strings.Cut(string(v), "\x00")
			if !ok {
				return fmt.Errorf("document %s: malformed reference", id)
			}
			fn(id, docRef{Collection: coll, Object: obj})
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("retrieval: read references: %w", err)
		}
	}
	return seq, nil
}

func refValue(d Document) string { return d.Collection + "\x00" + d.Object }

// A document is stored as: version byte 1, uvarint length of the JSON of
// the document without its vector, that JSON, uvarint number of vector
// elements, the elements as little-endian float32.
const docVersion = 1

func encodeDoc(d Document) ([]byte, error) {
	vec := d.Vector
	d.Vector = nil
	j, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64*2+len(j)+4*len(vec))
	b = append(b, docVersion)
	b = binary.AppendUvarint(b, uint64(len(j)))
	b = append(b, j...)
	b = binary.AppendUvarint(b, uint64(len(vec)))
	for _, x := range vec {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b, nil
}

func decodeDoc(b []byte) (Document, error) {
	var d Document
	if len(b) == 0 || b[0] != docVersion {
		return d, errors.New("unknown document encoding")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return d, errors.New("malformed document")
	}
	if err := json.Unmarshal(b[k:k+int(n)], &d); err != nil {
		return d, fmt.Errorf("malformed document: %w", err)
	}
	b = b[k+int(n):]
	m, k := binary.Uvarint(b)
	if k <= 0 || m > uint64(len(b)-k)/4 || uint64(len(b)-k) != 4*m {
		return d, errors.New("malformed document vector")
	}
	b = b[k:]
	if m > 0 {
		d.Vector = make([]float32, m)
		for i := range d.Vector {
			d.Vector[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return d, nil
}
