package bus

import (
	"context"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
)

// parseHeaderBlock reads "name: value" lines into a header the way nats.go
// does: names keep their case, repeated names collect values, one leading
// run of spaces and tabs is dropped from each value.
func parseHeaderBlock(block string) nats.Header {
	h := nats.Header{}
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSuffix(line, "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			continue
		}
		value = strings.TrimLeft(value, " \t")
		h[name] = append(h[name], value)
	}
	return h
}

func FuzzDecode(f *testing.F) {
	for _, seed := range []struct{ header, payload string }{
		{"ce-specversion: 1.0\nce-id: 1\nce-source: /agents/a1\nce-type: dev.agentauth.sys.info.request\nContent-Type: application/json", `{}`},
		{"CE-SPECVERSION: 1.0\nCe-Id: a%20b\nce-source: /agents/a1\nce-type: t\nce-subject: %E2%82%AC\nce-time: 2018-04-05T18:31:00%2B01:00\nce-traceparent: " + testTraceparent, ""},
		{"ce-specversion: 1.0\nce-id: 1\nce-source: /s\nce-type: t\nce-ext: %zz", "x"},
		{"ce-specversion: 1.0\nce-id: 1\nce-id: 2\nce-source: /s\nce-type: t\nce-datacontenttype: text/plain\nContent-Type: text/plain", "hello"},
		{"ce-specversion: 0.3\nce-id: 1\nce-source: /s\nce-type: t", ""},
		{"Content-Type: application/cloudevents+json", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"k":[1,2]},"ext":7,"flag":true}`},
		{"Content-Type: application/cloudevents+json; charset=utf-8", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"TWE=","time":"2018-04-05T17:31:00Z","subject":null}`},
		{"Content-Type: application/cloudevents+json", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"Simple text"}`},
		{"Content-Type: application/cloudevents-batch+json", `[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`},
		{"", ""},
	} {
		f.Add([]byte(seed.header), []byte(seed.payload))
	}
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		e, err := Decode(parseHeaderBlock(string(header)), payload)
		// What DecodeReply reads without Decode, Decode must accept.
		if h := parseHeaderBlock(string(header)); len(h["ce-type"]) == 1 && plainReply(h, h["ce-type"][0]) && err != nil {
			t.Fatalf("DecodeReply's direct path takes a reply that Decode refuses: %v", err)
		}
		if err != nil {
			if e != nil {
				t.Fatalf("Decode returned an event and an error: %v", err)
			}
			return
		}
		if err := check(e); err != nil {
			t.Fatalf("Decode accepted an event that check refuses: %v", err)
		}
		hdr := parseHeaderBlock(string(header))
		if m := NewMessage(hdr, payload); m.ReadEncoding() == binding.EncodingBinary {
			// The fast decoder and the sdk's binding path must agree.
			viaSDK, err := binding.ToEvent(context.Background(), m)
			if err != nil {
				t.Fatalf("Decode accepted what binding.ToEvent(NewMessage) refused: %v", err)
			}
			if err := check(viaSDK); err != nil {
				t.Fatalf("Decode accepted what the sdk path fails to check: %v", err)
			}
			for _, c := range []struct{ name, got, want string }{
				{"id", viaSDK.ID(), e.ID()}, {"source", viaSDK.Source(), e.Source()}, {"type", viaSDK.Type(), e.Type()},
				{"subject", viaSDK.Subject(), e.Subject()}, {"datacontenttype", viaSDK.DataContentType(), e.DataContentType()},
				{"data", string(viaSDK.Data()), string(e.Data())},
			} {
				if c.got != c.want {
					t.Errorf("%s: sdk binding path %q, fast path %q", c.name, c.got, c.want)
				}
			}
		}
		h, data, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode of a decoded event: %v", err)
		}
		got, err := Decode(h, data)
		if err != nil {
			t.Fatalf("Decode(Encode(e)) with header %v: %v", sortedHeader(h), err)
		}
		for _, c := range []struct{ name, got, want string }{
			{"id", got.ID(), e.ID()},
			{"source", got.Source(), e.Source()},
			{"type", got.Type(), e.Type()},
			{"specversion", got.SpecVersion(), e.SpecVersion()},
		} {
			if c.got != c.want {
				t.Errorf("%s after re-encoding: got %q, want %q", c.name, c.got, c.want)
			}
		}
	})
}
