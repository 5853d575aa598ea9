package bus

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentauth/agentauth/schemas"
)

// metricValue reads one counter, gauge or histogram sample count.
// (prometheus/testutil is not usable here: it needs a module go.sum lacks.)
func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("metric %v has no counter, gauge or histogram", &m)
	return 0
}

func TestInstrument(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	var inFlight float64
	outcomes := []error{
		nil,
		nil,
		Errorf(schemas.CodeSchemaViolation, "bad"),
		&DecodeError{Code: schemas.CodeInvalidEvent, Reason: "no ce-id"},
		errors.New("disk full"),
		nil,
	}
	i := 0
	h := Instrument(m)(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
		inFlight = metricValue(t, m.InFlight)
		err := outcomes[i]
		i++
		if err != nil {
			return nil, err
		}
		return NewEvent(schemas.TypeSysInfoReply, struct{}{})
	}))
	for range outcomes {
		_, _ = h.ServeEvent(t.Context(), request(sysInfoEvent(t)))
		if inFlight != 1 {
			t.Errorf("in flight during the request: got %v, want 1", inFlight)
		}
	}

	op := schemas.OpSysInfo.Endpoint()
	for _, tc := range []struct {
		code string
		want float64
	}{
		{"ok", 3},
		{string(schemas.CodeSchemaViolation), 1},
		{string(schemas.CodeInvalidEvent), 1},
		{string(schemas.CodeInternal), 1},
		{string(schemas.CodeTimeout), 0},
	} {
		t.Run(tc.code, func(t *testing.T) {
			if got := metricValue(t, m.Requests.WithLabelValues(op, tc.code)); got != tc.want {
				t.Errorf("agentauth_requests_total{operation=%q,code=%q}: got %v, want %v", op, tc.code, got, tc.want)
			}
		})
	}
	if got := metricValue(t, m.InFlight); got != 0 {
		t.Errorf("in flight after the requests: got %v, want 0", got)
	}
	if got, want := metricValue(t, m.Duration.WithLabelValues(op).(prometheus.Histogram)), float64(len(outcomes)); got != want {
		t.Errorf("duration observations: got %v, want %v", got, want)
	}
}

func TestInstrumentPassesThrough(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	next, want := replyWith(t)
	reply, err := Instrument(m)(next).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if err != nil || reply != want {
		t.Errorf("got %v, %v; want the handler's reply", reply, err)
	}
	wantErr := Errorf(schemas.CodeForbidden, "no")
	_, err = Instrument(m)(HandlerFunc(func(context.Context, *Request) (*event.Event, error) {
		return nil, wantErr
	})).ServeEvent(t.Context(), request(sysInfoEvent(t)))
	if !errors.Is(err, wantErr) {
		t.Errorf("got %v, want the handler's error", err)
	}
}

func TestNewMetricsRegisters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Requests.WithLabelValues("sys-info", "ok").Inc()
	m.Duration.WithLabelValues("sys-info").Observe(0.001)
	m.Published.WithLabelValues("s", "ok").Inc()
	m.Consumed.WithLabelValues("c", "ack").Inc()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range fams {
		got[f.GetName()] = true
	}
	for _, name := range []string{
		"agentauth_requests_total",
		"agentauth_request_duration_seconds",
		"agentauth_requests_in_flight",
		"agentauth_audit_publish_failures_total",
		"agentauth_jetstream_published_total",
		"agentauth_jetstream_consumed_total",
	} {
		if !got[name] {
			t.Errorf("registry has no %s", name)
		}
	}
}
