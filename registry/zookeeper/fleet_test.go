package zookeeper

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A large fleet points its synapses at observers: non-voting servers that
// serve reads and watches without slowing the quorum's writes. A client
// given only an observer's address must see registrations written through
// a voter, and changes to them.
func TestObserverOnlyClientSeesChanges(t *testing.T) {
	zks := testserver.StartZKEnsembleWithObservers(t, 3, 1)
	observer := zks.Nodes[3]
	if m, err := observer.Mode(); err != nil || m != "observer" {
		t.Fatalf("node 4 is %q (%v), want an observer", m, err)
	}
	writer := newClient(t, zks.Servers()[:3])
	reader := newClient(t, []string{observer.Addr})
	w := startWatch(t, reader, "/services/web")

	ctx := context.Background()
	r1, err := writer.Register(ctx, "/services/web", inst("10.0.0.1", 80, "a"))
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a through the observer", has("a"))
	if _, err := writer.Register(ctx, "/services/web", inst("10.0.0.2", 80, "b")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a and b through the observer", hasLen(2))
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "b alone through the observer", hasLen(1))
}

// After a reconnect every watch of a client relists, and a whole fleet
// reconnects together. The relists of one client must be spread over
// relistSpread (jitter) and never more than relistConcurrency at once;
// a change made while the client was cut off still arrives.
func TestRelistsAfterReconnectAreSpreadAndBounded(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	writer := newClient(t, zks.Servers())
	const dirs = 40
	for i := range dirs {
		dir := fmt.Sprintf("/fleet/svc%02d", i)
		if err := writer.ensurePath(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.conn.Create(dir+"/a", mustEncode(t, inst("10.0.0.1", 80, "a")), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		spread time.Duration
	}{
		{"no jitter: the cap alone", 0},
		{"jitter", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(s time.Duration) { relistSpread = s }(relistSpread)
			relistSpread = tc.spread
			proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
			reader := newClient(t, []string{proxy.Addr})
			var mu sync.Mutex
			inflight, most := 0, 0
			var starts []time.Time
			reader.relistHook = func(d int) {
				mu.Lock()
				defer mu.Unlock()
				inflight += d
				most = max(most, inflight)
				if d > 0 {
					starts = append(starts, time.Now())
				}
			}
			var ws []*registrytest.Watcher
			for i := range dirs {
				w := startWatch(t, reader, fmt.Sprintf("/fleet/svc%02d", i))
				w.WaitFor(t, 10*time.Second, "the first set", has("a"))
				ws = append(ws, w)
			}

			proxy.Cut()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if ok, _, _ := reader.session(); !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the client never noticed the cut")
				}
			}
			name := "b-" + fmt.Sprint(tc.spread)
			if _, err := writer.conn.Create("/fleet/svc07/"+name, mustEncode(t, inst("10.0.0.2", 80, name)), 0, zk.WorldACL(zk.PermAll)); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			starts = nil // relists of a connection attempt while cut off (if any) do not count
			mu.Unlock()
			proxy.Restore()
			ws[7].WaitFor(t, 10*time.Second, "the change made while cut off", has(name))
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				mu.Lock()
				n := len(starts)
				mu.Unlock()
				if n >= dirs {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d watches relisted after the reconnect", n, dirs)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if most > relistConcurrency {
				t.Errorf("%d relists ran at once; the cap is %d", most, relistConcurrency)
			}
			if spread := starts[len(starts)-1].Sub(starts[0]); tc.spread > 0 && spread < tc.spread/4 {
				t.Errorf("the %d relists started within %v of each other; want them spread over %v", len(starts), spread, tc.spread)
			}
			t.Logf("%d relists, at most %d at once, started over %v (first 8 after %v, last at %v)", len(starts), most, starts[len(starts)-1].Sub(starts[0]), starts[min(7, len(starts)-1)].Sub(starts[0]), starts[len(starts)-1].Sub(starts[0]))
		})
	}
}

func mustEncode(t *testing.T, in registry.Instance) []byte {
	t.Helper()
	data, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A rolling restart of part of a large service costs each watcher at most
// two reads per change (a list, and a read of the new record), never a
// re-read of the service (airbnb/synapse #290: 7000 reads for one deploy).
func TestDeployWaveReadsPerChange(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	writer := newClient(t, zks.Servers())
	reader := newClient(t, zks.Servers())
	const size, wave = 200, 20
	if err := writer.ensurePath("/wave"); err != nil {
		t.Fatal(err)
	}
	for i := range size {
		name := fmt.Sprintf("i%03d", i)
		if _, err := writer.conn.Create("/wave/"+name, mustEncode(t, inst("10.0.0.1", 1000+i, name)), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	w := startWatch(t, reader, "/wave")
	w.WaitFor(t, 10*time.Second, "the whole service", hasLen(size))
	reads := func() float64 {
		return testutil.ToFloat64(reader.m.Reads.WithLabelValues(backendName, "children")) +
			testutil.ToFloat64(reader.m.Reads.WithLabelValues(backendName, "get")) +
			testutil.ToFloat64(reader.m.Reads.WithLabelValues(backendName, "exists"))
	}
	before := reads()
	for i := range wave {
		old, repl := fmt.Sprintf("i%03d", i), fmt.Sprintf("r%03d", i)
		if err := writer.conn.Delete("/wave/"+old, -1); err != nil {
			t.Fatal(err)
		}
		w.WaitFor(t, 10*time.Second, old+" gone", hasLen(size-1))
		if _, err := writer.conn.Create("/wave/"+repl, mustEncode(t, inst("10.0.0.2", 1000+i, repl)), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		w.WaitFor(t, 10*time.Second, repl+" in", has(repl))
	}
	if per := (reads() - before) / (2 * wave); per > 2 {
		t.Errorf("%.2f reads per change over a wave of %d changes in a service of %d, want ≤ 2", per, 2*wave, size)
	} else {
		t.Logf("%.2f reads per change", per)
	}
}
