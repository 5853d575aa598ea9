package bus

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/schemas"
)

// ApprovalsBucket is the KV bucket of approval requests.
const ApprovalsBucket = "AGENTAUTH_APPROVALS"

// ApprovalRetention is how long a request (and its idempotency key) is
// kept after its last change; the bucket's TTL removes it then. A request
// is decided or expired within an hour; the rest of the week leaves
// operators time to look at finished requests, and the audit stream keeps
// the lifecycle for good.
const ApprovalRetention = 7 * 24 * time.Hour

// ApprovalStore keeps approval requests in a JetStream KV bucket, each
// under req.<approval.RecordKey(auth_req_id)>. The record key is derived
// from the agent and the request's CloudEvent id (approval.Service), so
// creating the key if absent is what makes a retried request find the
// first one. Every change is revision-checked, so decisions are single
// across agentauth instances. Safe for concurrent use.
type ApprovalStore struct {
	kv jetstream.KeyValue
	nc *nats.Conn
}

var _ approval.Store = (*ApprovalStore)(nil)

// NewApprovalStore creates or binds the approvals bucket.
func NewApprovalStore(ctx context.Context, js jetstream.JetStream, replicas int) (*ApprovalStore, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ApprovalsBucket,
		Description: "agentauth approval requests (tokens only sealed to their agent)",
		History:     1,
		TTL:         ApprovalRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: approvals bucket: %w", err)
	}
	return &ApprovalStore{kv: kv, nc: js.Conn()}, nil
}

// approvalIDPattern admits the ids agentauth issues (base32 now, base64url
// before) and keeps anything else from reaching key syntax (dots,
// wildcards).
var approvalIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// requestKey is the KV key of the request with auth_req_id id.
func requestKey(id string) string { return "req." + approval.RecordKey(id) }

// Create stores a new request with one create-if-absent write. If its
// record key is taken (a retry, or a concurrent duplicate that got there
// first) nothing is written and the stored request is returned with
// approval.ErrDuplicate, so exactly one caller per record key gets nil.
func (s *ApprovalStore) Create(ctx context.Context, r approval.Request) (approval.Request, error) {
	if !approvalIDPattern.MatchString(r.ID) {
		return approval.Request{}, fmt.Errorf("approval create: invalid id")
	}
	b, err := json.Marshal(r)
	if err != nil {
		return approval.Request{}, err
	}
	if _, err := s.kv.Create(ctx, requestKey(r.ID), b); err != nil {
		if !casConflict(err) {
			return approval.Request{}, fmt.Errorf("approval create: %w", err)
		}
		got, _, err := s.record(ctx, r.ID)
		if err != nil {
			return approval.Request{}, fmt.Errorf("approval create: %w", err)
		}
		if got.Agent != r.Agent || got.EventID != r.EventID {
			return approval.Request{}, fmt.Errorf("approval create: the record key of auth_req_id %s is another request's (agent %s)", schemas.Fingerprint(r.ID), got.Agent)
		}
		return got, approval.ErrDuplicate
	}
	return r, nil
}

// Get returns a request and its revision; approval.ErrNotFound.
func (s *ApprovalStore) Get(ctx context.Context, id string) (approval.Request, uint64, error) {
	if !approvalIDPattern.MatchString(id) {
		return approval.Request{}, 0, approval.ErrNotFound
	}
	r, rev, err := s.record(ctx, id)
	if err != nil {
		return approval.Request{}, 0, err
	}
	// The record key is half the id: the other half must match too.
	if subtle.ConstantTimeCompare([]byte(r.ID), []byte(id)) != 1 {
		return approval.Request{}, 0, approval.ErrNotFound
	}
	return r, rev, nil
}

// record reads the request stored under id's record key, whatever its id.
func (s *ApprovalStore) record(ctx context.Context, id string) (approval.Request, uint64, error) {
	e, err := s.kv.Get(ctx, requestKey(id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return approval.Request{}, 0, approval.ErrNotFound
		}
		return approval.Request{}, 0, fmt.Errorf("approval get: %w", err)
	}
	var r approval.Request
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return approval.Request{}, 0, fmt.Errorf("approval get: stored record unreadable: %w", err)
	}
	return r, e.Revision(), nil
}

// Update replaces a request if its revision is still revision;
// approval.ErrConflict when it moved.
func (s *ApprovalStore) Update(ctx context.Context, r approval.Request, revision uint64) (uint64, error) {
	if !approvalIDPattern.MatchString(r.ID) {
		return 0, approval.ErrNotFound
	}
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Update(ctx, requestKey(r.ID), b, revision)
	if err != nil {
		if casConflict(err) {
			return 0, approval.ErrConflict
		}
		return 0, fmt.Errorf("approval update: %w", err)
	}
	return rev, nil
}

// LastRevision is the bucket's last sequence: the revision of its latest
// change; 0 when the bucket holds nothing (its last change aged out with
// everything before it).
func (s *ApprovalStore) LastRevision(ctx context.Context) (uint64, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("approval store status: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return 0, errors.New("approval store status: no stream state")
	}
	if bs.StreamInfo().State.Msgs == 0 {
		return 0, nil
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// Watch calls fn with every stored request, then with each change, until
// ctx ends (nil) or the watch stops (an error). fn runs on the calling
// goroutine; records that cannot be read are skipped. After a reconnect
// Watch returns an error at once, for the caller to watch again: the
// watch's consumer may be gone with a restarted server, and nats.go would
// notice only after missing heartbeats for 10-20 s.
func (s *ApprovalStore) Watch(ctx context.Context, fn func(approval.Request, uint64)) error {
	var reconnected chan nats.Status
	if s.nc != nil {
		reconnected = s.nc.StatusChanged(nats.CONNECTED)
		defer s.nc.RemoveStatusListener(reconnected)
	}
	w, err := s.kv.Watch(ctx, requestKey("*"), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("approval watch: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-reconnected:
			if ok {
				return errors.New("approval watch: reconnected to NATS; watch again")
			}
			reconnected = nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("approval watch: the watch stopped")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var r approval.Request
			if json.Unmarshal(e.Value(), &r) == nil {
				fn(r, e.Revision())
			}
		}
	}
}

// List returns every stored request, oldest first, read with one watch
// rather than a Get per key.
func (s *ApprovalStore) List(ctx context.Context) ([]approval.Request, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.Watch(ctx, requestKey("*"), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("approval list: %w", err)
	}
	defer w.Stop()
	var out []approval.Request
	at := map[string]int{} // a key changed during the read comes twice: keep the last
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("approval list: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("approval list: the watch stopped")
			}
			if e == nil { // every current value was delivered
				approval.SortOldestFirst(out)
				return out, nil
			}
			var r approval.Request
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
				continue
			}
			if i, ok := at[r.ID]; ok {
				out[i] = r
			} else {
				at[r.ID] = len(out)
				out = append(out, r)
			}
		}
	}
}
