package devidp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/agentauth/agentauth/devidp"
	"github.com/agentauth/agentauth/identity"
)

func ExampleFetchToken() {
	// A provider mounted under /dev-idp/ of a server.
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // persist it in real use
	if err != nil {
		log.Fatal(err)
	}
	issuer := srv.URL + "/dev-idp"
	h, err := devidp.New(devidp.Config{
		Issuer:     issuer,
		Users:      devidp.DefaultUsers(),
		SigningKey: key,
		KeyID:      "dev-1",
		Clients: []devidp.Client{{
			ID:           "agentauth-cli",
			RedirectURIs: []string{"http://127.0.0.1/callback"},
			Audience:     []string{"agentauth"},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux.Handle("/dev-idp/", h)

	// Alice signs in headlessly.
	ctx := context.Background()
	tok, err := devidp.FetchToken(ctx, srv.Client(), issuer, "agentauth-cli", "http://127.0.0.1/callback",
		"alice", "alice-dev-password", "email", "offline_access")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("refresh token:", tok.RefreshToken != "")
	fmt.Println("ID token:", tok.Extra("id_token") != nil)

	// The access token is for the API "agentauth".
	v, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: issuer, Audience: "agentauth"}},
		identity.Options{HTTPClient: srv.Client()})
	if err != nil {
		log.Fatal(err)
	}
	u, err := v.Verify(ctx, tok.AccessToken, identity.VerifyOptions{Kind: identity.AccessToken})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Subject, u.Email, u.AuthorizedParty)
	// Output:
	// refresh token: true
	// ID token: true
	// dev-alice alice@example.com agentauth-cli
}
