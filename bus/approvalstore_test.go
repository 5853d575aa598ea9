package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/agentauth/agentauth/agents"
	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/bus/natsembed"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// mustApprovalStore opens the approvals bucket on a fresh server.
func mustApprovalStore(tb testing.TB) (*ApprovalStore, jetstream.JetStream) {
	tb.Helper()
	js, err := JetStream(MustConn(tb, MustServer(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := NewApprovalStore(tb.Context(), js, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return st, js
}

var approvalUser = approval.UserRef{Issuer: "https://idp.example", Subject: "alice"}

func testApproval(id, agent, eventID string) approval.Request {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return approval.Request{ID: id, Agent: agent, User: approvalUser, BindingMessage: "Buy a book", Audience: "https://shop.example",
		Scopes: []string{"purchase"}, Created: now, Expires: now.Add(5 * time.Minute), Interval: 5,
		State: schemas.ApprovalPending, EventID: eventID}
}

func TestApprovalStoreCreateGetUpdate(t *testing.T) {
	st, _ := mustApprovalStore(t)
	ctx := t.Context()
	r := testApproval("id-1", "shopper", "ev-1")
	got, err := st.Create(ctx, r)
	if err != nil || got.ID != "id-1" {
		t.Fatalf("create: %+v, %v", got, err)
	}
	back, rev, err := st.Get(ctx, "id-1")
	if err != nil || back.BindingMessage != r.BindingMessage || !back.Expires.Equal(r.Expires) || back.State != schemas.ApprovalPending {
		t.Fatalf("get: %+v, %v", back, err)
	}
	back.State = schemas.ApprovalDenied
	rev2, err := st.Update(ctx, back, rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update: %d, %v", rev2, err)
	}
	back.State = schemas.ApprovalApproved
	if _, err := st.Update(ctx, back, rev); !errors.Is(err, approval.ErrConflict) {
		t.Fatalf("update at a stale revision: got %v, want ErrConflict", err)
	}
	if cur, _, _ := st.Get(ctx, "id-1"); cur.State != schemas.ApprovalDenied {
		t.Fatalf("a conflicting update changed the record: %s", cur.State)
	}
	for _, id := range []string{"nope", "", "*", ">", "id-1.x", "a b", "req.id-1"} {
		if _, _, err := st.Get(ctx, id); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("get %q: got %v, want ErrNotFound", id, err)
		}
	}
	if _, err := st.Create(ctx, testApproval("bad.id", "shopper", "ev-2")); err == nil {
		t.Error("create with an id holding key syntax: got nil error")
	}
}

// TestApprovalStoreDuplicate: the id is derived from the agent and the
// event (approval.Service), so a retry carries the first one's id and
// finds it stored; an id that is another request's is an error.
func TestApprovalStoreDuplicate(t *testing.T) {
	st, _ := mustApprovalStore(t)
	ctx := t.Context()
	first, err := st.Create(ctx, testApproval("id-1", "shopper", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	retry := testApproval("id-1", "shopper", "ev-1")
	retry.BindingMessage = "Buy another book"
	got, err := st.Create(ctx, retry)
	if !errors.Is(err, approval.ErrDuplicate) || got.ID != first.ID || got.BindingMessage != first.BindingMessage {
		t.Fatalf("retry: got %+v, %v; want the first request and ErrDuplicate", got, err)
	}
	if _, err := st.Create(ctx, testApproval("id-1", "other-agent", "ev-1")); err == nil || errors.Is(err, approval.ErrDuplicate) {
		t.Errorf("another agent's request under a taken id: %v; want an error", err)
	}
	if r, _, err := st.Get(ctx, "id-1"); err != nil || r.Agent != "shopper" || r.BindingMessage != first.BindingMessage {
		t.Errorf("after the refused creates: %+v, %v", r, err)
	}
	// Real ids: the record key is their first half; the other half must
	// match too.
	rk := "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	realID, otherID := rk+"AAAAAAAAAAAAAAAAAAAAAAAAAA", rk+"BBBBBBBBBBBBBBBBBBBBBBBBBB"
	if _, err := st.Create(ctx, testApproval(realID, "shopper", "ev-2")); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Create(ctx, testApproval(otherID, "shopper", "ev-2")); !errors.Is(err, approval.ErrDuplicate) || got.ID != realID {
		t.Errorf("retry with a fresh random half: %s, %v; want %s and ErrDuplicate", got.ID, err, realID)
	}
	if r, _, err := st.Get(ctx, realID); err != nil || r.ID != realID {
		t.Errorf("get %s: %s, %v", realID, r.ID, err)
	}
	for _, id := range []string{otherID, rk} {
		if _, _, err := st.Get(ctx, id); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("get %s (the record key's, another random half or none): %v; want ErrNotFound", id, err)
		}
	}
	// Concurrent duplicates: exactly one caller stores, all see its request.
	var mu sync.Mutex
	stored, msgs := 0, map[string]bool{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			r := testApproval("id-concurrent", "shopper", "ev-concurrent")
			r.BindingMessage = fmt.Sprintf("Buy book %d", i)
			got, err := st.Create(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				stored++
			case !errors.Is(err, approval.ErrDuplicate):
				t.Error(err)
			}
			msgs[got.BindingMessage] = true
		})
	}
	wg.Wait()
	if stored != 1 || len(msgs) != 1 {
		t.Errorf("20 concurrent creates: %d stored, requests %v; want 1 and one request", stored, msgs)
	}
}

func TestApprovalStoreWatchAndList(t *testing.T) {
	st, _ := mustApprovalStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if rev, err := st.LastRevision(ctx); rev != 0 || err != nil {
		t.Fatalf("last revision of the empty bucket: %d, %v", rev, err)
	}
	if _, err := st.Create(ctx, testApproval("old", "shopper", "ev-1")); err != nil {
		t.Fatal(err)
	}
	seen := make(chan approval.Request, 16)
	revs := make(chan uint64, 16)
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctx, func(r approval.Request, rev uint64) { revs <- rev; seen <- r })
	}()
	if r := receive(t, seen, "the existing request"); r.ID != "old" {
		t.Fatalf("first: %s", r.ID)
	}
	if rev, last := <-revs, mustLastRevision(t, st); rev == 0 || rev != last {
		t.Errorf("the watch delivered revision %d; the bucket's last is %d", rev, last)
	}
	newer := testApproval("new", "shopper", "ev-2")
	newer.Created = newer.Created.Add(time.Millisecond) // created in the same millisecond, "new" would sort first
	if _, err := st.Create(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, seen, "the new request"); r.ID != "new" || r.State != schemas.ApprovalPending {
		t.Fatalf("second: %+v", r)
	}
	r, rev, _ := st.Get(ctx, "old")
	r.State = schemas.ApprovalExpired
	if _, err := st.Update(ctx, r, rev); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, seen, "the update"); r.ID != "old" || r.State != schemas.ApprovalExpired {
		t.Fatalf("update: %+v", r)
	}
	<-revs // the new request's
	if rev, last := <-revs, mustLastRevision(t, st); rev != last {
		t.Errorf("the update's revision %d; the bucket's last is %d", rev, last)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) != 2 || all[0].ID != "old" || all[1].ID != "new" {
		t.Fatalf("list: %+v, %v", all, err)
	}
	cancel()
	if err := receive(t, done, "Watch to return"); err != nil {
		t.Errorf("Watch: %v", err)
	}
}

