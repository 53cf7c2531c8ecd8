package nerve

import "github.com/prometheus/client_golang/prometheus"

// Metrics are nerve's own metrics; the registry backends add theirs
// (syncstack_registry_*), re-registrations after session loss among them.
type Metrics struct {
	CheckResults   *prometheus.CounterVec   // service, check, result
	CheckDuration  *prometheus.HistogramVec // service, check
	Up             *prometheus.GaugeVec     // service
	Registered     *prometheus.GaugeVec     // service
	Maintenance    *prometheus.GaugeVec     // service
	RegistryErrors *prometheus.CounterVec   // service, op
	Pending        *prometheus.GaugeVec     // service, op
	Transitions    *prometheus.CounterVec   // service, to
}

// NewMetrics creates nerve's metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		CheckResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nerve_check_results_total", Help: "Health check results, by service, check and result (ok, fail).",
		}, []string{"service", "check", "result"}),
		CheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nerve_check_duration_seconds", Help: "Health check duration.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"service", "check"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nerve_service_up", Help: "1 when the service is healthy by rise/fall counting.",
		}, []string{"service"}),
		Registered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nerve_service_registered", Help: "1 when the service is registered in the registry.",
		}, []string{"service"}),
		Maintenance: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nerve_service_maintenance", Help: "1 when the service is held out by maintenance.",
		}, []string{"service"}),
		RegistryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nerve_registry_errors_total", Help: "Failed registry operations (register, deregister, update), retried with backoff.",
		}, []string{"service", "op"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nerve_registry_pending", Help: "1 while a change (op: register, deregister, update) waits for the registry to confirm it; retried until it does.",
		}, []string{"service", "op"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nerve_service_transitions_total", Help: "Health transitions by rise/fall, by target state (up, down).",
		}, []string{"service", "to"}),
	}
	if reg != nil {
		reg.MustRegister(m.CheckResults, m.CheckDuration, m.Up, m.Registered, m.Maintenance, m.RegistryErrors, m.Pending, m.Transitions)
	}
	return m
}

func (m *Metrics) forget(service string) {
	for _, v := range []*prometheus.GaugeVec{m.Up, m.Registered, m.Maintenance} {
		v.DeleteLabelValues(service)
	}
	m.Pending.DeletePartialMatch(prometheus.Labels{"service": service})
}
