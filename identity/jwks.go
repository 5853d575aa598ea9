package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

const (
	// maxDocumentBytes caps a discovery document or JWKS.
	maxDocumentBytes = 1 << 20
	// maxFetchTime bounds one fetch (discovery plus JWKS). Fetches are shared
	// by all waiting verifications, so they do not follow any one caller's
	// context cancellation.
	maxFetchTime = 30 * time.Second
	// discoveryPath is appended to the issuer, without its trailing slash
	// (OpenID Connect Discovery 1.0 §4).
	discoveryPath = "/.well-known/openid-configuration"
)

// issuer holds one configured issuer and its cached signing keys.
type issuer struct {
	cfg     IssuerConfig
	algs    []jose.SignatureAlgorithm
	allowed map[jose.SignatureAlgorithm]bool

	mu          sync.Mutex
	loaded      bool              // keys holds the result of a successful fetch
	keys        []jose.JSONWebKey // public signing keys
	jwksURL     string            // cfg.JWKSURL, or discovered; "" until discovered
	lastAttempt time.Time         // start of the last fetch; zero before the first
	lastErr     *TokenError       // result of the last fetch
	flight      *flight           // the fetch in progress, if any
	waiters     int               // verifications that joined a flight (for tests)
}

// flight is one fetch shared by every verification waiting for it.
type flight struct {
	done chan struct{}
	err  *TokenError // set before done is closed
}

// match returns the keys that may verify a token with kid and alg. kidKnown
// reports whether kid names at least one key at all (compatible or not).
// A token without kid matches every compatible key. Called with mu held.
func (is *issuer) match(kid string, alg jose.SignatureAlgorithm) (cands []jose.JSONWebKey, kidKnown bool) {
	for _, k := range is.keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		kidKnown = kidKnown || kid != ""
		if compatible(k, alg) {
			cands = append(cands, k)
		}
	}
	return cands, kidKnown
}

// compatible reports whether k may verify a signature made with alg.
func compatible(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// keysFor returns the candidate keys for kid and alg, fetching the issuer's
// JWKS when they are not cached: the first time, and again when kid is
// unknown, at most once per cooldown. Concurrent callers share one fetch.
func (v *Verifier) keysFor(ctx context.Context, is *issuer, kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, *TokenError) {
	is.mu.Lock()
	var waited *flight
	for {
		if is.loaded {
			cands, kidKnown := is.match(kid, alg)
			if len(cands) > 0 {
				is.mu.Unlock()
				return cands, nil
			}
			if kidKnown {
				is.mu.Unlock()
				return nil, rejectf(ReasonKeyMismatch, fmt.Sprintf(
					"signing key %s of issuer %s cannot verify %s signatures", quote(kid), quote(is.cfg.Issuer), alg))
			}
		}
		if waited != nil {
			is.mu.Unlock()
			if waited.err != nil {
				return nil, waited.err
			}
			return nil, v.unknownKey(is, kid)
		}
		if is.flight == nil {
			now := v.now()
			if !is.lastAttempt.IsZero() && now.Sub(is.lastAttempt) < v.cooldown {
				last, retry := is.lastErr, is.lastAttempt.Add(v.cooldown).Sub(now)
				is.mu.Unlock()
				if last != nil {
					e := *last
					e.retryAfter = retry
					return nil, &e
				}
				return nil, v.unknownKey(is, kid)
			}
			is.lastAttempt = now
			is.flight = &flight{done: make(chan struct{})}
			go v.fetch(context.WithoutCancel(ctx), is, is.flight, is.jwksURL)
		} else {
			is.waiters++
		}
		f := is.flight
		is.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, unavailable(ReasonKeysUnavailable, fmt.Sprintf(
				"gave up waiting for the signing keys of issuer %s; try again", quote(is.cfg.Issuer)), 0, ctx.Err())
		}
		is.mu.Lock()
		waited = f
	}
}

