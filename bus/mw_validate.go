package bus

import (
	"context"
	"mime"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/schemas"
)

// isAgentSource reports whether e's source is schemas.AgentSource(agent),
// without rendering the source URL.
func isAgentSource(e *event.Event, agent string) bool {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		return e.Source() == schemas.AgentSource(agent)
	}
	u := ec.Source.URL
	if u.Scheme != "" || u.Opaque != "" || u.User != nil || u.Host != "" || u.RawPath != "" || u.ForceQuery || u.RawQuery != "" || u.Fragment != "" || u.RawFragment != "" || u.OmitHost {
		return e.Source() == schemas.AgentSource(agent)
	}
	p, ok := strings.CutPrefix(u.Path, "/agents/")
	return ok && p == agent
}

// Validate rejects a request before its handler when the message was not a
// CloudEvent, its source is not the agent the subject proves, its type is
// not the operation's request type, its data is not JSON, or the data fails
// the type's JSON Schema.
func Validate(v *schemas.Validator) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			if req.decodeErr != nil {
				return nil, req.decodeErr
			}
			e := req.Event
			if !isAgentSource(e, req.Agent) {
				return nil, Errorf(schemas.CodeSourceMismatch, "source %q does not match the agent of subject %s; use source %q", e.Source(), req.Subject, schemas.AgentSource(req.Agent))
			}
			if e.Type() != req.Op.RequestType {
				return nil, Errorf(schemas.CodeUnknownType, "%s accepts events of type %q, not %q", req.Subject, req.Op.RequestType, e.Type())
			}
			if ct := e.DataContentType(); ct != "" && ct != event.ApplicationJSON {
				mt, _, err := mime.ParseMediaType(ct)
				if err != nil || !(mt == event.ApplicationJSON || strings.HasSuffix(mt, "+json")) {
					return nil, Errorf(schemas.CodeUnsupportedContent, "datacontenttype %q is not accepted; send application/json", ct)
				}
			}
			if err := v.Validate(e.Type(), e.Data()); err != nil {
				return nil, Errorf(schemas.CodeSchemaViolation, "%s (type %s)", err.Error(), e.Type())
			}
			return next.ServeEvent(ctx, req)
		})
	}
}
