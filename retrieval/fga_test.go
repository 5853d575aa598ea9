package retrieval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	grpc_runtime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	openfgav1 "github.com/openfga/api/proto/openfga/v1"
	httpmiddleware "github.com/openfga/openfga/pkg/middleware/http"
	"github.com/openfga/openfga/pkg/middleware/validator"
	"github.com/openfga/openfga/pkg/server"
	serverErrors "github.com/openfga/openfga/pkg/server/errors"
	"github.com/openfga/openfga/pkg/storage/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// testOpenFGA is a real OpenFGA (pkg/server, memory datastore) behind its
// grpc-gateway HTTP API, wired as cmd/agentauth wires the embedded one
// (which uses sqlite and a token), with a switch to inject faults in
// front of it.
type testOpenFGA struct {
	URL   string
	srv   *httptest.Server
	fault atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	mu    sync.Mutex
	reqs  [][]byte // batch-check request bodies
}

// mustOpenFGA starts one; opts are added to (and override) the defaults.
func mustOpenFGA(tb testing.TB, opts ...server.OpenFGAServiceV1Option) *testOpenFGA {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	all := append([]server.OpenFGAServiceV1Option{
		server.WithDatastore(memory.New()),
		server.WithContext(ctx),
		server.WithListObjectsDeadline(3 * time.Second),
		server.WithListObjectsMaxResults(1000),
		server.WithMaxChecksPerBatchCheck(50),
		server.WithCheckQueryCacheEnabled(false),
	}, opts...)
	svr, err := server.NewServerWithOpts(all...)
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(validator.UnaryServerInterceptor()))
	openfgav1.RegisterOpenFGAServiceServer(gs, svr)
	bl := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(bl) }()
	conn, err := grpc.NewClient("passthrough:///openfga",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	mux := grpc_runtime.NewServeMux(
		grpc_runtime.WithForwardResponseOption(httpmiddleware.HTTPResponseModifier),
		grpc_runtime.WithErrorHandler(func(c context.Context, _ *grpc_runtime.ServeMux, _ grpc_runtime.Marshaler, w http.ResponseWriter, r *http.Request, e error) {
			code := serverErrors.ConvertToEncodedErrorCode(status.Convert(e))
			httpmiddleware.CustomHTTPErrorHandler(c, w, r, serverErrors.NewEncodedError(code, e.Error()))
		}),
	)
	if err := openfgav1.RegisterOpenFGAServiceHandler(ctx, mux, conn); err != nil {
		tb.Fatal(err)
	}
	o := &testOpenFGA{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		if strings.HasSuffix(r.URL.Path, "/batch-check") {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			o.reqs = append(o.reqs, b)
		}
		o.mu.Unlock()
		if f := o.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	}))
	o.URL = o.srv.URL
	tb.Cleanup(func() {
		o.srv.Close()
		_ = conn.Close()
		gs.Stop()
		svr.Close()
		cancel()
	})
	return o
}

// setFault makes the server answer with f (when it returns true) instead
// of OpenFGA; nil removes it.
func (o *testOpenFGA) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		o.fault.Store(nil)
		return
	}
	o.fault.Store(&f)
}

func mustFGA(tb testing.TB, url, store string) *FGA {
	tb.Helper()
	f, err := NewFGA(context.Background(), FGAConfig{URL: url, StoreName: store})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

const docsModel = `model
  schema 1.1

type user

type group
  relations
    define member: [user]

type doc
  relations
    define owner: [user]
    define viewer: [user, user:*, group#member] or owner
    define can_view: viewer
    define can_edit: owner
`

func mustDocs(tb testing.TB, url string, n int) *FGA {
	tb.Helper()
	f := mustFGA(tb, url, "docs")
	ctx := context.Background()
	if _, err := f.WriteModel(ctx, []byte(docsModel), nil); err != nil {
		tb.Fatal(err)
	}
	ts := []Tuple{{User: "user:anne", Relation: "member", Object: "group:eng"}}
	for i := range n {
		// anne sees even docs (through the group), bob the multiples of 3.
		if i%2 == 0 {
			ts = append(ts, Tuple{User: "group:eng#member", Relation: "viewer", Object: fmt.Sprintf("doc:%d", i)})
		}
		if i%3 == 0 {
			ts = append(ts, Tuple{User: "user:bob", Relation: "owner", Object: fmt.Sprintf("doc:%d", i)})
		}
	}
	if err := f.WriteTuples(ctx, ts); err != nil {
		tb.Fatal(err)
	}
	return f
}

func docs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("doc:%d", i)
	}
	return out
}

