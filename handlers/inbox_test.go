package handlers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

var (
	inboxAlice = identity.User{Issuer: "https://idp.example", Subject: "alice", Name: "Alice <Example>"}
	inboxBob   = identity.User{Issuer: "https://idp.example", Subject: "bob", Name: "Bob"}
)

// fakeApprovals stands in for *approval.Service: the browser test in
// cmd/agentauth runs the real one.
type fakeApprovals struct {
	mu      sync.Mutex
	pending []approval.Request
	asked   []approval.UserRef
	decided []approval.Decision
	err     error
}

func (f *fakeApprovals) Pending(_ context.Context, u approval.UserRef) ([]approval.Request, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, u)
	var out []approval.Request
	for _, r := range f.pending {
		if r.User == u {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeApprovals) Decide(_ context.Context, d approval.Decision) (approval.Request, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decided = append(f.decided, d)
	return approval.Request{ID: d.ID}, f.err
}

func (f *fakeApprovals) decisions() []approval.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]approval.Decision(nil), f.decided...)
}

// fakeNotifications hands the test the subscriber's callback and context.
type fakeNotifications struct {
	subs chan subscription
}

type subscription struct {
	ctx context.Context
	key string
	fn  func(string, schemas.ApprovalNotification)
}

func (f *fakeNotifications) Subscribe(ctx context.Context, key string, fn func(string, schemas.ApprovalNotification)) error {
	f.subs <- subscription{ctx, key, fn}
	return nil
}

// testInbox is an inbox with alice and bob logged in (session ids
// "sid-alice" and "sid-bob").
func testInbox(t *testing.T) (*Inbox, *fakeApprovals, *fakeNotifications) {
	t.Helper()
	exp := time.Now().Add(time.Hour)
	l := &Login{session: map[string]Session{"sid-alice": {User: inboxAlice, Expires: exp}, "sid-bob": {User: inboxBob, Expires: exp}}}
	a := &fakeApprovals{}
	n := &fakeNotifications{subs: make(chan subscription, 4)}
	return &Inbox{Login: l, Service: a, Notifications: n, Log: slog.New(slog.DiscardHandler)}, a, n
}

func as(r *http.Request, sid string) *http.Request {
	if sid != "" {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: sid})
	}
	return r
}

