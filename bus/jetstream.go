package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/schemas"
)

// StreamOptions configure the streams agentauth owns.
type StreamOptions struct {
	Replicas     int           // 1 embedded; 3 on a cluster
	AuditMaxAge  time.Duration // 0 keeps audit events forever
	EventsMaxAge time.Duration // how long an agent's feed keeps undelivered events
}

// StreamConfigs returns the configuration of every agentauth stream.
func StreamConfigs(o StreamOptions) []jetstream.StreamConfig {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	return []jetstream.StreamConfig{
		{
			Name:        schemas.StreamAudit,
			Description: "agentauth audit events: append-only, replay with `agentauth replay`",
			Subjects:    []string{schemas.SubjectRoot + ".audit.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      o.AuditMaxAge,
			Replicas:    o.Replicas,
			Duplicates:  2 * time.Minute,
			DenyDelete:  true,
			DenyPurge:   true,
			AllowDirect: true,
		},
		{
			Name:        schemas.StreamEvents,
			Description: "agentauth per-agent durable event feeds (agentauth.events.<agent>.>)",
			Subjects:    []string{schemas.SubjectRoot + ".events.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      o.EventsMaxAge,
			Replicas:    o.Replicas,
			Duplicates:  2 * time.Minute,
			AllowDirect: true,
		},
		{
			Name:        schemas.StreamNotify,
			Description: "agentauth approval notifications per person (agentauth.notify.<userkey>.>): approval apps that were offline catch up",
			Subjects:    []string{schemas.SubjectRoot + ".notify.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      o.EventsMaxAge,
			Replicas:    o.Replicas,
			Duplicates:  2 * time.Minute,
			AllowDirect: true,
		},
	}
}

// EnsureStreams creates or updates every agentauth stream; running it
// again with the same options changes nothing.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range StreamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// Publisher publishes CloudEvents to JetStream and waits for the stream's
// acknowledgement: once Publish returns nil the event is stored.
type Publisher struct {
	js      jetstream.JetStream
	metrics *Metrics
}

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream, m *Metrics) *Publisher {
	return &Publisher{js: js, metrics: m}
}

// Publish stores e on subject. The event id is the Nats-Msg-Id, so a retry
// of the same event within the stream's duplicate window is stored once.
func (p *Publisher) Publish(ctx context.Context, subject string, e *event.Event) (*jetstream.PubAck, error) {
	h, body, err := Encode(e)
	if err != nil {
		return nil, fmt.Errorf("bus: encode %s: %w", e.Type(), err)
	}
	h[HeaderMsgID] = []string{e.ID()}
	ack, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: body})
	result, stream := "ok", ""
	if err != nil {
		result = "error"
	} else {
		stream = ack.Stream
		if ack.Duplicate {
			result = "duplicate"
		}
	}
	if p.metrics != nil {
		p.metrics.Published.WithLabelValues(stream, result).Inc()
	}
	if err != nil {
		return nil, fmt.Errorf("bus: publish %s: %w", subject, err)
	}
	return ack, nil
}

// ConsumerOptions configure a durable consumer.
type ConsumerOptions struct {
	Stream     string
	Durable    string
	Filter     []string
	MaxDeliver int             // default 10
	Backoff    []time.Duration // redelivery delays after a Nak; default 1s, 5s, 30s
	AckWait    time.Duration   // default 30s
}

// Delivery is one JetStream message as a consumer handler sees it.
type Delivery struct {
	Event      *event.Event
	Subject    string
	Sequence   uint64
	NumDeliver uint64
}

// ConsumerHandler handles one delivery; its error decides Ack, Nak or Term
// through the error table.
type ConsumerHandler func(ctx context.Context, d *Delivery) error

// Consume runs a durable consumer with explicit acks until ctx ends. A
// message that is not a valid CloudEvent is terminated (it can never
// succeed); handler errors go through Classify: Ack, Nak with the backoff
// schedule, or Term.
func Consume(ctx context.Context, js jetstream.JetStream, o ConsumerOptions, m *Metrics, log *slog.Logger, h ConsumerHandler) (jetstream.ConsumeContext, error) {
	if o.MaxDeliver == 0 {
		o.MaxDeliver = 10
	}
	if len(o.Backoff) == 0 {
		o.Backoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	}
	if o.AckWait == 0 {
		o.AckWait = 30 * time.Second
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        o.Durable,
		FilterSubjects: o.Filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        o.AckWait,
		MaxDeliver:     o.MaxDeliver,
	}
	if len(o.Filter) == 1 {
		// One filter goes in the API subject, where NATS permissions can
		// see it ($JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>).
		cfg.FilterSubject, cfg.FilterSubjects = o.Filter[0], nil
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, o.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", o.Durable, o.Stream, err)
	}
	count := func(a Action) {
		if m != nil {
			m.Consumed.WithLabelValues(o.Durable, a.String()).Inc()
		}
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		meta, _ := msg.Metadata()
		e, err := Decode(nats.Header(msg.Headers()), msg.Data())
		if err != nil {
			log.Warn("terminating a message that is not a CloudEvent", "consumer", o.Durable, "subject", msg.Subject(), "error", err)
			_ = msg.Term()
			count(Term)
			return
		}
		d := &Delivery{Event: e, Subject: msg.Subject()}
		if meta != nil {
			d.Sequence, d.NumDeliver = meta.Sequence.Stream, meta.NumDelivered
		}
		err = consumeOne(ctx, h, d, o.Durable, log)
		if err == nil {
			_ = msg.Ack()
			count(Ack)
			return
		}
		f := Classify(err)
		switch f.Action {
		case Ack:
			_ = msg.Ack()
		case Term:
			log.Warn("message terminated", "consumer", o.Durable, "subject", msg.Subject(), "code", f.Code, "error", err)
			_ = msg.Term()
		default:
			delay := f.RetryAfter
			if delay == 0 {
				i := int(d.NumDeliver) - 1
				if i < 0 {
					i = 0
				}
				if i >= len(o.Backoff) {
					i = len(o.Backoff) - 1
				}
				delay = o.Backoff[i]
			}
			log.Warn("message will be redelivered", "consumer", o.Durable, "subject", msg.Subject(), "code", f.Code, "delay", delay, "error", err)
			_ = msg.NakWithDelay(delay)
		}
		count(f.Action)
	})
	if err != nil {
		return nil, fmt.Errorf("bus: consume %s on %s: %w", o.Durable, o.Stream, err)
	}
	context.AfterFunc(ctx, cc.Stop)
	return cc, nil
}

// consumeOne runs h, turning a panic into an internal error (redelivered
// like any other) so that one bad message cannot end the process.
func consumeOne(ctx context.Context, h ConsumerHandler, d *Delivery, durable string, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("consumer handler panic", "consumer", durable, "subject", d.Subject, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic in consumer %s: %v", durable, p)
		}
	}()
	return h(ctx, d)
}

// casConflict reports whether a KV write lost a compare-and-set: the key
// exists (Create) or moved on (Update, Delete with a revision). nats.go
// reports it as ErrKeyExists or ErrKeyRevisionMismatch depending on the
// call and on whether the key holds a delete marker, and replicated
// buckets use another API error code than R1 ones: check both sentinels.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
