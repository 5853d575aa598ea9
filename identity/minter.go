package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentauth/agentauth/schemas"
)

// SigningKey is one of agentauth's token signing keys as it is stored
// (the key file is the caller's: 0600, in the data dir).
type SigningKey struct {
	KID     string    `json:"kid"`
	PEM     string    `json:"pem"` // PKCS#8 EC P-256 private key
	Created time.Time `json:"created"`
	// Retired is when a rotation replaced the key; it stays published
	// until every token it signed has expired.
	Retired *time.Time `json:"retired,omitempty"`
}

// NewSigningKey generates an ES256 key.
func NewSigningKey(now time.Time) (SigningKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return SigningKey{}, err
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	return SigningKey{
		KID:     base64.RawURLEncoding.EncodeToString(id[:]),
		PEM:     string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Created: now.UTC(),
	}, nil
}

func (k SigningKey) private() (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(k.PEM))
	if b == nil {
		return nil, fmt.Errorf("signing key %s: not PEM", k.KID)
	}
	p, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", k.KID, err)
	}
	s, ok := p.(*ecdsa.PrivateKey)
	if !ok || s.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s: not an EC P-256 key", k.KID)
	}
	return s, nil
}

// Rotate retires the current key (the one not retired) and adds a new
// one; keys retired longer ago than maxTTL are dropped, since no token
// they signed can still be valid.
func Rotate(keys []SigningKey, now time.Time, maxTTL time.Duration) ([]SigningKey, error) {
	nk, err := NewSigningKey(now)
	if err != nil {
		return nil, err
	}
	var out []SigningKey
	for _, k := range keys {
		if k.Retired == nil {
			t := now.UTC()
			k.Retired = &t
		}
		if now.Sub(*k.Retired) > maxTTL+time.Minute {
			continue
		}
		out = append(out, k)
	}
	return append(out, nk), nil
}

// MaxTTL is the longest lifetime of a token agentauth mints.
const MaxTTL = 5 * time.Minute

// Minter mints the short-lived, audience-bound tokens agentauth hands to
// agents (RFC 8693 delegation: sub = the user, act.sub = the agent),
// signed ES256 with the current key, and publishes the JWKS that verifies
// them. Safe for concurrent use.
type Minter struct {
	issuer string
	signer jose.Signer
	kid    string
	jwks   jose.JSONWebKeySet
	now    func() time.Time
}

// NewMinter uses the one unretired key to sign and publishes every key.
func NewMinter(issuer string, keys []SigningKey, now func() time.Time) (*Minter, error) {
	if now == nil {
		now = time.Now
	}
	m := &Minter{issuer: issuer, now: now}
	for _, k := range keys {
		priv, err := k.private()
		if err != nil {
			return nil, err
		}
		m.jwks.Keys = append(m.jwks.Keys, jose.JSONWebKey{Key: priv.Public(), KeyID: k.KID, Algorithm: string(jose.ES256), Use: "sig"})
		if k.Retired != nil {
			continue
		}
		if m.signer != nil {
			return nil, errors.New("signing keys: more than one current key")
		}
		m.kid = k.KID
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: k.KID}},
			(&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			return nil, err
		}
		m.signer = s
	}
	if m.signer == nil {
		return nil, errors.New("signing keys: no current key")
	}
	return m, nil
}

// Issuer is the iss of minted tokens.
func (m *Minter) Issuer() string { return m.issuer }

// KeyID is the kid of the signing key in use.
func (m *Minter) KeyID() string { return m.kid }

// JWKS is the public key set: the current key and retired ones whose
// tokens may still be valid.
func (m *Minter) JWKS() jose.JSONWebKeySet { return m.jwks }

// Grant is what a minted token says.
type Grant struct {
	// Subject is the user as UserID names them (User.ID): the bare sub of
	// their token for the default issuer, "<issuer>|<sub>" otherwise.
	Subject string
	// Issuer is the user's issuer (the iss of their token), carried as the
	// user_iss claim: an API that trusts users of several issuers reads
	// the user from (user_iss, sub), never from sub alone.
	Issuer   string
	Actor    string // the agent (act.sub, azp)
	Audience string // exactly one
	Scopes   []string
	TTL      time.Duration // capped at MaxTTL
	// NotAfter caps exp: the user's own token's expiry (and, for
	// approvals, the approval's).
	NotAfter time.Time
	// AuthorizationDetails (RFC 9396) as approved, when set.
	AuthorizationDetails any
}

// Minted is a token and the facts about it that may be logged.
type Minted struct {
	Token       string
	JTI         string
	Audience    string
	Scopes      []string
	Expiry      time.Time
	Fingerprint string // schemas.Fingerprint of the token
}

type delegatedClaims struct {
	jwt.Claims
	UserIssuer string `json:"user_iss"`
	Scope      string `json:"scope,omitempty"`
	Azp        string `json:"azp"`
	Act        actor  `json:"act"`
	Details    any    `json:"authorization_details,omitempty"`
}

type actor struct {
	Sub string `json:"sub"`
}

// Mint signs a delegated access token for g. Subject, Issuer, Actor and
// Audience are required.
func (m *Minter) Mint(g Grant) (Minted, error) {
	if g.Subject == "" || g.Issuer == "" || g.Actor == "" || g.Audience == "" {
		return Minted{}, errors.New("mint: subject, the user's issuer, actor and audience are required")
	}
	now := m.now()
	ttl := g.TTL
	if ttl <= 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	exp := now.Add(ttl)
	if !g.NotAfter.IsZero() && g.NotAfter.Before(exp) {
		exp = g.NotAfter
	}
	if !exp.After(now) {
		return Minted{}, rejectf("expired", "the user's token has expired; get a fresh one")
	}
	var j [16]byte
	_, _ = rand.Read(j[:])
	jti := base64.RawURLEncoding.EncodeToString(j[:])
	scopes := slices.Clone(g.Scopes)
	c := delegatedClaims{
		Claims: jwt.Claims{
			Issuer: m.issuer, Subject: g.Subject, Audience: jwt.Audience{g.Audience}, ID: jti,
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
		},
		UserIssuer: g.Issuer,
		Scope:      joinScopes(scopes),
		Azp:        g.Actor,
		Act:        actor{Sub: g.Actor},
		Details:    g.AuthorizationDetails,
	}
	raw, err := jwt.Signed(m.signer).Claims(c).Serialize()
	if err != nil {
		return Minted{}, fmt.Errorf("mint: %w", err)
	}
	return Minted{Token: raw, JTI: jti, Audience: g.Audience, Scopes: scopes, Expiry: exp, Fingerprint: schemas.Fingerprint(raw)}, nil
}

func joinScopes(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}