func TestFGABootstrap(t *testing.T) {
	o := mustOpenFGA(t)
	ctx := context.Background()
	f := mustFGA(t, o.URL, "agentauth")
	if f.StoreID() == "" || f.ModelID() != "" {
		t.Fatalf("store %q model %q: want a store and no model", f.StoreID(), f.ModelID())
	}
	// No model yet: every question says what to do.
	_, err := f.Check(ctx, "user:anne", "viewer", "doc:1", ConsistencyDefault)
	if !errors.Is(err, ErrFGANoModel) || !strings.Contains(err.Error(), "agentauth fga model write") {
		t.Fatalf("check without a model: %v", err)
	}
	if _, err := f.BatchCheck(ctx, "user:anne", "viewer", []string{"doc:1"}, ConsistencyDefault); !errors.Is(err, ErrFGANoModel) {
		t.Fatalf("batch-check without a model: %v", err)
	}
	if _, _, err := f.ListObjects(ctx, "user:anne", "viewer", "doc", 0, ConsistencyDefault); !errors.Is(err, ErrFGANoModel) {
		t.Fatalf("list-objects without a model: %v", err)
	}
	if err := f.WriteTuples(ctx, []Tuple{{User: "user:anne", Relation: "viewer", Object: "doc:1"}}); !errors.Is(err, ErrFGANoModel) {
		t.Fatalf("write without a model: %v", err)
	}
	// The same name finds the same store; another process's model is
	// picked up.
	g := mustFGA(t, o.URL, "agentauth")
	if g.StoreID() != f.StoreID() {
		t.Fatalf("store %s, then %s: want the same", f.StoreID(), g.StoreID())
	}
	id, err := g.WriteModel(ctx, []byte(docsModel), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteTuples(ctx, []Tuple{{User: "user:anne", Relation: "viewer", Object: "doc:1"}}); err != nil {
		t.Fatalf("write after another client wrote the model: %v", err)
	}
	if f.ModelID() != id {
		t.Fatalf("model %q, want %q", f.ModelID(), id)
	}
	// Pinned store and model.
	h, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreID: f.StoreID(), ModelID: id})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Check(ctx, "user:anne", "can_view", "doc:1", HigherConsistency); err != nil || !ok {
		t.Fatalf("check = %v, %v; want true", ok, err)
	}
	_, err = NewFGA(ctx, FGAConfig{URL: o.URL, StoreID: "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
	if !errors.Is(err, ErrFGAInvalid) || !strings.Contains(err.Error(), "no store") {
		t.Fatalf("unknown store: %v", err)
	}
	if _, err := NewFGA(ctx, FGAConfig{URL: "localhost:8080"}); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("URL without scheme: %v", err)
	}
}

