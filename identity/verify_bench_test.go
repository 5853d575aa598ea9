package identity_test

import (
	"context"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentauth/agentauth/identity"
)

// BenchmarkVerify measures user-token verifications (RS256 and ES256)
// with a warm JWKS, with and without the verified-token cache. Run with
// -cpu 1 for verifications per second per core.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
		k := MustKey(b, "k1", alg)
		fi := MustFakeIssuer(b, "", k)
		clk := newClock()
		v := MustVerifier(b, clk, identity.IssuerConfig{Issuer: fi.Issuer, Audience: audience})
		raw := MustSign(b, k, fi.Claims(clk.Now()), signOpts{})
		ctx := context.Background()
		if _, err := v.Verify(ctx, raw, identity.VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
		b.Run(string(alg)+"/uncached", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := v.Verify(ctx, raw, identity.VerifyOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		cv := &identity.CachingVerifier{Next: v, Now: clk.Now}
		b.Run(string(alg)+"/cached", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := cv.Verify(ctx, raw, identity.VerifyOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
