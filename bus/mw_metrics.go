package bus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentauth/agentauth/internal/blocking"
	"github.com/agentauth/agentauth/schemas"
)

// Metrics are the bus's Prometheus collectors. Register them on the
// registry the HTTP edge serves at /metrics.
type Metrics struct {
	Requests      *prometheus.CounterVec   // by operation and code ("ok" on success)
	Duration      *prometheus.HistogramVec // by operation
	InFlight      prometheus.Gauge
	SlowInline    *prometheus.CounterVec // by operation: see ServerOptions.SlowInline
	ReplyRefused  prometheus.Counter     // requests not answered: their reply subject is not the agent's inbox
	AuditFailures prometheus.Counter
	Published     *prometheus.CounterVec // JetStream publishes by stream and result
	Consumed      *prometheus.CounterVec // JetStream deliveries by consumer and action
}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentauth_requests_total",
			Help: "Requests handled, by operation and outcome code (ok, or the error code).",
		}, []string{"operation", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentauth_request_duration_seconds",
			Help:    "Time from receipt to reply, by operation.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"operation"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentauth_requests_in_flight",
			Help: "Requests being handled now.",
		}),
		SlowInline: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentauth_inline_slow_total",
			Help: "Requests served on a subscription goroutine that took longer than the server's slow-inline bound: their handler waited without blocking.Check, holding up its endpoint.",
		}, []string{"operation"}),
		ReplyRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentauth_reply_refused_total",
			Help: "Requests not answered because their reply subject was not the requesting agent's inbox (an agent trying to have the service write elsewhere).",
		}),
		AuditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentauth_audit_publish_failures_total",
			Help: "Audit events JetStream did not acknowledge.",
		}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentauth_jetstream_published_total",
			Help: "Events published to JetStream, by stream and result.",
		}, []string{"stream", "result"}),
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentauth_jetstream_consumed_total",
			Help: "JetStream deliveries handled, by consumer and action (ack, nak, term).",
		}, []string{"consumer", "action"}),
	}
	reg.MustRegister(m.Requests, m.Duration, m.InFlight, m.SlowInline, m.ReplyRefused, m.AuditFailures, m.Published, m.Consumed)
	return m
}

// Instrument counts each request by outcome code and observes its
// duration. Bad input is counted under its error code.
func Instrument(m *Metrics) Middleware {
	return func(next Handler) Handler {
		// The chain serves one operation; its ok counter and histogram
		// are looked up once.
		var once sync.Once
		var cachedOp schemas.Op
		var cachedOK prometheus.Counter
		var cachedDuration prometheus.Observer
		return HandlerFunc(func(ctx context.Context, req *Request) (*event.Event, error) {
			once.Do(func() {
				cachedOp = req.Op
				cachedOK = m.Requests.WithLabelValues(req.Op.Endpoint(), "ok")
				cachedDuration = m.Duration.WithLabelValues(req.Op.Endpoint())
			})
			okCount, duration := cachedOK, cachedDuration
			if req.Op != cachedOp { // a chain not built by Server.Handle
				okCount, duration = m.Requests.WithLabelValues(req.Op.Endpoint(), "ok"), m.Duration.WithLabelValues(req.Op.Endpoint())
			}
			m.InFlight.Inc()
			reply, err := next.ServeEvent(ctx, req)
			m.InFlight.Dec()
			if errors.Is(err, blocking.ErrWouldBlock) {
				return reply, err // served again where it may wait; counted then
			}
			req.took = time.Since(req.Received)
			duration.Observe(req.took.Seconds())
			if err != nil {
				m.Requests.WithLabelValues(req.Op.Endpoint(), string(Classify(err).Code)).Inc()
			} else {
				okCount.Inc()
			}
			return reply, err
		})
	}
}
