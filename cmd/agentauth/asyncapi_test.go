package main

import (
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/agentauth/agentauth/schemas"
)

type asyncAPIDoc struct {
	AsyncAPI string `yaml:"asyncapi"`
	Channels map[string]struct {
		Address  string                       `yaml:"address"`
		Messages map[string]map[string]string `yaml:"messages"`
	} `yaml:"channels"`
	Operations map[string]struct {
		Action string `yaml:"action"`
	} `yaml:"operations"`
	Components struct {
		Schemas  map[string]map[string]string `yaml:"schemas"`
		Messages map[string]struct {
			Name    string            `yaml:"name"`
			Payload map[string]string `yaml:"payload"`
		} `yaml:"messages"`
	} `yaml:"components"`
}

// TestAsyncAPIInSync keeps schemas/asyncapi.yaml equal to what a running
// service registers: every endpoint has a channel whose messages are its
// request, reply and error types, and no channel describes an endpoint
// that does not exist. Every message payload is an embedded schema.
func TestAsyncAPIInSync(t *testing.T) {
	var doc asyncAPIDoc
	if err := yaml.Unmarshal(schemas.AsyncAPI, &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.AsyncAPI, "3.") {
		t.Fatalf("asyncapi version %q, want 3.x", doc.AsyncAPI)
	}
	msgName := func(ref string) string {
		name := strings.TrimPrefix(ref, "#/components/messages/")
		return doc.Components.Messages[name].Name
	}

	m := MustMain(t, testConfig(t))
	nc := MustConn(t, m)
	var info struct {
		Endpoints []struct {
			Subject  string
			Metadata map[string]string
		}
	}
	request(t, nc, "$SRV.INFO.agentauth", &info)

	documented := map[string]bool{}
	for name, ch := range doc.Channels {
		rest, ok := strings.CutPrefix(ch.Address, "agentauth.{agent}.")
		if !ok || strings.Count(rest, ".") != 1 {
			continue // streams, not request/reply endpoints
		}
		documented[ch.Address] = true
		if _, ok := doc.Operations[name]; !ok {
			t.Errorf("channel %s has no operation", name)
		}
	}
	registered := map[string]bool{}
	for _, e := range info.Endpoints {
		addr := strings.Replace(e.Subject, "agentauth.*.", "agentauth.{agent}.", 1)
		registered[addr] = true
		var ch *struct {
			Address  string                       `yaml:"address"`
			Messages map[string]map[string]string `yaml:"messages"`
		}
		for _, c := range doc.Channels {
			if c.Address == addr {
				c := c
				ch = &c
			}
		}
		if ch == nil {
			t.Errorf("endpoint %s is not in asyncapi.yaml", e.Subject)
			continue
		}
		names := map[string]bool{}
		for _, ref := range ch.Messages {
			names[msgName(ref["$ref"])] = true
		}
		for _, want := range []string{e.Metadata["request_type"], e.Metadata["reply_type"], schemas.ErrorType} {
			if !names[want] {
				t.Errorf("channel %s lacks message %s (has %v)", addr, want, keys(names))
			}
		}
	}
	for addr := range documented {
		if !registered[addr] {
			t.Errorf("asyncapi.yaml documents %s, which the service does not register", addr)
		}
	}
	v := schemas.MustValidator()
	for name, msg := range doc.Components.Messages {
		ref := msg.Payload["$ref"]
		if ref != "./json/"+msg.Name+".json" {
			t.Errorf("message %s: payload %q, want ./json/%s.json", name, ref, msg.Name)
		}
		if _, err := schemas.Schema(msg.Name); err != nil {
			t.Errorf("message %s: no embedded schema for %s", name, msg.Name)
		}
	}
	for _, typ := range v.Types() {
		found := false
		for _, s := range doc.Components.Schemas {
			found = found || s["$ref"] == "./json/"+typ+".json"
		}
		for _, msg := range doc.Components.Messages {
			found = found || msg.Name == typ
		}
		if !found {
			t.Errorf("schema %s is not described in asyncapi.yaml", typ)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
