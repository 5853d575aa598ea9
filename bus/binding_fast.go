package bus

import (
	"mime"
	"net/url"
	"strings"
	"time"

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
	ec := &event.EventContextV1{}
	var contentType, ceContentType bool
	// Names compare case-insensitively: CE-ID and ce-id are one attribute
	// sent twice. Messages carry few headers, so a quadratic check is the
	// cheapest.
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
				ct := vs[0]
				ec.DataContentType = &ct
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
			ec.Subject = &val
		case "time":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not an RFC 3339 timestamp such as 2026-01-02T15:04:05Z", k, val)
			}
			ec.Time = &types.Timestamp{Time: t}
		case "dataschema":
			u := types.ParseURI(val)
			if u == nil {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not a URI", k, val)
			}
			ec.DataSchema = u
		case "datacontenttype":
			if contentType {
				return nil, invalid(schemas.CodeInvalidEvent, "both Content-Type and ce-datacontenttype are set; use Content-Type")
			}
			ceContentType = true
			ec.DataContentType = &val
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
	e := &event.Event{Context: ec}
	if len(data) > 0 {
		e.DataEncoded = data
	}
	return e, nil
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

// encodeV1 writes a 1.0 context as binary-mode headers.
func encodeV1(ec *event.EventContextV1, data []byte) nats.Header {
	n := 8 + len(ec.Extensions)
	h := make(nats.Header, n)
	vals := make([]string, 0, n) // one backing array for every value
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set("ce-specversion", schemas.SpecVersion)
	set("ce-id", percentEncode(ec.ID))
	set("ce-source", percentEncode(ec.Source.String()))
	set("ce-type", percentEncode(ec.Type))
	if ec.Time != nil && !ec.Time.IsZero() {
		set("ce-time", ec.Time.UTC().Format(time.RFC3339Nano))
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
	for k, v := range ec.Extensions {
		s, err := types.Format(v)
		if err != nil {
			continue
		}
		set(headerPrefix+k, percentEncode(s))
	}
	return h
}
