package bus

import (
	"mime"
	"net/url"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/schemas"
)

// decodeBinary builds a CloudEvents 1.0 event straight from the ce-
// headers (the hot path of every request): one pass over the headers,
// each value percent-decoded and required to be non-empty UTF-8. The
// caller has checked ce-specversion.
func decodeBinary(h nats.Header, data []byte) (*event.Event, error) {
	// The event, its context and their small fields share one
	// allocation: this runs for every request.
	d := &eventBlock{}
	ec := &d.ec
	var contentType, ceContentType bool
	// Names compare case-insensitively: CE-ID and ce-id are one attribute
	// sent twice. When every name is in its usual form (lower-case ce-…,
	// and Content-Type), no two can be; otherwise a quadratic check (few
	// headers) finds them.
	usual := true
	for k := range h {
		if k != HeaderContentType && (len(k) <= len(headerPrefix) || k[:len(headerPrefix)] != headerPrefix || !isLower(k)) {
			usual = false
			break
		}
	}
	if !usual {
		var buf [16]string
		keys := buf[:0]
		for k := range h {
			for _, prev := range keys {
				if strings.EqualFold(prev, k) {
					return nil, invalid(schemas.CodeInvalidEvent, "headers %s and %s name the same attribute; send each attribute once", prev, k)
				}
			}
			keys = append(keys, k)
		}
	}
	for k, vs := range h {
		if len(k) <= len(headerPrefix) || !strings.EqualFold(k[:len(headerPrefix)], headerPrefix) {
			if strings.EqualFold(k, HeaderContentType) {
				if len(vs) != 1 {
					return nil, invalid(schemas.CodeInvalidEvent, "header %s appears %d times", k, len(vs))
				}
				if ceContentType {
					return nil, invalid(schemas.CodeInvalidEvent, "both Content-Type and ce-datacontenttype are set; use Content-Type")
				}
				if strings.TrimSpace(vs[0]) == "" {
					return nil, invalid(schemas.CodeInvalidEvent, "header %s is empty; omit it instead of sending it empty", k)
				}
				contentType = true
				d.ct = strings.TrimSpace(vs[0]) // as the sdk's binding reads it
				ec.DataContentType = &d.ct
			}
			continue
		}
		name := k[len(headerPrefix):]
		if !isLower(name) {
			name = strings.ToLower(name)
		}
		if len(vs) != 1 {
			return nil, invalid(schemas.CodeInvalidEvent, "header %s appears %d times; send each attribute once", k, len(vs))
		}
		val, err := percentDecode(vs[0])
		if err != nil {
			return nil, invalid(schemas.CodeInvalidHeaderEncoding, "header %s: %v", k, err)
		}
		if val == "" {
			return nil, invalid(schemas.CodeInvalidEvent, "header %s is empty; omit optional attributes instead of sending them empty", k)
		}
		switch name {
		case "id", "type", "subject":
			if padded(val) {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: the value starts or ends with white space", k)
			}
		}
		switch name {
		case "specversion":
		case "id":
			ec.ID = val
		case "type":
			ec.Type = val
		case "source":
			u, ok := parseSource(val)
			if !ok {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not a URI-reference", k, val)
			}
			ec.Source = u
		case "subject":
			d.subject = val
			ec.Subject = &d.subject
		case "time":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not an RFC 3339 timestamp such as 2026-01-02T15:04:05Z", k, val)
			}
			d.ts.Time = t
			ec.Time = &d.ts
		case "dataschema":
			u := types.ParseURI(val)
			if u == nil || !u.IsAbs() {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not an absolute URI", k, val)
			}
			ec.DataSchema = u
		case "datacontenttype":
			if contentType {
				return nil, invalid(schemas.CodeInvalidEvent, "both Content-Type and ce-datacontenttype are set; use Content-Type")
			}
			ceContentType = true
			d.ct = val
			ec.DataContentType = &d.ct
		default:
			if !extName.MatchString(name) {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: extension names are lower-case letters and digits only", k)
			}
			if ec.Extensions == nil {
				ec.Extensions = make(map[string]any, 2)
			}
			ec.Extensions[name] = val
		}
	}
	// What event.Validate would check, without its allocations.
	switch {
	case ec.ID == "":
		return nil, invalid(schemas.CodeInvalidEvent, "ce-id is required")
	case ec.Source.URL == (url.URL{}):
		return nil, invalid(schemas.CodeInvalidEvent, "ce-source is required")
	case ec.Type == "":
		return nil, invalid(schemas.CodeInvalidEvent, "ce-type is required")
	}
	if ec.DataContentType != nil && *ec.DataContentType != event.ApplicationJSON {
		if mt, _, err := mime.ParseMediaType(*ec.DataContentType); err != nil || !strings.Contains(mt, "/") {
			return nil, invalid(schemas.CodeInvalidEvent, "datacontenttype %q is not a media type such as application/json", *ec.DataContentType)
		}
	}
	e := &d.e
	e.Context = ec
	if len(data) > 0 {
		e.DataEncoded = data
	}
	return e, nil
}

