package approval

import (
	"strings"
	"testing"
)

// TestNewID: auth_req_ids carry 256 random bits, are distinct, and can be
// pasted as a command-line argument (none starts with "-").
func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		id := newID()
		b, err := idEncoding.DecodeString(id)
		if err != nil || len(b) != 32 || len(id) != 52 {
			t.Fatalf("id %q: %d bytes, %v", id, len(b), err)
		}
		if strings.HasPrefix(id, "-") || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("id %q is not plain base32", id)
		}
		if seen[id] {
			t.Fatalf("id %q twice", id)
		}
		seen[id] = true
	}
}
