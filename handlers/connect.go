package handlers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/agentauth/agentauth/vault"
)

// Connect is the browser side of the Token Vault: connect links, the
// provider's callback, and the person's list of connected accounts. Every
// page needs the agentauth login session: a link opens only for the person
// it was made for. The disconnect form carries the session's form token,
// the one the approvals inbox uses.
type Connect struct {
	Login   *Login
	Service *vault.Service
	// CSRFKey keys the per-session form tokens: the inbox's key (both
	// pages then carry the same token). Instances that share sessions
	// share it; nil: a random key of this process.
	CSRFKey []byte

	once sync.Once
	key  []byte
}

// Routes are the connect routes for the HTTP edge.
func (c *Connect) Routes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /connect/callback":               c.callback,
		"GET /connect/{id}":                   c.open,
		"GET /connections":                    c.list,
		"POST /connections/{name}/disconnect": c.disconnect,
	}
}

// session returns the logged-in person and their session id, or sends
// the browser to log in and come back.
func (c *Connect) session(w http.ResponseWriter, r *http.Request) (vault.UserRef, string, bool) {
	s, ok := c.Login.SessionOf(r)
	sid, hasSID := c.Login.sessionID(r)
	if !ok || !hasSID {
		next := r.URL.RequestURI()
		if r.Method != http.MethodGet {
			next = "/connections"
		}
		http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusFound)
		return vault.UserRef{}, "", false
	}
	return vault.UserRef{Issuer: s.User.Issuer, Subject: s.User.Subject}, sid, true
}

// csrf is the session's form token: the inbox's (Inbox.csrf), an HMAC
// of the session id.
func (c *Connect) csrf(sid string) string {
	c.once.Do(func() {
		c.key = c.CSRFKey
		if len(c.key) == 0 {
			c.key = make([]byte, 32)
			_, _ = rand.Read(c.key)
		}
	})
	return formToken(c.key, sid)
}

// formToken is the form token of session sid under key, the same on the
// approvals inbox and the connected accounts page: an HMAC of the
// session id.
func formToken(key []byte, sid string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("agentauth approvals csrf\x00"))
	m.Write([]byte(sid))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (c *Connect) open(w http.ResponseWriter, r *http.Request) {
	who, _, ok := c.session(w, r)
	if !ok {
		return
	}
	to, err := c.Service.BeginLink(r.PathValue("id"), who)
	if err != nil {
		c.fail(w, err)
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

func (c *Connect) callback(w http.ResponseWriter, r *http.Request) {
	s, ok := c.Login.SessionOf(r)
	if !ok {
		c.fail(w, &vault.LinkError{Status: http.StatusUnauthorized, Msg: "You are not logged in to agentauth in this browser, so this account cannot be attached to you. Log in and use a new connect link."})
		return
	}
	q := r.URL.Query()
	rec, err := c.Service.CompleteLink(r.Context(), vault.Callback{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error"), ErrorDescription: q.Get("error_description")},
		vault.UserRef{Issuer: s.User.Issuer, Subject: s.User.Subject})
	if err != nil {
		c.fail(w, err)
		return
	}
	render(w, http.StatusOK, connectData{Title: "Connected", Name: s.User.Name, Connected: &connected{
		Connection: rec.Connection, Title: c.Service.Connections[rec.Connection].Title, Scopes: strings.Join(rec.Scopes, " "), Agent: rec.LinkedBy}})
}

func (c *Connect) list(w http.ResponseWriter, r *http.Request) {
	who, sid, ok := c.session(w, r)
	if !ok {
		return
	}
	list, err := c.Service.List(who, nil)
	if err != nil {
		c.fail(w, err)
		return
	}
	d := connectData{Title: "Connected accounts", CSRF: c.csrf(sid)}
	for _, l := range list {
		d.List = append(d.List, connected{Connection: l.Connection, Title: l.Title, Scopes: strings.Join(l.Scopes, " "), Status: l.Status, Reason: l.Reason})
	}
	render(w, http.StatusOK, d)
}

func (c *Connect) disconnect(w http.ResponseWriter, r *http.Request) {
	who, sid, ok := c.session(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		render(w, http.StatusBadRequest, connectData{Title: "Not disconnected", Error: "The form could not be read; reload the connected accounts page and try again."})
		return
	}
	// SameSite=Lax already keeps the cookie off cross-site POSTs; the
	// token also stops same-site ones (another app on a sibling host).
	if got := r.PostFormValue("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(c.csrf(sid))) != 1 {
		render(w, http.StatusForbidden, connectData{Title: "Not disconnected", Error: "This form did not come from your connected accounts page in this browser session (missing or stale form token); nothing was disconnected. Reload the page and try again."})
		return
	}
	if _, err := c.Service.DisconnectByUser(r.Context(), who, r.PathValue("name")); err != nil {
		c.fail(w, err)
		return
	}
	http.Redirect(w, r, "/connections", http.StatusSeeOther)
}

// fail shows a refusal the person can act on; other errors are the
// service's and say only that.
func (c *Connect) fail(w http.ResponseWriter, err error) {
	var le *vault.LinkError
	var ve *vault.Error
	switch {
	case errors.As(err, &le):
		render(w, le.Status, connectData{Title: "Not connected", Error: le.Msg})
	case errors.As(err, &ve):
		render(w, http.StatusBadRequest, connectData{Title: "Not connected", Error: ve.Msg})
	default:
		c.Service.Log.Error("connect page failed", "error", err)
		render(w, http.StatusInternalServerError, connectData{Title: "Not connected", Error: "agentauth could not finish this step; the operator can find the cause in the service log."})
	}
}

type connected struct {
	Connection, Title, Scopes, Agent, Status, Reason string
}

type connectData struct {
	Title     string
	Name      string
	CSRF      string
	Error     string
	Connected *connected
	List      []connected
}

func render(w http.ResponseWriter, status int, d connectData) {
	htmlHeaders(w)
	w.WriteHeader(status)
	_ = connectPage.Execute(w, d)
}

var connectPage = template.Must(template.New("connect").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>agentauth — {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}.error{color:#b00}td,th{padding:.3rem .6rem;text-align:left}</style></head>
<body><h1>agentauth</h1>
{{if .Error}}<p class="error" id="error">{{.Error}}</p>
{{else if .Connected}}<p id="connected">Connected <strong>{{.Connected.Title}}</strong> ({{.Connected.Connection}}){{if .Name}} for {{.Name}}{{end}}.</p>
<p>Scopes: <code id="scopes">{{.Connected.Scopes}}</code></p>
{{if .Connected.Agent}}<p>The agent <strong>{{.Connected.Agent}}</strong> has been told and can continue. You can close this window.</p>{{end}}
{{else}}<h2>Connected accounts</h2>
{{if .List}}<table><tr><th>Connection</th><th>Scopes</th><th>Status</th><th></th></tr>
{{range .List}}<tr><td>{{.Title}} ({{.Connection}})</td><td><code>{{.Scopes}}</code></td><td>{{.Status}}{{if .Reason}}: {{.Reason}}{{end}}</td>
<td><form method="post" action="/connections/{{.Connection}}/disconnect"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button>Disconnect</button></form></td></tr>
{{end}}</table>{{else}}<p>No connected accounts.</p>{{end}}{{end}}
<p><a href="/connections">Connected accounts</a> · <a href="/whoami">Who am I</a></p>
</body></html>`))
