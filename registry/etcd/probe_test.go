package etcd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// probeCounts reads a client's liveness probes: progress requests, and the
// reads that replace them behind an endpoint that answers none (a proxy).
func probeCounts(c *Client) (progress, reads float64) {
	return testutil.ToFloat64(c.m.ProgressRequests.WithLabelValues(backendName)),
		testutil.ToFloat64(c.m.Reads.WithLabelValues(backendName, "probe"))
}

// The progress requests that keep a client off a stalled member come once
// per Config.ProbeInterval: at fleet scale their rate is the cluster's load
// (~0.33 ms of its CPU each, SCALING.md), so the interval is the operator's
// to lengthen. Counted over a 3 s window on a real etcd.
func TestProbeIntervalPacesProgressRequests(t *testing.T) {
	srv := testserver.StartEtcd(t)
	for _, tc := range []struct {
		interval time.Duration
		min, max float64 // progress requests in the window
	}{
		{defaultProbeInterval, 6, 11},
		{time.Second, 1, 4},
	} {
		t.Run(tc.interval.String(), func(t *testing.T) {
			var c *Client
			if tc.interval == defaultProbeInterval {
				c = newClient(t, srv.Endpoint) // the default, unset
			} else {
				c = newClient(t, srv.Endpoint, func(cfg *Config) { cfg.ProbeInterval = tc.interval })
			}
			startWatch(t, c, "/svc").WaitFor(t, 5*time.Second, "empty", hasLen(0))
			registrytest.Eventually(t, 10*time.Second, "a first progress request", func() bool { p, _ := probeCounts(c); return p > 0 })
			before, _ := probeCounts(c)
			window := time.NewTimer(3 * time.Second) // a rate is counted over a window
			<-window.C
			if p, _ := probeCounts(c); p-before < tc.min || p-before > tc.max {
				t.Errorf("%v progress requests in 3s at a %v interval, want %v..%v", p-before, tc.interval, tc.min, tc.max)
			}
			if n := testutil.ToFloat64(c.m.Errors.WithLabelValues(backendName, "member_stalled")); n != 0 {
				t.Errorf("the member was left %v times as stalled", n)
			}
		})
	}
}

// A quiet etcd ≥ 3.5 member (the embedded server is 3.6) answers progress
// requests and is probed with them, not taken for a proxy and probed with
// reads, nor for a stalled member. It answers none on a stream where a
// watch starts ahead of the store's revision, as every watch here does
// (the revision after its list) until the next write: the probe has a
// stream of its own. With the probe on the watches' stream, this client
// fell back to read probes within a second.
func TestQuietMemberIsProbedWithProgressRequests(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	startWatch(t, c, "/svc").WaitFor(t, 5*time.Second, "empty", hasLen(0))
	p0, r0 := probeCounts(c)
	window := time.NewTimer(2 * readProbeEvery) // two periods of the read probe; nothing is written
	<-window.C
	p, r := probeCounts(c)
	if r != r0 || p-p0 < 5 {
		t.Errorf("in %v: %v read probes and %v progress requests, want 0 and at least 5", 2*readProbeEvery, r-r0, p-p0)
	}
	if n := testutil.ToFloat64(c.m.Errors.WithLabelValues(backendName, "member_stalled")); n != 0 {
		t.Errorf("the member was left %v times as stalled", n)
	}
}

