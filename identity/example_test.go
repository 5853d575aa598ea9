package identity_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/agentauth/agentauth/identity"
)

func ExampleVerifier() {
	v, err := identity.NewVerifier([]identity.IssuerConfig{
		// Keys found through discovery; ID tokens for our web client.
		{Issuer: "https://accounts.google.com", Audience: "1234.apps.googleusercontent.com"},
		// An RFC 9068 issuer: access tokens carry typ at+jwt.
		{
			Issuer:                  "https://login.example.com/realms/agents",
			Audience:                "https://api.example.com",
			JWKSURL:                 "https://login.example.com/realms/agents/protocol/openid-connect/certs",
			Algorithms:              []string{"ES256", "EdDSA"},
			DistinguishesTokenTypes: true,
		},
	}, identity.Options{
		Leeway:       30 * time.Second,
		JWKSCooldown: time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}

	// Shape checks happen before anything is parsed or fetched.
	_, err = v.Verify(context.Background(), "not-a-jwt", identity.VerifyOptions{Kind: identity.AccessToken})
	var te *identity.TokenError
	if errors.As(err, &te) {
		fmt.Println(te.ErrorCode(), te.Reason)
		fmt.Println(te.PublicMessage())
	}
	// Output:
	// unauthenticated malformed
	// the token is not a JWT: a signed JWT has exactly three dot-separated parts
}
