package handlers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/devidp"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/retrieval"
	"github.com/agentauth/agentauth/schemas"
)

// twoIssuers is two real development OpenID providers, each with its own
// alice (subject "dev-alice" at both), a Verifier trusting both (idp-a
// first: the default issuer), and an agent with its keys.
type twoIssuers struct {
	a, b   string // the issuers
	tokens map[string]string
	user   *User
	agent  agents.Agent
	seed   []byte // the agent's xkey seed
	minter *identity.Minter
}

const twoIssuersAudience = "agentauth"

func mustTwoIssuers(t *testing.T) *twoIssuers {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	const client, redirect = "agentauth-cli", "http://127.0.0.1/callback"
	fx := &twoIssuers{a: srv.URL + "/idp-a", b: srv.URL + "/idp-b", tokens: map[string]string{}}
	for _, iss := range []string{fx.a, fx.b} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := devidp.New(devidp.Config{Issuer: iss, Users: devidp.DefaultUsers(), SigningKey: key,
			Clients: []devidp.Client{{ID: client, RedirectURIs: []string{redirect}, Audience: []string{twoIssuersAudience}}}})
		if err != nil {
			t.Fatal(err)
		}
		mux.Handle(strings.TrimPrefix(iss, srv.URL)+"/", h)
	}
	for _, iss := range []string{fx.a, fx.b} {
		tok, err := devidp.FetchToken(t.Context(), srv.Client(), iss, client, redirect, "alice", "alice-dev-password")
		if err != nil {
			t.Fatal(err)
		}
		fx.tokens[iss] = tok.AccessToken
	}
	v, err := identity.NewVerifier([]identity.IssuerConfig{{Issuer: fx.a, Audience: twoIssuersAudience}, {Issuer: fx.b, Audience: twoIssuersAudience}},
		identity.Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.NewSigningKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if fx.minter, err = identity.NewMinter("https://agentauth.example", []identity.SigningKey{key}, nil); err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	sseed, _ := kp.Seed()
	sealer, err := agents.NewSealer(sseed)
	if err != nil {
		t.Fatal(err)
	}
	a, creds, err := agents.New("bot", agents.Policy{Audiences: []string{"https://api.example"}, Collections: []string{"default"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fx.agent, fx.seed = a, []byte(creds.XKeySeed)
	fx.user = &User{Verifier: v, Agents: agentLookup{a.ID: a}, Minter: fx.minter, Sealer: sealer,
		Audit: func(*bus.Request, string, string, string, string, any) {}}
	return fx
}

// qualifiedAt is the id of subject at a test issuer
// (http://127.0.0.1:port/…): "127.0.0.1%3Aport/…|subject".
func qualifiedAt(t *testing.T, issuer, subject string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(issuer, "http://127.0.0.1:")
	if !ok {
		t.Fatalf("test issuer %q is not on 127.0.0.1", issuer)
	}
	return "127.0.0.1%3A" + rest + "|" + subject
}

type agentLookup map[string]agents.Agent

func (m agentLookup) Agent(_ context.Context, id string) (agents.Agent, error) {
	a, ok := m[id]
	if !ok {
		return agents.Agent{}, agents.ErrNotFound
	}
	return a, nil
}

// request is op's request from the agent with data.
func (fx *twoIssuers) request(t *testing.T, op schemas.Op, data any) *bus.Request {
	t.Helper()
	ev, err := bus.NewEvent(op.RequestType, data)
	if err != nil {
		t.Fatal(err)
	}
	return &bus.Request{Event: ev, Agent: fx.agent.ID, Op: op, Received: time.Now()}
}

// TestExchangeUserPerIssuer: the same subject at two issuers gets two
// subjects in exchanged tokens, and both tokens name the user's issuer.
func TestExchangeUserPerIssuer(t *testing.T) {
	fx := mustTwoIssuers(t)
	tests := []struct {
		name, issuer, sub string
	}{
		{"default issuer: the bare subject", fx.a, "dev-alice"},
		{"another issuer: a qualified subject", fx.b, qualifiedAt(t, fx.b, "dev-alice")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := fx.request(t, schemas.OpExchange, schemas.ExchangeRequest{UserToken: fx.tokens[tt.issuer], Audience: "https://api.example"})
			reply, err := fx.user.Exchange().ServeEvent(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			var out schemas.ExchangeReply
			if err := bus.DecodeData(reply, &out); err != nil {
				t.Fatal(err)
			}
			plain, err := agents.Open(fx.seed, out.SealedToken)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.ParseSigned(string(plain), []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var c jwt.Claims
			var extra struct {
				UserIssuer *string `json:"user_iss"`
			}
			if err := tok.Claims(fx.minter.JWKS(), &c, &extra); err != nil {
				t.Fatal(err)
			}
			if c.Subject != tt.sub || extra.UserIssuer == nil || *extra.UserIssuer != tt.issuer {
				t.Errorf("sub %q, user_iss %v; want %q, %q", c.Subject, extra.UserIssuer, tt.sub, tt.issuer)
			}
		})
	}
}

// fgaRecorder is a retrieval.Checker over tuples in memory that records
// the users it is asked about.
type fgaRecorder struct {
	mu      sync.Mutex
	allowed map[string]bool // user + " " + object
	users   []string
}

func (f *fgaRecorder) BatchCheckWith(_ context.Context, user, _ string, objects []string, _ retrieval.FGAOptions) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users = append(f.users, user)
	out := map[string]bool{}
	for _, o := range objects {
		out[o] = f.allowed[user+" "+o]
	}
	return out, nil
}

func (f *fgaRecorder) ListObjectsWith(_ context.Context, user, _, _ string, _ int, _ retrieval.FGAOptions) ([]string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users = append(f.users, user)
	var out []string
	for k, ok := range f.allowed {
		if o, found := strings.CutPrefix(k, user+" "); found && ok {
			out = append(out, o)
		}
	}
	return out, false, nil
}

func (f *fgaRecorder) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.users)
	f.users = nil
	return out
}

// TestRetrievalQueryUserPerIssuer: OpenFGA is asked about the user of the
// token's issuer: the default issuer's alice is "user:dev-alice" (as
// existing tuples name her), the other issuer's alice a qualified user
// who does not see the first alice's documents.
func TestRetrievalQueryUserPerIssuer(t *testing.T) {
	fx := mustTwoIssuers(t)
	docs, err := retrieval.OpenDocStore(filepath.Join(t.TempDir(), "docs"))
	if err != nil {
		t.Fatal(err)
	}
	fga := &fgaRecorder{allowed: map[string]bool{"user:dev-alice doc:plan": true}}
	svc := &retrieval.Service{Docs: docs, Embedder: retrieval.Lexical{}, Checker: fga}
	if err := svc.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if err := svc.Ingest(t.Context(), []retrieval.Document{{ID: "plan", Object: "doc:plan", Text: "the launch plan"}}); err != nil {
		t.Fatal(err)
	}
	h := &Retrieval{User: fx.user, Service: svc, Audit: func(string, string, schemas.AuditRetrieval) {}}
	tests := []struct {
		name, issuer, user string
		docs               int
	}{
		{"default issuer", fx.a, "user:dev-alice", 1},
		{"another issuer", fx.b, "user:" + qualifiedAt(t, fx.b, "dev-alice"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := fx.request(t, schemas.OpRetrievalQuery, schemas.RetrievalQuery{UserToken: fx.tokens[tt.issuer], Query: "plan"})
			reply, err := h.Query().ServeEvent(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			var out schemas.RetrievalResult
			if err := bus.DecodeData(reply, &out); err != nil {
				t.Fatal(err)
			}
			asked := fga.asked()
			if len(asked) == 0 || slices.ContainsFunc(asked, func(u string) bool { return u != tt.user }) {
				t.Errorf("OpenFGA was asked about %v, want only %q", asked, tt.user)
			}
			if len(out.Documents) != tt.docs {
				t.Errorf("got %d documents, want %d", len(out.Documents), tt.docs)
			}
		})
	}
}