// serve runs a request through the inbox's routes as the HTTP edge does.
func serve(t *testing.T, i *Inbox, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range i.Routes() {
		mux.HandleFunc(p, h)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func pendingRequest(id string, u identity.User, msg string, details ...string) approval.Request {
	r := approval.Request{ID: id, Agent: "shop-bot", User: inboxUser(u), BindingMessage: msg, Audience: "https://shop.example",
		Scopes: []string{"purchase", "read"}, Created: time.Now(), Expires: time.Now().Add(5 * time.Minute), State: schemas.ApprovalPending}
	for _, d := range details {
		r.AuthorizationDetails = append(r.AuthorizationDetails, json.RawMessage(d))
	}
	return r
}

// TestInboxPage: the pending requests as cards with stable ids, the
// details readable and in order, everything escaped, hidden characters
// shown, a CSRF token per session and a nonce-based CSP.
func TestInboxPage(t *testing.T) {
	i, a, _ := testInbox(t)
	a.pending = []approval.Request{
		pendingRequest("r1", inboxAlice, "Buy 2 coffees <script>alert(1)</script>",
			`{"type":"purchase","item":"<img src=x onerror=alert(1)>","amount":7.5,"currency":"EUR","extra":{"a":[1,"</dd>"]},"ok":true}`,
			`{"type":"note","text":"pay `+"\u202e"+`RUE 05"}`),
		pendingRequest("r-bob", inboxBob, "Bob's request"),
	}
	w := serve(t, i, as(httptest.NewRequest("GET", "/approvals", nil), "sid-alice"))
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d:\n%s", w.Code, body)
	}
	if got := a.asked; len(got) != 1 || got[0] != inboxUser(inboxAlice) {
		t.Errorf("pending asked for %v, want alice only", got)
	}
	for _, want := range []string{
		`id="req-r1"`, `id="approve-r1"`, `id="deny-r1"`, `id="status-r1"`, `id="binding-r1"`,
		`Buy 2 coffees &lt;script&gt;alert(1)&lt;/script&gt;`,
		`Alice &lt;Example&gt;`,
		`<h3>purchase</h3><dl><dt>item</dt><dd>&lt;img src=x onerror=alert(1)&gt;</dd><dt>amount</dt><dd>7.5</dd><dt>currency</dt><dd>EUR</dd><dt>extra</dt><dd>{&#34;a&#34;:[1,&#34;&lt;/dd&gt;&#34;]}</dd><dt>ok</dt><dd>true</dd></dl>`,
		`<h3>note</h3><dl><dt>text</dt><dd>pay [U&#43;202E]RUE 05</dd></dl>`,
		`<code class="audience">https://shop.example</code>`, `<code class="scopes">purchase read</code>`,
		`action="/approvals/r1/approve"`, `action="/approvals/r1/deny"`,
		`<input type="hidden" name="csrf" value="` + i.csrf("sid-alice") + `">`,
		`data-csrf="` + i.csrf("sid-alice") + `"`,
		`new EventSource("/approvals/events")`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, bad := range []string{"<script>alert", "<img", "r-bob", "Bob's request", "\u202e", ".innerHTML"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if m := regexp.MustCompile(`Expires <span class="relative">in (4 min 5\d|5 min 0) s</span> \(<time datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>\)`).FindString(body); m == "" {
		t.Errorf("no relative and absolute expiry in:\n%s", body)
	}
	nonce := regexp.MustCompile(`<script nonce="([^"]+)">`).FindStringSubmatch(body)
	csp := w.Header().Get("Content-Security-Policy")
	if nonce == nil || !strings.Contains(csp, "script-src 'nonce-"+nonce[1]+"'") || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self'") {
		t.Errorf("CSP %q does not allow exactly the page's script (nonce %v)", csp, nonce)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	if i.csrf("sid-alice") == i.csrf("sid-bob") {
		t.Error("two sessions share a CSRF token")
	}

	// Nothing pending: the empty message, visible.
	a.pending = nil
	w = serve(t, i, as(httptest.NewRequest("GET", "/approvals?done=approved", nil), "sid-bob"))
	if body := w.Body.String(); !strings.Contains(body, `<p id="empty">Nothing is waiting`) || !strings.Contains(body, `id="notice"`) {
		t.Errorf("bob's page:\n%s", body)
	}
}

// TestInboxNeedsSession: no session, no page, no stream, no decision.
func TestInboxNeedsSession(t *testing.T) {
	i, a, _ := testInbox(t)
	for _, sid := range []string{"", "sid-unknown"} {
		w := serve(t, i, as(httptest.NewRequest("GET", "/approvals", nil), sid))
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login?next="+url.QueryEscape("/approvals") {
			t.Errorf("page without session %q: %d %s", sid, w.Code, w.Header().Get("Location"))
		}
		w = serve(t, i, as(httptest.NewRequest("GET", "/approvals/events", nil), sid))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("events without session %q: %d", sid, w.Code)
		}
		form := url.Values{"csrf": {i.csrf(sid)}}
		r := as(httptest.NewRequest("POST", "/approvals/r1/approve", strings.NewReader(form.Encode())), sid)
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w = serve(t, i, r)
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login?") {
			t.Errorf("decision without session %q: %d %s", sid, w.Code, w.Header().Get("Location"))
		}
	}
	if d := a.decisions(); len(d) != 0 {
		t.Errorf("decisions without a session: %+v", d)
	}
}