func TestFGAChecks(t *testing.T) {
	o := mustOpenFGA(t)
	ctx := context.Background()
	const n = 237
	f := mustDocs(t, o.URL, n)

	for _, tc := range []struct {
		user, relation, object string
		want                   bool
	}{
		{"user:anne", "can_view", "doc:0", true},
		{"user:anne", "can_view", "doc:1", false},
		{"user:bob", "can_view", "doc:3", true},
		{"user:bob", "can_edit", "doc:2", false},
		{"user:carol", "can_view", "doc:0", false},
	} {
		got, err := f.Check(ctx, tc.user, tc.relation, tc.object, HigherConsistency)
		if err != nil || got != tc.want {
			t.Errorf("Check(%s %s %s) = %v, %v; want %v", tc.user, tc.relation, tc.object, got, err, tc.want)
		}
	}

	objs := append(docs(n), "doc:0", "doc:4") // duplicates are asked once
	o.mu.Lock()
	o.reqs = nil
	o.mu.Unlock()
	got, err := f.BatchCheck(ctx, "user:anne", "can_view", objs, MinimizeLatency)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d results, want %d", len(got), n)
	}
	for i := range n {
		if want := i%2 == 0; got[fmt.Sprintf("doc:%d", i)] != want {
			t.Errorf("doc:%d = %v, want %v", i, !want, want)
		}
	}
	// Server-side batch-check in chunks of ≤ 50 with correlation ids, the
	// model and the consistency set.
	o.mu.Lock()
	reqs := slices.Clone(o.reqs)
	o.mu.Unlock()
	if want := (n + 49) / 50; len(reqs) != want {
		t.Fatalf("%d batch-check calls, want %d", len(reqs), want)
	}
	for _, b := range reqs {
		var req batchCheckRequestJSON
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
		if len(req.Checks) == 0 || len(req.Checks) > 50 || req.AuthorizationModelID != f.ModelID() || req.Consistency != "MINIMIZE_LATENCY" {
			t.Fatalf("batch-check request: %d checks, model %q, consistency %q", len(req.Checks), req.AuthorizationModelID, req.Consistency)
		}
		for i, c := range req.Checks {
			if c.CorrelationID != fmt.Sprint(i) {
				t.Fatalf("correlation id %q at %d", c.CorrelationID, i)
			}
		}
	}
	if m, err := f.BatchCheck(ctx, "user:anne", "can_view", nil, ConsistencyDefault); err != nil || len(m) != 0 {
		t.Fatalf("BatchCheck(no objects) = %v, %v", m, err)
	}

	// ListObjects: complete, cut to max, and the server's cap.
	list, truncated, err := f.ListObjects(ctx, "user:bob", "can_view", "doc", 0, HigherConsistency)
	if err != nil || truncated || len(list) != (n+2)/3 {
		t.Fatalf("ListObjects(bob) = %d objects, truncated %v, %v; want %d, false", len(list), truncated, err, (n+2)/3)
	}
	list, truncated, err = f.ListObjects(ctx, "user:bob", "can_view", "doc", 10, ConsistencyDefault)
	if err != nil || !truncated || len(list) != 10 {
		t.Fatalf("ListObjects(bob, max 10) = %d objects, truncated %v, %v; want 10, true", len(list), truncated, err)
	}
	list, truncated, err = f.ListObjects(ctx, "user:bob", "can_view", "doc", (n+2)/3, ConsistencyDefault)
	if err != nil || truncated || len(list) != (n+2)/3 {
		t.Fatalf("ListObjects(bob, max = all) = %d objects, truncated %v, %v; want all, false", len(list), truncated, err)
	}
	list, truncated, err = f.ListObjects(ctx, "user:carol", "can_view", "doc", 0, ConsistencyDefault)
	if err != nil || truncated || len(list) != 0 {
		t.Fatalf("ListObjects(carol) = %v, %v, %v; want none, complete", list, truncated, err)
	}

	// A deleted tuple is honoured by the next question.
	if err := f.DeleteTuples(ctx, []Tuple{{User: "user:bob", Relation: "owner", Object: "doc:3"}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Check(ctx, "user:bob", "can_view", "doc:3", HigherConsistency); err != nil || ok {
		t.Fatalf("check after delete = %v, %v; want false", ok, err)
	}
	if m, err := f.BatchCheck(ctx, "user:bob", "can_view", []string{"doc:3", "doc:6"}, HigherConsistency); err != nil || m["doc:3"] || !m["doc:6"] {
		t.Fatalf("batch-check after delete = %v, %v", m, err)
	}
	// Writes and deletes can be repeated.
	if err := f.DeleteTuples(ctx, []Tuple{{User: "user:bob", Relation: "owner", Object: "doc:3"}}); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	if err := f.WriteTuples(ctx, []Tuple{{User: "user:bob", Relation: "owner", Object: "doc:6"}}); err != nil {
		t.Fatalf("write again: %v", err)
	}
	users, err := f.ListUsers(ctx, "doc:6", "can_view", "user", FGAOptions{})
	if err != nil || !slices.Equal(users, []string{"user:anne", "user:bob"}) {
		t.Fatalf("ListUsers(doc:6, user) = %v, %v", users, err)
	}
	users, err = f.ListUsers(ctx, "doc:6", "can_view", "group#member", FGAOptions{})
	if err != nil || !slices.Equal(users, []string{"group:eng#member"}) {
		t.Fatalf("ListUsers(doc:6, group#member) = %v, %v", users, err)
	}
}

func TestFGAListObjectsCap(t *testing.T) {
	o := mustOpenFGA(t, server.WithListObjectsMaxResults(5))
	ctx := context.Background()
	mustDocs(t, o.URL, 30)
	f, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreName: "docs", ListObjectsMax: 5})
	if err != nil {
		t.Fatal(err)
	}
	// The server stops at 5 of bob's 10: never mistaken for "no more".
	list, truncated, err := f.ListObjects(ctx, "user:bob", "can_view", "doc", 0, ConsistencyDefault)
	if err != nil || !truncated || len(list) != 5 {
		t.Fatalf("ListObjects = %d, truncated %v, %v; want 5, true", len(list), truncated, err)
	}
	list, truncated, err = f.ListObjects(ctx, "user:bob", "can_view", "doc", 100, ConsistencyDefault)
	if err != nil || !truncated || len(list) != 5 {
		t.Fatalf("ListObjects(max 100) = %d, truncated %v, %v; want 5, true", len(list), truncated, err)
	}
}

