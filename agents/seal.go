package agents

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"

	"github.com/agentauth/agentauth/schemas"
)

// The sealed format is nkeys' xkv1: "xkv1" || 24-byte nonce || NaCl box
// (X25519, XSalsa20-Poly1305). Sealing and opening here precompute the
// X25519 shared key once per peer (box.Precompute) instead of once per
// message, which is most of the cost of a box; the bytes are the same as
// nkeys' Seal and Open produce and accept (a test holds them to that).
const (
	xkeyVersion = nkeys.XKeyVersionV1
	nonceLen    = 24
)

// sharedKeys caches precomputed shared keys by peer public key.
type sharedKeys struct {
	private [32]byte
	mu      sync.RWMutex
	byPeer  map[string]*[32]byte
	max     int // bound of byPeer: when full, one entry makes room for each new one
}

// maxPeers bounds the cache.
const maxPeers = 65536

func newSharedKeys(seed []byte) (*sharedKeys, error) {
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if prefix != nkeys.PrefixByteCurve || len(raw) != 32 {
		return nil, errors.New("not an X25519 (curve) seed")
	}
	k := &sharedKeys{byPeer: map[string]*[32]byte{}, max: maxPeers}
	copy(k.private[:], raw)
	return k, nil
}

func (k *sharedKeys) shared(peer string) (*[32]byte, error) {
	k.mu.RLock()
	s, ok := k.byPeer[peer]
	k.mu.RUnlock()
	if ok {
		return s, nil
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(peer))
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("%q is not an X25519 public key", peer)
	}
	var pub [32]byte
	copy(pub[:], raw)
	s = new([32]byte)
	box.Precompute(s, &pub, &k.private)
	k.mu.Lock()
	if len(k.byPeer) >= k.max {
		for p := range k.byPeer { // a random one: ranges start anywhere
			delete(k.byPeer, p)
			break
		}
	}
	k.byPeer[peer] = s
	k.mu.Unlock()
	return s, nil
}

// Sealer seals secrets to agents with agentauth's own X25519 key, so that
// only the agent can open them: nothing on the bus, in a stream or in a
// replay is usable by anyone else. Safe for concurrent use.
type Sealer struct {
	keys *sharedKeys
	pub  string
}

// NewSealer uses the curve seed (SX…) as agentauth's sealing key.
func NewSealer(seed []byte) (*Sealer, error) {
	kp, err := nkeys.FromCurveSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	keys, err := newSharedKeys(seed)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	return &Sealer{keys: keys, pub: pub}, nil
}

// PublicKey is agentauth's sealing public key (X…).
func (s *Sealer) PublicKey() string { return s.pub }

// Seal encrypts plaintext to the agent's xkey.
func (s *Sealer) Seal(a Agent, plaintext []byte) (schemas.Sealed, error) {
	shared, err := s.keys.shared(a.XKey)
	if err != nil {
		return schemas.Sealed{}, fmt.Errorf("seal to agent %s: %w", a.ID, err)
	}
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return schemas.Sealed{}, err
	}
	out := make([]byte, 0, len(xkeyVersion)+nonceLen+box.Overhead+len(plaintext))
	out = append(append(out, xkeyVersion...), nonce[:]...)
	out = box.SealAfterPrecomputation(out, plaintext, &nonce, shared)
	return schemas.Sealed{Alg: schemas.SealAlg, Sender: s.pub, Recipient: a.XKey, Ciphertext: out}, nil
}

// ErrNotForMe is returned by Open for a box sealed to another key.
var ErrNotForMe = errors.New("sealed to another agent's key")

// ErrUnknownSender is returned by an Opener pinned to agentauth's sealing
// key for a box sealed with any other key: the agent's xkey is public, so
// anyone who can publish to the agent could seal a box it opens.
var ErrUnknownSender = errors.New("sealed by an unknown key, not this agentauth instance's")

// Opener opens what agentauth seals to one agent. Safe for concurrent use.
type Opener struct {
	keys   *sharedKeys
	pub    string
	sender string // the pinned sealing key of agentauth; empty: any
}

// NewOpener uses the agent's xkey seed (SX…) and opens only boxes sealed
// by sender, agentauth's sealing public key (X…, Credentials.ServiceXKey).
// An empty sender opens boxes from any key, which authenticates nothing
// about who sealed them: only for credentials written before the key was
// pinned.
func NewOpener(xkeySeed []byte, sender string) (*Opener, error) {
	if sender != "" && !nkeys.IsValidPublicCurveKey(sender) {
		return nil, fmt.Errorf("service xkey %q is not an X25519 public key", sender)
	}
	kp, err := nkeys.FromCurveSeed(xkeySeed)
	if err != nil {
		return nil, fmt.Errorf("xkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	keys, err := newSharedKeys(xkeySeed)
	if err != nil {
		return nil, fmt.Errorf("xkey seed: %w", err)
	}
	return &Opener{keys: keys, pub: pub, sender: sender}, nil
}

// Open decrypts a sealed box. It returns ErrNotForMe for a box sealed to
// another key and, when the Opener is pinned, ErrUnknownSender for one
// sealed by a key other than agentauth's.
func (o *Opener) Open(s schemas.Sealed) ([]byte, error) {
	if s.Alg != schemas.SealAlg {
		return nil, fmt.Errorf("unsupported sealing algorithm %q", s.Alg)
	}
	if s.Recipient != o.pub {
		return nil, ErrNotForMe
	}
	if o.sender != "" && s.Sender != o.sender {
		return nil, fmt.Errorf("open sealed box: %w (sender %s, want %s)", ErrUnknownSender, s.Sender, o.sender)
	}
	in := s.Ciphertext
	if len(in) <= len(xkeyVersion)+nonceLen || !bytes.Equal(in[:len(xkeyVersion)], []byte(xkeyVersion)) {
		return nil, errors.New("open sealed box: not an xkv1 box")
	}
	shared, err := o.keys.shared(s.Sender)
	if err != nil {
		return nil, fmt.Errorf("open sealed box: sender: %w", err)
	}
	var nonce [nonceLen]byte
	copy(nonce[:], in[len(xkeyVersion):])
	pt, ok := box.OpenAfterPrecomputation(nil, in[len(xkeyVersion)+nonceLen:], &nonce, shared)
	if !ok {
		return nil, errors.New("open sealed box: authentication failed")
	}
	return pt, nil
}

// Open decrypts a sealed box with the agent's xkey seed, from any sender
// (see NewOpener).
func Open(xkeySeed []byte, s schemas.Sealed) ([]byte, error) {
	o, err := NewOpener(xkeySeed, "")
	if err != nil {
		return nil, err
	}
	return o.Open(s)
}