func TestInboxDecide(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		csrf      string // "" none; "alice" or "bob": that session's token
		comment   string
		err       error
		status    int
		location  string
		body      string
		decided   bool
		approve   bool
		wantError bool
	}{
		{name: "approve", path: "/approvals/r1/approve", csrf: "alice", status: 303, location: "/approvals?done=approved", decided: true, approve: true},
		{name: "deny with a comment", path: "/approvals/r1/deny", csrf: "alice", comment: "too expensive", status: 303, location: "/approvals?done=denied", decided: true},
		{name: "no CSRF token", path: "/approvals/r1/approve", status: 403, body: "form token"},
		{name: "another session's CSRF token", path: "/approvals/r1/approve", csrf: "bob", status: 403, body: "form token"},
		{name: "already decided", path: "/approvals/r1/deny", csrf: "alice", err: &approval.Error{Code: schemas.CodeAlreadyDecided, Msg: "the request was already approved"},
			status: 409, body: "the request was already approved", decided: true},
		{name: "another person's request", path: "/approvals/r1/approve", csrf: "alice", err: &approval.Error{Code: schemas.CodeForbidden, Msg: "only the person the request names can decide it"},
			status: 403, body: "only the person the request names", decided: true, approve: true},
		{name: "expired", path: "/approvals/r1/approve", csrf: "alice", err: &approval.Error{Code: schemas.CodeExpiredToken, Msg: "the approval request expired before the decision"},
			status: 400, body: "expired before the decision", decided: true, approve: true},
		{name: "unknown", path: "/approvals/nope/approve", csrf: "alice", err: &approval.Error{Code: schemas.CodeNotFound, Msg: "no approval request with that auth_req_id"},
			status: 404, body: "no approval request", decided: true, approve: true},
		{name: "store failure", path: "/approvals/r1/approve", csrf: "alice", err: errors.New("kv: secret internal detail"),
			status: 500, body: "could not record your decision", decided: true, approve: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i, a, _ := testInbox(t)
			a.err = tc.err
			form := url.Values{"comment": {tc.comment}}
			if tc.csrf != "" {
				form.Set("csrf", i.csrf("sid-"+tc.csrf))
			}
			r := as(httptest.NewRequest("POST", tc.path, strings.NewReader(form.Encode())), "sid-alice")
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			w := serve(t, i, r)
			if w.Code != tc.status {
				t.Fatalf("status: got %d, want %d\n%s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("Location"); got != tc.location {
				t.Errorf("location: got %q, want %q", got, tc.location)
			}
			if tc.body != "" && !strings.Contains(w.Body.String(), tc.body) {
				t.Errorf("page lacks %q:\n%s", tc.body, w.Body)
			}
			if strings.Contains(w.Body.String(), "secret internal detail") {
				t.Error("an internal error reached the page")
			}
			d := a.decisions()
			if !tc.decided {
				if len(d) != 0 {
					t.Errorf("decided: %+v", d)
				}
				return
			}
			want := approval.Decision{ID: strings.Split(tc.path, "/")[2], User: inboxUser(inboxAlice), Approve: tc.approve, Comment: tc.comment, By: "web"}
			if len(d) != 1 || d[0] != want {
				t.Errorf("decisions: got %+v, want %+v", d, want)
			}
		})
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

// readEvent reads the next event (or comment, as name ":") from r.
func readEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var e sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v (so far %+v)", err, e)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.name != "" || e.data != "" {
				return e
			}
		case strings.HasPrefix(line, ":"):
			return sseEvent{name: ":", data: line}
		case strings.HasPrefix(line, "event: "):
			e.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			e.data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func receiveSub(t *testing.T, n *fakeNotifications) subscription {
	t.Helper()
	select {
	case s := <-n.subs:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no subscription")
		return subscription{}
	}
}

