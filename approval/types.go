package approval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/agentauth/agentauth/schemas"
)

// TypeRegistry knows the authorization-details types (RFC 9396) agents may
// ask people to approve, each with the JSON Schema its details must
// satisfy. Details of any other type are refused. It is read only once
// built and safe for concurrent use; a nil registry knows no type.
type TypeRegistry struct {
	byType map[string]*jsonschema.Schema
}

// NewTypeRegistry compiles one JSON Schema per type name.
func NewTypeRegistry(types map[string][]byte) (*TypeRegistry, error) {
	r := &TypeRegistry{byType: make(map[string]*jsonschema.Schema, len(types))}
	for name, raw := range types {
		if name == "" || strings.TrimSpace(name) != name {
			return nil, fmt.Errorf("authorization details type %q: the name must be non-empty without surrounding spaces", name)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("authorization details type %q: schema: %w", name, err)
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		url := "mem:///authorization_details/" + name + ".json"
		if err := c.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("authorization details type %q: schema: %w", name, err)
		}
		sch, err := c.Compile(url)
		if err != nil {
			return nil, fmt.Errorf("authorization details type %q: schema: %w", name, err)
		}
		r.byType[name] = sch
	}
	return r, nil
}

// DefaultTypes returns the built-in types (a fresh map, so that callers
// can add their own before NewTypeRegistry): "purchase", an item bought
// for an amount in a currency, optionally a quantity and a merchant. Its schema
// allows no other fields, so nothing reaches the token that an approval
// app would not show.
func DefaultTypes() map[string][]byte {
	return map[string][]byte{"purchase": []byte(purchaseSchema)}
}

const purchaseSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "purchase",
  "type": "object",
  "required": ["type", "item", "amount", "currency"],
  "properties": {
    "type": {"const": "purchase"},
    "item": {"type": "string", "minLength": 1, "maxLength": 200},
    "quantity": {"type": "integer", "minimum": 1},
    "amount": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "merchant": {"type": "string", "minLength": 1, "maxLength": 200}
  },
  "additionalProperties": false
}`

// Types lists the registered type names, sorted.
func (r *TypeRegistry) Types() []string {
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.byType))
	for t := range r.byType {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Check validates authorization details and returns them in canonical
// form (see canonical): the exact bytes that are stored, shown to the
// person and put in the token.
// nil means none; an empty (non-nil) list, a detail that is not one JSON
// object, has duplicate member names, has no string "type", names an
// unregistered type or fails its type's schema is refused with a
// schema_violation *Error naming the detail.
func (r *TypeRegistry) Check(details []json.RawMessage) ([]json.RawMessage, error) {
	if details == nil {
		return nil, nil
	}
	if len(details) == 0 {
		return nil, errorf(schemas.CodeInvalidAuthorizationDetails, "authorization_details is empty: omit it or give at least one object with a type")
	}
	out := make([]json.RawMessage, len(details))
	for i, d := range details {
		c, err := r.check(d)
		if err != nil {
			return nil, errorf(schemas.CodeInvalidAuthorizationDetails, "authorization_details[%d]: %v", i, err)
		}
		out[i] = c
	}
	return out, nil
}

func (r *TypeRegistry) check(d json.RawMessage) (json.RawMessage, error) {
	if err := strictObject(d); err != nil {
		return nil, err
	}
	var head struct {
		Type any `json:"type"`
	}
	if err := json.Unmarshal(d, &head); err != nil {
		return nil, err
	}
	typ, ok := head.Type.(string)
	if !ok || typ == "" {
		return nil, errors.New(`each detail needs a "type" string`)
	}
	var sch *jsonschema.Schema
	if r != nil {
		sch = r.byType[typ]
	}
	if sch == nil {
		known := "none"
		if t := r.Types(); len(t) > 0 {
			known = strings.Join(t, ", ")
		}
		return nil, fmt.Errorf("unknown type %q (registered types: %s)", typ, known)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(d))
	if err != nil {
		return nil, err
	}
	if err := sch.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("type %q: %s", typ, schemas.DescribeViolation(ve))
		}
		return nil, fmt.Errorf("type %q: %w", typ, err)
	}
	return canonical(d)
}

// canonical re-encodes a detail as the token signer does (go-jose
// normalizes claims through a map): members sorted by name, no
// insignificant space, numbers exactly as written, strings re-escaped. So
// the stored, shown and signed bytes are the same.
func canonical(d []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(d))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// strictObject checks that b is exactly one JSON object in which no object
// repeats a member name: parsers disagree on which duplicate wins, and
// what the person saw must be what the token says.
func strictObject(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	if t != json.Delim('{') {
		return errors.New("each detail must be a JSON object")
	}
	if err := walkObject(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("each detail must be exactly one JSON object")
	}
	return nil
}

// walkObject reads the rest of an object whose '{' was read.
func walkObject(dec *json.Decoder) error {
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return fmt.Errorf("not valid JSON: %v", err)
		}
		name := k.(string)
		if seen[name] {
			return fmt.Errorf("member %q appears twice", name)
		}
		seen[name] = true
		if err := walkValue(dec); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	if err != nil {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	return nil
}

func walkValue(dec *json.Decoder) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not valid JSON: %v", err)
	}
	switch t {
	case json.Delim('{'):
		return walkObject(dec)
	case json.Delim('['):
		for dec.More() {
			if err := walkValue(dec); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("not valid JSON: %v", err)
		}
	}
	return nil
}
