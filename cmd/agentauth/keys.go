package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
)

// Key files in <data-dir>/keys, generated on first start (0600).
const (
	keysDir        = "keys"
	serviceKeyFile = "service.nk" // agentauth's own NATS user
	adminKeyFile   = "admin.nk"   // the operator's NATS user (CLI tools)
	sealKeyFile    = "seal.xk"    // agentauth's X25519 sealing key
)

func keyPath(dataDir, name string) string { return filepath.Join(dataDir, keysDir, name) }

// loadOrCreateSeed reads a seed file, or creates it with create when it
// does not exist, warning loudly that production must supply its own.
func loadOrCreateSeed(log *slog.Logger, path string, create func() (nkeys.KeyPair, error)) ([]byte, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		return trimSeed(seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err = kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(append([]byte{}, seed...), '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	log.Warn("GENERATED a key on first start; production must supply its own and keep it secret", "file", path)
	return seed, nil
}

func trimSeed(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// publicKey of a user or curve seed.
func publicKey(seed []byte) (string, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// sealingPublicKey is the public key of the sealing key in dataDir, the
// key agents' credentials pin (Credentials.ServiceXKey). It returns an
// error wrapping fs.ErrNotExist when dataDir has none.
func sealingPublicKey(dataDir string) (string, error) {
	seed, err := os.ReadFile(keyPath(dataDir, sealKeyFile))
	if err != nil {
		return "", err
	}
	pub, err := publicKey(trimSeed(seed))
	if err != nil || !nkeys.IsValidPublicCurveKey(pub) {
		return "", fmt.Errorf("%s is not an X25519 (curve) seed", keyPath(dataDir, sealKeyFile))
	}
	return pub, nil
}

// writeCredentials writes an agent's credentials file (0600), refusing to
// overwrite one.
func writeCredentials(path string, c agents.Credentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaceCredentials replaces an existing credentials file with c, whole
// (a new file renamed over it).
func replaceCredentials(path string, c agents.Credentials) error {
	tmp := path + ".new"
	_ = os.Remove(tmp) // left by an interrupted replacement
	if err := writeCredentials(tmp, c); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("credentials file: %w", err)
	}
	return nil
}

// loadOrCreateCredentials reads the credentials file of a principal the
// instance keeps in its data dir (the anonymous development agent, the
// approval app, the ingest principal), creating it with policy p on first
// start. The credentials pin serviceXKey, agentauth's sealing public key:
// a file without it (written before it was pinned) or with another one
// (the sealing key was replaced) is rewritten with it.
func loadOrCreateCredentials(log *slog.Logger, path, id string, p agents.Policy, serviceXKey string) (agents.Credentials, error) {
	creds, err := readCredentials(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, creds, err = agents.New(id, p, time.Now()); err != nil {
			return agents.Credentials{}, err
		}
		creds.ServiceXKey = serviceXKey
		return creds, writeCredentials(path, creds)
	}
	if err != nil {
		return agents.Credentials{}, err
	}
	if creds.ServiceXKey != serviceXKey {
		creds.ServiceXKey = serviceXKey
		if err := replaceCredentials(path, creds); err != nil {
			return agents.Credentials{}, err
		}
		log.Info("pinned agentauth's sealing key in credentials", "file", path, "service_xkey", serviceXKey)
	}
	return creds, nil
}

func readCredentials(path string) (agents.Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return agents.Credentials{}, err
	}
	c, err := agents.ParseCredentials(b)
	if err != nil {
		return agents.Credentials{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
