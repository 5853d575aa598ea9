package bus

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/schemas"
)

// RequestEncoder writes new request events from one source straight to
// binary-mode headers: the same headers and data as
// Encode(NewEventFrom(source, typ, data)), without building the event (an
// agent's every request goes through it). Safe for concurrent use.
type RequestEncoder struct{ source string }

// NewRequestEncoder encodes events from source.
func NewRequestEncoder(source types.URIRef) RequestEncoder {
	return RequestEncoder{source: percentEncode(source.String())}
}

// Encode returns the headers and data of a new event of type typ with
// data encoded as JSON, a fresh id and the current time.
func (e RequestEncoder) Encode(typ string, data any) (nats.Header, []byte, error) {
	return e.EncodeInto(&HeaderBuffer{}, typ, data)
}

// HeaderBuffer holds the header and data EncodeInto writes, for reuse
// once the request has been published (nats.go copies both before
// PublishMsg or RequestMsg returns). The zero value is ready.
type HeaderBuffer struct {
	hb   headerBlock
	body []byte
}

// EncodeInto is Encode writing into buf, replacing what it held: a caller
// that pools buffers sends requests without allocating their header (nor
// their data, when it encodes itself). Header and data are valid until
// buf is used again.
func (e RequestEncoder) EncodeInto(buf *HeaderBuffer, typ string, data any) (nats.Header, []byte, error) {
	var body []byte
	if a, ok := data.(jsonAppender); ok {
		buf.body = a.AppendJSON(buf.body[:0])
		body = buf.body
	} else {
		var err error
		if body, err = json.Marshal(data); err != nil {
			return nil, nil, err
		}
	}
	hb := &buf.hb
	if hb.h == nil {
		hb.h = make(nats.Header, 6)
		hb.vals = make([]string, 6)
	}
	hb.vals = append(hb.vals[:0], schemas.SpecVersion, percentEncode(newID()), e.source, percentEncode(typ),
		hb.formatTime(time.Now()), event.ApplicationJSON)
	for i, k := range [...]string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", HeaderContentType} {
		hb.h[k] = hb.vals[i : i+1 : i+1]
	}
	return hb.h, body, nil
}

// DecodeReply reads a reply of type want into v: ParseReply, the type
// check and DecodeData in one. A reply with only the headers agentauth
// writes, in their usual form, is read without building an event; any
// other reply (an error, a header in another case, an escaped value) goes
// through ParseReply's full checks.
func DecodeReply(msg *nats.Msg, want string, v any) error {
	if !plainReply(msg.Header, want) {
		e, err := ParseReply(msg)
		if err != nil {
			return err
		}
		if e.Type() != want {
			return fmt.Errorf("unexpected reply type %q", e.Type())
		}
		return DecodeData(e, v)
	}
	return decodeJSONData(msg.Data, v)
}

// plainReply reports whether h holds exactly the attributes a reply of
// type want carries, each once and in lower case, with values that need
// no decoding and that decodeBinary would accept.
func plainReply(h nats.Header, want string) bool {
	var id, source, typ, spec, ct bool
	for k, vs := range h {
		if len(vs) != 1 {
			return false
		}
		v := vs[0]
		switch k {
		case "ce-specversion":
			spec = v == schemas.SpecVersion
		case "ce-type":
			typ = v == want && plainValue(v)
		case "ce-id":
			id = plainValue(v)
		case "ce-source":
			_, ok := parseSource(v)
			source = ok && plainValue(v)
		case "ce-time":
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				return false
			}
		case "ce-traceparent":
			if !plainValue(v) {
				return false
			}
		case HeaderContentType:
			ct = v == event.ApplicationJSON
		default: // Status, micro's error headers, anything else
			return false
		}
	}
	return id && source && typ && spec && ct && want != schemas.ErrorType
}

// plainValue: non-empty printable ASCII without spaces or a
// percent-escape (what percentDecode passes through unchanged).
func plainValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '%' || c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
