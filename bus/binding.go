// Package bus is agentauth's NATS edge and the only package that imports
// nats.go: the CloudEvents binding over NATS messages, the request/reply
// server (a NATS micro service), JetStream publishing, consuming and
// replay, and the one table that maps a handler's error to a reply or an
// acknowledgement. Handlers see event.Event values, never a nats.Msg.
package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/schemas"
)

// Header names of the binding.
const (
	headerPrefix      = "ce-"
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
)

// Structured-mode media types.
const (
	MediaStructured = "application/cloudevents+json"
	mediaBatch      = "application/cloudevents-batch+json"
)

var versions = spec.WithPrefix(headerPrefix)

// DecodeError is returned by Decode for a message that is not an
// acceptable CloudEvent. Code is the stable wire code; Reason tells a person
// what to change.
type DecodeError struct {
	Code   schemas.ErrorCode
	Reason string
}

func (e *DecodeError) Error() string { return string(e.Code) + ": " + e.Reason }

// ErrorCode implements the coder interface the error table reads.
func (e *DecodeError) ErrorCode() schemas.ErrorCode { return e.Code }

func invalid(code schemas.ErrorCode, format string, args ...any) *DecodeError {
	return &DecodeError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Decode reads a CloudEvent from a NATS message's header and payload, in
// binary mode (attributes in percent-encoded ce- headers, names compared
// case-insensitively) or structured mode (Content-Type
// application/cloudevents+json). It checks the attributes strictly: the
// required ones present and non-empty, specversion 1.0, optional ones
// non-empty when present, time in RFC 3339, extension names lower-case
// alphanumeric. Errors are *DecodeError. The caller checks the size cap
// before calling.
func Decode(h nats.Header, data []byte) (*event.Event, error) {
	m := &natsMessage{header: h, data: data}
	ct := m.get(HeaderContentType)
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == mediaBatch:
		return nil, invalid(schemas.CodeInvalidEvent, "batched CloudEvents (%s) are not accepted; send one event per message", mediaBatch)
	case strings.HasPrefix(mt, "application/cloudevents"):
		if m.has("specversion") {
			return nil, invalid(schemas.CodeInvalidEvent, "the message is structured (Content-Type %s) but also carries ce- headers; use one mode", ct)
		}
		return decodeStructured(data)
	}
	sv, ok := m.ce("specversion")
	if !ok {
		return nil, invalid(schemas.CodeInvalidEvent, "not a CloudEvent: set the ce-specversion, ce-id, ce-source and ce-type headers (binary mode) or send the JSON event format with Content-Type %s (structured mode)", MediaStructured)
	}
	v, err := percentDecode(sv)
	if err != nil {
		return nil, invalid(schemas.CodeInvalidHeaderEncoding, "header ce-specversion: %v", err)
	}
	if v != schemas.SpecVersion {
		return nil, invalid(schemas.CodeUnsupportedVersion, "ce-specversion %q is not supported; use %q", v, schemas.SpecVersion)
	}
	// decodeBinary applies check's rules itself; the fuzz target holds
	// it to them.
	return decodeBinary(h, data)
}

// NewMessage wraps a NATS message's header and payload as a binary-mode
// binding.Message, for code that uses the sdk's binding API
// (binding.ToEvent). Decode gives the same result, faster, with the strict
// checks; a test keeps the two in agreement.
func NewMessage(h nats.Header, data []byte) binding.Message {
	m := &natsMessage{header: h, data: data}
	sv, _ := m.ce("specversion")
	if v, err := percentDecode(sv); err == nil {
		m.version = versions.Version(v)
	}
	return m
}

// natsMessage is a binding.Message over a NATS header and payload.
type natsMessage struct {
	header  nats.Header
	data    []byte
	version spec.Version
}

var (
	_ binding.Message               = (*natsMessage)(nil)
	_ binding.MessageMetadataReader = (*natsMessage)(nil)
)

