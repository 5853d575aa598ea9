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
	keys := make([]string, 0, len(h))
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
			u := types.ParseURIRef(val)
			if u == nil {
				return nil, invalid(schemas.CodeInvalidEvent, "header %s: %q is not a URI-reference", k, val)
			}
			ec.Source = *u
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
	h := make(nats.Header, 6+len(ec.Extensions))
	h["ce-specversion"] = []string{schemas.SpecVersion}
	h["ce-id"] = []string{percentEncode(ec.ID)}
	h["ce-source"] = []string{percentEncode(ec.Source.String())}
	h["ce-type"] = []string{percentEncode(ec.Type)}
	if ec.Time != nil && !ec.Time.IsZero() {
		h["ce-time"] = []string{ec.Time.UTC().Format(time.RFC3339Nano)}
	}
	if ec.DataContentType != nil && *ec.DataContentType != "" {
		h[HeaderContentType] = []string{*ec.DataContentType}
	}
	if ec.Subject != nil && *ec.Subject != "" {
		h["ce-subject"] = []string{percentEncode(*ec.Subject)}
	}
	if ec.DataSchema != nil {
		h["ce-dataschema"] = []string{percentEncode(ec.DataSchema.String())}
	}
	for k, v := range ec.Extensions {
		s, err := types.Format(v)
		if err != nil {
			continue
		}
		h[headerPrefix+k] = []string{percentEncode(s)}
	}
	return h
}
