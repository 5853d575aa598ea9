package vault

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Errors returned by Keyring.Open.
var (
	ErrCorrupt            = errors.New("vault: value is corrupt or was tampered with")
	ErrSealedWithOtherKey = errors.New("vault: value was sealed with another master key")
)

const (
	envelopeVersion = 1
	keyIDLen        = 8
	nonceLen        = 12
	headerLen       = 1 + keyIDLen + nonceLen
)

// Keyring seals and opens vault records with the master key: AES-256-GCM
// with a random nonce per value. The envelope is
//
//	version (1) | key id (8) | nonce (12) | ciphertext and tag
//
// and the associated data is the version byte and key id followed by the
// caller's aad (the value's Badger key), so a value moved to another key
// fails to open. With random nonces a key should seal fewer than 2^32
// values; rotate it long before that. A Keyring is safe for concurrent use.
type Keyring struct {
	aead cipher.AEAD
	id   [keyIDLen]byte
}

// NewKeyring returns a Keyring for key, which must be exactly 32 bytes.
func NewKeyring(key []byte) (*Keyring, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("vault: the master key is %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Keyring{aead: aead}
	sum := sha256.Sum256(append([]byte("agentauth vault key id\x00"), key...))
	copy(k.id[:], sum[:])
	return k, nil
}

// ID is the key id: the first 8 bytes of SHA-256("agentauth vault key
// id\x00" + key) in hex. It names the key in envelopes, errors and logs
// without revealing it.
func (k *Keyring) ID() string { return hex.EncodeToString(k.id[:]) }

// Seal encrypts plaintext bound to aad and returns the envelope.
func (k *Keyring) Seal(aad, plaintext []byte) []byte {
	out := make([]byte, headerLen, headerLen+len(plaintext)+k.aead.Overhead())
	out[0] = envelopeVersion
	copy(out[1:], k.id[:])
	rand.Read(out[1+keyIDLen : headerLen])
	return k.aead.Seal(out, out[1+keyIDLen:headerLen], plaintext, k.additional(out[:1+keyIDLen], aad))
}

// Open decrypts an envelope made by Seal with the same aad. It returns an
// error wrapping ErrSealedWithOtherKey, naming both key ids, when the
// envelope carries another key id, and ErrCorrupt when its version,
// length or tag is wrong (including a wrong aad).
func (k *Keyring) Open(aad, envelope []byte) ([]byte, error) {
	if len(envelope) < headerLen+k.aead.Overhead() || envelope[0] != envelopeVersion {
		return nil, ErrCorrupt
	}
	if id := envelope[1 : 1+keyIDLen]; !bytes.Equal(id, k.id[:]) {
		return nil, fmt.Errorf("%w: sealed with key id %x, this key is %s", ErrSealedWithOtherKey, id, k.ID())
	}
	pt, err := k.aead.Open(nil, envelope[1+keyIDLen:headerLen], envelope[headerLen:], k.additional(envelope[:1+keyIDLen], aad))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

func (k *Keyring) additional(header, aad []byte) []byte {
	return append(append(make([]byte, 0, len(header)+len(aad)), header...), aad...)
}

// envelopeKeyID returns the key id an envelope claims to be sealed with.
func envelopeKeyID(envelope []byte) (string, bool) {
	if len(envelope) < headerLen || envelope[0] != envelopeVersion {
		return "", false
	}
	return hex.EncodeToString(envelope[1 : 1+keyIDLen]), true
}

var errKeyFormat = errors.New("the vault master key must be 32 bytes, base64 or hex (generate one with: openssl rand -base64 32)")

// ParseKey decodes a master key given as base64 (standard or URL
// alphabet, padded or not) or as 64 hex digits. Surrounding space is
// ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errKeyFormat
}

// GenerateKey returns a new random 32-byte master key.
func GenerateKey() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
}

// LoadOrCreateKeyFile reads the master key from path (base64 and a
// newline), or, when the file does not exist, generates one and writes it
// with mode 0600, creating the directory with mode 0700 if needed. It
// refuses a key file that group or others can access.
func LoadOrCreateKeyFile(path string) (key []byte, created bool, err error) {
	key, err = readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("vault key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // created by someone else meanwhile
		key, err = readKeyFile(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("vault key file: %w", err)
	}
	key = GenerateKey()
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("vault key file: %w", err)
	}
	return key, true, nil
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("vault key file %s has mode %v: it must be readable by its owner only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("vault key file %s: %w", path, err)
	}
	return key, nil
}
