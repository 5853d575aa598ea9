package agents

import (
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/schemas"
)

// Sealer seals secrets to agents with agentauth's own X25519 key, so that
// only the agent can open them: nothing on the bus, in a stream or in a
// replay is usable by anyone else. Safe for concurrent use.
type Sealer struct {
	kp  nkeys.KeyPair
	pub string
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
	return &Sealer{kp: kp, pub: pub}, nil
}

// PublicKey is agentauth's sealing public key (X…).
func (s *Sealer) PublicKey() string { return s.pub }

// Seal encrypts plaintext to the agent's xkey.
func (s *Sealer) Seal(a Agent, plaintext []byte) (schemas.Sealed, error) {
	ct, err := s.kp.Seal(plaintext, a.XKey)
	if err != nil {
		return schemas.Sealed{}, fmt.Errorf("seal to agent %s: %w", a.ID, err)
	}
	return schemas.Sealed{Alg: schemas.SealAlg, Sender: s.pub, Recipient: a.XKey, Ciphertext: ct}, nil
}

// ErrNotForMe is returned by Open for a box sealed to another key.
var ErrNotForMe = errors.New("sealed to another agent's key")

// Open decrypts a sealed box with the agent's xkey seed.
func Open(xkeySeed []byte, s schemas.Sealed) ([]byte, error) {
	if s.Alg != schemas.SealAlg {
		return nil, fmt.Errorf("unsupported sealing algorithm %q", s.Alg)
	}
	kp, err := nkeys.FromCurveSeed(xkeySeed)
	if err != nil {
		return nil, fmt.Errorf("xkey seed: %w", err)
	}
	if pub, _ := kp.PublicKey(); pub != s.Recipient {
		return nil, ErrNotForMe
	}
	pt, err := kp.Open(s.Ciphertext, s.Sender)
	if err != nil {
		return nil, fmt.Errorf("open sealed box: %w", err)
	}
	return pt, nil
}
