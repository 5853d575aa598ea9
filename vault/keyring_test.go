package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// MustKeyring returns a Keyring for a new random key.
func MustKeyring(tb testing.TB) *Keyring {
	tb.Helper()
	kr, err := NewKeyring(GenerateKey())
	if err != nil {
		tb.Fatal(err)
	}
	return kr
}

func TestKeyringSealOpen(t *testing.T) {
	kr := MustKeyring(t)
	aad, msg := []byte("r/user/google"), []byte("ya29.secret")
	env := kr.Seal(aad, msg)
	if len(env) != headerLen+len(msg)+16 || env[0] != 1 {
		t.Fatalf("envelope length %d version %d", len(env), env[0])
	}
	if id, _ := envelopeKeyID(env); id != kr.ID() {
		t.Errorf("envelope key id = %s, want %s", id, kr.ID())
	}
	if bytes.Contains(env, msg) {
		t.Error("envelope contains the plaintext")
	}
	if bytes.Equal(env, kr.Seal(aad, msg)) {
		t.Error("two seals are equal: nonce reused")
	}
	got, err := kr.Open(aad, env)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v; want %q", got, err, msg)
	}

	cases := map[string]struct {
		aad, env []byte
		want     error
	}{
		"other aad":      {[]byte("r/user/slack"), env, ErrCorrupt},
		"empty aad":      {nil, env, ErrCorrupt},
		"bad version":    {aad, flip(env, 0), ErrCorrupt},
		"other key id":   {aad, flip(env, 1), ErrSealedWithOtherKey},
		"flipped nonce":  {aad, flip(env, 1+keyIDLen), ErrCorrupt},
		"flipped text":   {aad, flip(env, headerLen), ErrCorrupt},
		"flipped tag":    {aad, flip(env, len(env)-1), ErrCorrupt},
		"truncated":      {aad, env[:headerLen+15], ErrCorrupt},
		"empty":          {aad, nil, ErrCorrupt},
		"other keyring":  {aad, MustKeyring(t).Seal(aad, msg), ErrSealedWithOtherKey},
		"header of ours": {aad, append(env[:headerLen:headerLen], make([]byte, 16)...), ErrCorrupt},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := kr.Open(tc.aad, tc.env); !errors.Is(err, tc.want) {
				t.Errorf("Open err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyringOtherKeyMessage(t *testing.T) {
	a, b := MustKeyring(t), MustKeyring(t)
	_, err := a.Open(nil, b.Seal(nil, []byte("x")))
	if !errors.Is(err, ErrSealedWithOtherKey) || !strings.Contains(err.Error(), a.ID()) || !strings.Contains(err.Error(), b.ID()) {
		t.Errorf("err = %v, want ErrSealedWithOtherKey naming %s and %s", err, a.ID(), b.ID())
	}
}

func TestKeyringID(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	kr, err := NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte("agentauth vault key id\x00"), key...))
	if got, want := kr.ID(), hex.EncodeToString(sum[:8]); got != want {
		t.Errorf("ID = %s, want %s", got, want)
	}
	if MustKeyring(t).ID() == kr.ID() {
		t.Error("two keys have the same id")
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewKeyring(make([]byte, n)); err == nil {
			t.Errorf("NewKeyring(%d bytes) succeeded", n)
		}
	}
}

func TestKeyringParseKey(t *testing.T) {
	key := GenerateKey()
	for name, s := range map[string]string{
		"std":          base64.StdEncoding.EncodeToString(key),
		"raw std":      base64.RawStdEncoding.EncodeToString(key),
		"url":          base64.URLEncoding.EncodeToString(key),
		"raw url":      base64.RawURLEncoding.EncodeToString(key),
		"hex":          hex.EncodeToString(key),
		"upper hex":    strings.ToUpper(hex.EncodeToString(key)),
		"with newline": " " + base64.StdEncoding.EncodeToString(key) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseKey(s)
			if err != nil || !bytes.Equal(got, key) {
				t.Errorf("ParseKey(%q) = %x, %v; want %x", s, got, err, key)
			}
		})
	}
	for name, s := range map[string]string{
		"empty":    "",
		"short":    base64.StdEncoding.EncodeToString(key[:31]),
		"long":     base64.StdEncoding.EncodeToString(append(key, 1)),
		"bad hex":  strings.Repeat("zz", 32),
		"password": "correct horse battery staple",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseKey(s); err == nil || !strings.Contains(err.Error(), "openssl rand -base64 32") {
				t.Errorf("ParseKey(%q) err = %v, want the key format error", s, err)
			}
		})
	}
}

func TestKeyringLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets", "vault.key")
	key, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created || len(key) != 32 {
		t.Fatalf("LoadOrCreateKeyFile = %x, %v, %v; want a new key", key, created, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), base64.StdEncoding.EncodeToString(key)+"\n"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
				t.Errorf("mode of %s = %v (%v), want %v", p, fi.Mode().Perm(), err, want)
			}
		}
	}

	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Errorf("second LoadOrCreateKeyFile = %x, %v, %v; want the same key, not created", again, created, err)
	}

	if runtime.GOOS != "windows" {
		os.Chmod(path, 0o640)
		if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("group-readable key file: err = %v, want a permission error", err)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	if _, _, err := LoadOrCreateKeyFile(bad); err == nil || !strings.Contains(err.Error(), "openssl") {
		t.Errorf("bad key file: err = %v, want the key format error", err)
	}
}

func FuzzKeyringOpen(f *testing.F) {
	kr, err := NewKeyring(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("r/a/b"), kr.Seal([]byte("r/a/b"), []byte("token")))
	f.Add([]byte{}, []byte{1})
	f.Fuzz(func(t *testing.T, aad, env []byte) {
		if pt, err := kr.Open(aad, env); err == nil {
			if !bytes.Equal(kr.Seal(aad, pt)[:1+keyIDLen], env[:1+keyIDLen]) {
				t.Error("opened an envelope with another header")
			}
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSealedWithOtherKey) {
			t.Errorf("Open err = %v", err)
		}
	})
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}
