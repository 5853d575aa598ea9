package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/agentauth/agentauth/approval"
	"github.com/agentauth/agentauth/identity"
	"github.com/agentauth/agentauth/schemas"
)

// Notifications delivers a person's approval notifications
// (bus.Notifications): Subscribe calls fn with the CloudEvent type
// (schemas.TypeApprovalRequested or TypeApprovalResolved) and data of each
// notification stored for userKey after it returns, until ctx ends.
type Notifications interface {
	Subscribe(ctx context.Context, userKey string, fn func(typ string, n schemas.ApprovalNotification)) error
}

// Approvals is what the inbox needs from *approval.Service.
type Approvals interface {
	Pending(ctx context.Context, user approval.UserRef) ([]approval.Request, error)
	Decide(ctx context.Context, d approval.Decision) (approval.Request, error)
}

var _ Approvals = (*approval.Service)(nil)

// Inbox is the web approval app on agentauth's HTTP edge: the logged-in
// person's pending approval requests, live (server-sent events from the
// notification stream), each with its binding message and authorization
// details, to approve or deny. Every route needs the agentauth login
// session; decisions carry a per-session CSRF token and are made as the
// session's user, never as anyone a form names.
type Inbox struct {
	Login         *Login
	Service       Approvals // *approval.Service
	Notifications Notifications
	Log           *slog.Logger // default slog.Default()

	// Heartbeat is the interval of the comment lines that keep an event
	// stream open through proxies; default 15s.
	Heartbeat time.Duration

	// CSRFKey keys the per-session form tokens. Instances that share
	// sessions share it, so a page served by one is accepted by another
	// (and after a restart); nil: a random key of this process.
	CSRFKey []byte

	once    sync.Once
	key     []byte        // CSRF MAC key
	stop    chan struct{} // closed by Shutdown
	shut    sync.Once
	mu      sync.Mutex
	servers map[*http.Server]chan struct{} // closed when that server shuts down
}

// DecidedByWeb is the Decision.By of decisions made in the web inbox.
const DecidedByWeb = "web"

// Routes are the inbox routes for the HTTP edge.
func (i *Inbox) Routes() map[string]http.HandlerFunc {
	i.init()
	return map[string]http.HandlerFunc{
		"GET /approvals":               i.page,
		"GET /approvals/events":        i.events,
		"POST /approvals/{id}/approve": i.decide(true),
		"POST /approvals/{id}/deny":    i.decide(false),
	}
}

// Shutdown ends the open event streams for good. Streams also end when
// the http.Server serving them shuts down (the inbox registers with
// RegisterOnShutdown), so that open inbox pages never keep
// http.Server.Shutdown waiting. Browsers reconnect to another instance or
// when the server is back.
func (i *Inbox) Shutdown() {
	i.init()
	i.shut.Do(func() { close(i.stop) })
}

func (i *Inbox) init() {
	i.once.Do(func() {
		i.key = i.CSRFKey
		if len(i.key) == 0 {
			i.key = make([]byte, 32)
			_, _ = rand.Read(i.key)
		}
		i.stop = make(chan struct{})
	})
}

// serverDown returns a channel closed when the server serving r shuts
// down, or nil when r carries no *http.Server.
func (i *Inbox) serverDown(r *http.Request) <-chan struct{} {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if ch, ok := i.servers[srv]; ok {
		return ch
	}
	if i.servers == nil {
		i.servers = map[*http.Server]chan struct{}{}
	}
	ch := make(chan struct{})
	i.servers[srv] = ch
	srv.RegisterOnShutdown(func() { close(ch) })
	return ch
}

func (i *Inbox) log() *slog.Logger {
	if i.Log != nil {
		return i.Log
	}
	return slog.Default()
}

// session returns the logged-in person and their session id, or sends
// the browser to log in and come back to the inbox.
func (i *Inbox) session(w http.ResponseWriter, r *http.Request) (identity.User, string, bool) {
	s, ok := i.Login.SessionOf(r)
	sid, hasSID := i.Login.sessionID(r)
	if !ok || !hasSID {
		next := "/approvals"
		if r.Method == http.MethodGet {
			next = r.URL.RequestURI()
		}
		http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
		return identity.User{}, "", false
	}
	return s.User, sid, true
}

