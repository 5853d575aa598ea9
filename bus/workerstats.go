package bus

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// workerStats count the requests of one endpoint that were answered on a
// worker, after micro's callback had returned: micro counted each such
// request when it was handed over, but neither its error nor its
// processing time. `nats micro stats` shows them as the endpoint's data,
// under "workers", with micro's own field names.
type workerStats struct {
	mu sync.Mutex
	s  WorkerStats
}

// WorkerStats is the "workers" object in an endpoint's micro stats data.
type WorkerStats struct {
	NumRequests           int           `json:"num_requests"`
	NumErrors             int           `json:"num_errors"`
	LastError             string        `json:"last_error"`
	ProcessingTime        time.Duration `json:"processing_time"`
	AverageProcessingTime time.Duration `json:"average_processing_time"`
}

// EndpointData is the data of an agentauth endpoint in micro stats.
type EndpointData struct {
	Workers *WorkerStats `json:"workers,omitempty"`
}

// served counts a request a worker finished after d.
func (w *workerStats) served(d time.Duration) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.s.NumRequests++
	w.s.ProcessingTime += d
	w.s.AverageProcessingTime = w.s.ProcessingTime / time.Duration(w.s.NumRequests)
}

// failed counts an error reply, written as micro writes its last error.
func (w *workerStats) failed(status, desc string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.s.NumErrors++
	w.s.LastError = status + ":" + desc
}

func (w *workerStats) snapshot() WorkerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s
}

// endpointData is micro's StatsHandler: the worker stats of endpoints
// whose requests may be answered on workers.
func (s *Server) endpointData(ep *micro.Endpoint) any {
	s.mu.Lock()
	ws := s.workerStats[ep.Name]
	s.mu.Unlock()
	if ws == nil {
		return EndpointData{}
	}
	st := ws.snapshot()
	return EndpointData{Workers: &st}
}
