// Package handlers holds agentauth's edges: the NATS endpoints and HTTP
// routes that decode a request, authenticate it, call a domain service and
// encode the reply. They are thin; outcomes of errors are decided in bus.
package handlers

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/schemas"
)

// SysInfo answers sys.info: version, instance, the capabilities enabled on
// this instance, and the server time.
type SysInfo struct {
	Version      string
	Instance     string
	Capabilities schemas.Capabilities
	Now          func() time.Time
}

// ServeEvent implements bus.Handler.
func (h *SysInfo) ServeEvent(_ context.Context, req *bus.Request) (*event.Event, error) {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	return bus.Reply(req, &schemas.SysInfo{
		Service:      schemas.ServiceName,
		Version:      h.Version,
		Instance:     h.Instance,
		Agent:        req.Agent,
		ServerTime:   now().UTC(),
		Capabilities: h.Capabilities,
	})
}
