package identity_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

const audience = "api://agentauth"

// clock is a fake clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signingKey is a private key with the kid and alg it is published under.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
}

func (k signingKey) public() jose.JSONWebKey {
	jwk := jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
	return jwk.Public()
}

// MustKey generates a fresh key for alg.
func MustKey(tb testing.TB, kid string, alg jose.SignatureAlgorithm) signingKey {
	tb.Helper()
	var priv any
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		tb.Fatalf("no key type for %s", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return signingKey{kid: kid, alg: alg, priv: priv}
}

// fakeIssuer imitates an OpenID provider: discovery under its issuer path,
// and a JWKS whose content, status and timing tests control.
type fakeIssuer struct {
	srv    *httptest.Server
	Issuer string // srv.URL + path
	JWKS   string // URL of the JWKS

	mu              sync.Mutex
	keys            []signingKey
	discoveryIssuer string        // "issuer" in discovery; default Issuer
	jwksURI         string        // "jwks_uri" in discovery; default JWKS
	status          int           // JWKS status; default 200
	body            string        // JWKS body served verbatim when set
	gate            chan struct{} // when set, JWKS requests wait for it to close

	JWKSHits      atomic.Int64
	DiscoveryHits atomic.Int64
}

// MustFakeIssuer starts a provider whose issuer is its URL followed by path
// ("" or "/something"), publishing keys.
func MustFakeIssuer(tb testing.TB, path string, keys ...signingKey) *fakeIssuer {
	tb.Helper()
	fi := &fakeIssuer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		fi.DiscoveryHits.Add(1)
		fi.mu.Lock()
		doc := map[string]string{"issuer": fi.discoveryIssuer, "jwks_uri": fi.jwksURI}
		fi.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		fi.JWKSHits.Add(1)
		fi.mu.Lock()
		gate, status, body := fi.gate, fi.status, fi.body
		set := jose.JSONWebKeySet{}
		for _, k := range fi.keys {
			set.Keys = append(set.Keys, k.public())
		}
		fi.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 && status != http.StatusOK {
			http.Error(w, "unavailable", status)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		if body != "" {
			_, _ = w.Write([]byte(body))
			return
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	fi.srv = httptest.NewServer(mux)
	tb.Cleanup(fi.srv.Close)
	fi.Issuer = fi.srv.URL + path
	fi.JWKS = fi.srv.URL + "/keys"
	fi.discoveryIssuer = fi.Issuer
	fi.jwksURI = fi.JWKS
	return fi
}

func (fi *fakeIssuer) SetKeys(keys ...signingKey) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.keys = keys
}

func (fi *fakeIssuer) SetStatus(status int) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.status = status
}

func (fi *fakeIssuer) SetBody(body string) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.body = body
}

func (fi *fakeIssuer) SetDiscovery(issuer, jwksURI string) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.discoveryIssuer, fi.jwksURI = issuer, jwksURI
}

// Hold makes JWKS requests wait until the returned function is called.
func (fi *fakeIssuer) Hold() (release func()) {
	gate := make(chan struct{})
	fi.mu.Lock()
	fi.gate = gate
	fi.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			fi.mu.Lock()
			fi.gate = nil
			fi.mu.Unlock()
			close(gate)
		})
	}
}

// Claims returns valid claims for fi at now, changed by kv pairs; a nil
// value deletes the claim.
func (fi *fakeIssuer) Claims(now time.Time, kv ...any) map[string]any {
	return claimsFor(fi.Issuer, now, kv...)
}

func claimsFor(iss string, now time.Time, kv ...any) map[string]any {
	c := map[string]any{
		"iss": iss,
		"sub": "user-1",
		"aud": audience,
		"exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(c, k)
		} else {
			c[k] = kv[i+1]
		}
	}
	return c
}

// signOpts are the header options of MustSign.
type signOpts struct {
	header   map[jose.HeaderKey]any // extra protected headers: typ, jku, x5u, crit…
	embedJWK bool                   // put the signing key's public JWK in the header
	noKid    bool
}

// MustSign signs claims (a map, or raw bytes used as the payload) with k.
func MustSign(tb testing.TB, k signingKey, claims any, o signOpts) string {
	tb.Helper()
	var payload []byte
	switch c := claims.(type) {
	case []byte:
		payload = c
	default:
		var err error
		if payload, err = json.Marshal(c); err != nil {
			tb.Fatal(err)
		}
	}
	key := jose.JSONWebKey{Key: k.priv, KeyID: k.kid}
	if o.noKid {
		key.KeyID = ""
	}
	opts := &jose.SignerOptions{EmbedJWK: o.embedJWK, ExtraHeaders: map[jose.HeaderKey]any{}}
	for h, v := range o.header {
		opts.ExtraHeaders[h] = v
	}
	if o.embedJWK && !o.noKid {
		opts.ExtraHeaders["kid"] = k.kid
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: key}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// unsigned builds header.payload.signature from JSON values by hand, for
// tokens no signer would make.
func unsigned(header, payload any, sig []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(payload)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString(sig)
}

// MustVerifier builds a Verifier with the fake clock.
func MustVerifier(tb testing.TB, clk *clock, issuers ...identity.IssuerConfig) *identity.Verifier {
	tb.Helper()
	v, err := identity.NewVerifier(issuers, identity.Options{Now: clk.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// tokenError returns err as a *TokenError and checks the properties every
// rejection has.
func tokenError(tb testing.TB, err error, raw string) *identity.TokenError {
	tb.Helper()
	if err == nil {
		tb.Fatal("Verify accepted the token")
	}
	var te *identity.TokenError
	if !errors.As(err, &te) {
		tb.Fatalf("error %v (%T) is not a *TokenError", err, err)
	}
	msg := te.PublicMessage()
	if msg == "" {
		tb.Errorf("empty PublicMessage for %v", err)
	}
	if raw != "" && (strings.Contains(msg, raw) || strings.Contains(err.Error(), raw)) {
		tb.Errorf("message contains the token: %q", msg)
	}
	if parts := strings.Split(raw, "."); len(parts) == 3 && len(parts[2]) > 16 && strings.Contains(err.Error(), parts[2]) {
		tb.Errorf("error contains the token's signature: %v", err)
	}
	return te
}

func wantReason(tb testing.TB, err error, raw, reason string, code schemas.ErrorCode) *identity.TokenError {
	tb.Helper()
	te := tokenError(tb, err, raw)
	if te.Reason != reason {
		tb.Errorf("Reason = %q, want %q (%v)", te.Reason, reason, err)
	}
	if got := te.ErrorCode(); got != code {
		tb.Errorf("ErrorCode() = %q, want %q (%v)", got, code, err)
	}
	return te
}

// waitFor polls cond; it fails the test only if cond never holds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }
