package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/agents"
)

// AgentsBucket is the KV bucket of the agent registry.
const AgentsBucket = "AGENTAUTH_AGENTS"

// AgentStore keeps the agent registry in a JetStream KV bucket, so every
// agentauth instance sees the same agents; writes are revision-checked.
type AgentStore struct {
	kv jetstream.KeyValue
}

var _ agents.Store = (*AgentStore)(nil)

// NewAgentStore creates or binds the registry bucket.
func NewAgentStore(ctx context.Context, js jetstream.JetStream, replicas int) (*AgentStore, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      AgentsBucket,
		Description: "agentauth agent registry (public keys and policies; no secrets)",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: agents bucket: %w", err)
	}
	return &AgentStore{kv: kv}, nil
}

// Create stores a new agent; ErrExists when the id is taken.
func (s *AgentStore) Create(ctx context.Context, a agents.Agent) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, a.ID, b); err != nil {
		if casConflict(err) {
			return fmt.Errorf("agent %s: %w", a.ID, agents.ErrExists)
		}
		return fmt.Errorf("agent %s: %w", a.ID, err)
	}
	return nil
}

// Get returns an agent and its revision.
func (s *AgentStore) Get(ctx context.Context, id string) (agents.Agent, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
			return agents.Agent{}, 0, fmt.Errorf("agent %s: %w", id, agents.ErrNotFound)
		}
		return agents.Agent{}, 0, fmt.Errorf("agent %s: %w", id, err)
	}
	var a agents.Agent
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return agents.Agent{}, 0, fmt.Errorf("agent %s: stored record unreadable: %w", id, err)
	}
	// A record that is not this agent's (written there by anything but
	// the registry) is no agent at all.
	if err := a.Validate(); err != nil || a.ID != id {
		return agents.Agent{}, 0, fmt.Errorf("agent %s: stored record is not a valid agent record (id %q): %v", id, a.ID, err)
	}
	return a, e.Revision(), nil
}

// Update replaces an agent if its revision is still revision.
func (s *AgentStore) Update(ctx context.Context, a agents.Agent, revision uint64) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.kv.Update(ctx, a.ID, b, revision); err != nil {
		if casConflict(err) {
			return fmt.Errorf("agent %s: %w", a.ID, agents.ErrConflict)
		}
		return fmt.Errorf("agent %s: %w", a.ID, err)
	}
	return nil
}

// Delete removes an agent.
func (s *AgentStore) Delete(ctx context.Context, id string) error {
	_, rev, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("agent %s: %w", id, err)
	}
	return nil
}

// List returns every agent, by id.
func (s *AgentStore) List(ctx context.Context) ([]agents.Agent, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []agents.Agent
	for k := range lister.Keys() {
		a, _, err := s.Get(ctx, k)
		if agents.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Watch calls changed once the current agents are known and again after
// every change, until ctx ends.
func (s *AgentStore) Watch(ctx context.Context, changed func()) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		ready := false
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the current values have all been delivered
					ready = true
					changed()
				} else if ready {
					changed()
				}
			}
		}
	}()
	return nil
}

// OpenAgentStore binds the registry bucket an agentauth instance created.
func OpenAgentStore(ctx context.Context, js jetstream.JetStream) (*AgentStore, error) {
	kv, err := js.KeyValue(ctx, AgentsBucket)
	if err != nil {
		return nil, fmt.Errorf("bus: agents bucket %s: %w (has `agentauth serve` run against this NATS server?)", AgentsBucket, err)
	}
	return &AgentStore{kv: kv}, nil
}