func (v *Verifier) unknownKey(is *issuer, kid string) *TokenError {
	if kid == "" {
		return rejectf(ReasonUnknownKey, fmt.Sprintf(
			"the token has no kid and no signing key of issuer %s verifies it", quote(is.cfg.Issuer)))
	}
	return rejectf(ReasonUnknownKey, fmt.Sprintf(
		"signing key %s is not published by issuer %s (keys are refetched at most every %s)",
		quote(kid), quote(is.cfg.Issuer), seconds(v.cooldown)))
}

// fetch runs one flight: discovery when jwksURL is empty, then the JWKS.
func (v *Verifier) fetch(ctx context.Context, is *issuer, f *flight, jwksURL string) {
	ctx, cancel := context.WithTimeout(ctx, maxFetchTime)
	defer cancel()
	keys, jwksURL, err := v.load(ctx, is, jwksURL)

	is.mu.Lock()
	defer is.mu.Unlock()
	if err == nil {
		is.keys, is.loaded, is.jwksURL = keys, true, jwksURL
	} else if is.cfg.JWKSURL == "" {
		is.jwksURL = "" // discover again next time: jwks_uri may have moved
	}
	is.lastErr = err
	is.flight = nil
	f.err = err
	close(f.done)
}

func (v *Verifier) load(ctx context.Context, is *issuer, jwksURL string) ([]jose.JSONWebKey, string, *TokenError) {
	if jwksURL == "" {
		var err *TokenError
		if jwksURL, err = v.discover(ctx, is); err != nil {
			return nil, "", err
		}
	}
	var set struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, jwksURL, &set); err != nil {
		return nil, "", v.keysUnavailable(is, fmt.Errorf("JWKS %s: %w", jwksURL, err))
	}
	if set.Keys == nil {
		return nil, "", v.keysUnavailable(is, fmt.Errorf("JWKS %s: no \"keys\" member", jwksURL))
	}
	keys := make([]jose.JSONWebKey, 0, len(*set.Keys))
	for _, raw := range *set.Keys {
		// One key go-jose cannot read (a new key type) must not hide the others.
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || !k.Valid() || k.Use == "enc" {
			continue
		}
		if !k.IsPublic() {
			k = k.Public()
		}
		if k.Key == nil {
			continue // symmetric: never a verification key here
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, "", v.keysUnavailable(is, fmt.Errorf("JWKS %s: no usable signing keys among %d", jwksURL, len(*set.Keys)))
	}
	return keys, jwksURL, nil
}

func (v *Verifier) discover(ctx context.Context, is *issuer) (string, *TokenError) {
	where := strings.TrimSuffix(is.cfg.Issuer, "/") + discoveryPath
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := v.getJSON(ctx, where, &doc); err != nil {
		return "", v.keysUnavailable(is, fmt.Errorf("discovery %s: %w", where, err))
	}
	if doc.Issuer != is.cfg.Issuer {
		return "", unavailable(ReasonDiscoveryMismatch, fmt.Sprintf(
			"the discovery document of issuer %s names issuer %s; the configured issuer must match it exactly (an operator must fix the configuration)",
			quote(is.cfg.Issuer), quote(doc.Issuer)), v.cooldown, nil)
	}
	if doc.JWKSURI == "" {
		return "", v.keysUnavailable(is, fmt.Errorf("discovery %s: no jwks_uri", where))
	}
	if err := checkFetchURL(doc.JWKSURI); err != nil {
		return "", v.keysUnavailable(is, fmt.Errorf("discovery %s: jwks_uri: %w", where, err))
	}
	return doc.JWKSURI, nil
}

func (v *Verifier) keysUnavailable(is *issuer, cause error) *TokenError {
	return unavailable(ReasonKeysUnavailable, fmt.Sprintf(
		"the signing keys of issuer %s could not be fetched; try again later", quote(is.cfg.Issuer)), v.cooldown, cause)
}

func (v *Verifier) getJSON(ctx context.Context, where string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return err
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("document larger than %d bytes", maxDocumentBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	return nil
}

// checkFetchURL accepts https URLs, and http URLs to a loopback host (a
// development provider on this machine).
func checkFetchURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%q must use https (http only to a loopback host)", s)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultClient refuses redirects that checkFetchURL would refuse.
func defaultClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return checkFetchURL(req.URL.String())
		},
	}
}
