package devidp

import (
	"bytes"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// browserCookie binds a login form to the browser that loaded it, so a
// form posted from elsewhere (login CSRF) is refused.
const browserCookie = "devidp_browser"

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · agentauth development identity provider</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}.dev{background:#fde68a;border:2px solid #b45309;padding:.5rem 1rem;font-weight:bold}.error{color:#b91c1c;font-weight:bold}label{display:block;margin:.6rem 0}input{display:block;width:100%;padding:.4rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}</style>
</head><body>
<p class="dev">DEVELOPMENT ONLY: agentauth's built-in test identity provider. Never use it for real accounts or in production.</p>
<h1>{{.Title}}</h1>
{{with .Message}}<p>{{.}}</p>{{end}}
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
{{with .Form}}<form method="post" action="{{.Action}}">
<input type="hidden" name="authRequestID" value="{{.ID}}">
<label>Username <input name="username" value="{{.Username}}" autocomplete="username" required autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>{{end}}
{{with .Users}}<h2>Development users</h2>
<table><tr><th>Username</th><th>Password</th><th>Name</th><th>Email</th></tr>
{{range .}}<tr><td>{{.Username}}</td><td>{{if .Password}}{{.Password}}{{else}}(configured){{end}}</td><td>{{.Name}}</td><td>{{.Email}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))

type pageData struct {
	Title   string
	Message string
	Error   string
	Form    *loginForm
	Users   []userRow
}

type loginForm struct {
	Action   string
	ID       string
	Username string
}

type userRow struct {
	Username, Password, Name, Email string // Password only for DefaultUsers
}

// userRows lists the users for a page; it shows a password only when it
// is one of DefaultUsers' published ones.
func (h *handler) userRows() []userRow {
	defaults := make(map[string]string)
	for _, u := range DefaultUsers() {
		defaults[u.Username] = u.Password
	}
	var rows []userRow
	for _, u := range h.st.userList() {
		row := userRow{Username: u.Username, Name: u.Name, Email: u.Email}
		if p, ok := defaults[u.Username]; ok && p == u.Password {
			row.Password = p
		}
		rows = append(rows, row)
	}
	return rows
}

func (h *handler) page(w http.ResponseWriter, r *http.Request, status int, d pageData) {
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		slog.ErrorContext(r.Context(), "devidp: render page", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = buf.WriteTo(w)
	}
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request, status int, id, clientID, username, errMsg string) {
	h.page(w, r, status, pageData{
		Title:   "Sign in",
		Message: "Sign in to continue to the application “" + clientID + "”.",
		Error:   errMsg,
		Form:    &loginForm{Action: h.issuer + loginPath, ID: id, Username: username},
		Users:   h.userRows(),
	})
}

// message is err's text for a person, without the package prefix.
func message(err error) string {
	return strings.TrimPrefix(err.Error(), "devidp: ")
}

// login serves the login form (GET) and checks it (POST). A successful
// login redirects to the library's callback, which issues the code.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		id := r.URL.Query().Get("authRequestID")
		clientID, hint, err := h.st.loginView(id, h.browser(w, r))
		if err != nil {
			h.page(w, r, http.StatusBadRequest, pageData{Title: "Cannot sign in", Error: message(err)})
			return
		}
		h.loginPage(w, r, http.StatusOK, id, clientID, hint, "")
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			h.page(w, r, http.StatusBadRequest, pageData{Title: "Cannot sign in", Error: "The form could not be read."})
			return
		}
		id, username := r.PostForm.Get("authRequestID"), r.PostForm.Get("username")
		var browser string
		if c, err := r.Cookie(browserCookie); err == nil {
			browser = c.Value
		}
		err := h.st.login(id, browser, username, r.PostForm.Get("password"))
		switch {
		case errors.Is(err, ErrLoginFailed):
			clientID, _, verr := h.st.loginView(id, browser)
			if verr == nil {
				h.loginPage(w, r, http.StatusUnauthorized, id, clientID, username, "Wrong username or password.")
				return
			}
			err = verr
		case err == nil:
			ctx := op.ContextWithIssuer(r.Context(), h.issuer)
			http.Redirect(w, r, op.AuthCallbackURL(h.op)(ctx, id), http.StatusSeeOther)
			return
		}
		status := http.StatusBadRequest
		if errors.Is(err, errLoginBrowser) {
			status = http.StatusForbidden
		}
		h.page(w, r, status, pageData{Title: "Cannot sign in", Error: message(err)})
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// browser returns the browser's login cookie value, setting a new one when
// it has none.
func (h *handler) browser(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(browserCookie); err == nil && len(c.Value) == len(newID()) {
		return c.Value
	}
	v := newID()
	http.SetCookie(w, &http.Cookie{
		Name:     browserCookie,
		Value:    v,
		Path:     h.prefix + loginPath,
		MaxAge:   int(authRequestTTL.Seconds()),
		HttpOnly: true,
		Secure:   h.secure,
		SameSite: http.SameSiteLaxMode,
	})
	return v
}
