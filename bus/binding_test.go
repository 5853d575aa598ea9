package bus

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/schemas"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// fullEvent has every core attribute, extensions of each type and JSON data.
func fullEvent(t *testing.T) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID("req-1")
	e.SetSource(schemas.AgentSource("a1"))
	e.SetType(schemas.TypeSysInfoRequest)
	e.SetSubject("résumé of a1")
	e.SetTime(time.Date(2026, 1, 2, 15, 4, 5, 123456789, time.UTC))
	e.SetDataSchema("https://agentauth.dev/schemas/dev.agentauth.sys.info.request.json")
	e.SetExtension(ExtTraceparent, testTraceparent)
	e.SetExtension("extstring", `naïve "quoted" 100% sure`)
	e.SetExtension("extinteger", 42)
	e.SetExtension("extboolean", true)
	if err := e.SetData(event.ApplicationJSON, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	return &e
}

// wantCode fails t unless err is a *DecodeError with code want.
func wantCode(t *testing.T, err error, want schemas.ErrorCode) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", want)
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("got %T (%v), want *DecodeError", err, err)
	}
	if de.Code != want {
		t.Errorf("got code %s (%s), want %s", de.Code, de.Reason, want)
	}
	if de.Reason == "" {
		t.Errorf("got an empty Reason, want one telling what to change")
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		encode func(*event.Event) (nats.Header, []byte, error)
	}{
		{"binary", Encode},
		{"structured", EncodeStructured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := fullEvent(t)
			h, data, err := tc.encode(want)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			got, err := Decode(h, data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if g, w := attrsOf(t, got), attrsOf(t, want); !maps.Equal(g, w) {
				t.Errorf("attributes:\ngot  %v\nwant %v", g, w)
			}
			if g, w := string(got.Data()), string(want.Data()); g != w {
				t.Errorf("data: got %q, want %q", g, w)
			}
		})
	}
}

