package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/identity"
)

func newKeysCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{Use: "keys", Short: "Manage agentauth's token signing keys"}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", envOr("AGENTAUTH_DATA_DIR", "./agentauth-data"), "data dir of the instance (env AGENTAUTH_DATA_DIR)")
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Sign new tokens with a new key; the old one stays published until its last token expires",
		Long: `Adds a new ES256 signing key and retires the current one. Running instances pick the change up
within seconds. Retired keys stay in the JWKS for ` + identity.MaxTTL.String() + ` (the longest token lifetime) and are
dropped by a later rotation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := &Main{Config: Config{DataDir: dataDir}, Log: newLogger(cmd.ErrOrStderr(), "info", "text")}
			keys, err := loadSigningKeys(m)
			if err != nil {
				return err
			}
			next, err := identity.Rotate(keys, time.Now(), identity.MaxTTL)
			if err != nil {
				return err
			}
			if err := saveSigningKeys(keyPath(dataDir, signingKeysFile), next); err != nil {
				return err
			}
			for _, k := range next {
				state := "current"
				if k.Retired != nil {
					state = "retired " + k.Retired.Format(time.RFC3339) + ", published until its tokens expire"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", k.KID, state)
			}
			return nil
		},
	}
	cmd.AddCommand(rotate)
	return cmd
}
