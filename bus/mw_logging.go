package bus

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/agentauth/agentauth/internal/blocking"
)

// Logging logs each request's outcome: successes at debug, rejected input
// at info, internal failures at error (with the cause, which never goes on
// the wire). It logs no payloads.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			reply, err := next.ServeEvent(ctx, req)
			if err == nil {
				if log.Enabled(ctx, slog.LevelDebug) {
					log.LogAttrs(ctx, slog.LevelDebug, "request", slog.String("op", req.Op.Endpoint()), slog.String("agent", req.Agent), slog.String("trace", req.Trace.Traceparent()), slog.Duration("took", time.Since(req.Received)))
				}
				return reply, nil
			}
			if errors.Is(err, blocking.ErrWouldBlock) {
				return reply, err // served again where it may wait; logged then
			}
			f := Classify(err)
			attrs := []slog.Attr{slog.String("op", req.Op.Endpoint()), slog.String("agent", req.Agent), slog.String("code", string(f.Code)), slog.String("trace", req.Trace.Traceparent()), slog.Duration("took", time.Since(req.Received))}
			if req.Event != nil {
				attrs = append(attrs, slog.String("request_id", req.Event.ID()))
			}
			if f.ServerFault() {
				log.LogAttrs(ctx, slog.LevelError, "request failed", append(attrs, slog.String("error", err.Error()))...)
			} else {
				log.LogAttrs(ctx, slog.LevelInfo, "request rejected", append(attrs, slog.String("reason", f.Message))...)
			}
			return reply, err
		})
	}
}