func TestEncodeBinaryWire(t *testing.T) {
	h, data, err := Encode(fullEvent(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"ce-specversion":  "1.0",
		"ce-id":           "req-1",
		"ce-source":       "/agents/a1",
		"ce-subject":      "r%C3%A9sum%C3%A9%20of%20a1",
		"ce-time":         "2026-01-02T15:04:05.123456789Z",
		"ce-extstring":    "na%C3%AFve%20%22quoted%22%20100%25%20sure",
		"ce-extinteger":   "42",
		"ce-extboolean":   "true",
		"ce-traceparent":  testTraceparent,
		HeaderContentType: "application/json",
	} {
		if got := h[name]; len(got) != 1 || got[0] != want {
			t.Errorf("header %s: got %q, want [%q]", name, got, want)
		}
	}
	if _, ok := h["ce-datacontenttype"]; ok {
		t.Errorf("got a ce-datacontenttype header, want datacontenttype in Content-Type only")
	}
	if got, want := string(data), `{"k":"v"}`; got != want {
		t.Errorf("payload: got %q, want %q", got, want)
	}
}

func TestEncodeStructuredWire(t *testing.T) {
	h, _, err := EncodeStructured(fullEvent(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.Get(HeaderContentType), MediaStructured; got != want {
		t.Errorf("Content-Type: got %q, want %q", got, want)
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), headerPrefix) {
			t.Errorf("got header %s in structured mode, want none", k)
		}
	}
}

// TestEncodeDecodeValues sends awkward extension values through the binary
// mode: each must be percent-encoded on the wire and come back unchanged.
func TestEncodeDecodeValues(t *testing.T) {
	for _, tc := range []struct {
		name, value, wire string
	}{
		{"ascii", "plain-value_1.2", "plain-value_1.2"},
		{"space", "a b", "a%20b"},
		{"quote", `say "hi"`, "say%20%22hi%22"},
		{"percent", "100%", "100%25"},
		{"percent-looking", "%41", "%2541"},
		{"latin", "é", "%C3%A9"},
		{"cjk", "日本", "%E6%97%A5%E6%9C%AC"},
		{"emoji", "🔑", "%F0%9F%94%91"},
		{"newline", "a\r\nb", "a%0D%0Ab"},
		{"tab", "a\tb", "a%09b"},
		{"del", "a\x7fb", "a%7Fb"},
		{"reserved punctuation", "a:b/c?d#e[f]@!$&'()*+,;=", "a:b/c?d#e[f]@!$&'()*+,;="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := event.New()
			e.SetID("1")
			e.SetSource("/agents/a1")
			e.SetType("dev.test")
			e.SetExtension("ext", tc.value)
			h, data, err := Encode(&e)
			if err != nil {
				t.Fatal(err)
			}
			if got := h["ce-ext"]; len(got) != 1 || got[0] != tc.wire {
				t.Errorf("wire: got %q, want [%q]", got, tc.wire)
			}
			got, err := Decode(h, data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if g := got.Extensions()["ext"]; g != tc.value {
				t.Errorf("decoded: got %q, want %q", g, tc.value)
			}
		})
	}
}

func TestPercentEncode(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"unreserved", "abcXYZ019-._~", "abcXYZ019-._~"},
		{"space", " ", "%20"},
		{"quote", `"`, "%22"},
		{"percent", "%", "%25"},
		{"control", "\x00\x1f", "%00%1F"},
		{"del", "\x7f", "%7F"},
		{"utf-8", "ü", "%C3%BC"},
		{"invalid utf-8 byte", "\xff", "%FF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentEncode(tc.in); got != tc.want {
				t.Errorf("percentEncode(%q): got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestPercentDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		wantErr        bool
	}{
		{"empty", "", "", false},
		{"plain", "abc", "abc", false},
		{"raw utf-8", "é", "é", false},
		{"upper hex", "%C3%A9", "é", false},
		{"lower hex", "%c3%a9", "é", false},
		{"space", "a%20b", "a b", false},
		{"percent", "100%25", "100%", false},
		{"at the end", "a%41", "aA", false},
		{"not hex", "%zz", "", true},
		{"one hex digit", "%4g", "", true},
		{"trailing one digit", "ab%4", "", true},
		{"trailing percent", "ab%", "", true},
		{"raw 0xff", "a\xffb", "", true},
		{"encoded 0xff", "a%ffb", "", true},
		{"truncated sequence", "%C3", "", true},
		{"overlong encoding", "%C0%AF", "", true},
		{"surrogate", "%ED%A0%80", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := percentDecode(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Errorf("percentDecode(%q): got %q, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("percentDecode(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("percentDecode(%q): got %q, want %q", tc.in, got, tc.want)
			}
			if back, err := percentDecode(percentEncode(got)); err != nil || back != got {
				t.Errorf("percentDecode(percentEncode(%q)): got %q, %v", got, back, err)
			}
		})
	}
}

// minimal is a valid binary-mode header block; with replaces, adds or (with
// value "-") removes headers.
func minimal(pairs ...string) nats.Header {
	h := hdr("ce-specversion", "1.0", "ce-id", "1", "ce-source", "/agents/a1", "ce-type", "dev.test")
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i+1] == "-" {
			delete(h, pairs[i])
			continue
		}
		h[pairs[i]] = []string{pairs[i+1]}
	}
	return h
}

