package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/vault"
)

func newVaultCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vault", Short: "Token Vault operations: the connection catalog and master key rotation"}
	cmd.AddCommand(newVaultCatalogCmd(), newVaultRotateCmd())
	return cmd
}

func newVaultCatalogCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "catalog",
		Short: "List the built-in connections (configure one under `connections:` with its client id and secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTITLE\tREFRESH\tPKCE\tREVOCATION\tDEFAULT SCOPES")
			for _, c := range vault.Catalog() {
				rev := "-"
				if c.RevocationURL != "" {
					rev = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\n", c.Name, c.Title, c.Refresh, c.PKCE, rev, strings.Join(c.DefaultScopes, " "))
			}
			return tw.Flush()
		},
	}
}

func newVaultRotateCmd() *cobra.Command {
	var dataDir, keyFile, newKeyFile string
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Re-encrypt every vault record with a new master key (stop agentauth serve first)",
		Long: `Re-encrypts every record of the vault in <data-dir>/vault from the current master key
(AGENTAUTH_VAULT_KEY, or --vault-key-file, default <data-dir>/keys/vault.key) to the key in
--new-key-file (generated there if the file does not exist). It can be interrupted and run again
with the same keys: it resumes where it stopped, and agentauth refuses to start until it finishes.
When the current key came from the default key file, that file is replaced by the new key at the
end; otherwise, set AGENTAUTH_VAULT_KEY to the new key before starting agentauth again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newKeyFile == "" {
				return errors.New("--new-key-file is required: the file that holds (or will hold) the new master key")
			}
			m := &Main{Config: Config{DataDir: dataDir, VaultKey: os.Getenv("AGENTAUTH_VAULT_KEY"), VaultKeyFile: keyFile}, Log: newLogger(cmd.ErrOrStderr(), "warn", "text")}
			if m.Config.VaultKey == "" && keyFile == "" {
				if _, err := os.Stat(keyPath(dataDir, vaultKeyFile)); errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("no vault master key at %s and AGENTAUTH_VAULT_KEY is not set: nothing to rotate from", keyPath(dataDir, vaultKeyFile))
				}
			}
			oldKey, err := m.vaultKey()
			if err != nil {
				return err
			}
			newKey, created, err := vault.LoadOrCreateKeyFile(newKeyFile)
			if err != nil {
				return fmt.Errorf("new master key: %w", err)
			}
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "generated a new master key in %s\n", newKeyFile)
			}
			oldKR, err := vault.NewKeyring(oldKey)
			if err != nil {
				return err
			}
			newKR, err := vault.NewKeyring(newKey)
			if err != nil {
				return err
			}
			bar := &barProgress{w: cmd.ErrOrStderr(), desc: "re-encrypting", off: noProgress}
			if err := vault.RotateKey(vaultDir(dataDir), oldKR, newKR, vault.StoreOptions{Logger: m.Log}, bar.update); err != nil {
				if strings.Contains(err.Error(), "directory lock") {
					return fmt.Errorf("%w: is agentauth serve still running on %s? Stop it first", err, dataDir)
				}
				return err
			}
			bar.finish()
			if m.Config.VaultKey == "" && keyFile == "" {
				b, err := os.ReadFile(newKeyFile)
				if err != nil {
					return err
				}
				if err := replaceKeyFile(keyPath(dataDir, vaultKeyFile), b); err != nil {
					return fmt.Errorf("the vault is re-encrypted with %s, but %s could not be replaced: %w (copy the new key there yourself)", newKeyFile, keyPath(dataDir, vaultKeyFile), err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "vault re-encrypted with key %s; %s now holds it\n", newKR.ID(), keyPath(dataDir, vaultKeyFile))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "vault re-encrypted with key %s; start agentauth with that key (AGENTAUTH_VAULT_KEY or --vault-key-file %s)\n", newKR.ID(), newKeyFile)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance (env AGENTAUTH_DATA_DIR)")
	fl.StringVar(&keyFile, "vault-key-file", envOr("AGENTAUTH_VAULT_KEY_FILE", ""), "file of the current master key (default <data-dir>/keys/vault.key; AGENTAUTH_VAULT_KEY wins)")
	fl.StringVar(&newKeyFile, "new-key-file", "", "file of the new master key (generated if it does not exist)")
	fl.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}

// replaceKeyFile replaces the key file at path with b (mode 0600) by a
// rename, synced with its directory: a crash leaves the old key or the
// new one, never a truncated file, and the old file is not written to.
func replaceKeyFile(path string, b []byte) error {
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
