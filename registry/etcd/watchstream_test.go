package etcd

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	startWatches(t, ctx, c, "warm", 1) // the pin, its monitor and stream

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
	startWatches(t, ctx, c, "warm", 1)
	watchers0 := serverGauge(t, "etcd_debugging_mvcc_watcher_total")

	// Half of them ended after their first set, half of them at once
	// (their creates still waiting for the ones before them).
	const n = 100
	settled, settledCancel := context.WithCancel(ctx)
	startWatches(t, settled, c, "gone", n)
	var wg sync.WaitGroup
	early, earlyCancel := context.WithCancel(ctx)
	for i := range n {
		wg.Go(func() {
			c.Watch(early, fmt.Sprintf("/early%d", i), registry.DecodeOptions{}, make(chan []registry.Instance, 1))
		})
	}
	kept := startWatches(t, ctx, c, "kept", 10)
	settledCancel()
	earlyCancel()
	wg.Wait()
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
