package approval

import (
	"fmt"
	"strings"
	"testing"
)

// TestDeriveID: an auth_req_id is 256 bits of the key's HMAC, the same
// for a retry of the same agent's event, different for another agent,
// event or key, and can be pasted as a command-line argument (plain
// base32: none starts with "-").
func TestDeriveID(t *testing.T) {
	key, other := []byte("k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1"), []byte("k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2")
	seen := map[string]bool{}
	for i := range 2000 {
		ev := fmt.Sprint("ev-", i)
		id := deriveID(key, "shopper", ev)
		b, err := idEncoding.DecodeString(id)
		if err != nil || len(b) != 32 || len(id) != 52 {
			t.Fatalf("id %q: %d bytes, %v", id, len(b), err)
		}
		if strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("id %q is not plain base32", id)
		}
		if seen[id] {
			t.Fatalf("id %q twice", id)
		}
		seen[id] = true
		if deriveID(key, "shopper", ev) != id {
			t.Fatalf("%s: not the same id again", ev)
		}
		for _, o := range []string{deriveID(key, "other", ev), deriveID(other, "shopper", ev), deriveID(key, "shopper\x00ev-", fmt.Sprint(i))} {
			if o == id {
				t.Fatalf("%s: another agent, key or split gave the same id", ev)
			}
		}
	}
}

// TestServiceIDKey: a Service without IDKey derives ids with a key of its
// own (stable across its requests); with one, as the key says.
func TestServiceIDKey(t *testing.T) {
	var a, b Service
	if a.newID("x", "e") != a.newID("x", "e") || a.newID("x", "e") == b.newID("x", "e") {
		t.Fatal("services without IDKey: ids not stable within one, or equal across two")
	}
	k := []byte("0123456789abcdef0123456789abcdef")
	c, d := Service{IDKey: k}, Service{IDKey: k}
	if c.newID("x", "e") != d.newID("x", "e") || c.newID("x", "e") != deriveID(k, "x", "e") {
		t.Fatal("services sharing IDKey disagree")
	}
}
