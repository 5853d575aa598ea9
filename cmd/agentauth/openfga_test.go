package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentauth/agentauth/retrieval"
)

const openFGATestModel = `model
  schema 1.1

type user

type group
  relations
    define member: [user]

type doc
  relations
    define viewer: [user, group#member]
    define can_view: viewer
`

// mustEmbeddedOpenFGA starts the embedded OpenFGA on dir and a client of
// it.
func mustEmbeddedOpenFGA(tb testing.TB, dir string) (string, func(), *retrieval.FGA) {
	tb.Helper()
	url, stop, err := startOpenFGA(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	token, err := readOpenFGAToken(dir)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := retrieval.NewFGA(context.Background(), retrieval.FGAConfig{URL: url, APIToken: token})
	if err != nil {
		tb.Fatal(err)
	}
	return url, stop, f
}

func TestOpenFGAEmbedded(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, stop, f := mustEmbeddedOpenFGA(t, dir)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("url %s: want a loopback port", url)
	}
	for _, p := range []string{"openfga/openfga.db", "openfga/token"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "openfga/token")); st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", st.Mode().Perm())
	}

	model, err := f.WriteModel(ctx, []byte(openFGATestModel), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteTuples(ctx, []retrieval.Tuple{
		{User: "user:anne", Relation: "member", Object: "group:eng"},
		{User: "group:eng#member", Relation: "viewer", Object: "doc:roadmap"},
		{User: "user:bob", Relation: "viewer", Object: "doc:notes"},
	}); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Check(ctx, "user:anne", "can_view", "doc:roadmap", retrieval.HigherConsistency); err != nil || !ok {
		t.Fatalf("check anne roadmap = %v, %v; want true", ok, err)
	}
	m, err := f.BatchCheck(ctx, "user:anne", "can_view", []string{"doc:roadmap", "doc:notes"}, retrieval.ConsistencyDefault)
	if err != nil || !m["doc:roadmap"] || m["doc:notes"] {
		t.Fatalf("batch-check = %v, %v", m, err)
	}
	objs, truncated, err := f.ListObjects(ctx, "user:bob", "can_view", "doc", 0, retrieval.ConsistencyDefault)
	if err != nil || truncated || !slices.Equal(objs, []string{"doc:notes"}) {
		t.Fatalf("list-objects = %v, %v, %v", objs, truncated, err)
	}
	// OpenFGA's error handler: a bad request is a 400, not an internal error.
	if _, err := f.Check(ctx, "user:anne", "nope", "doc:roadmap", retrieval.ConsistencyDefault); !errors.Is(err, retrieval.ErrFGAInvalid) {
		t.Fatalf("unknown relation: %v", err)
	}
	// The API needs the token; the health check does not.
	if _, err := retrieval.NewFGA(ctx, retrieval.FGAConfig{URL: url}); !errors.Is(err, retrieval.ErrFGAUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// Stopped: errors, never answers; the URL file is removed.
	if err := writeOpenFGAURL(dir, url); err != nil {
		t.Fatal(err)
	}
	if got, err := readOpenFGAURL(dir); err != nil || got != url {
		t.Fatalf("readOpenFGAURL = %q, %v", got, err)
	}
	stop()
	stop()
	if _, err := readOpenFGAURL(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("url file after stop: %v", err)
	}
	if m, err := f.BatchCheck(ctx, "user:anne", "can_view", []string{"doc:roadmap"}, retrieval.ConsistencyDefault); m != nil || !errors.Is(err, retrieval.ErrFGAUnavailable) {
		t.Fatalf("batch-check after stop = %v, %v", m, err)
	}

	// Restarted: the store, model and tuples are still there.
	_, _, g := mustEmbeddedOpenFGA(t, dir)
	if g.StoreID() != f.StoreID() || g.ModelID() != model {
		t.Fatalf("after restart: store %s model %s; want %s %s", g.StoreID(), g.ModelID(), f.StoreID(), model)
	}
	if ok, err := g.Check(ctx, "user:anne", "can_view", "doc:roadmap", retrieval.ConsistencyDefault); err != nil || !ok {
		t.Fatalf("check after restart = %v, %v; want true", ok, err)
	}
}

func runFGACmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errw bytes.Buffer
	cmd := newFGACmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errw)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	err := cmd.Execute()
	return out.String(), errw.String(), err
}