func TestFGAInvalid(t *testing.T) {
	o := mustOpenFGA(t)
	ctx := context.Background()
	f := mustDocs(t, o.URL, 3)
	// OpenFGA's HTTP error handler is installed: validation errors are
	// 400s (ErrFGAInvalid), not internal errors.
	if _, err := f.Check(ctx, "user:anne", "no_such_relation", "doc:1", ConsistencyDefault); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("unknown relation: %v", err)
	}
	if _, err := f.BatchCheck(ctx, "user:anne", "no_such_relation", []string{"doc:1"}, ConsistencyDefault); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("batch-check, unknown relation: %v", err)
	}
	if _, _, err := f.ListObjects(ctx, "user:anne", "can_view", "nope", 0, ConsistencyDefault); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("unknown type: %v", err)
	}
	if err := f.WriteTuples(ctx, []Tuple{{User: "user:anne", Relation: "nope", Object: "doc:1"}}); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("bad tuple: %v", err)
	}
	if _, err := f.Check(ctx, "user:anne", "can_view", "doc:1", "EVENTUAL"); !errors.Is(err, ErrFGAInvalid) {
		t.Fatalf("bad consistency: %v", err)
	}
	for _, m := range []string{"model\n  schema 1.1\ntype user\n  relations\n    define x: [nope]\n", "not a model", `{"schema_version":"1.1","type_definitions":[{"type":"user"}],"bogus":1}`} {
		if _, err := f.WriteModel(ctx, []byte(m), nil); !errors.Is(err, ErrFGAInvalid) {
			t.Errorf("WriteModel(%q): %v", m, err)
		}
	}
}

