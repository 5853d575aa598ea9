package bus

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

// optional string attributes: null means absent, "" is invalid.
var optionalAttrs = map[string]bool{"datacontenttype": true, "dataschema": true, "subject": true, "time": true}

// decodeStructured reads the JSON event format strictly: attribute names
// lower-case alphanumeric, required attributes non-empty strings, optional
// ones null or non-empty strings, time in RFC 3339, extension values
// booleans, integers or non-empty strings (an empty ce- header is refused,
// so an empty string could not be re-encoded), and never both data and
// data_base64.
func decodeStructured(data []byte) (*event.Event, error) {
	if !utf8.Valid(data) {
		// encoding/json would read U+FFFD where the sdk keeps the raw bytes.
		return nil, invalid(schemas.CodeInvalidEvent, "structured event is not valid UTF-8; JSON text must be UTF-8")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid(schemas.CodeInvalidEvent, "structured event is not a JSON object: %v", err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) != 0 { // More() is false before a stray ] or }
		return nil, invalid(schemas.CodeInvalidEvent, "structured event has trailing data after the JSON object")
	}
	sv, ok := raw["specversion"]
	if !ok {
		return nil, invalid(schemas.CodeInvalidEvent, "specversion is required")
	}
	var v string
	if err := json.Unmarshal(sv, &v); err != nil {
		return nil, invalid(schemas.CodeInvalidEvent, "specversion must be a string")
	}
	if v != schemas.SpecVersion {
		return nil, invalid(schemas.CodeUnsupportedVersion, "specversion %q is not supported; use %q", v, schemas.SpecVersion)
	}
	_, hasData := raw["data"]
	_, hasB64 := raw["data_base64"]
	if hasData && hasB64 {
		return nil, invalid(schemas.CodeInvalidEvent, "data and data_base64 are both set; send one")
	}
	for name, val := range raw {
		switch name {
		case "data", "data_base64":
			continue
		case "id", "source", "type":
			var s string
			if err := json.Unmarshal(val, &s); err != nil || s == "" {
				return nil, invalid(schemas.CodeInvalidEvent, "%s must be a non-empty string", name)
			}
			if name != "source" && padded(s) {
				return nil, invalid(schemas.CodeInvalidEvent, "%s %q starts or ends with white space", name, s)
			}
			continue
		}
		if optionalAttrs[name] {
			if string(val) == "null" {
				continue
			}
			var s string
			if err := json.Unmarshal(val, &s); err != nil || s == "" {
				return nil, invalid(schemas.CodeInvalidEvent, "%s must be a non-empty string or absent", name)
			}
			if name == "subject" && padded(s) {
				return nil, invalid(schemas.CodeInvalidEvent, "subject %q starts or ends with white space", s)
			}
			if name == "time" {
				if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
					return nil, invalid(schemas.CodeInvalidEvent, "time %q is not an RFC 3339 timestamp such as 2026-01-02T15:04:05Z", s)
				}
			}
			continue
		}
		if name == "specversion" {
			continue
		}
		if !extName.MatchString(name) {
			return nil, invalid(schemas.CodeInvalidEvent, "attribute %q: extension names are lower-case letters and digits only", name)
		}
		if err := checkExtensionValue(name, val); err != nil {
			return nil, err
		}
	}
	// null means absent, but the sdk reads a null datacontenttype that
	// follows specversion as "" and then rejects it: drop null attributes
	// before the sdk sees them.
	dropped := false
	for name, val := range raw {
		if name != "data" && name != "data_base64" && string(val) == "null" {
			delete(raw, name)
			dropped = true
		}
	}
	if dropped {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(raw); err != nil {
			return nil, invalid(schemas.CodeInvalidEvent, "%v", err)
		}
		data = b.Bytes()
	}
	e := event.New()
	if err := e.UnmarshalJSON(data); err != nil {
		return nil, invalid(schemas.CodeInvalidEvent, "%v", err)
	}
	if err := check(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

func checkExtensionValue(name string, val json.RawMessage) error {
	t := bytes.TrimSpace(val)
	if len(t) == 0 {
		return invalid(schemas.CodeInvalidEvent, "extension %q has no value", name)
	}
	switch t[0] {
	case '"':
		if string(t) == `""` {
			// Binary mode cannot carry it either: an empty ce- header is refused.
			return invalid(schemas.CodeInvalidEvent, "extension %q is empty; omit it instead of sending it empty", name)
		}
		return nil
	case 't', 'f':
		return nil
	case '{', '[':
		return invalid(schemas.CodeInvalidEvent, "extension %q must be a string, integer or boolean", name)
	case 'n':
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(t, &n); err != nil {
		return invalid(schemas.CodeInvalidEvent, "extension %q must be a string, integer or boolean", name)
	}
	if _, err := n.Int64(); err != nil {
		return invalid(schemas.CodeInvalidEvent, "extension %q must be an integer, not %s", name, n)
	}
	return nil
}