// TestInboxEvents: through the HTTP edge (its instrumentation must let
// the stream flush), the snapshot, then the person's notifications as
// they arrive, heartbeats, and the subscription ends with the stream.
func TestInboxEvents(t *testing.T) {
	i, a, n := testInbox(t)
	i.Heartbeat = 50 * time.Millisecond
	a.pending = []approval.Request{pendingRequest("r0", inboxAlice, "Already waiting")}
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(NewHTTP(HTTPDeps{Ready: func(context.Context) error { return nil }, Gatherer: reg, Registry: reg,
		Info: func() any { return nil }, Routes: i.Routes()}))
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/approvals/events", nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp, err := http.DefaultClient.Do(as(req.WithContext(ctx), "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("got %d %q %q", resp.StatusCode, ct, resp.Header.Get("Cache-Control"))
	}
	sub := receiveSub(t, n)
	if want := inboxUser(inboxAlice).Key(); sub.key != want {
		t.Errorf("subscribed to %q, want alice's key %q", sub.key, want)
	}
	br := bufio.NewReader(resp.Body)
	next := func() sseEvent {
		for {
			e := readEvent(t, br)
			if e.name != ":" {
				return e
			}
		}
	}
	e := next()
	var snap []card
	if err := json.Unmarshal([]byte(e.data), &snap); e.name != "pending" || err != nil || len(snap) != 1 || snap[0].AuthReqID != "r0" {
		t.Fatalf("snapshot: %+v (%v)", e, err)
	}

	mine := schemas.ApprovalNotification{AuthReqID: "r1", Agent: "shop-bot", Issuer: inboxAlice.Issuer, Subject: inboxAlice.Subject,
		BindingMessage: "Buy 2 coffees", Audience: "https://shop.example", Scopes: []string{"purchase"},
		ExpiresAt: time.Now().Add(time.Minute).UTC(), Status: schemas.ApprovalPending,
		AuthorizationDetails: []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"coffee","amount":7.5,"currency":"EUR"}`)}}
	bobs := mine
	bobs.Subject, bobs.AuthReqID = "bob", "r-bob"
	sub.fn(schemas.TypeApprovalRequested, bobs)  // not alice's: dropped
	sub.fn("dev.agentauth.something.else", mine) // not a notification type: dropped
	sub.fn(schemas.TypeApprovalRequested, mine)  // forwarded
	resolved := mine
	resolved.Status = schemas.ApprovalApproved
	sub.fn(schemas.TypeApprovalResolved, resolved) // forwarded

	e = next()
	var got struct {
		schemas.ApprovalNotification
		Details []struct {
			Type   string
			Fields []struct{ Key, Value string }
		}
	}
	if err := json.Unmarshal([]byte(e.data), &got); e.name != "requested" || err != nil {
		t.Fatalf("requested: %+v (%v)", e, err)
	}
	if got.AuthReqID != "r1" || got.BindingMessage != "Buy 2 coffees" || string(got.AuthorizationDetails[0]) != string(mine.AuthorizationDetails[0]) ||
		len(got.Details) != 1 || got.Details[0].Type != "purchase" || len(got.Details[0].Fields) != 3 || got.Details[0].Fields[1].Value != "7.5" {
		t.Errorf("requested data: %s", e.data)
	}
	if e = next(); e.name != "resolved" || !strings.Contains(e.data, `"status":"approved"`) {
		t.Errorf("resolved: %+v", e)
	}
	if e = readEvent(t, br); e.name != ":" {
		t.Errorf("after the events, got %+v, want a heartbeat", e)
	}

	cancel()
	select {
	case <-sub.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription outlived the stream")
	}
}

// TestInboxShutdown: Shutdown ends open streams, so that the HTTP server
// can shut down.
func TestInboxShutdown(t *testing.T) {
	i, _, n := testInbox(t)
	srv := httptest.NewServer(http.HandlerFunc(i.events))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := http.DefaultClient.Do(as(req, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sub := receiveSub(t, n)
	i.Shutdown()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived Shutdown")
	}
	<-sub.ctx.Done()
}

// TestInboxServerShutdown: an open inbox does not keep the HTTP server's
// graceful shutdown waiting.
func TestInboxServerShutdown(t *testing.T) {
	i, _, n := testInbox(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(i.events)}
	go func() { _ = srv.Serve(ln) }()
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String(), nil)
	resp, err := http.DefaultClient.Do(as(req, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sub := receiveSub(t, n)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open inbox: %v", err)
	}
	<-sub.ctx.Done()
}

func TestInboxViewDetail(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want detailView
	}{
		{"typed, in order", `{"currency":"EUR","type":"purchase","amount":7.50}`,
			detailView{Type: "purchase", Fields: []fieldView{{"currency", "EUR"}, {"amount", "7.50"}}}},
		{"nested values as compact JSON", `{"type":"t","a":{ "b" : [1, null] },"c":null,"d":false}`,
			detailView{Type: "t", Fields: []fieldView{{"a", `{"b":[1,null]}`}, {"c", "null"}, {"d", "false"}}}},
		{"no type", `{"x":"y"}`, detailView{Type: "Details", Fields: []fieldView{{"x", "y"}}}},
		{"a type that is not a string", `{"type":5}`, detailView{Type: "Details", Fields: []fieldView{{"type", "5"}}}},
		{"not an object", `[1,2]`, detailView{Type: "Details", Fields: []fieldView{{"value", "[1,2]"}}}},
		{"hidden characters", `{"type":"a\u200bb","k\u0007":"x\u2066y\n"}`,
			detailView{Type: "a[U+200B]b", Fields: []fieldView{{"k[U+0007]", "x[U+2066]y[U+000A]"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := viewDetail(json.RawMessage(tc.in))
			if g, w := jsonOf(t, got), jsonOf(t, tc.want); g != w {
				t.Errorf("got %s, want %s", g, w)
			}
		})
	}
}

// TestInboxVisible: whatever would show as nothing (or change what
// follows) is shown as [U+XXXX]; ordinary text is left alone.
func TestInboxVisible(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "Buy 1 book for 12.50 EUR", "Buy 1 book for 12.50 EUR"},
		{"accents, CJK, hangul, emoji", "Café 購入 책 구매 💶", "Café 購入 책 구매 💶"},
		{"combining accent", "Cafe\u0301", "Cafe\u0301"},
		{"bidi override", "Pay \u202e01", "Pay [U+202E]01"},
		{"zero-width space", "Pay\u200b10", "Pay[U+200B]10"},
		{"newline", "a\nb", "a[U+000A]b"},
		{"hangul filler U+3164", "\u3164", "[U+3164]"},
		{"hangul fillers U+115F, U+1160, U+FFA0", "\u115fx\u1160y\uffa0", "[U+115F]x[U+1160]y[U+FFA0]"},
		{"combining grapheme joiner", "Pay\u034f10", "Pay[U+034F]10"},
		{"variation selector 16", "Pay\ufe0f10", "Pay[U+FE0F]10"},
		{"variation selector 17", "\U000E0100x", "[U+E0100]x"},
		{"mongolian free variation selector", "a\u180bb", "a[U+180B]b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := visible(tc.in); got != tc.want {
				t.Errorf("visible(%+q) = %+q, want %+q", tc.in, got, tc.want)
			}
		})
	}
}

func jsonOf(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzInboxDetail: any bytes render without panicking and without hidden
// characters.
func FuzzInboxDetail(f *testing.F) {
	for _, s := range []string{`{"type":"purchase","amount":7.5}`, `{"a":{"b":[1]}}`, `[`, `"x"`, "{\"t\u202e\":1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v := viewDetail(b)
		for _, s := range append([]string{v.Type}, fieldStrings(v)...) {
			if strings.ContainsFunc(s, hidden) {
				t.Fatalf("hidden character in %q", s)
			}
		}
	})
}

func fieldStrings(v detailView) []string {
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Key, f.Value)
	}
	return out
}
