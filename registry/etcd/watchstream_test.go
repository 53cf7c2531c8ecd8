package etcd

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// serverGauge reads one of the embedded etcd's own gauges (its server
// runs in this process and registers them with the default registry).
func serverGauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("etcd gauge %s not found", name)
	return 0
}

// startWatches starts n watches of /<name><i>, each on a goroutine of its
// own (as synapse runs them), and waits for each one's first set.
func startWatches(t *testing.T, ctx context.Context, c *Client, name string, n int) []chan []registry.Instance {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	outs := make([]chan []registry.Instance, n)
	for i := range outs {
		outs[i] = make(chan []registry.Instance, 1)
		wg.Go(func() { c.Watch(ctx, fmt.Sprintf("/%s%d", name, i), registry.DecodeOptions{}, outs[i]) })
	}
	deadline := time.After(30 * time.Second)
	for i, out := range outs {
		select {
		case <-out:
		case <-deadline:
			t.Fatalf("watch %d did not deliver its first set", i)
		}
	}
	return outs
}

// warmUp starts a watch and waits until the client's probe has its own
// watch on etcd too, so that the server's watcher count moves with the
// watches a test starts alone.
func warmUp(t *testing.T, ctx context.Context, c *Client) {
	t.Helper()
	startWatches(t, ctx, c, "warm", 1)
	// The probe asks for progress only once its watch is created.
	registrytest.Eventually(t, 10*time.Second, "the probe's watch", func() bool {
		return testutil.ToFloat64(c.m.ProgressRequests.WithLabelValues(backendName)) > 0
	})
}

// A synapse watches one prefix per service. Every watch is one watcher on
// etcd, but on the client they share one stream and one reader: a watch
// costs the goroutine its caller runs it on and nothing more. clientv3's
// Watcher kept a goroutine (and channels, a context) per watch as well:
// 1000 goroutines and ~6 MB of a synapse at 1000 services.
func TestWatchesShareOneStreamAndGoroutine(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	warmUp(t, ctx, c) // the pin, its monitor, probe and stream

	const n = 200
	runtime.GC()
	g0, watchers0 := runtime.NumGoroutine(), serverGauge(t, "etcd_debugging_mvcc_watcher_total")
	streams0 := serverGauge(t, "etcd_debugging_mvcc_watch_stream_total")
	startWatches(t, ctx, c, "svc", n)
	// The first set comes from the list; the watch is created after it.
	registrytest.Eventually(t, 10*time.Second, "a watcher on etcd per watch", func() bool {
		return serverGauge(t, "etcd_debugging_mvcc_watcher_total")-watchers0 >= n
	})
	perWatch := float64(runtime.NumGoroutine()-g0) / n
	watchers := serverGauge(t, "etcd_debugging_mvcc_watcher_total") - watchers0
	streams := serverGauge(t, "etcd_debugging_mvcc_watch_stream_total") - streams0
	t.Logf("%d watches: %.2f goroutines per watch in the client, %.0f watchers and %.0f more streams on etcd", n, perWatch, watchers, streams)
	if perWatch > 1.05 {
		t.Errorf("%.2f goroutines per watch, want 1 (the caller's): no goroutine of the client's per watch", perWatch)
	}
	if watchers != n {
		t.Errorf("%.0f watchers on etcd for %d watches", watchers, n)
	}
	if streams != 0 {
		t.Errorf("%.0f more watch streams on etcd for %d more watches on one pin, want 0", streams, n)
	}
}

