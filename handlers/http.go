package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPDeps are what the HTTP edge needs.
type HTTPDeps struct {
	// Ready reports whether the service can serve: NATS connected, streams
	// present. A nil error means ready.
	Ready    func(ctx context.Context) error
	Gatherer prometheus.Gatherer
	Registry prometheus.Registerer
	Info     func() any // shown at / as JSON
	// Routes are further routes ("GET /path" patterns), instrumented
	// like the others.
	Routes map[string]http.HandlerFunc
	// Mounts are sub-trees ("/prefix/") served by another handler.
	Mounts map[string]http.Handler
}

// NewHTTP returns the HTTP edge: /healthz (the process is up), /readyz
// (dependencies answer), /metrics (Prometheus) and / (what this is).
func NewHTTP(d HTTPDeps) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentauth_http_requests_total",
		Help: "HTTP requests by route and status code.",
	}, []string{"route", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentauth_http_request_duration_seconds",
		Help:    "HTTP request latency by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	d.Registry.MustRegister(requests, latency)

	mux := http.NewServeMux()
	route := func(pattern, name string, h http.HandlerFunc) {
		mux.Handle(pattern, instrument(name, requests, latency, h))
	}
	route("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	route("GET /readyz", "readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := d.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	metrics := promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{})
	route("GET /metrics", "metrics", metrics.ServeHTTP)
	for pattern, h := range d.Routes {
		_, path, _ := strings.Cut(pattern, " ")
		route(pattern, strings.Trim(path, "/"), h)
	}
	for prefix, h := range d.Mounts {
		mux.Handle(prefix, instrument(strings.Trim(prefix, "/"), requests, latency, h))
	}
	route("GET /{$}", "index", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Info())
	})
	return mux
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush through the
// instrumentation: the approval inbox's server-sent events need it.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func instrument(name string, c *prometheus.CounterVec, h *prometheus.HistogramVec, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		h.WithLabelValues(name).Observe(time.Since(start).Seconds())
		c.WithLabelValues(name, strconv.Itoa(sw.status)).Inc()
	})
}

// htmlHeaders sets the headers of every HTML page of the edge:
// text/html, no caching, no framing (frame-ancestors 'none' and
// X-Frame-Options for older browsers: the pages carry buttons that act),
// forms posting only to this site, no MIME sniffing. A page with a
// stricter policy (the inbox) sets its own Content-Security-Policy after.
func htmlHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
