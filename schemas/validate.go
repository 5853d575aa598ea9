package schemas

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed json/*.json
var schemaFS embed.FS

//go:embed asyncapi.yaml
var AsyncAPI []byte

// ErrNoSchema is returned by Validate for a type without a schema.
var ErrNoSchema = errors.New("no schema for event type")

// Validator validates event data against the embedded JSON Schemas. It is
// safe for concurrent use.
type Validator struct {
	byType map[string]*jsonschema.Schema
	// empty caches the outcome for an empty object, the data of most
	// requests that take no parameters.
	empty map[string]error

	// valid remembers payloads (by SHA-256 of type and bytes) that passed:
	// agents send the same user token again and again, and parsing a
	// 1 KB token for the schema costs more than hashing it. Only
	// successes are kept; the set is cleared when it reaches validMax.
	mu    sync.Mutex
	valid map[[32]byte]struct{}
}

// validMax bounds the remembered valid payloads.
const validMax = 8192

// cacheMin is the payload size from which remembering pays (hashing is
// cheaper than parsing only for payloads of some size).
const cacheMin = 256

// NewValidator compiles every embedded schema.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names, err := fs.Glob(schemaFS, "json/*.json")
	if err != nil {
		return nil, err
	}
	v := &Validator{byType: make(map[string]*jsonschema.Schema, len(names)), empty: make(map[string]error, len(names))}
	urls := make(map[string]string, len(names))
	// Register every document first, under its $id, so that $refs
	// between them resolve.
	for _, name := range names {
		raw, err := schemaFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		url := "mem:///" + name
		if m, ok := doc.(map[string]any); ok {
			if id, ok := m["$id"].(string); ok && id != "" {
				url = id
			}
		}
		if err := c.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		urls[name] = url
	}
	for _, name := range names {
		sch, err := c.Compile(urls[name])
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		typ := strings.TrimSuffix(strings.TrimPrefix(name, "json/"), ".json")
		v.byType[typ] = sch
		v.empty[typ] = v.validate(sch, []byte("{}"))
	}
	return v, nil
}

// MustValidator is NewValidator for package initialisation and tests.
func MustValidator() *Validator {
	v, err := NewValidator()
	if err != nil {
		panic(err)
	}
	return v
}

// Types lists the event types that have a schema.
func (v *Validator) Types() []string {
	out := make([]string, 0, len(v.byType))
	for t := range v.byType {
		out = append(out, t)
	}
	return out
}

// Schema returns the raw JSON Schema of an event type.
func Schema(typ string) ([]byte, error) {
	return schemaFS.ReadFile("json/" + typ + ".json")
}

// Validate checks data (JSON) against the schema of typ. An empty data is
// validated as {}. The error message names the failing location and is
// meant for a person.
func (v *Validator) Validate(typ string, data []byte) error {
	sch, ok := v.byType[typ]
	if !ok {
		return fmt.Errorf("%w %q", ErrNoSchema, typ)
	}
	if t := bytes.TrimSpace(data); len(t) == 0 || string(t) == "{}" {
		return v.empty[typ]
	}
	if len(data) < cacheMin {
		return v.validate(sch, data)
	}
	h := sha256.New()
	h.Write([]byte(typ))
	h.Write([]byte{0})
	h.Write(data)
	var key [32]byte
	h.Sum(key[:0])
	v.mu.Lock()
	_, hit := v.valid[key]
	v.mu.Unlock()
	if hit {
		return nil
	}
	if err := v.validate(sch, data); err != nil {
		return err
	}
	v.mu.Lock()
	if v.valid == nil || len(v.valid) >= validMax {
		v.valid = make(map[[32]byte]struct{}, 256)
	}
	v.valid[key] = struct{}{}
	v.mu.Unlock()
	return nil
}

func (v *Validator) validate(sch *jsonschema.Schema, data []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("data is not valid JSON: %v", err)
	}
	if err := sch.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return errors.New("data does not match its schema: " + DescribeViolation(ve))
		}
		return err
	}
	return nil
}

var printer = message.NewPrinter(language.English)

// DescribeViolation flattens a JSON Schema validation error into one line
// a person can act on: the deepest causes (at most five), each with its
// JSON pointer.
func DescribeViolation(ve *jsonschema.ValidationError) string {
	var parts []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			parts = append(parts, fmt.Sprintf("at %s: %s", loc, e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(parts) > 5 {
		parts = append(parts[:5], fmt.Sprintf("and %d more", len(parts)-5))
	}
	return strings.Join(parts, "; ")
}
