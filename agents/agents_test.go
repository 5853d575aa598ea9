package agents

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/schemas"
)

func TestNew(t *testing.T) {
	a, c, err := New("a1", Policy{Audiences: []string{"https://api"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.NKeySeed, "SU") || !strings.HasPrefix(c.XKeySeed, "SX") {
		t.Errorf("seeds %q %q", c.NKeySeed[:2], c.XKeySeed[:2])
	}
	back, err := FromCredentials(c, a.Policy, a.Created)
	if err != nil || back.NKey != a.NKey || back.XKey != a.XKey {
		t.Errorf("FromCredentials: %+v %v", back, err)
	}
	if !a.Policy.AllowsAudience("https://api") || a.Policy.AllowsAudience("https://other") {
		t.Error("AllowsAudience")
	}
	for _, bad := range []string{"", "A", "audit", "a.b", "a>"} {
		if _, _, err := New(bad, Policy{}, time.Now()); err == nil {
			t.Errorf("New(%q): want an error", bad)
		}
	}
	if err := (Agent{ID: "a1", NKey: a.XKey, XKey: a.NKey}).Validate(); err == nil {
		t.Error("swapped keys validated")
	}
}

func TestParseCredentials(t *testing.T) {
	_, c, _ := New("a1", Policy{}, time.Now())
	for name, in := range map[string]string{
		"not json":     "{",
		"no agent":     `{"nkey_seed":"x","xkey_seed":"y"}`,
		"no seeds":     `{"agent":"a1"}`,
		"invalid name": `{"agent":"A B","nkey_seed":"x","xkey_seed":"y"}`,
	} {
		if _, err := ParseCredentials([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	got, err := ParseCredentials([]byte(`{"agent":"a1","nkey_seed":"` + c.NKeySeed + `","xkey_seed":"` + c.XKeySeed + `"}`))
	if err != nil || got != c {
		t.Errorf("got %+v %v", got, err)
	}
}

func TestSealOpen(t *testing.T) {
	kp, _ := nkeys.CreateCurveKeys()
	seed, _ := kp.Seed()
	s, err := NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	a1, c1, _ := New("a1", Policy{}, time.Now())
	_, c2, _ := New("a2", Policy{}, time.Now())
	box, err := s.Seal(a1, []byte("token"))
	if err != nil {
		t.Fatal(err)
	}
	if box.Sender != s.PublicKey() || box.Recipient != a1.XKey {
		t.Errorf("box %+v", box)
	}
	if got, err := Open([]byte(c1.XKeySeed), box); err != nil || string(got) != "token" {
		t.Errorf("open: %q %v", got, err)
	}
	if _, err := Open([]byte(c2.XKeySeed), box); !errors.Is(err, ErrNotForMe) {
		t.Errorf("other agent: %v", err)
	}
	bad := box
	bad.Alg = "none"
	if _, err := Open([]byte(c1.XKeySeed), bad); err == nil {
		t.Error("unknown algorithm opened")
	}
	if _, err := NewSealer([]byte("SUnotacurveseed")); err == nil {
		t.Error("NewSealer accepted a non-curve seed")
	}
}

func TestPermissions(t *testing.T) {
	p := PermissionsFor("a1")
	for _, s := range append(p.Publish, p.Subscribe...) {
		if s == ">" || strings.HasPrefix(s, "_INBOX.") || strings.Contains(s, "a2") {
			t.Errorf("permission %q is too wide", s)
		}
	}
	if len(p.Subscribe) != 1 || p.Subscribe[0] != "_INBOX_a1.>" {
		t.Errorf("subscribe %v", p.Subscribe)
	}
	cfg := NATSConfig("UABC", []Agent{{ID: "b", NKey: "UB"}, {ID: "a", NKey: "UA"}})
	if strings.Index(cfg, `"UA"`) > strings.Index(cfg, `"UB"`) || !strings.Contains(cfg, `"UABC"`) {
		t.Errorf("nats config:\n%s", cfg)
	}
}

// TestSealCompatibleWithNkeys: the precomputed boxes are nkeys' xkv1 boxes
// (either side can be nkeys).
func TestSealCompatibleWithNkeys(t *testing.T) {
	svc, _ := nkeys.CreateCurveKeys()
	seed, _ := svc.Seed()
	a, c, err := New("compat", Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	agentKP, err := nkeys.FromCurveSeed([]byte(c.XKeySeed))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal(a, []byte("ours"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := agentKP.Open(sealed.Ciphertext, s.PublicKey()); err != nil || string(pt) != "ours" {
		t.Fatalf("nkeys cannot open our box: %q %v", pt, err)
	}
	ct, err := svc.Seal([]byte("theirs"), a.XKey)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener([]byte(c.XKeySeed), s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pt, err := o.Open(schemas.Sealed{Alg: schemas.SealAlg, Sender: s.PublicKey(), Recipient: a.XKey, Ciphertext: ct})
	if err != nil || string(pt) != "theirs" {
		t.Fatalf("we cannot open nkeys' box: %q %v", pt, err)
	}
	// A tampered box fails.
	sealed.Ciphertext[len(sealed.Ciphertext)-1] ^= 1
	if _, err := o.Open(sealed); err == nil {
		t.Fatal("tampered box opened")
	}
}

// TestSharedKeysBound: a full cache of shared keys makes room for a new
// peer by dropping one entry, not all of them, and keys stay correct.
func TestSharedKeysBound(t *testing.T) {
	kp, _ := nkeys.CreateCurveKeys()
	seed, _ := kp.Seed()
	k, err := newSharedKeys(seed)
	if err != nil {
		t.Fatal(err)
	}
	k.max = 3
	var peers []string
	first := map[string][32]byte{}
	for range 5 {
		p, _ := nkeys.CreateCurveKeys()
		pub, _ := p.PublicKey()
		peers = append(peers, pub)
		key, err := k.shared(pub)
		if err != nil {
			t.Fatal(err)
		}
		first[pub] = *key
	}
	if n := len(k.byPeer); n != 3 {
		t.Fatalf("%d shared keys cached, want the bound, 3", n)
	}
	if _, ok := k.byPeer[peers[4]]; !ok {
		t.Fatal("the newest peer's key is not cached")
	}
	// An evicted peer's key is computed again, equal to the first time.
	for _, p := range peers {
		key, err := k.shared(p)
		if err != nil || *key != first[p] {
			t.Fatalf("peer %s: key changed (%v)", p, err)
		}
	}
}

// TestOpenerPinsSender: the agent's xkey is public, so anyone can seal a
// box to it; an Opener pinned to agentauth's key refuses a box sealed by
// another key, and opens agentauth's.
func TestOpenerPinsSender(t *testing.T) {
	a, c, err := New("pinned", Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	service, forger := mustSealer(t), mustSealer(t)
	genuine, err := service.Seal(a, []byte("genuine"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.Seal(a, []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener([]byte(c.XKeySeed), service.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := o.Open(forged); !errors.Is(err, ErrUnknownSender) {
		t.Errorf("box sealed by another key: got %q, %v, want ErrUnknownSender", pt, err)
	}
	// Claiming agentauth's key as the sender does not help: the box does
	// not authenticate under it.
	relabelled := forged
	relabelled.Sender = service.PublicKey()
	if pt, err := o.Open(relabelled); err == nil {
		t.Errorf("forged box relabelled with agentauth's key opened: %q", pt)
	}
	if pt, err := o.Open(genuine); err != nil || string(pt) != "genuine" {
		t.Errorf("box sealed by the pinned key: got %q, %v, want %q", pt, err, "genuine")
	}
	// Pinned to the forger's key, the forger's box opens (the pin is what
	// decides).
	of, err := NewOpener([]byte(c.XKeySeed), forger.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := of.Open(forged); err != nil || string(pt) != "forged" {
		t.Errorf("box sealed by the pinned key: got %q, %v, want %q", pt, err, "forged")
	}
	if _, err := NewOpener([]byte(c.XKeySeed), "UNOTACURVEKEY"); err == nil {
		t.Error("NewOpener accepted a pinned key that is not an X25519 public key")
	}
}

func TestParseCredentialsServiceXKey(t *testing.T) {
	_, c, err := New("creds", Policy{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.ServiceXKey = mustSealer(t).PublicKey()
	b, _ := json.Marshal(c)
	if !strings.Contains(string(b), `"service_xkey":"X`) {
		t.Errorf("credentials JSON %s has no service_xkey", b)
	}
	got, err := ParseCredentials(b)
	if err != nil || got != c {
		t.Errorf("ParseCredentials: got %+v, %v, want %+v", got, err, c)
	}
	c.ServiceXKey = "not-a-key"
	b, _ = json.Marshal(c)
	if _, err := ParseCredentials(b); err == nil {
		t.Error("ParseCredentials accepted a service_xkey that is not an X25519 public key")
	}
}

func mustSealer(tb testing.TB) *Sealer {
	tb.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := kp.Seed()
	s, err := NewSealer(seed)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestInInbox(t *testing.T) {
	for _, tc := range []struct {
		id, subject string
		want        bool
	}{
		{"a1", "_INBOX_a1.x", true},
		{"a1", "_INBOX_a1.", false},
		{"a1", "_INBOX_a1", false},
		{"a1", "_INBOX_a12.x", false},
		{"a12", "_INBOX_a1.x", false},
		{"a1", "_INBOX.a1.x", false},
		{"a1", "$KV.AGENTAUTH_AGENTS.a1", false},
		{"", "_INBOX_.x", false},
	} {
		if got := InInbox(tc.id, tc.subject); got != tc.want || got && !strings.HasPrefix(tc.subject, InboxPrefix(tc.id)+".") {
			t.Errorf("InInbox(%q, %q) = %v, want %v", tc.id, tc.subject, got, tc.want)
		}
	}
}