// get returns the first value of a header, its name compared
// case-insensitively.
func (m *natsMessage) get(name string) string {
	if v, ok := m.header[name]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range m.header {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func (m *natsMessage) ce(attr string) (string, bool) {
	if v := m.header[headerPrefix+attr]; len(v) > 0 { // the usual spelling, without a scan
		return v[0], true
	}
	for k, v := range m.header {
		if len(k) == len(headerPrefix)+len(attr) && strings.EqualFold(k[:len(headerPrefix)], headerPrefix) && strings.EqualFold(k[len(headerPrefix):], attr) && len(v) > 0 {
			return v[0], true
		}
	}
	return "", false
}

func (m *natsMessage) has(attr string) bool { _, ok := m.ce(attr); return ok }

func (m *natsMessage) ReadEncoding() binding.Encoding {
	if m.version == nil {
		return binding.EncodingUnknown
	}
	return binding.EncodingBinary
}

func (m *natsMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

// ReadBinary hands every ce- header (percent-decoded) and the payload to
// the writer. Content-Type carries datacontenttype.
func (m *natsMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	if m.version == nil {
		return binding.ErrNotBinary
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	// Names are compared case-insensitively, so CE-ID and ce-id are one
	// attribute sent twice; and whether Content-Type is present must not
	// depend on the order of map iteration.
	seen := make(map[string]string, len(m.header))
	sawContentType := false
	for k := range m.header {
		if strings.EqualFold(k, HeaderContentType) {
			sawContentType = true
		}
	}
	once := func(k string) error {
		lk := strings.ToLower(k)
		if prev, dup := seen[lk]; dup {
			return invalid(schemas.CodeInvalidEvent, "headers %s and %s name the same attribute; send each attribute once", prev, k)
		}
		seen[lk] = k
		return nil
	}
	for k, vs := range m.header {
		if len(k) <= len(headerPrefix) || !strings.EqualFold(k[:len(headerPrefix)], headerPrefix) {
			if strings.EqualFold(k, HeaderContentType) {
				if err := once(k); err != nil {
					return err
				}
				if len(vs) != 1 {
					return invalid(schemas.CodeInvalidEvent, "header %s appears %d times", k, len(vs))
				}
				if strings.TrimSpace(vs[0]) == "" {
					return invalid(schemas.CodeInvalidEvent, "header %s is empty; omit it instead of sending it empty", k)
				}
				if err := w.SetAttribute(m.version.AttributeFromKind(spec.DataContentType), vs[0]); err != nil {
					return invalid(schemas.CodeInvalidEvent, "Content-Type: %v", err)
				}
			}
			continue
		}
		name := strings.ToLower(k[len(headerPrefix):])
		if err := once(k); err != nil {
			return err
		}
		if len(vs) != 1 {
			return invalid(schemas.CodeInvalidEvent, "header %s appears %d times; send each attribute once", k, len(vs))
		}
		val, err := percentDecode(vs[0])
		if err != nil {
			return invalid(schemas.CodeInvalidHeaderEncoding, "header %s: %v", k, err)
		}
		if val == "" {
			return invalid(schemas.CodeInvalidEvent, "header %s is empty; omit optional attributes instead of sending them empty", k)
		}
		if name == "specversion" {
			continue
		}
		if attr := m.version.Attribute(headerPrefix + name); attr != nil {
			if kind := attr.Kind(); (kind == spec.ID || kind == spec.Type || kind == spec.Subject) && padded(val) {
				return invalid(schemas.CodeInvalidEvent, "header %s: the value starts or ends with white space", k)
			}
			if attr.Kind() == spec.DataContentType && sawContentType {
				return invalid(schemas.CodeInvalidEvent, "both Content-Type and ce-datacontenttype are set; use Content-Type")
			}
			if err := w.SetAttribute(attr, val); err != nil {
				return invalid(schemas.CodeInvalidEvent, "header %s: %v", k, err)
			}
			continue
		}
		if !extName.MatchString(name) {
			return invalid(schemas.CodeInvalidEvent, "header %s: extension names are lower-case letters and digits only", k)
		}
		if err := w.SetExtension(name, val); err != nil {
			return invalid(schemas.CodeInvalidEvent, "header %s: %v", k, err)
		}
	}
	if len(m.data) > 0 {
		if err := w.SetData(bytes.NewBuffer(m.data)); err != nil {
			return err
		}
	}
	return w.End(ctx)
}

func (m *natsMessage) Finish(error) error { return nil }

// GetAttribute implements binding.MessageMetadataReader.
func (m *natsMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	attr := m.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if k == spec.DataContentType {
		if v := m.get(HeaderContentType); v != "" {
			return attr, v
		}
	}
	if v, ok := m.ce(attr.Name()); ok {
		if d, err := percentDecode(v); err == nil {
			return attr, d
		}
	}
	return attr, nil
}

// GetExtension implements binding.MessageMetadataReader.
func (m *natsMessage) GetExtension(name string) any {
	if v, ok := m.ce(name); ok {
		if d, err := percentDecode(v); err == nil {
			return d
		}
	}
	return nil
}

// padded reports white space around s. The sdk's setters trim id, type
// and subject, so binary mode would silently drop it while structured mode
// keeps it; both modes refuse such values instead.
func padded(s string) bool { return s != strings.TrimSpace(s) }

// extName matches CloudEvents extension names as agentauth accepts them:
// 1 to 64 lower-case letters and digits.
var extName = extNameMatcher{}

type extNameMatcher struct{}

func (extNameMatcher) MatchString(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// check applies the strict attribute rules to a decoded event.
func check(e *event.Event) error {
	if e.SpecVersion() != schemas.SpecVersion {
		return invalid(schemas.CodeUnsupportedVersion, "specversion %q is not supported; use %q", e.SpecVersion(), schemas.SpecVersion)
	}
	if err := e.Validate(); err != nil {
		return invalid(schemas.CodeInvalidEvent, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if ct := e.DataContentType(); ct != "" && ct != event.ApplicationJSON {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || !strings.Contains(mt, "/") {
			return invalid(schemas.CodeInvalidEvent, "datacontenttype %q is not a media type such as application/json", ct)
		}
	}
	for name := range e.Extensions() {
		if !extName.MatchString(name) {
			return invalid(schemas.CodeInvalidEvent, "extension %q: names are lower-case letters and digits only", name)
		}
	}
	return nil
}

// percentDecode undoes the binding's percent-encoding and requires UTF-8.
func percentDecode(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		if !utf8.ValidString(s) {
			return "", errors.New("value is not valid UTF-8")
		}
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", fmt.Errorf("bad percent-encoding at byte %d: %%XX with two hex digits expected", i)
		}
		b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		i += 2
	}
	out := b.String()
	if !utf8.ValidString(out) {
		return "", errors.New("percent-decoded value is not valid UTF-8")
	}
	return out, nil
}

// percentEncode encodes space, '"', '%' and every byte outside printable
// ASCII, as the CloudEvents HTTP and NATS bindings require.
func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hexdig = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b = append(b, '%', hexdig[c>>4], hexdig[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func needsEscape(c byte) bool { return c <= 0x20 || c >= 0x7f || c == '"' || c == '%' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// Encode writes e in binary mode: every attribute as a percent-encoded ce-
// header, datacontenttype as Content-Type, data as the payload. It writes
// through the sdk's binding so that the attribute set is the spec's.
func Encode(e *event.Event) (nats.Header, []byte, error) {
	if ec, ok := e.Context.(*event.EventContextV1); ok {
		return encodeV1(ec, &headerBlock{}, ""), e.Data(), nil
	}
	w := &headerWriter{h: make(nats.Header, 8)}
	if _, err := binding.Write(context.Background(), (*binding.EventMessage)(e), nil, w); err != nil {
		return nil, nil, err
	}
	return w.h, w.data, nil
}

type headerWriter struct {
	h    nats.Header
	data []byte
}

func (w *headerWriter) Start(context.Context) error { return nil }
func (w *headerWriter) End(context.Context) error   { return nil }

func (w *headerWriter) SetAttribute(a spec.Attribute, v any) error {
	if v == nil {
		return nil
	}
	s, err := attrString(v)
	if err != nil {
		return err
	}
	if a.Kind() == spec.DataContentType {
		w.h[HeaderContentType] = []string{s}
		return nil
	}
	w.h[headerPrefix+a.Name()] = []string{percentEncode(s)}
	return nil
}

func (w *headerWriter) SetExtension(name string, v any) error {
	if v == nil {
		return nil
	}
	s, err := attrString(v)
	if err != nil {
		return err
	}
	w.h[headerPrefix+name] = []string{percentEncode(s)}
	return nil
}

func (w *headerWriter) SetData(r io.Reader) error {
	if b, ok := r.(*bytes.Buffer); ok {
		w.data = b.Bytes()
		return nil
	}
	b, err := io.ReadAll(r)
	w.data = b
	return err
}

func attrString(v any) (string, error) { return types.Format(v) }

// EncodeStructured writes e in structured mode (JSON event format).
func EncodeStructured(e *event.Event) (nats.Header, []byte, error) {
	b, err := format.JSON.Marshal(e)
	if err != nil {
		return nil, nil, err
	}
	return nats.Header{HeaderContentType: []string{MediaStructured}}, b, nil
}