// A watch whose context ends (a service removed at a reload) is cancelled
// on etcd too, also when it ends while its create is still in flight or
// queued, and the watches around it go on.
func TestEndedWatchesAreCancelledOnTheServer(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	warmUp(t, ctx, c)
	watchers0 := serverGauge(t, "etcd_debugging_mvcc_watcher_total")

	// Half of them ended once created, half of them while their creates
	// were queued behind the first one's, or in flight.
	const n = 100
	settled, settledCancel := context.WithCancel(ctx)
	startWatches(t, settled, c, "gone", n)
	registrytest.Eventually(t, 10*time.Second, "the first ones created", func() bool {
		return serverGauge(t, "etcd_debugging_mvcc_watcher_total")-watchers0 >= n
	})
	base := serverGauge(t, "etcd_debugging_mvcc_watcher_total")
	var wg sync.WaitGroup
	early, earlyCancel := context.WithCancel(ctx)
	for i := range n {
		wg.Go(func() {
			c.Watch(early, fmt.Sprintf("/early%d", i), registry.DecodeOptions{}, make(chan []registry.Instance, 1))
		})
	}
	for deadline := time.Now().Add(10 * time.Second); serverGauge(t, "etcd_debugging_mvcc_watcher_total") < base+1; {
		if time.Now().After(deadline) {
			t.Fatal("no early watch created within 10s")
		}
	}
	earlyCancel() // the first created, the others queued or in flight
	wg.Wait()
	settledCancel()
	kept := startWatches(t, ctx, c, "kept", 10)
	registrytest.Eventually(t, 10*time.Second, "only the kept watches left on etcd", func() bool {
		return serverGauge(t, "etcd_debugging_mvcc_watcher_total")-watchers0 == float64(len(kept))
	})
	// The kept ones still follow their keys.
	admin := newClient(t, srv.Endpoint)
	for i, out := range kept {
		if _, err := admin.cli.Put(ctx, fmt.Sprintf("/kept%d/i1", i), `{"host":"10.0.0.1","port":80,"name":"i1"}`); err != nil {
			t.Fatal(err)
		}
		select {
		case set := <-out:
			if len(set) != 1 {
				t.Fatalf("kept watch %d: %v", i, set)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("kept watch %d saw no change", i)
		}
	}
	// And new watches start on the same stream.
	startWatches(t, ctx, c, "later", 5)
}

// etcd checks a watch stream's auth token when a watch is created on it,
// with the token the stream was opened with; an unused simple token
// expires (--auth-token-ttl, 300 s by default). A service added, or a
// watch listing again, after that was refused on the old stream for as
// long as the pin lasted. The stream is opened anew, with a fresh token,
// and every watch on it resumes there.
func TestWatchAfterTokenExpiryStarts(t *testing.T) {
	srv := testserver.StartEtcdShortTokens(t, 2)
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()
	enableAuth(t, admin, "synapse", "s3cret")
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second, Username: "root", Password: "rootpw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	c := newClient(t, srv.Endpoint, func(cfg *Config) { cfg.Username, cfg.Password = "synapse", "s3cret" })
	a := startWatch(t, c, "/a")
	a.WaitFor(t, 5*time.Second, "empty", hasLen(0))

	// The interval under test: the token's TTL (2 s) and etcd's check of
	// it (every second) pass with nothing using the token.
	time.Sleep(4 * time.Second)

	b := startWatch(t, c, "/b")
	b.WaitFor(t, 5*time.Second, "empty", hasLen(0))
	if _, err := root.Put(ctx, "/b/x", `{"host":"10.0.0.1","port":80,"name":"x"}`); err != nil {
		t.Fatal(err)
	}
	b.WaitFor(t, 10*time.Second, "the record written after the token expired", hasLen(1))
	if _, err := root.Put(ctx, "/a/y", `{"host":"10.0.0.2","port":80,"name":"y"}`); err != nil {
		t.Fatal(err)
	}
	a.WaitFor(t, 10*time.Second, "the older watch, resumed on the new stream", hasLen(1))
	if n := testutil.ToFloat64(c.m.Errors.WithLabelValues(backendName, "watch_token_stale")); n < 1 {
		t.Errorf("no stale-token stream was reopened (%v): the token did not expire, the test proved nothing", n)
	}
}