// eventBlock holds an event with its 1.0 context and the attribute values
// that context points to, so that building one is a single allocation.
type eventBlock struct {
	e       event.Event
	ec      event.EventContextV1
	ts      types.Timestamp
	ct      string
	subject string
}

// parseSource parses a source URI-reference. A plain absolute path of
// letters, digits, '/', '-', '_' and '.' (every agent's /agents/<id>)
// parses to a URL with only Path set, exactly as url.Parse would, without
// url.Parse's allocations.
func parseSource(s string) (types.URIRef, bool) {
	simple := len(s) > 1 && s[0] == '/' && s[1] != '/'
	for i := 0; simple && i < len(s); i++ {
		c := s[i]
		simple = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '/' || c == '-' || c == '_' || c == '.'
	}
	if simple {
		return types.URIRef{URL: url.URL{Path: s}}, true
	}
	u := types.ParseURIRef(s)
	if u == nil {
		return types.URIRef{}, false
	}
	return *u, true
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return false
		}
	}
	return true
}

// headerBlock is a binary-mode header with room for the values it holds.
// Encode fills a fresh one; the server fills pooled ones for replies and
// reuses each once its reply is written (nats.go copies the header into
// its buffer before PublishMsg returns).
type headerBlock struct {
	h    nats.Header
	vals []string // one backing array for every value
	tbuf [len(time.RFC3339Nano) + 8]byte
}

// formatTime renders t in UTC as RFC 3339 with nanoseconds. The string
// lives in hb: a block is reused only after the header that holds it has
// been written.
func (hb *headerBlock) formatTime(t time.Time) string {
	b := t.UTC().AppendFormat(hb.tbuf[:0], time.RFC3339Nano)
	if len(b) > 0 && &b[0] == &hb.tbuf[0] {
		return unsafe.String(&hb.tbuf[0], len(b))
	}
	return string(b)
}

var headerBlocks = sync.Pool{New: func() any { return &headerBlock{} }}

// serviceSourceHeader is ce-source of every event agentauth emits.
var serviceSourceHeader = percentEncode(serviceSource.String())

// encodeV1 writes a 1.0 context as binary-mode headers into hb, replacing
// what it held. A non-empty traceparent is written in place of the
// context's own traceparent extension.
func encodeV1(ec *event.EventContextV1, hb *headerBlock, traceparent string) nats.Header {
	n := 9 + len(ec.Extensions)
	if hb.h == nil {
		hb.h = make(nats.Header, n)
	} else {
		clear(hb.h)
	}
	if cap(hb.vals) < n {
		hb.vals = make([]string, 0, n)
	}
	vals := hb.vals[:0]
	h := hb.h
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set("ce-specversion", schemas.SpecVersion)
	set("ce-id", percentEncode(ec.ID))
	if ec.Source.URL == serviceSource.URL {
		set("ce-source", serviceSourceHeader)
	} else {
		set("ce-source", percentEncode(ec.Source.String()))
	}
	set("ce-type", percentEncode(ec.Type))
	if ec.Time != nil && !ec.Time.IsZero() {
		set("ce-time", hb.formatTime(ec.Time.Time))
	}
	if ec.DataContentType != nil && *ec.DataContentType != "" {
		set(HeaderContentType, *ec.DataContentType)
	}
	if ec.Subject != nil && *ec.Subject != "" {
		set("ce-subject", percentEncode(*ec.Subject))
	}
	if ec.DataSchema != nil {
		set("ce-dataschema", percentEncode(ec.DataSchema.String()))
	}
	if traceparent != "" {
		set(headerTraceparent, percentEncode(traceparent))
	}
	for k, v := range ec.Extensions {
		if k == ExtTraceparent && traceparent != "" {
			continue
		}
		s, err := types.Format(v)
		if err != nil {
			continue
		}
		if k == ExtTraceparent {
			set(headerTraceparent, percentEncode(s))
		} else {
			set(headerPrefix+k, percentEncode(s))
		}
	}
	hb.vals = vals
	return h
}

const headerTraceparent = headerPrefix + ExtTraceparent