func TestFGACredentials(t *testing.T) {
	o := mustOpenFGA(t)
	const token = "s3cret"
	var sawBearer atomic.Bool
	o.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"code":"unauthenticated","message":"unauthenticated"}`)
			return true
		}
		sawBearer.Store(true)
		return false
	})
	ctx := context.Background()
	_, err := NewFGA(ctx, FGAConfig{URL: o.URL})
	if !errors.Is(err, ErrFGAUnauthorized) || !strings.Contains(err.Error(), "--api-token") {
		t.Fatalf("no token: %v", err)
	}
	f, err := NewFGA(ctx, FGAConfig{URL: o.URL, APIToken: token})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteModel(ctx, []byte(docsModel), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.BatchCheck(ctx, "user:anne", "can_view", []string{"doc:1"}, ConsistencyDefault); err != nil {
		t.Fatalf("batch-check with the token: %v", err)
	}
	if !sawBearer.Load() {
		t.Fatal("the token was never sent")
	}

	// Client credentials: a token from the issuer, sent as a bearer.
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.URL.Path != "/oauth/token" || r.Form.Get("audience") != "https://fga.example/" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, token)
	}))
	defer issuer.Close()
	g, err := NewFGA(ctx, FGAConfig{URL: o.URL, ClientID: "id", ClientSecret: "secret", TokenIssuer: issuer.URL, Audience: "https://fga.example/"})
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if _, err := g.Check(ctx, "user:anne", "can_view", "doc:1", ConsistencyDefault); err != nil {
		t.Fatalf("check with client credentials: %v", err)
	}
}

// TestFGAFailClosed: whatever goes wrong, BatchCheck and ListObjects
// return an error and nothing else.
func TestFGAFailClosed(t *testing.T) {
	o := mustOpenFGA(t)
	ctx := context.Background()
	const n = 400
	mustDocs(t, o.URL, n)
	f, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreName: "docs", Timeout: 500 * time.Millisecond,
		ListObjectsDeadline: 100 * time.Millisecond, ListObjectsTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	objs := docs(n)
	jsonAnswer := func(body string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/batch-check") {
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, body)
			return true
		}
	}
	// The server stops after answering some of the chunks.
	var answered atomic.Int32
	stopMidway := func(w http.ResponseWriter, r *http.Request) bool {
		if answered.Add(1) <= 3 {
			return false
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("no hijacker")
		}
		c, _, _ := hj.Hijack()
		_ = c.Close()
		return true
	}
	for _, tc := range []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request) bool
		want  error
		msg   string
	}{
		{"internal error", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"code":"internal_error","message":"Internal Server Error"}`)
			return true
		}, ErrFGAUnavailable, "failed"},
		{"stuck", func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leaving
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}, ErrFGAUnavailable, "did not answer"},
		{"stops midway", stopMidway, ErrFGAUnavailable, "not reachable"},
		{"per-check error", jsonAnswer(`{"result":{"0":{"allowed":true},"1":{"error":{"input_error":"validation_error","message":"bad"}}}}`), ErrFGAInvalid, "could not check"},
		{"per-check internal error", jsonAnswer(`{"result":{"0":{"error":{"internal_error":"internal_error","message":"boom"}}}}`), ErrFGAUnavailable, "could not check"},
		{"missing result", jsonAnswer(`{"result":{"0":{"allowed":true}}}`), ErrFGAUnavailable, "without a result"},
		{"no decision", jsonAnswer(`{"result":{"0":{}}}`), ErrFGAUnavailable, "without a decision"},
		{"not JSON", jsonAnswer(`<html>hello</html>`), ErrFGAUnavailable, "not its JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answered.Store(0)
			o.setFault(tc.fault)
			defer o.setFault(nil)
			got, err := f.BatchCheck(ctx, "user:anne", "can_view", objs, ConsistencyDefault)
			if got != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("BatchCheck = %d results, %v; want nil, %v (%q)", len(got), err, tc.want, tc.msg)
			}
			if timeout := tc.name == "stuck"; errors.Is(err, context.DeadlineExceeded) != timeout {
				t.Fatalf("BatchCheck: %v: errors.Is(context.DeadlineExceeded) = %v, want %v", err, !timeout, timeout)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request) bool
		msg   string
	}{
		{"internal error", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"code":"unavailable","message":"down"}`)
			return true
		}, "failed"},
		{"stuck", func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leaving
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}, "did not answer"},
	} {
		t.Run("list-objects "+tc.name, func(t *testing.T) {
			o.setFault(tc.fault)
			defer o.setFault(nil)
			got, truncated, err := f.ListObjects(ctx, "user:anne", "can_view", "doc", 0, ConsistencyDefault)
			if got != nil || truncated || !errors.Is(err, ErrFGAUnavailable) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ListObjects = %v, %v, %v; want an error (%q)", got, truncated, err, tc.msg)
			}
		})
	}
	// A slow answer that arrives is reported truncated (OpenFGA answers
	// what it found at its deadline).
	t.Run("list-objects at the deadline", func(t *testing.T) {
		g, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreName: "docs", ListObjectsDeadline: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		o.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			time.Sleep(150 * time.Millisecond)
			return false
		})
		defer o.setFault(nil)
		got, truncated, err := g.ListObjects(ctx, "user:anne", "can_view", "doc", 0, ConsistencyDefault)
		if err != nil || !truncated || len(got) != n/2 {
			t.Fatalf("ListObjects = %d, %v, %v; want %d, truncated", len(got), truncated, err, n/2)
		}
	})
	// Then OpenFGA is gone.
	o.srv.Close()
	if got, err := f.BatchCheck(ctx, "user:anne", "can_view", objs, ConsistencyDefault); got != nil || !errors.Is(err, ErrFGAUnavailable) || !strings.Contains(err.Error(), "is not reachable") {
		t.Fatalf("BatchCheck, server gone = %d results, %v", len(got), err)
	}
	if got, truncated, err := f.ListObjects(ctx, "user:anne", "can_view", "doc", 0, ConsistencyDefault); got != nil || truncated || !errors.Is(err, ErrFGAUnavailable) {
		t.Fatalf("ListObjects, server gone = %v, %v, %v", got, truncated, err)
	}
	if _, err := f.Check(ctx, "user:anne", "can_view", "doc:0", ConsistencyDefault); !errors.Is(err, ErrFGAUnavailable) {
		t.Fatalf("Check, server gone: %v", err)
	}
	if _, err := NewFGA(ctx, FGAConfig{URL: o.URL}); !errors.Is(err, ErrFGAUnavailable) || !strings.Contains(err.Error(), "OpenFGA at "+o.URL+" is not reachable") {
		t.Fatalf("NewFGA, server gone: %v", err)
	}
}

func TestParseTuples(t *testing.T) {
	want := []Tuple{
		{User: "user:anne", Relation: "viewer", Object: "doc:1"},
		{User: "group:eng#member", Relation: "viewer", Object: "doc:2"},
		{User: "user:bob", Relation: "viewer", Object: "doc:3", Condition: &TupleCondition{Name: "in_time", Context: map[string]any{"grant_duration": "1h"}}},
	}
	for _, tc := range []struct{ name, data string }{
		{"t.yaml", `
- user: user:anne
  relation: viewer
  object: doc:1
- user: group:eng#member
  relation: viewer
  object: doc:2
- user: user:bob
  relation: viewer
  object: doc:3
  condition:
    name: in_time
    context:
      grant_duration: 1h
`},
		{"t.json", `[{"user":"user:anne","relation":"viewer","object":"doc:1"},{"user":"group:eng#member","relation":"viewer","object":"doc:2"},
{"user":"user:bob","relation":"viewer","object":"doc:3","condition":{"name":"in_time","context":{"grant_duration":"1h"}}}]`},
		{"t.jsonl", `{"user":"user:anne","relation":"viewer","object":"doc:1"}

{"user":"group:eng#member","relation":"viewer","object":"doc:2"}
{"user":"user:bob","relation":"viewer","object":"doc:3","condition":{"name":"in_time","context":{"grant_duration":"1h"}}}
`},
		{"T.CSV", `user_type,user_id,user_relation,relation,object_type,object_id,condition_name,condition_context
user,anne,,viewer,doc,1,,
group,eng,member,viewer,doc,2,,
user,bob,,viewer,doc,3,in_time,"{""grant_duration"":""1h""}"
`},
	} {
		got, err := ParseTuples(tc.name, []byte(tc.data))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, gb, wb)
		}
	}
	for _, tc := range []struct{ name, data, msg string }{
		{"t.txt", "x", "unknown tuple file format"},
		{"t.yaml", "[]", "no tuples"},
		{"t.yaml", "- user: anne\n  relation: viewer\n  object: doc:1\n", "tuple 1: user \"anne\""},
		{"t.json", `[{"user":"user:anne","object":"doc:1"}]`, "required"},
		{"t.csv", "user_type,user_id,relation,object_type\nuser,anne,viewer,doc\n", `missing "object_id"`},
		{"t.csv", "user_type,user_id,relation,object_type,object_id,color\n", `"color"`},
		{"t.csv", "user_type,user_id,relation,object_type,object_id,condition_name,condition_context\nuser,a,viewer,doc,1,c,{bad\n", "line 2"},
		{"t.jsonl", "{\"user\":\"user:a\"\n", "line 1"},
	} {
		if _, err := ParseTuples(tc.name, []byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseTuples(%s, %q) = %v; want %q", tc.name, tc.data, err, tc.msg)
		}
	}
}

func TestParseModel(t *testing.T) {
	js, err := ParseModel([]byte(docsModel), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Its JSON is a model too, and the same.
	js2, err := ParseModel(js, nil)
	if err != nil || !bytes.Equal(js, js2) {
		t.Fatalf("JSON round trip: %v\n%s\n%s", err, js, js2)
	}
	mod := []byte("schema: '1.2'\ncontents:\n  - core.fga\n  - sub/docs.fga\n")
	mods := map[string][]byte{
		"core.fga":     []byte("module core\n\ntype user\n"),
		"sub/docs.fga": []byte("module docs\n\ntype doc\n  relations\n    define viewer: [user]\n"),
	}
	if _, err := ParseModel(mod, mods); err != nil {
		t.Fatalf("modular: %v", err)
	}
	delete(mods, "sub/docs.fga")
	if _, err := ParseModel(mod, mods); err == nil || !strings.Contains(err.Error(), "sub/docs.fga") {
		t.Fatalf("modular, missing file: %v", err)
	}
	if _, err := ParseModel(mod, nil); err == nil || !strings.Contains(err.Error(), "fga.mod") {
		t.Fatalf("fga.mod without modules: %v", err)
	}
}

// TestFGAListObjectsPartialAnswer: OpenFGA answers ListObjects with what
// it found when it reaches its deadline, so the answer comes a little
// after the deadline. A per-call timeout as long as the deadline would
// give up first and fail the query; ListObjects waits longer (by default
// the deadline + 2 s), reports the answer truncated, and the Service
// falls back to the post-filter and remembers the set as too big to list.
func TestFGAListObjectsPartialAnswer(t *testing.T) {
	o := mustOpenFGA(t)
	ctx := context.Background()
	const n = 40
	mustDocs(t, o.URL, n)
	const deadline = 100 * time.Millisecond
	f, err := NewFGA(ctx, FGAConfig{URL: o.URL, StoreName: "docs", Timeout: deadline, ListObjectsDeadline: deadline})
	if err != nil {
		t.Fatal(err)
	}
	o.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/list-objects") {
			time.Sleep(deadline + 50*time.Millisecond) // slower than the deadline, well within deadline + 2 s
		}
		return false
	})
	defer o.setFault(nil)
	got, truncated, err := f.ListObjects(ctx, "user:anne", "can_view", "doc", 0, ConsistencyDefault)
	if err != nil || !truncated || len(got) != n/2 {
		t.Fatalf("ListObjects = %d objects, truncated %v, %v; want %d, truncated, no error", len(got), truncated, err, n/2)
	}

	s := mustService(t, f)
	var ds []Document
	for i := range n {
		ds = append(ds, Document{ID: fmt.Sprint("d", i), Object: fmt.Sprint("doc:", i), Text: fmt.Sprint("plan ", i)})
	}
	if err := s.Ingest(ctx, ds); err != nil {
		t.Fatal(err)
	}
	res, err := s.Query(ctx, Query{User: "user:anne", Text: "plan", K: 5, Strategy: StrategyPreFilter})
	if err != nil || len(res.Docs) != 5 || !res.Complete || res.Strategy != StrategyPostFilter {
		t.Fatalf("pre-filter query over a truncated list: %v complete=%v by %s, %v; want 5, complete, by the post-filter", resultIDs(res), res.Complete, res.Strategy, err)
	}
	var big bool
	s.estimates().mu.Lock()
	for _, el := range s.estimates().m {
		big = big || el.Value.(*estimateEntry).e.big
	}
	s.estimates().mu.Unlock()
	if !big {
		t.Error("the truncated listing was not remembered (estimate.big)")
	}
}
