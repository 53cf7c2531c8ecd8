package etcd

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A large fleet puts etcd's grpc-proxy between its synapses and the
// cluster: the proxy holds one watch per key range on the cluster and fans
// its events out. A client given only the proxy's address must see
// registrations written to the cluster, and changes to them.
func TestGRPCProxyOnlyClientSeesChanges(t *testing.T) {
	cl := testserver.StartEtcdCluster(t, 3)
	proxy := testserver.StartEtcdGRPCProxy(t, cl.Endpoints())
	writer := newClient(t, cl.Members[0].ClientURL)
	reader := newClient(t, proxy.Addr)
	w := registrytest.StartWatch(t, reader, "/services/web")

	ctx := context.Background()
	r1, err := writer.Register(ctx, "/services/web", registrytest.Inst("10.0.0.1", 80, "a"))
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a through the proxy", registrytest.Has("a"))
	if _, err := writer.Register(ctx, "/services/web", registrytest.Inst("10.0.0.2", 80, "b")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a and b through the proxy", registrytest.HasLen(2))
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "b alone through the proxy", registrytest.HasLen(1))

	// The pin's progress monitor must find the proxy answering: a proxy
	// taken for a stalled member would be left, and the watches moved,
	// every second.
	probes := func() float64 { return testutil.ToFloat64(reader.m.Reads.WithLabelValues(backendName, "probe")) }
	registrytest.Eventually(t, 10*time.Second, "the monitor probing the proxy with reads", func() bool { return probes() > 0 })
	before, start := probes(), time.Now()
	w.Quiet(t, 3*readProbeEvery, "no change was made")
	if n := testutil.ToFloat64(reader.m.Errors.WithLabelValues(backendName, "member_stalled")); n != 0 {
		t.Fatalf("the proxy was left %v times as a stalled member", n)
	}
	// Each probe is a read the proxy forwards to the cluster: at fleet
	// scale their period is the cluster's load (SCALING.md).
	elapsed := time.Since(start)
	if n, most := probes()-before, float64(elapsed/readProbeEvery)+1; n > most {
		t.Errorf("%v read probes in %v, want at most %v (one per %v)", n, elapsed, most, readProbeEvery)
	}
}
