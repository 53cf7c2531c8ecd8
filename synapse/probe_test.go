package synapse

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// etcd_probe_interval reaches synapse's etcd clients: the rate of their
// watch progress requests (the cluster's load per host) follows it.
func TestEtcdProbeIntervalReachesTheClient(t *testing.T) {
	srv := testserver.StartEtcd(t)
	for _, tc := range []struct {
		name     string
		extra    string
		min, max float64 // progress requests in a 3 s window
	}{
		{"default", "", 6, 11},
		{"1s", "etcd_probe_interval: 1s\n", 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web"}, Extra: tc.extra})
			sent := func() float64 { return testutil.ToFloat64(e.rm.ProgressRequests.WithLabelValues("etcd")) }
			registrytest.Eventually(t, 10*time.Second, "a first progress request", func() bool { return sent() > 0 })
			before := sent()
			window := time.NewTimer(3 * time.Second) // a rate is counted over a window
			<-window.C
			if n := sent() - before; n < tc.min || n > tc.max {
				t.Errorf("%v progress requests in 3s, want %v..%v", n, tc.min, tc.max)
			}
		})
	}
}

func TestEtcdProbeIntervalBounds(t *testing.T) {
	for _, v := range []string{"10ms", "1m"} {
		_, err := loadConfig(t, "s.yaml", guardHead+"etcd_probe_interval: "+v+"\n"+guardService(""))
		if err == nil || !strings.Contains(err.Error(), "etcd_probe_interval") {
			t.Errorf("etcd_probe_interval: %s: %v, want an error naming the key", v, err)
		}
	}
}
