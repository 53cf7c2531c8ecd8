package haproxy

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every reload reason is a series at 0 before the first reload: a grep or a
// dashboard finds synapse_haproxy_reloads_total from the start.
func TestCountersStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	want := "synapse_haproxy_reloads_total{reason=\"structure\"} 0\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP synapse_haproxy_reloads_total HAProxy reloads, by reason.\n# TYPE synapse_haproxy_reloads_total counter\n"+
		"synapse_haproxy_reloads_total{reason=\"backend_missing\"} 0\nsynapse_haproxy_reloads_total{reason=\"cookie\"} 0\nsynapse_haproxy_reloads_total{reason=\"static_balance\"} 0\n"+want),
		"synapse_haproxy_reloads_total"); err != nil {
		t.Error(err)
	}
}