func TestDecodeBinary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header nats.Header
		data   string
		want   map[string]string
	}{
		{
			name:   "minimal",
			header: minimal(),
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test"},
		},
		{
			name:   "mixed-case names",
			header: hdr("CE-SPECVERSION", "1.0", "CE-ID", "1", "Ce-Source", "/agents/a1", "ce-Type", "dev.test", "CE-TraceParent", testTraceparent, "content-type", "application/json"),
			data:   `{}`,
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test", "traceparent": testTraceparent, "datacontenttype": "application/json"},
		},
		{
			name:   "percent-encoded attributes",
			header: minimal("ce-id", "a%20b", "ce-subject", "%E2%82%AC%2510", "ce-specversion", "1%2E0"),
			want:   map[string]string{"specversion": "1.0", "id": "a b", "source": "/agents/a1", "type": "dev.test", "subject": "€%10"},
		},
		{
			name:   "time with offset",
			header: minimal("ce-time", "2018-04-05T18:31:00%2B01:00"),
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test", "time": "2018-04-05T17:31:00Z"},
		},
		{
			name:   "content type with parameters",
			header: minimal("Content-Type", "text/plain; charset=utf-8"),
			data:   "hi",
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test", "datacontenttype": "text/plain; charset=utf-8"},
		},
		{
			name:   "ce-datacontenttype without Content-Type",
			header: minimal("ce-datacontenttype", "application/json"),
			data:   `{}`,
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test", "datacontenttype": "application/json"},
		},
		{
			name:   "unrelated headers ignored",
			header: minimal("Nats-Msg-Id", "x", "X-Other", ""),
			want:   map[string]string{"specversion": "1.0", "id": "1", "source": "/agents/a1", "type": "dev.test"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(tc.header, []byte(tc.data))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := attrsOf(t, e); !maps.Equal(got, tc.want) {
				t.Errorf("attributes:\ngot  %v\nwant %v", got, tc.want)
			}
			if got := string(e.Data()); got != tc.data {
				t.Errorf("data: got %q, want %q", got, tc.data)
			}
		})
	}
}