func TestFGACommands(t *testing.T) {
	dir := t.TempDir()
	files := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(files, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	modFile := write("model/fga.mod", "schema: '1.2'\ncontents:\n  - core.fga\n  - docs/docs.fga\n")
	write("model/core.fga", "module core\n\ntype user\n\ntype group\n  relations\n    define member: [user]\n")
	write("model/docs/docs.fga", "module docs\n\ntype doc\n  relations\n    define viewer: [user, group#member]\n    define can_view: viewer\n")
	csvFile := write("tuples.csv", "user_type,user_id,user_relation,relation,object_type,object_id\nuser,anne,,member,group,eng\ngroup,eng,member,viewer,doc,roadmap\nuser,bob,,viewer,doc,notes\n")
	yamlFile := write("more.yaml", "- user: user:bob\n  relation: viewer\n  object: doc:roadmap\n")

	if _, _, err := runFGACmd(t, "model", "write", modFile, "--data-dir", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "agentauth serve") {
		t.Fatalf("no data dir: %v", err)
	}

	// No service running: the commands open the data dir's OpenFGA.
	out, errOut, err := runFGACmd(t, "model", "write", modFile, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "model ") || !strings.Contains(errOut, "not running") {
		t.Fatalf("model write: %q %q %v", out, errOut, err)
	}
	if out, _, err = runFGACmd(t, "tuples", "write", csvFile, "--data-dir", dir); err != nil || !strings.Contains(out, "3 tuples written") {
		t.Fatalf("tuples write: %q %v", out, err)
	}
	// Written again: duplicates are skipped.
	if out, _, err = runFGACmd(t, "tuples", "write", csvFile, "--data-dir", dir); err != nil {
		t.Fatalf("tuples write again: %q %v", out, err)
	}

	// With the service running, they use its URL.
	url, stop, _ := mustEmbeddedOpenFGA(t, dir)
	if err := writeOpenFGAURL(dir, url); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "user:anne", "can_view", "doc:roadmap"}, "allowed: true\n"},
		{[]string{"check", "user:anne", "can_view", "doc:notes", "--consistency", "higher-consistency"}, "allowed: false\n"},
		{[]string{"list-objects", "user:anne", "can_view", "doc"}, "doc:roadmap\n"},
		{[]string{"tuples", "write", yamlFile}, "1 tuples written"},
		{[]string{"list-objects", "user:bob", "can_view", "doc"}, "doc:notes\ndoc:roadmap\n"},
		{[]string{"tuples", "delete", yamlFile}, "1 tuples deleted"},
		{[]string{"list-objects", "user:bob", "can_view", "doc"}, "doc:notes\n"},
	} {
		out, errOut, err := runFGACmd(t, append(tc.args, "--data-dir", dir)...)
		if err != nil || !strings.Contains(out, tc.want) || strings.Contains(errOut, "not running") {
			t.Errorf("fga %v = %q, %q, %v; want %q", tc.args, out, errOut, err, tc.want)
		}
	}
	if _, _, err := runFGACmd(t, "check", "user:anne", "can_view", "doc:x", "--data-dir", dir, "--consistency", "eventual"); err == nil {
		t.Error("bad --consistency accepted")
	}
	if _, _, err := runFGACmd(t, "check", "user:anne", "can_view", "doc:x", "--openfga-url", url); !errors.Is(err, retrieval.ErrFGAUnauthorized) {
		t.Errorf("--openfga-url without the token: %v", err)
	}
	token, _ := readOpenFGAToken(dir)
	if out, _, err := runFGACmd(t, "check", "user:bob", "can_view", "doc:notes", "--openfga-url", url, "--api-token", token); err != nil || out != "allowed: true\n" {
		t.Errorf("--openfga-url --api-token: %q %v", out, err)
	}
	stop()
}