func inboxUser(u identity.User) approval.UserRef {
	return approval.UserRef{Issuer: u.Issuer, Subject: u.Subject}
}

// csrf is the session's form token (formToken).
func (i *Inbox) csrf(sid string) string {
	i.init()
	return formToken(i.key, sid)
}

func (i *Inbox) page(w http.ResponseWriter, r *http.Request) {
	u, sid, ok := i.session(w, r)
	if !ok {
		return
	}
	d := inboxData{User: u, CSRF: i.csrf(sid)}
	switch r.URL.Query().Get("done") {
	case schemas.ApprovalApproved:
		d.Notice = "Approved. The agent has been told and receives a token for exactly this action."
	case schemas.ApprovalDenied:
		d.Notice = "Denied. The agent has been told."
	}
	i.render(w, r, http.StatusOK, d)
}

// render shows the inbox with the person's pending requests.
func (i *Inbox) render(w http.ResponseWriter, r *http.Request, status int, d inboxData) {
	pending, err := i.Service.Pending(r.Context(), inboxUser(d.User))
	if err != nil {
		i.log().Error("approvals inbox: pending requests", "error", err)
		if d.Error == "" {
			d.Error = "agentauth could not load your pending requests; reload the page to try again. The operator can find the cause in the service log."
		}
		if status == http.StatusOK {
			status = http.StatusServiceUnavailable
		}
	}
	// Newest first, as the page adds the live ones.
	now := time.Now()
	for k := len(pending) - 1; k >= 0; k-- {
		c := newCard(notificationOf(pending[k]), now)
		c.CSRF = d.CSRF
		d.Cards = append(d.Cards, c)
	}
	var buf bytes.Buffer
	var nonce [18]byte
	_, _ = rand.Read(nonce[:])
	d.Nonce = base64.RawURLEncoding.EncodeToString(nonce[:])
	if err := inboxPage.Execute(&buf, d); err != nil {
		i.log().Error("approvals inbox: render", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	htmlHeaders(w)
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+d.Nonce+"'; style-src 'nonce-"+d.Nonce+"'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

func (i *Inbox) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, sid, ok := i.session(w, r)
		if !ok {
			return
		}
		d := inboxData{User: u, CSRF: i.csrf(sid)}
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if err := r.ParseForm(); err != nil {
			d.Error = "The form could not be read; reload the page and try again."
			i.render(w, r, http.StatusBadRequest, d)
			return
		}
		if got := r.PostFormValue("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(d.CSRF)) != 1 {
			d.Error = "This form did not come from your inbox in this browser session (missing or stale form token); nothing was decided. Reload the page and try again."
			i.render(w, r, http.StatusForbidden, d)
			return
		}
		_, err := i.Service.Decide(r.Context(), approval.Decision{
			ID: r.PathValue("id"), User: inboxUser(u), Approve: approve, Comment: r.PostFormValue("comment"), By: DecidedByWeb,
		})
		if err != nil {
			var ae *approval.Error
			if !errors.As(err, &ae) {
				i.log().Error("approvals inbox: decide", "error", err)
				d.Error = "agentauth could not record your decision; nothing was decided. Try again; the operator can find the cause in the service log."
				i.render(w, r, http.StatusInternalServerError, d)
				return
			}
			d.Error = ae.PublicMessage()
			i.render(w, r, decideStatus(ae.ErrorCode()), d)
			return
		}
		done := schemas.ApprovalDenied
		if approve {
			done = schemas.ApprovalApproved
		}
		http.Redirect(w, r, "/approvals?done="+done, http.StatusSeeOther)
	}
}

// decideStatus is the HTTP status of a refused decision.
func decideStatus(c schemas.ErrorCode) int {
	switch c {
	case schemas.CodeAlreadyDecided, schemas.CodeConflict:
		return http.StatusConflict
	case schemas.CodeForbidden, schemas.CodeAccessDenied:
		return http.StatusForbidden
	case schemas.CodeNotFound, schemas.CodeInvalidGrant:
		return http.StatusNotFound
	case schemas.CodeUnavailable, schemas.CodeTimeout:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest // expired_token, schema_violation, …
}

// events is the live feed of the inbox (server-sent events): first
// "pending" with every pending request (also after a reconnect, so the
// page catches up on what it missed), then "requested" and "resolved" as
// the notifications arrive, each with a card as JSON (a
// schemas.ApprovalNotification plus the details as displayed); a comment
// line every Heartbeat. It ends when the browser goes away, when the
// server shuts down, on Shutdown, and when the session ends (logout or
// expiry): the session is checked again before each event and each
// heartbeat.
func (i *Inbox) events(w http.ResponseWriter, r *http.Request) {
	s, ok := i.Login.SessionOf(r)
	sid, hasSID := i.Login.sessionID(r)
	if !ok || !hasSID {
		http.Error(w, "not logged in to agentauth: log in at /login", http.StatusUnauthorized)
		return
	}
	i.init()
	user := inboxUser(s.User)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	down := i.serverDown(r)
	go func() {
		select {
		case <-i.stop:
			cancel()
		case <-down:
			cancel()
		case <-ctx.Done():
		}
	}()

	type note struct {
		name string
		n    schemas.ApprovalNotification
	}
	// Subscribe first, then read what is pending: whatever happens in
	// between arrives (again) as a notification after the snapshot.
	notes := make(chan note, 64)
	err := i.Notifications.Subscribe(ctx, user.Key(), func(typ string, n schemas.ApprovalNotification) {
		name := ""
		switch typ {
		case schemas.TypeApprovalRequested:
			name = "requested"
		case schemas.TypeApprovalResolved:
			name = "resolved"
		}
		if name == "" || n.Issuer != user.Issuer || n.Subject != user.Subject {
			return
		}
		select {
		case notes <- note{name, n}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		i.log().Error("approvals inbox: subscribe to notifications", "error", err)
		http.Error(w, "live updates are unavailable; reload the page to try again", http.StatusServiceUnavailable)
		return
	}
	pending, err := i.Service.Pending(ctx, user)
	if err != nil {
		i.log().Error("approvals inbox: pending requests", "error", err)
		http.Error(w, "your pending requests could not be loaded; reload the page to try again", http.StatusServiceUnavailable)
		return
	}
	now := time.Now()
	snapshot := make([]card, 0, len(pending))
	for _, p := range pending {
		snapshot = append(snapshot, newCard(notificationOf(p), now))
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(name string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if _, err := fmt.Fprint(w, "retry: 3000\n\n"); err != nil {
		return
	}
	if err := send("pending", snapshot); err != nil {
		if errors.Is(err, http.ErrNotSupported) {
			i.log().Error("approvals inbox: the response writer cannot flush; live updates do not work", "error", err)
		}
		return
	}
	beat := i.Heartbeat
	if beat <= 0 {
		beat = 15 * time.Second
	}
	tick := time.NewTicker(beat)
	defer tick.Stop()
	// live: the session this stream was opened with still exists, is
	// still the same person's and has not expired.
	live := func() bool {
		cur, ok := i.Login.getSession(ctx, sid)
		return ok && cur.User.Issuer == s.User.Issuer && cur.User.Subject == s.User.Subject
	}
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notes:
			if !live() {
				return
			}
			if err := send(n.name, newCard(n.n, time.Now())); err != nil {
				return
			}
		case <-tick.C:
			if !live() {
				return
			}
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// notificationOf is a stored request as the person's approval apps see it.
func notificationOf(r approval.Request) schemas.ApprovalNotification {
	return schemas.ApprovalNotification{
		AuthReqID: r.ID, Agent: r.Agent, Subject: r.User.Subject, Issuer: r.User.Issuer,
		BindingMessage: r.BindingMessage, Audience: r.Audience, Scopes: r.Scopes,
		AuthorizationDetails: r.AuthorizationDetails, ExpiresAt: r.Expires, Status: r.State,
	}
}

// card is one request as the inbox shows it. Its JSON is the
// notification's plus the details as displayed; the text fields are made
// visible (see visible), so what the page shows is what the person
// approves.
type card struct {
	schemas.ApprovalNotification
	Details []detailView `json:"details"`

	Expires  string `json:"-"` // absolute, UTC
	Relative string `json:"-"` // "in 4 min 59 s"
	CSRF     string `json:"-"`
}

// detailView is one authorization_details object: its type as a heading
// and its other members in order, strings as text, other values as
// compact JSON.
type detailView struct {
	Type   string      `json:"type"`
	Fields []fieldView `json:"fields"`
}

type fieldView struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func newCard(n schemas.ApprovalNotification, now time.Time) card {
	c := card{ApprovalNotification: n}
	c.Agent, c.BindingMessage, c.Audience = visible(n.Agent), visible(n.BindingMessage), visible(n.Audience)
	c.Scopes = make([]string, len(n.Scopes))
	for k, s := range n.Scopes {
		c.Scopes[k] = visible(s)
	}
	c.Details = make([]detailView, 0, len(n.AuthorizationDetails))
	for _, d := range n.AuthorizationDetails {
		c.Details = append(c.Details, viewDetail(d))
	}
	c.Expires = n.ExpiresAt.UTC().Format("2006-01-02 15:04:05 UTC")
	c.Relative = relative(n.ExpiresAt.Sub(now))
	return c
}

func viewDetail(raw json.RawMessage) detailView {
	v := detailView{Type: "Details"}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return detailView{Type: "Details", Fields: []fieldView{{Key: "value", Value: valueText(raw)}}}
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		k, _ := t.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			break
		}
		if s, ok := jsonString(val); ok && k == "type" {
			v.Type = visible(s)
			continue
		}
		v.Fields = append(v.Fields, fieldView{Key: visible(k), Value: valueText(val)})
	}
	return v
}

func jsonString(b json.RawMessage) (string, bool) {
	var s string
	if len(b) == 0 || b[0] != '"' || json.Unmarshal(b, &s) != nil {
		return "", false
	}
	return s, true
}

// valueText is a JSON value for a person: a string as its text, anything
// else as compact JSON.
func valueText(b json.RawMessage) string {
	if s, ok := jsonString(b); ok {
		return visible(s)
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return visible(string(b))
	}
	return visible(buf.String())
}

// visible shows every hidden character (controls, bidi overrides,
// zero-width characters, variation selectors, fillers) as [U+XXXX], so
// that no text can disguise itself or what follows it. html/template
// escapes the rest.
func visible(s string) string { return approval.Reveal(s, hidden) }

// hidden: r would not show as itself — the replacement character, a
// control, a line or paragraph separator, or an approval.Invisible
// (default-ignorable) character such as a variation selector or a Hangul
// filler.
func hidden(r rune) bool {
	return r == unicode.ReplacementChar || unicode.IsControl(r) || approval.Invisible(r) ||
		unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)
}

// relative is d as "in 4 min 59 s", or "now" once past.
func relative(d time.Duration) string {
	if d <= 0 {
		return "now"
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("in %d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("in %d h %d min", int(d.Hours()), int(d.Minutes())%60)
}

type inboxData struct {
	User   identity.User
	CSRF   string
	Nonce  string
	Notice string
	Error  string
	Cards  []card
}

var inboxPage = template.Must(template.New("inbox").Funcs(template.FuncMap{
	"join":    func(s []string) string { return strings.Join(s, " ") },
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentauth — Approval requests</title>
<style nonce="{{.Nonce}}">
body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
.error{color:#b00;font-weight:600}.notice{color:#075e22}
#live{color:#666;font-size:.9em}
.card{border:1px solid #ccc;border-radius:.5rem;padding:1rem;margin:1rem 0}
.card.decided{background:#f4f4f4;color:#555}
.binding{font-size:1.35em;font-weight:700;margin:0 0 .5rem;overflow-wrap:anywhere}
.meta{margin:.2rem 0;overflow-wrap:anywhere}
.detail{border-left:3px solid #999;padding-left:.75rem;margin:.75rem 0}
.detail h3{margin:0 0 .3rem;font-size:1em}
.detail dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .75rem;margin:0}
.detail dt{font-weight:600}.detail dd{margin:0;overflow-wrap:anywhere}
.status{font-weight:600}
.actions{display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
.actions form{display:flex;gap:.4rem;margin:0}
button{font:inherit;padding:.35rem 1rem}
</style></head>
<body data-csrf="{{.CSRF}}">
<h1>agentauth</h1>
<h2>Approval requests</h2>
<p>Signed in as {{if .User.Name}}{{.User.Name}}{{else}}{{.User.Subject}}{{end}}. <span id="live">Live updates are off (they need JavaScript).</span></p>
{{if .Error}}<p class="error" id="error" role="alert">{{.Error}}</p>{{end}}
{{if .Notice}}<p class="notice" id="notice" role="status">{{.Notice}}</p>{{end}}
<p id="empty"{{if .Cards}} hidden{{end}}>Nothing is waiting for your approval.</p>
<div id="requests">
{{range .Cards}}<article class="card pending" id="req-{{.AuthReqID}}" data-expires="{{rfc3339 .ExpiresAt}}">
<p class="binding" id="binding-{{.AuthReqID}}">{{.BindingMessage}}</p>
<p class="meta">Agent <strong class="agent">{{.Agent}}</strong> asks for access to <code class="audience">{{.Audience}}</code>{{if .Scopes}} with scopes <code class="scopes">{{join .Scopes}}</code>{{end}}.</p>
<p class="meta">Expires <span class="relative">{{.Relative}}</span> (<time datetime="{{rfc3339 .ExpiresAt}}">{{.Expires}}</time>).</p>
{{range .Details}}<section class="detail"><h3>{{.Type}}</h3><dl>{{range .Fields}}<dt>{{.Key}}</dt><dd>{{.Value}}</dd>{{end}}</dl></section>
{{end}}<p class="status" id="status-{{.AuthReqID}}">Waiting for your decision</p>
<div class="actions">
<form method="post" action="/approvals/{{.AuthReqID}}/approve"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit" class="approve" id="approve-{{.AuthReqID}}">Approve</button></form>
<form method="post" action="/approvals/{{.AuthReqID}}/deny"><input type="hidden" name="csrf" value="{{.CSRF}}"><input name="comment" id="comment-{{.AuthReqID}}" maxlength="256" placeholder="Reason (optional)" aria-label="Reason for denying (optional)"><button type="submit" class="deny" id="deny-{{.AuthReqID}}">Deny</button></form>
</div>
</article>
{{end}}</div>
<p><a href="/connections">Connected accounts</a> · <a href="/whoami">Who am I</a></p>
<script nonce="{{.Nonce}}">
"use strict";
(function () {
  var csrf = document.body.dataset.csrf;
  var list = document.getElementById("requests");
  var empty = document.getElementById("empty");
  var live = document.getElementById("live");
  var statusText = {pending: "Waiting for your decision", approved: "Approved", denied: "Denied", expired: "Expired"};

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function abs(t) { var d = new Date(t); return isNaN(d) ? t : d.toLocaleString(); }
  function relative(ms) {
    if (ms <= 0) { return "now"; }
    var s = Math.round(ms / 1000);
    if (s < 60) { return "in " + s + " s"; }
    if (s < 3600) { return "in " + Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return "in " + Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  }
  function form(n, verb, label) {
    var f = el("form", {method: "post", action: "/approvals/" + encodeURIComponent(n.auth_req_id) + "/" + verb});
    f.appendChild(el("input", {type: "hidden", name: "csrf", value: csrf}));
    if (verb === "deny") {
      f.appendChild(el("input", {name: "comment", id: "comment-" + n.auth_req_id, maxlength: "256", placeholder: "Reason (optional)", "aria-label": "Reason for denying (optional)"}));
    }
    f.appendChild(el("button", {type: "submit", "class": verb, id: verb + "-" + n.auth_req_id}, label));
    return f;
  }
  function card(n) {
    var id = n.auth_req_id;
    var a = el("article", {"class": "card pending", id: "req-" + id, "data-expires": n.expires_at});
    a.appendChild(el("p", {"class": "binding", id: "binding-" + id}, n.binding_message));
    var m = el("p", {"class": "meta"}, "Agent ");
    m.appendChild(el("strong", {"class": "agent"}, n.agent));
    m.appendChild(document.createTextNode(" asks for access to "));
    m.appendChild(el("code", {"class": "audience"}, n.audience));
    if (n.scopes && n.scopes.length) {
      m.appendChild(document.createTextNode(" with scopes "));
      m.appendChild(el("code", {"class": "scopes"}, n.scopes.join(" ")));
    }
    m.appendChild(document.createTextNode("."));
    a.appendChild(m);
    var x = el("p", {"class": "meta"}, "Expires ");
    x.appendChild(el("span", {"class": "relative"}, relative(new Date(n.expires_at) - Date.now())));
    x.appendChild(document.createTextNode(" ("));
    x.appendChild(el("time", {datetime: n.expires_at}, abs(n.expires_at)));
    x.appendChild(document.createTextNode(")."));
    a.appendChild(x);
    (n.details || []).forEach(function (d) {
      var s = el("section", {"class": "detail"});
      s.appendChild(el("h3", {}, d.type));
      var dl = el("dl");
      (d.fields || []).forEach(function (f) {
        dl.appendChild(el("dt", {}, f.key));
        dl.appendChild(el("dd", {}, f.value));
      });
      s.appendChild(dl);
      a.appendChild(s);
    });
    a.appendChild(el("p", {"class": "status", id: "status-" + id}, statusText.pending));
    var act = el("div", {"class": "actions"});
    act.appendChild(form(n, "approve", "Approve"));
    act.appendChild(form(n, "deny", "Deny"));
    a.appendChild(act);
    return a;
  }
  function add(n) {
    if (document.getElementById("req-" + n.auth_req_id)) { return; }
    list.insertBefore(card(n), list.firstChild);
    empty.hidden = true;
  }
  function settle(a, status) {
    a.classList.remove("pending");
    a.classList.add("decided", status);
    var s = a.querySelector(".status");
    s.textContent = statusText[status] || "No longer waiting for a decision";
    a.querySelectorAll("button, input:not([type=hidden])").forEach(function (b) { b.disabled = true; });
  }
  function tick() {
    list.querySelectorAll("article.card.pending").forEach(function (a) {
      var left = new Date(a.dataset.expires) - Date.now();
      a.querySelector(".relative").textContent = relative(left);
      if (left <= 0) { settle(a, "expired"); }
    });
  }
  list.querySelectorAll("time").forEach(function (t) { t.textContent = abs(t.getAttribute("datetime")); });
  tick();
  setInterval(tick, 1000);

  var es = new EventSource("/approvals/events");
  live.textContent = "Connecting for live updates…";
  es.onopen = function () { live.textContent = "Live: new requests appear here as they arrive."; };
  es.onerror = function () { live.textContent = "Live updates interrupted; reconnecting…"; };
  es.addEventListener("pending", function (e) {
    var all = JSON.parse(e.data), ids = {};
    all.forEach(function (n) { ids["req-" + n.auth_req_id] = true; add(n); });
    list.querySelectorAll("article.card.pending").forEach(function (a) {
      if (!ids[a.id]) { settle(a, "resolved"); }
    });
  });
  es.addEventListener("requested", function (e) { add(JSON.parse(e.data)); });
  es.addEventListener("resolved", function (e) {
    var n = JSON.parse(e.data), a = document.getElementById("req-" + n.auth_req_id);
    if (a) { settle(a, n.status); }
  });
})();
</script>
</body></html>
`))
