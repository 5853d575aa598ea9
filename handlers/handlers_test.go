package handlers

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

func TestSysInfo(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h := &SysInfo{Version: "v9", Instance: "i1", Now: func() time.Time { return now }, Capabilities: schemas.Capabilities{Sys: true}}
	reply, err := h.ServeEvent(context.Background(), &bus.Request{Agent: "a1", Op: schemas.OpSysInfo})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Type() != schemas.TypeSysInfoReply {
		t.Errorf("type %s", reply.Type())
	}
	if err := schemas.MustValidator().Validate(reply.Type(), reply.Data()); err != nil {
		t.Errorf("reply does not match its schema: %v", err)
	}
	var got schemas.SysInfo
	if err := bus.DecodeData(reply, &got); err != nil {
		t.Fatal(err)
	}
	if got.Agent != "a1" || got.Version != "v9" || got.Instance != "i1" || !got.ServerTime.Equal(now) || !got.Capabilities.Sys {
		t.Errorf("got %+v", got)
	}
}

func TestHTTP(t *testing.T) {
	var notReady error
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(NewHTTP(HTTPDeps{
		Ready:    func(context.Context) error { return notReady },
		Gatherer: reg, Registry: reg,
		Info: func() any { return map[string]string{"service": "agentauth"} },
	}))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path     string
		status   int
		contains string
	}{
		{"/healthz", 200, "ok"},
		{"/readyz", 200, "ready"},
		{"/", 200, "agentauth"},
		{"/nope", 404, ""},
	} {
		if st, body := get(tc.path); st != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %q, want %d containing %q", tc.path, st, body, tc.status, tc.contains)
		}
	}
	notReady = errors.New("not connected to NATS")
	if st, body := get("/readyz"); st != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to NATS") {
		t.Errorf("readyz when not ready: %d %s", st, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, `agentauth_http_requests_total{route="readyz",status="503"} 1`) {
		t.Errorf("metrics:\n%s", body)
	}
}
