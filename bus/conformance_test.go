package bus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// conformanceDir holds the JSON event-format cases of cloudevents/conformance.
var conformanceDir = filepath.Join("..", "..", "shared", "testdata", "cloudevents-conformance")

type conformanceCase struct {
	ID    string          `json:"id"`
	Event json.RawMessage `json:"event"`
}

// structuredOnly lists the invalid cases whose invalidity exists only in
// JSON typing or in the structured layout: turned into ce- headers they
// become valid events, or cannot be written at all.
var structuredOnly = map[string]string{
	"invalidNumericId":                "id 25 is a JSON number; a header value is a string, and ce-id: 25 is a valid id",
	"invalidObjectId":                 "id is a JSON object; a header value is a string",
	"invalidNonIntegerExtensionValue": "1.5 is a JSON number; ce- headers carry strings, and the extension name is covered by invalidPunctuatedExtension",
	"invalidBothDataAndDataBase64":    "binary mode has a single payload, so data and data_base64 cannot both be sent",
	"invalidCapitalizedExtension":     "binary-mode header names are case-insensitive: ce-MyExtension is the valid extension myextension",
}

// loadConformance reads one of the case files. A missing file fails the
// test: the suite must not pass by running nothing.
func loadConformance(t *testing.T, name, wantType string) []conformanceCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(conformanceDir, name))
	if err != nil {
		t.Fatalf("conformance cases: %v", err)
	}
	var f struct {
		TestType string            `json:"testType"`
		Tests    []conformanceCase `json:"tests"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if f.TestType != wantType {
		t.Fatalf("%s: got testType %q, want %q", name, f.TestType, wantType)
	}
	if len(f.Tests) == 0 {
		t.Fatalf("%s: no test cases", name)
	}
	return f.Tests
}

func eventFields(t *testing.T, c conformanceCase) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(c.Event))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("case %s: event: %v", c.ID, err)
	}
	return m
}

// toBinary writes a JSON event as a binary-mode message: ce-<attr> headers
// with percent-encoded values, datacontenttype as Content-Type and data as
// the payload. It fails for an event headers cannot express.
func toBinary(fields map[string]json.RawMessage) (nats.Header, []byte, error) {
	h := nats.Header{}
	var payload []byte
	_, hasData := fields["data"]
	_, hasB64 := fields["data_base64"]
	if hasData && hasB64 {
		return nil, nil, fmt.Errorf("data and data_base64 are both set")
	}
	for name, raw := range fields {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", name, err)
		}
		switch name {
		case "data":
			if s, ok := v.(string); ok {
				payload = []byte(s)
			} else {
				payload = raw
			}
			continue
		case "data_base64":
			s, ok := v.(string)
			if !ok {
				return nil, nil, fmt.Errorf("data_base64 is not a string")
			}
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, nil, fmt.Errorf("data_base64: %v", err)
			}
			payload = b
			continue
		}
		var s string
		switch v := v.(type) {
		case nil:
			continue // null is absent
		case string:
			s = v
		case json.Number:
			s = v.String()
		case bool:
			s = fmt.Sprint(v)
		default:
			return nil, nil, fmt.Errorf("%s is a JSON %T, which a header cannot carry", name, v)
		}
		if name == "datacontenttype" {
			h[HeaderContentType] = []string{s}
			continue
		}
		h[headerPrefix+name] = []string{percentEncode(s)}
	}
	return h, payload, nil
}

// wantAttrs is what attrsOf must report for a valid JSON event.
func wantAttrs(t *testing.T, id string, fields map[string]json.RawMessage) map[string]string {
	t.Helper()
	want := map[string]string{}
	for name, raw := range fields {
		if name == "data" || name == "data_base64" || string(raw) == "null" {
			continue
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("case %s: %s: %v", id, name, err)
		}
		s := fmt.Sprint(v)
		if name == "time" {
			tm, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("case %s: time: %v", id, err)
			}
			s = tm.UTC().Format(time.RFC3339Nano)
		}
		want[name] = s
	}
	return want
}

// wantData is the data a valid JSON event carries, as bytes.
func wantData(t *testing.T, id string, fields map[string]json.RawMessage) []byte {
	t.Helper()
	if raw, ok := fields["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("case %s: data_base64: %v", id, err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("case %s: data_base64: %v", id, err)
		}
		return b
	}
	raw, ok := fields["data"]
	if !ok {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []byte(s)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("case %s: data: %v", id, err)
	}
	return b.Bytes()
}

// transport carries a message from sender to receiver.
type transport func(t *testing.T, h nats.Header, data []byte) (nats.Header, []byte)

func direct(_ *testing.T, h nats.Header, data []byte) (nats.Header, []byte) { return h, data }

// overNATS publishes each message on an embedded nats-server and returns
// what a subscriber receives.
func overNATS(t *testing.T) transport {
	t.Helper()
	nc := MustConn(t, MustServer(t))
	sub, err := nc.SubscribeSync("conformance.>")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	return func(t *testing.T, h nats.Header, data []byte) (nats.Header, []byte) {
		t.Helper()
		n++
		subject := fmt.Sprintf("conformance.%d", n)
		if err := nc.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
			t.Fatalf("publish: %v", err)
		}
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if msg.Subject != subject {
			t.Fatalf("got message on %s, want %s", msg.Subject, subject)
		}
		return msg.Header, msg.Data
	}
}

func TestConformance(t *testing.T) {
	valid := loadConformance(t, "valid-events.json", "ValidSingleEvent")
	invalid := loadConformance(t, "invalid-events.json", "InvalidSingleEvent")
	ids := map[string]bool{}
	for _, c := range invalid {
		ids[c.ID] = true
	}
	for id := range structuredOnly {
		if !ids[id] {
			t.Errorf("structuredOnly lists %s, which is not an invalid case", id)
		}
	}
	for _, tc := range []struct {
		name string
		via  func(t *testing.T) transport
	}{
		{"pure", func(*testing.T) transport { return direct }},
		{"nats", overNATS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send := tc.via(t)
			for _, c := range valid {
				t.Run("valid/"+c.ID, func(t *testing.T) { conformValid(t, send, c) })
			}
			for _, c := range invalid {
				t.Run("invalid/"+c.ID, func(t *testing.T) { conformInvalid(t, send, c) })
			}
		})
	}
}

func conformValid(t *testing.T, send transport, c conformanceCase) {
	fields := eventFields(t, c)
	wantA := wantAttrs(t, c.ID, fields)
	wantD := wantData(t, c.ID, fields)

	h, data := send(t, nats.Header{HeaderContentType: {MediaStructured}}, c.Event)
	e, err := Decode(h, data)
	if err != nil {
		t.Fatalf("structured: %v", err)
	}
	if got := attrsOf(t, e); !maps.Equal(got, wantA) {
		t.Errorf("structured attributes:\ngot  %v\nwant %v", got, wantA)
	}
	if got := e.Data(); !bytes.Equal(got, wantD) {
		t.Errorf("structured data: got %q, want %q", got, wantD)
	}

	bh, bdata, err := toBinary(fields)
	if err != nil {
		t.Fatalf("binary: %v", err)
	}
	h, data = send(t, bh, bdata)
	e, err = Decode(h, data)
	if err != nil {
		t.Fatalf("binary %v: %v", h, err)
	}
	if got := attrsOf(t, e); !maps.Equal(got, wantA) {
		t.Errorf("binary attributes:\ngot  %v\nwant %v", got, wantA)
	}
	if got := e.Data(); !bytes.Equal(got, wantD) {
		t.Errorf("binary data: got %q, want %q", got, wantD)
	}
}

func conformInvalid(t *testing.T, send transport, c conformanceCase) {
	h, data := send(t, nats.Header{HeaderContentType: {MediaStructured}}, c.Event)
	if e, err := Decode(h, data); err == nil {
		t.Errorf("structured: got event %v, want an error", attrsOf(t, e))
	} else {
		assertDecodeError(t, "structured", err)
	}

	if reason, ok := structuredOnly[c.ID]; ok {
		t.Logf("binary mode not run: %s", reason)
		return
	}
	bh, bdata, err := toBinary(eventFields(t, c))
	if err != nil {
		t.Fatalf("binary: %v; add the case to structuredOnly with the reason if headers cannot express it", err)
	}
	h, data = send(t, bh, bdata)
	if e, err := Decode(h, data); err == nil {
		t.Errorf("binary %v: got event %v, want an error (add the case to structuredOnly with the reason if its invalidity cannot survive the move to headers)", sortedHeader(h), attrsOf(t, e))
	} else {
		assertDecodeError(t, "binary", err)
	}
}

func assertDecodeError(t *testing.T, mode string, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Errorf("%s: got %T (%v), want *DecodeError", mode, err, err)
		return
	}
	if _, ok := table[de.Code]; !ok {
		t.Errorf("%s: got code %q, which the error table does not know", mode, de.Code)
	}
}

func sortedHeader(h nats.Header) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(h)) {
		parts = append(parts, k+": "+strings.Join(h[k], ","))
	}
	return "{" + strings.Join(parts, "; ") + "}"
}