func TestDecodeStructured(t *testing.T) {
	const ev = `{"specversion":"1.0","id":"s1","source":"/agents/a1","type":"dev.test","datacontenttype":"application/json","data":{"k":"<v>"},"extstring":"x y","extinteger":7}`
	full := map[string]string{"specversion": "1.0", "id": "s1", "source": "/agents/a1", "type": "dev.test", "datacontenttype": "application/json", "extstring": "x y", "extinteger": "7"}
	bare := map[string]string{"specversion": "1.0", "id": "s1", "source": "/agents/a1", "type": "dev.test"}
	for _, tc := range []struct {
		name        string
		contentType string
		payload     string
		want        map[string]string
		wantData    string
	}{
		{"plain", MediaStructured, ev, full, `{"k":"<v>"}`},
		{"charset", MediaStructured + "; charset=utf-8", ev, full, `{"k":"<v>"}`},
		{"upper case", "Application/CloudEvents+JSON", ev, full, `{"k":"<v>"}`},
		// The sdk mishandles a null datacontenttype that follows specversion.
		{"null optional attributes after specversion", MediaStructured, `{"specversion":"1.0","id":"s1","source":"/agents/a1","type":"dev.test","datacontenttype":null,"dataschema":null,"subject":null,"time":null,"ext":null}`, bare, ""},
		{"null optional attributes before specversion", MediaStructured, `{"datacontenttype":null,"dataschema":null,"subject":null,"time":null,"ext":null,"specversion":"1.0","id":"s1","source":"/agents/a1","type":"dev.test"}`, bare, ""},
		{"null attribute with data", MediaStructured, `{"specversion":"1.0","subject":null,"id":"s1","source":"/agents/a1","type":"dev.test","data":{"k":"<v>"}}`, bare, `{"k":"<v>"}`},
		{"base64 data", MediaStructured, `{"specversion":"1.0","id":"s1","source":"/agents/a1","type":"dev.test","data_base64":"TWE="}`, bare, "Ma"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(hdr("content-type", tc.contentType), []byte(tc.payload))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := attrsOf(t, e); !maps.Equal(got, tc.want) {
				t.Errorf("attributes:\ngot  %v\nwant %v", got, tc.want)
			}
			if got := string(e.Data()); got != tc.wantData {
				t.Errorf("data: got %q, want %q", got, tc.wantData)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	const structured = `{"specversion":"1.0","id":"s1","source":"/agents/a1","type":"dev.test"}`
	for _, tc := range []struct {
		name   string
		header nats.Header
		data   string
		want   schemas.ErrorCode
	}{
		{"no headers", nil, "{}", schemas.CodeInvalidEvent},
		{"missing specversion", minimal("ce-specversion", "-"), "", schemas.CodeInvalidEvent},
		{"missing id", minimal("ce-id", "-"), "", schemas.CodeInvalidEvent},
		{"missing source", minimal("ce-source", "-"), "", schemas.CodeInvalidEvent},
		{"missing type", minimal("ce-type", "-"), "", schemas.CodeInvalidEvent},
		{"specversion 0.3", minimal("ce-specversion", "0.3"), "", schemas.CodeUnsupportedVersion},
		{"specversion 2.0", minimal("ce-specversion", "2.0"), "", schemas.CodeUnsupportedVersion},
		{"specversion empty", minimal("ce-specversion", ""), "", schemas.CodeUnsupportedVersion},
		{"specversion bad encoding", minimal("ce-specversion", "1.%"), "", schemas.CodeInvalidHeaderEncoding},
		{"not hex", minimal("ce-id", "a%zz"), "", schemas.CodeInvalidHeaderEncoding},
		{"trailing %4", minimal("ce-id", "a%4"), "", schemas.CodeInvalidHeaderEncoding},
		{"raw 0xff", minimal("ce-source", "/agents/\xff"), "", schemas.CodeInvalidHeaderEncoding},
		{"encoded 0xff", minimal("ce-subject", "%ff"), "", schemas.CodeInvalidHeaderEncoding},
		{"extension raw 0xff", minimal("ce-ext", "\xff"), "", schemas.CodeInvalidHeaderEncoding},
		{"empty id", minimal("ce-id", ""), "", schemas.CodeInvalidEvent},
		{"empty subject", minimal("ce-subject", ""), "", schemas.CodeInvalidEvent},
		{"empty extension", minimal("ce-ext", ""), "", schemas.CodeInvalidEvent},
		{"empty Content-Type", minimal("Content-Type", ""), "{}", schemas.CodeInvalidEvent},
		{"duplicated id", add(minimal("ce-id", "-", "ce-id", "1"), "ce-id", "2"), "", schemas.CodeInvalidEvent},
		{"duplicated id in two cases", add(minimal(), "CE-ID", "2"), "", schemas.CodeInvalidEvent},
		{"duplicated Content-Type", add(minimal("Content-Type", "application/json"), "Content-Type", "text/plain"), "{}", schemas.CodeInvalidEvent},
		{"Content-Type and ce-datacontenttype", minimal("Content-Type", "application/json", "ce-datacontenttype", "application/json"), "{}", schemas.CodeInvalidEvent},
		{"Content-Type not a media type", minimal("Content-Type", "xyz"), "{}", schemas.CodeInvalidEvent},
		{"bad time", minimal("ce-time", "lunchtime"), "", schemas.CodeInvalidEvent},
		{"time without seconds", minimal("ce-time", "2018-04-05T18:31Z"), "", schemas.CodeInvalidEvent},
		{"extension with dash", minimal("ce-my-ext", "v"), "", schemas.CodeInvalidEvent},
		{"extension with underscore", minimal("ce-my_ext", "v"), "", schemas.CodeInvalidEvent},
		{"extension with dot", minimal("ce-my.ext", "v"), "", schemas.CodeInvalidEvent},
		{"extension too long", minimal("ce-"+strings.Repeat("x", 65), "v"), "", schemas.CodeInvalidEvent},
		{"batch", hdr("Content-Type", "application/cloudevents-batch+json"), "[" + structured + "]", schemas.CodeInvalidEvent},
		{"batch with parameters", hdr("Content-Type", "application/cloudevents-batch+json; charset=utf-8"), "[" + structured + "]", schemas.CodeInvalidEvent},
		{"structured with ce- headers", minimal("Content-Type", MediaStructured), structured, schemas.CodeInvalidEvent},
		{"structured with upper-case ce- header", hdr("Content-Type", MediaStructured, "CE-SPECVERSION", "1.0"), structured, schemas.CodeInvalidEvent},
		{"structured not JSON", hdr("Content-Type", MediaStructured), "not json", schemas.CodeInvalidEvent},
		{"structured array", hdr("Content-Type", MediaStructured), "[" + structured + "]", schemas.CodeInvalidEvent},
		{"structured trailing data", hdr("Content-Type", MediaStructured), structured + "{}", schemas.CodeInvalidEvent},
		{"structured trailing ]", hdr("Content-Type", MediaStructured), structured + "]", schemas.CodeInvalidEvent},
		{"structured trailing }", hdr("Content-Type", MediaStructured), structured + " }", schemas.CodeInvalidEvent},
		{"relative dataschema", minimal("ce-dataschema", "schemas/x.json"), "", schemas.CodeInvalidEvent},
		{"structured relative dataschema", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"schemas/x.json"}`, schemas.CodeInvalidEvent},
		{"structured specversion 0.3", hdr("Content-Type", MediaStructured), `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, schemas.CodeUnsupportedVersion},
		{"structured specversion number", hdr("Content-Type", MediaStructured), `{"specversion":1.0,"id":"1","source":"/s","type":"t"}`, schemas.CodeInvalidEvent},
		{"structured empty extension", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":""}`, schemas.CodeInvalidEvent},
		{"structured object extension", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{}}`, schemas.CodeInvalidEvent},
		{"padded id", minimal("ce-id", "%201"), "", schemas.CodeInvalidEvent},
		{"padded type", minimal("ce-type", "dev.test%09"), "", schemas.CodeInvalidEvent},
		{"padded subject", minimal("ce-subject", "%20s"), "", schemas.CodeInvalidEvent},
		{"blank Content-Type", minimal("Content-Type", " "), "{}", schemas.CodeInvalidEvent},
		{"structured padded id", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":" 1","source":"/s","type":"t"}`, schemas.CodeInvalidEvent},
		{"structured padded type", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":" 0"}`, schemas.CodeInvalidEvent},
		{"structured padded subject", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"s\n"}`, schemas.CodeInvalidEvent},
		{"structured invalid UTF-8 id", hdr("Content-Type", MediaStructured), "{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"/s\",\"type\":\"t\"}", schemas.CodeInvalidEvent},
		{"structured invalid UTF-8 extension", hdr("Content-Type", MediaStructured), "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"ext\":\"a\xc3\"}", schemas.CodeInvalidEvent},
		{"structured integer extension out of range", hdr("Content-Type", MediaStructured), `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":4294967296}`, schemas.CodeInvalidEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(tc.header, []byte(tc.data))
			if err == nil {
				t.Fatalf("got event %v, want %s", attrsOf(t, e), tc.want)
			}
			wantCode(t, err, tc.want)
		})
	}
}

// TestDecodeRejectsDeterministically decodes messages whose verdict could
// depend on the order of header iteration many times over.
func TestDecodeRejectsDeterministically(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header nats.Header
	}{
		{"Content-Type and ce-datacontenttype", minimal("Content-Type", "application/json", "ce-datacontenttype", "text/plain")},
		{"id in two cases", add(minimal(), "Ce-Id", "2")},
		{"Content-Type in two cases", add(minimal("Content-Type", "application/json"), "content-type", "text/plain")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 50 {
				if e, err := Decode(tc.header, []byte("{}")); err == nil {
					t.Fatalf("attempt %d: got event %v, want an error", i, attrsOf(t, e))
				}
			}
		})
	}
}

// add appends a value under name, as a repeated or differently cased header.
func add(h nats.Header, name, value string) nats.Header {
	h[name] = append(h[name], value)
	return h
}
