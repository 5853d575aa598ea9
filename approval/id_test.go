package approval

import (
	"fmt"
	"strings"
	"testing"
)

// TestNewID: an auth_req_id is a record key derived from the agent and the
// event (the same for a retry, different for another agent, event or
// key) and 128 random bits; it is plain base32, so it can be pasted as a
// command-line argument (none starts with "-").
func TestNewID(t *testing.T) {
	key, other := []byte("k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1"), []byte("k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2")
	seen := map[string]bool{}
	for i := range 2000 {
		ev := fmt.Sprint("ev-", i)
		rk := recordKeyFor(key, "shopper", ev)
		id := newID(rk)
		b, err := idEncoding.DecodeString(id)
		if err != nil || len(b) != 32 || len(id) != idLen {
			t.Fatalf("id %q: %d bytes, %v", id, len(b), err)
		}
		if strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("id %q is not plain base32", id)
		}
		if seen[id] || seen[rk] {
			t.Fatalf("id %q or record key %q twice", id, rk)
		}
		seen[id], seen[rk] = true, true
		if RecordKey(id) != rk || recordKeyFor(key, "shopper", ev) != rk {
			t.Fatalf("%s: record key %q, then %q; want %q", ev, RecordKey(id), recordKeyFor(key, "shopper", ev), rk)
		}
		if again := newID(rk); again == id || RecordKey(again) != rk {
			t.Fatalf("%s: a second id %q for the same record key", ev, again)
		}
		for _, o := range []string{recordKeyFor(key, "other", ev), recordKeyFor(other, "shopper", ev), recordKeyFor(key, "shopper\x00ev-", fmt.Sprint(i))} {
			if o == rk {
				t.Fatalf("%s: another agent, key or split gave the same record key", ev)
			}
		}
	}
	// Ids of earlier versions (43 characters of base64url) are their own key.
	if old := "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"; RecordKey(old) != old {
		t.Errorf("RecordKey(%q) = %q", old, RecordKey(old))
	}
}

// TestServiceIDKey: a Service without IDKey derives record keys with a key
// of its own (stable across its requests); with one, as the key says.
func TestServiceIDKey(t *testing.T) {
	var a, b Service
	if a.recordKey("x", "e") != RecordKey(a.newID("x", "e")) || a.recordKey("x", "e") == b.recordKey("x", "e") {
		t.Fatal("services without IDKey: record keys not stable within one, or equal across two")
	}
	k := []byte("0123456789abcdef0123456789abcdef")
	c, d := Service{IDKey: k}, Service{IDKey: k}
	if c.recordKey("x", "e") != d.recordKey("x", "e") || c.recordKey("x", "e") != recordKeyFor(k, "x", "e") {
		t.Fatal("services sharing IDKey disagree")
	}
}