// A quiet watch's revision keeps up with the store through progress
// notifications on the watches' stream (one probe in watchProgressEvery
// asks for them there): moved to another member after the store was
// compacted, it resumes from there instead of listing again. With the
// probe alone on its own stream, a quiet watch stayed at its list's
// revision and relisted after a compaction (a relist per quiet service of
// every synapse of the fleet).
func TestQuietWatchKeepsUpWithTheStore(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	w := startWatch(t, c, "/svc")
	w.WaitFor(t, 5*time.Second, "empty", hasLen(0))
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	var rev int64
	for i := range 5 { // elsewhere: the store moves on, the watch hears nothing
		resp, err := raw.Put(context.Background(), fmt.Sprintf("/other/k%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	registrytest.Eventually(t, 10*time.Second, "a progress notification on the watch", func() bool { return c.progressSeen.Load() > 0 })
	if _, err := raw.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	lists := func() float64 { return testutil.ToFloat64(c.m.Reads.WithLabelValues(backendName, "range")) }
	before := lists()
	p, err := c.pinned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.abandon(p, "the test moves the watch")
	if _, err := raw.Put(context.Background(), "/svc/a", `{"host":"10.0.0.1","port":80,"name":"a"}`); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "the record written after the move", hasLen(1))
	if n := lists() - before; n != 0 {
		t.Errorf("%v lists after the move: the watch resumed from a compacted revision", n)
	}
}

// A watch that lasted (longWatch) and then ended without having delivered
// anything — a quiet service's watch at a leader election — resumes after
// the backoff's first step, not after the backoff the elections before it
// built up (up to 5 s for a change made just after the election).
func TestLongQuietWatchEndResetsBackoff(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	decode := func(string, []byte) (registry.Instance, error) { return registry.Instance{}, nil }
	build := func(map[string]entry[registry.Instance], int64) ([]registry.Instance, bool) { return nil, false }
	w := newPrefixWatch(context.Background(), c, "/svc/", decode, nil, build, make(chan []registry.Instance))
	for range 10 {
		w.b.Next() // the elections before: the backoff at its cap
	}
	w.watchStart = time.Now().Add(-2 * longWatch)
	start := time.Now()
	if err := w.watchEnded(&pin{ctx: context.Background()}, false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a watch that lasted %v paused %v before resuming, want the backoff's first step", 2*longWatch, d)
	}
}

func TestProgressWaitsForWatches(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"3.4.23", false}, // Debian 12's: answers at once
		{"3.4.24", true},
		{"3.4.37", true},
		{"3.5.7", false},
		{"3.5.8", true},
		{"v3.5.21", true},
		{"3.6.0-rc.1", true},
		{"3.6.16", true},
		{"3.3.27", false},
		{"2.3.8", false},
		{"4.0.0", true},
		{"", false},
		{"3.5", false},
		{"x.y.z", false},
	} {
		if got := progressWaitsForWatches(tc.version); got != tc.want {
			t.Errorf("progressWaitsForWatches(%q) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

// etcd before 3.4.24 answers a progress request at once with the store's
// revision, ahead of events a watch on the stream has still to receive
// (etcd-io/etcd#15220): a watch that took that revision and then moved to
// another member would resume past them. Debian 12's etcd is 3.4.23: the
// watches' stream gets no progress request there (the probe's own stream
// still does: it only shows the member moves).
func TestOldMemberGetsNoWatchProgressRequests(t *testing.T) {
	cl := testserver.StartEtcdCluster(t, 1)
	c := newClient(t, cl.Endpoints()[0], func(cfg *Config) { cfg.ProbeInterval = 100 * time.Millisecond })
	w := startWatch(t, c, "/svc")
	w.WaitFor(t, 5*time.Second, "empty", hasLen(0))
	probes := func() float64 { return testutil.ToFloat64(c.m.ProgressRequests.WithLabelValues(backendName)) }
	// Three times the probes after which one goes to the watches' stream.
	registrytest.Eventually(t, 10*time.Second, "the probes that would ask the watches' stream three times", func() bool {
		return probes() >= 3*watchProgressEvery
	})
	p, err := c.pinned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.progress.Load(); got != progressUnsafe {
		t.Errorf("the 3.4.23 member's progress answers taken as safe (%d)", got)
	}
	if n := c.progressSeen.Load(); n != 0 {
		t.Errorf("%d progress notifications reached the watch from a 3.4.23 member", n)
	}
}
