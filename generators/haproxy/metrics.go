package haproxy

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the HAProxy generator's metrics.
type Metrics struct {
	RuntimeOps          *prometheus.CounterVec // op, result (ok, error, pending)
	RuntimeBatchSeconds prometheus.Histogram
	Reloads             *prometheus.CounterVec // reason
	ReloadFailures      prometheus.Counter
	ReloadsDeferred     prometheus.Counter
	ReloadSeconds       prometheus.Histogram
	ConfigWrites        prometheus.Counter
	ValidationFailures  prometheus.Counter
	Restarts            prometheus.Counter
	Quarantined         *prometheus.GaugeVec   // service
	Quarantines         *prometheus.CounterVec // service
	Resolutions         *prometheus.CounterVec // result (ok, changed, error)
	ServerIDsRefused    *prometheus.CounterVec // reason (taken, out_of_range)
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RuntimeOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_haproxy_runtime_ops_total", Help: "Runtime API commands, by operation and result (ok, error, pending).",
		}, []string{"op", "result"}),
		RuntimeBatchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "synapse_haproxy_runtime_batch_seconds", Help: "Time to send one batch of runtime commands and read every reply.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_haproxy_reloads_total", Help: "HAProxy reloads, by reason.",
		}, []string{"reason"}),
		ReloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synapse_haproxy_reload_failures_total", Help: "Reloads that failed or were not confirmed.",
		}),
		ReloadsDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synapse_haproxy_reloads_deferred_total", Help: "Reloads postponed by reload_min_interval (changes merged into the next).",
		}),
		ReloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "synapse_haproxy_reload_seconds", Help: "Time from the reload request to the new worker answering.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		ConfigWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synapse_haproxy_config_writes_total", Help: "haproxy.cfg files written (only when the content changed).",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synapse_haproxy_restarts_total", Help: "Times a managed HAProxy was found gone and started again.",
		}),
		ValidationFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "synapse_haproxy_validation_failures_total", Help: "Rendered configs rejected by haproxy -c (the previous file was kept).",
		}),
		Quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "synapse_haproxy_servers_quarantined", Help: "Servers set aside because HAProxy refused them or their host name does not resolve, by service.",
		}, []string{"service"}),
		Quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_haproxy_quarantines_total", Help: "Servers put in quarantine, by service.",
		}, []string{"service"}),
		Resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_haproxy_host_resolutions_total", Help: "Host name lookups of backends, by result (ok, changed, error).",
		}, []string{"result"}),
		ServerIDsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_haproxy_server_ids_refused_total", Help: "Records whose haproxy_server_id (or `id` option) was not given to their server, by reason (taken: an older record has it; out_of_range: outside 1..max_server_id); the server got an id of its own.",
		}, []string{"reason"}),
	}
	for _, r := range ReloadReasons {
		m.Reloads.WithLabelValues(string(r))
	}
	for _, r := range []string{idTaken, idOutOfRange} {
		m.ServerIDsRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "changed", "error"} {
		m.Resolutions.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.RuntimeOps, m.RuntimeBatchSeconds, m.Reloads, m.ReloadFailures, m.ReloadsDeferred, m.ReloadSeconds, m.ConfigWrites, m.ValidationFailures, m.Restarts,
			m.Quarantined, m.Quarantines, m.Resolutions, m.ServerIDsRefused)
	}
	return m
}
