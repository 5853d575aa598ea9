// Package agents is the agent registry's domain: an agent's identity (its
// NATS nkey and its X25519 sealing key), its policy, the NATS permissions
// that isolate it on the bus, and sealed delivery of secrets to it.
package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/schemas"
)

// Agent is a registered agent. It holds public keys only: the seeds are
// handed to the operator once, at creation, and never stored.
type Agent struct {
	ID      string    `json:"id"`
	NKey    string    `json:"nkey"` // NATS user public key (U…)
	XKey    string    `json:"xkey"` // X25519 public key for sealing (X…)
	Policy  Policy    `json:"policy"`
	Created time.Time `json:"created"`
}

// Policy says what an agent may do. The later capabilities fill it in.
type Policy struct {
	// Connections the agent may use from the token vault, with the
	// scopes it may ask for.
	Connections []ConnectionGrant `json:"connections,omitempty"`
	// Audiences of first-party APIs the agent may get exchanged tokens for.
	Audiences []string `json:"audiences,omitempty"`
	// Scopes the agent may ask for in exchanged tokens; empty means none.
	Scopes []string `json:"scopes,omitempty"`
	// ApprovalAudiences the agent may ask a person to approve actions for.
	ApprovalAudiences []string `json:"approval_audiences,omitempty"`
	// ApprovalScopes the agent may ask for in approved tokens; empty
	// means none.
	ApprovalScopes []string `json:"approval_scopes,omitempty"`
	// BackgroundAudiences are the approval audiences for which the agent
	// may name the person by subject (CIBA's login_hint) instead of
	// presenting their token.
	BackgroundAudiences []string `json:"background_audiences,omitempty"`
	// Approver marks an approval app: it may send people's decisions
	// (each with the person's own token). An approver never decides the
	// requests it made itself.
	Approver bool `json:"approver,omitempty"`
	// Collections the agent may query in retrieval.
	Collections []string `json:"collections,omitempty"`
	// IngestCollections the principal may add documents to and delete
	// documents from (an ingest pipeline, not an agent acting for a person).
	IngestCollections []string `json:"ingest_collections,omitempty"`
	// ClientID, when set, is the OAuth client the user tokens this agent
	// presents must have been issued to (azp/client_id).
	ClientID string `json:"client_id,omitempty"`
}

// ConnectionGrant allows a vault connection with some scopes.
type ConnectionGrant struct {
	Connection string   `json:"connection"`
	Scopes     []string `json:"scopes,omitempty"`
}

// AllowsAudience reports whether the policy names aud.
func (p Policy) AllowsAudience(aud string) bool { return slices.Contains(p.Audiences, aud) }

// Credentials are an agent's secrets, returned once by New.
type Credentials struct {
	Agent    string `json:"agent"`
	URL      string `json:"url,omitempty"`
	NKeySeed string `json:"nkey_seed"`
	XKeySeed string `json:"xkey_seed"`
	// ServiceXKey is agentauth's sealing public key (X…, Sealer.PublicKey):
	// the SDK opens only boxes sealed by it. New leaves it empty; whoever
	// writes the credentials fills it in. Credentials written before it
	// existed lack it, and their boxes open from any sender.
	ServiceXKey string `json:"service_xkey,omitempty"`
}

// Errors.
var (
	ErrNotFound = &Error{Code: schemas.CodeNotFound, Msg: "agent not found"}
	ErrExists   = &Error{Code: schemas.CodeConflict, Msg: "agent already exists"}
	ErrConflict = &Error{Code: schemas.CodeConflict, Msg: "agent changed concurrently; read it again"}
)

// Error is an agents error with a wire code.
type Error struct {
	Code schemas.ErrorCode
	Msg  string
}

func (e *Error) Error() string                { return e.Msg }
func (e *Error) ErrorCode() schemas.ErrorCode { return e.Code }

// New creates an agent with fresh keys. The returned credentials hold the
// seeds; the agent holds only public keys.
func New(id string, p Policy, now time.Time) (Agent, Credentials, error) {
	if err := schemas.ValidAgentID(id); err != nil {
		return Agent{}, Credentials{}, err
	}
	nk, err := nkeys.CreateUser()
	if err != nil {
		return Agent{}, Credentials{}, err
	}
	xk, err := nkeys.CreateCurveKeys()
	if err != nil {
		return Agent{}, Credentials{}, err
	}
	npub, _ := nk.PublicKey()
	nseed, _ := nk.Seed()
	xpub, _ := xk.PublicKey()
	xseed, _ := xk.Seed()
	a := Agent{ID: id, NKey: npub, XKey: xpub, Policy: p, Created: now.UTC()}
	return a, Credentials{Agent: id, NKeySeed: string(nseed), XKeySeed: string(xseed)}, nil
}

// Validate checks a stored or submitted agent.
func (a Agent) Validate() error {
	if err := schemas.ValidAgentID(a.ID); err != nil {
		return err
	}
	if !nkeys.IsValidPublicUserKey(a.NKey) {
		return fmt.Errorf("agent %s: nkey %q is not a NATS user public key", a.ID, a.NKey)
	}
	if !nkeys.IsValidPublicCurveKey(a.XKey) {
		return fmt.Errorf("agent %s: xkey %q is not an X25519 public key", a.ID, a.XKey)
	}
	return nil
}

// Store keeps agents. Implementations must make Create fail with
// ErrExists for an existing id, Update fail with ErrConflict when the
// revision changed, and Get/Delete fail with ErrNotFound.
type Store interface {
	Create(ctx context.Context, a Agent) error
	Get(ctx context.Context, id string) (Agent, uint64, error)
	Update(ctx context.Context, a Agent, revision uint64) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) ([]Agent, error)
}

// IsNotFound reports whether err is ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// FromCredentials rebuilds the public side of an agent from its
// credentials.
func FromCredentials(c Credentials, p Policy, now time.Time) (Agent, error) {
	nk, err := nkeys.FromSeed([]byte(c.NKeySeed))
	if err != nil {
		return Agent{}, fmt.Errorf("nkey seed: %w", err)
	}
	xk, err := nkeys.FromCurveSeed([]byte(c.XKeySeed))
	if err != nil {
		return Agent{}, fmt.Errorf("xkey seed: %w", err)
	}
	npub, _ := nk.PublicKey()
	xpub, _ := xk.PublicKey()
	a := Agent{ID: c.Agent, NKey: npub, XKey: xpub, Policy: p, Created: now.UTC()}
	return a, a.Validate()
}

// ParseCredentials reads an agent credentials file's content (JSON, as
// `agentauth agent add` writes it).
func ParseCredentials(b []byte) (Credentials, error) {
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return Credentials{}, fmt.Errorf("agent credentials are not valid JSON: %w", err)
	}
	if err := schemas.ValidAgentID(c.Agent); err != nil || c.NKeySeed == "" || c.XKeySeed == "" {
		return Credentials{}, errors.New("agent credentials: agent, nkey_seed and xkey_seed are required")
	}
	if c.ServiceXKey != "" && !nkeys.IsValidPublicCurveKey(c.ServiceXKey) {
		return Credentials{}, fmt.Errorf("agent credentials: service_xkey %q is not an X25519 public key", c.ServiceXKey)
	}
	return c, nil
}
