package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentauth/agentauth/devidp"
)

// The development OpenID provider's fixed client for scripts and tests:
// public, PKCE, loopback redirect (RFC 8252: any port).
const (
	devIdPPath        = "/dev-idp"
	devCLIClient      = devidp.CLIClient
	devCLIRedirectURI = devidp.CLIRedirectURI
	devIdPKeyFile     = "dev-idp.pem"
)

// devIdPIssuer is the dev provider's issuer on an edge at publicURL.
func devIdPIssuer(publicURL string) string { return publicURL + devIdPPath }

// startDevIdP builds the development provider, refusing, unless forced,
// an HTTP edge that is not on a loopback address or is published (by a
// reverse proxy) at a --public-url that is not.
func (m *Main) startDevIdP() (http.Handler, string, error) {
	if !m.Config.DevIdPForce {
		if host, _, err := net.SplitHostPort(m.httpLn.Addr().String()); err == nil && !isLoopbackHost(host) {
			return nil, "", fmt.Errorf("the development OpenID provider would be reachable on %s: it has published passwords. Use --oidc-issuers for a real provider, or --dev-idp-force if you really mean it", m.httpLn.Addr())
		}
		if pub := m.Config.PublicURL; pub != "" {
			if u, err := url.Parse(pub); err != nil || !isLoopbackHost(u.Hostname()) {
				return nil, "", fmt.Errorf("the development OpenID provider would be reachable at --public-url %s: it has published passwords. Use --oidc-issuers for a real provider, or --dev-idp-force if you really mean it", pub)
			}
		}
	}
	key, err := loadDevIdPKey(m)
	if err != nil {
		return nil, "", err
	}
	issuer := devIdPIssuer(m.PublicURL())
	h, err := devidp.New(devidp.Config{
		Issuer:     issuer,
		Users:      devidp.DefaultUsers(),
		SigningKey: key,
		Clients: []devidp.Client{
			{ID: devCLIClient, RedirectURIs: []string{devCLIRedirectURI}, Audience: []string{m.Config.OIDCAudience}},
			{ID: m.Config.LoginClientID, RedirectURIs: []string{m.PublicURL() + "/callback"}},
			{ID: devConnectClient, Secret: m.connectSecret, RedirectURIs: []string{m.PublicURL() + "/connect/callback"}, AccessTokenTTL: m.Config.DevConnectionTTL},
		},
	})
	if err != nil {
		return nil, "", err
	}
	m.Log.Warn("DEVELOPMENT OpenID provider enabled (users alice and bob, published passwords); use --oidc-issuers in production", "issuer", issuer)
	return h, issuer, nil
}

// isLoopbackHost says whether host (a name or an address) is this
// machine only: localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loadDevIdPKey(m *Main) (*ecdsa.PrivateKey, error) {
	path := keyPath(m.Config.DataDir, devIdPKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", path)
	}
	return ek, nil
}

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dev", Short: "Development helpers for the built-in OpenID provider"}
	var url, password string
	var idToken bool
	token := &cobra.Command{
		Use:   "token USER",
		Short: "Log in as a development user (alice, bob) and print an access token",
		Long: `Runs the authorization-code flow with PKCE against the development OpenID provider of a
running agentauth, headlessly, and prints the user's access token (or --id-token). For scripts:

  TOKEN=$(go run ./cmd/agentauth dev token alice)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw := password
			if pw == "" {
				for _, u := range devidp.DefaultUsers() {
					if u.Username == args[0] {
						pw = u.Password
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			t, err := devidp.FetchToken(ctx, &http.Client{Timeout: 10 * time.Second}, devIdPIssuer(url), devCLIClient, devCLIRedirectURI, args[0], pw, "openid", "profile", "email")
			if err != nil {
				return fmt.Errorf("%w (is `agentauth serve` running with its development provider at %s?)", err, devIdPIssuer(url))
			}
			out := t.AccessToken
			if idToken {
				s, _ := t.Extra("id_token").(string)
				out = s
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	token.Flags().StringVar(&url, "url", envOr("AGENTAUTH_PUBLIC_URL", "http://127.0.0.1:8080"), "public URL of the agentauth HTTP edge (env AGENTAUTH_PUBLIC_URL)")
	token.Flags().StringVar(&password, "password", "", "the user's password (default: the built-in development password)")
	token.Flags().BoolVar(&idToken, "id-token", false, "print the ID token instead of the access token")
	cmd.AddCommand(token)
	return cmd
}
