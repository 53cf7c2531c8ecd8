package synapse

import "github.com/prometheus/client_golang/prometheus"

// Metrics are synapse's pipeline metrics; the generators and the registry
// clients add their own.
type Metrics struct {
	WatcherUpdates *prometheus.CounterVec // service
	KeptPrevious   *prometheus.CounterVec // service
	Backends       *prometheus.GaugeVec   // service
	Applies        *prometheus.CounterVec // generator, result
	Convergence    prometheus.Histogram
	OverrideRev    prometheus.Gauge
	Acks           *prometheus.CounterVec // result
	CatalogWrites  *prometheus.CounterVec // result
	CatalogChecks  *prometheus.CounterVec // result
	Panics         *prometheus.CounterVec // service
	Held           *prometheus.GaugeVec   // service
}

// NewMetrics creates synapse's metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		WatcherUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_watcher_updates_total", Help: "Backend sets received from watchers.",
		}, []string{"service"}),
		KeptPrevious: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_kept_previous_backends_total", Help: "Empty sets ignored because use_previous_backends holds.",
		}, []string{"service"}),
		Backends: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "synapse_backends", Help: "Backends of each service in the applied state.",
		}, []string{"service"}),
		Applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_applies_total", Help: "Desired states applied, by generator and result (ok, deferred, error).",
		}, []string{"generator", "result"}),
		Convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "synapse_convergence_seconds", Help: "From a watcher update received to the state that holds it applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		OverrideRev: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "synapse_override_revision", Help: "The override revision of the applied state.",
		}),
		Acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_acks_total", Help: "Override acks written, by result.",
		}, []string{"result"}),
		CatalogWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_catalog_writes_total", Help: "Writes of this synapse's catalog, by result: at start, and whenever a check finds it missing or rewritten.",
		}, []string{"result"}),
		CatalogChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_catalog_checks_total", Help: "Checks that this synapse's catalog is still the one it wrote, by result: ok, lost (missing, or rewritten by another writer: two synapses with one id?), error (could not tell).",
		}, []string{"result"}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "synapse_panics_total", Help: "Times an update would have taken more than the panic threshold's share of a service's backends out at once, and the rest were held.",
		}, []string{"service"}),
		Held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "synapse_panic_held_backends", Help: "Backends the panic threshold keeps in HAProxy now although the registry or an override takes them out.",
		}, []string{"service"}),
	}
	if reg != nil {
		reg.MustRegister(m.WatcherUpdates, m.KeptPrevious, m.Backends, m.Applies, m.Convergence, m.OverrideRev, m.Acks, m.CatalogWrites, m.CatalogChecks, m.Panics, m.Held)
	}
	for _, r := range []string{"ok", "error"} {
		m.Acks.WithLabelValues(r) // exported at 0 before the first ack
		m.CatalogWrites.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "lost", "error"} {
		m.CatalogChecks.WithLabelValues(r)
	}
	return m
}
