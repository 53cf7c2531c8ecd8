package registry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the counters every backend keeps. Labels: backend is
// "zookeeper" or "etcd"; path is the watched path or prefix.
type Metrics struct {
	// RecordsSkipped counts records that failed to decode or validate.
	RecordsSkipped *prometheus.CounterVec // backend, path
	// Reads counts registry read requests, by operation (children, get, range).
	Reads *prometheus.CounterVec // backend, op
	// Writes counts registry write requests, by operation.
	Writes *prometheus.CounterVec // backend, op
	// Errors counts failed registry requests, by operation.
	Errors *prometheus.CounterVec // backend, op
	// Reregistrations counts ephemeral records re-created after the session
	// or lease that held them was lost (or the record was deleted by hand).
	Reregistrations *prometheus.CounterVec // backend
	// WatchUpdates counts full sets sent by watchers.
	WatchUpdates *prometheus.CounterVec // backend, path
	// SessionLosses counts ZooKeeper session expiries and etcd lease losses.
	SessionLosses *prometheus.CounterVec // backend
	// ProgressRequests counts the watch progress requests etcd clients
	// send to check that their member is not stalled (one per probe
	// interval per client): a load on the cluster to size at fleet scale.
	ProgressRequests *prometheus.CounterVec // backend
}

// NewMetrics creates the registry metrics and registers them with reg
// (nil: not registered, as tests want).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RecordsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_records_skipped_total",
			Help: "Registry records skipped because they failed to decode or validate.",
		}, []string{"backend", "path"}),
		Reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_reads_total",
			Help: "Registry read requests, by operation.",
		}, []string{"backend", "op"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_writes_total",
			Help: "Registry write requests, by operation.",
		}, []string{"backend", "op"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_errors_total",
			Help: "Failed registry requests, by operation.",
		}, []string{"backend", "op"}),
		Reregistrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_reregistrations_total",
			Help: "Ephemeral records re-created after their session or lease was lost.",
		}, []string{"backend"}),
		WatchUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_watch_updates_total",
			Help: "Full sets delivered by registry watches.",
		}, []string{"backend", "path"}),
		SessionLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_session_losses_total",
			Help: "ZooKeeper session expiries and etcd lease losses.",
		}, []string{"backend"}),
		ProgressRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "syncstack_registry_progress_requests_total",
			Help: "Watch progress requests sent to check that the pinned etcd member is not stalled.",
		}, []string{"backend"}),
	}
	if reg != nil {
		reg.MustRegister(m.RecordsSkipped, m.Reads, m.Writes, m.Errors, m.Reregistrations, m.WatchUpdates, m.SessionLosses, m.ProgressRequests)
	}
	return m
}

var (
	defaultMetricsOnce sync.Once
	defaultMetrics     *Metrics
)

// DefaultMetrics returns the process-wide metrics, registered with the
// default Prometheus registerer on first use.
func DefaultMetrics() *Metrics {
	defaultMetricsOnce.Do(func() { defaultMetrics = NewMetrics(prometheus.DefaultRegisterer) })
	return defaultMetrics
}