func mustLastRevision(t *testing.T, st *ApprovalStore) uint64 {
	t.Helper()
	rev, err := st.LastRevision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// approvalEvents records approval.Events.
type approvalEvents struct {
	mu    sync.Mutex
	notes []schemas.ApprovalNotification
	feed  []schemas.ApprovalDecided
}

func (a *approvalEvents) Notify(_ context.Context, _, _, _ string, d schemas.ApprovalNotification) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notes = append(a.notes, d)
	return nil
}

func (a *approvalEvents) Feed(_ context.Context, _, _, _ string, d schemas.ApprovalDecided) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.feed = append(a.feed, d)
	return nil
}

func (a *approvalEvents) Audit(string, string, schemas.AuditApproval) {}

func (a *approvalEvents) feedFor(id string) []schemas.ApprovalDecided {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []schemas.ApprovalDecided
	for _, f := range a.feed {
		if f.AuthReqID == id {
			out = append(out, f)
		}
	}
	return out
}

type approvalAgents map[string]agents.Agent

func (m approvalAgents) Agent(_ context.Context, id string) (agents.Agent, error) {
	if a, ok := m[id]; ok {
		return a, nil
	}
	return agents.Agent{}, agents.ErrNotFound
}

// TestApprovalServiceSurvivesServerRestart runs the approval service end
// to end on the store while the embedded nats-server restarts (same port,
// same store): a pending request survives and completes, the agent opens
// its token from the feed and redeems it once, and expiry keeps working
// on the watch that lived through the restart.
func TestApprovalServiceSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	start := func(listen string) *natsembed.Server {
		ns, err := natsembed.Start(natsembed.Options{Listen: listen, StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ns := start("127.0.0.1:-1")
	port := ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := Connect(ConnOptions{URL: ns.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewApprovalStore(t.Context(), js, 1)
	if err != nil {
		t.Fatal(err)
	}

	key, _ := identity.NewSigningKey(time.Now())
	minter, err := identity.NewMinter("https://agentauth.example", []identity.SigningKey{key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateCurveKeys()
	seed, _ := kp.Seed()
	sealer, _ := agents.NewSealer(seed)
	agent, creds, _ := agents.New("shopper", agents.Policy{ApprovalAudiences: []string{"https://shop.example"}, ApprovalScopes: []string{"purchase"}}, time.Now())
	types, _ := approval.NewTypeRegistry(approval.DefaultTypes())
	ev := &approvalEvents{}
	svc := &approval.Service{Store: st, Events: ev, Minter: minter, Sealer: sealer, Agents: approvalAgents{agent.ID: agent},
		Types: types, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(ctx) }()

	req := func(expiry int) approval.Request {
		t.Helper()
		r, err := svc.Request(ctx, approval.NewRequest{Agent: agent, User: approvalUser, EventID: strconv.FormatInt(time.Now().UnixNano(), 36),
			Data: schemas.ApprovalRequestData{BindingMessage: "Buy a book", Audience: "https://shop.example", Scopes: []string{"purchase"}, RequestedExpiry: expiry,
				AuthorizationDetails: []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"book","amount":12,"currency":"EUR"}`)}}})
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		return r
	}
	pending := req(300)

	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start("127.0.0.1:" + strconv.Itoa(port))
	waitUntil(t, "the client to reconnect", nc.IsConnected)

	if _, err := svc.Status(ctx, agent, pending.ID); approval.CodeOf(err) != schemas.CodeAuthorizationPending {
		t.Fatalf("status after restart: %v, want authorization_pending", err)
	}
	if _, err := svc.Decide(ctx, approval.Decision{ID: pending.ID, User: approvalUser, Approve: true, By: "phone"}); err != nil {
		t.Fatalf("decide after restart: %v", err)
	}
	feed := ev.feedFor(pending.ID)
	if len(feed) != 1 || feed[0].Status != schemas.ApprovalApproved || feed[0].Token == nil {
		t.Fatalf("feed: %+v", feed)
	}
	plain, err := agents.Open([]byte(creds.XKeySeed), feed[0].Token.SealedToken)
	if err != nil || schemas.Fingerprint(string(plain)) != feed[0].Token.Fingerprint {
		t.Fatalf("the agent cannot open its token: %v", err)
	}
	got, err := svc.Status(ctx, agent, pending.ID)
	if err != nil || got.Token == nil || got.Token.JTI != feed[0].Token.JTI {
		t.Fatalf("redeem: %+v, %v", got, err)
	}
	if _, err := svc.Status(ctx, agent, pending.ID); approval.CodeOf(err) != schemas.CodeInvalidGrant {
		t.Fatalf("second redeem: %v, want invalid_grant", err)
	}

	// Expiry, with nobody polling, on the watch that outlived the restart.
	soon := req(1)
	waitUntil(t, "the request to expire by itself", func() bool {
		r, _, err := st.Get(ctx, soon.ID)
		return err == nil && r.State == schemas.ApprovalExpired
	})
	waitUntil(t, "the expired event on the feed", func() bool { return len(ev.feedFor(soon.ID)) == 1 })
	cancel()
	if err := receive(t, runDone, "Run to return"); err != nil {
		t.Errorf("Run: %v", err)
	}
}
