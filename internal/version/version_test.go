package version

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLdflagsWin(t *testing.T) {
	v, c := Version, Commit
	t.Cleanup(func() { Version, Commit = v, c })
	Version, Commit = "v1.2.3", "abc123"
	if got := Line("nerve"); !strings.HasPrefix(got, "nerve v1.2.3 (commit abc123, go") {
		t.Errorf("Line = %q", got)
	}
}

func TestNeverEmpty(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Commit == "" || i.GoVersion == "" {
		t.Errorf("Get() = %+v", i)
	}
}

func TestBuildInfoGauge(t *testing.T) {
	v := Version
	t.Cleanup(func() { Version = v })
	Version = "v9.9.9"
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector("synapse"))
	if n := testutil.CollectAndCount(reg, "synapse_build_info"); n != 1 {
		t.Fatalf("synapse_build_info: %d series", n)
	}
	mfs, _ := reg.Gather()
	var labels []string
	for _, l := range mfs[0].Metric[0].Label {
		labels = append(labels, l.GetName()+"="+l.GetValue())
	}
	if got := strings.Join(labels, ","); !strings.Contains(got, "version=v9.9.9") || mfs[0].Metric[0].Gauge.GetValue() != 1 {
		t.Errorf("labels %s value %v", got, mfs[0].Metric[0].Gauge.GetValue())
	}
}
