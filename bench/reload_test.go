package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// BenchmarkReloadPerChange applies membership changes the way Airbnb's
// synapse and go-synapse do, re-render and reload per change, at the same
// scale as BenchmarkConvergence: synapse with do_socket off, with
// go-synapse's spacing (none) and Airbnb's (2s between reloads).
//
// What each mode measures: each change is written once the previous one is
// in HAProxy, so with 2 s spacing every change waits out
// reload_min_interval (the previous reload was just now) and p50 is ~2 s
// plus the reload: it measures the spacing Airbnb's synapse imposes. With
// no spacing (1 ms) p50 is the reload path itself: render, haproxy -c,
// master CLI reload, new worker answering. reload-path-mean-ms is the last
// part alone (synapse's reload histogram), in both modes.
func BenchmarkReloadPerChange(b *testing.B) {
	for _, mode := range []struct {
		name    string
		spacing time.Duration
		changes int
	}{{"go-synapse-style", time.Millisecond, 20}, {"airbnb-style-2s", 2 * time.Second, 6}} {
		b.Run(mode.name, func(b *testing.B) {
			services, per, _ := scale()
			bin := buildBinary(b, "synapse")
			w, hosts := setupRegistry(b, "zookeeper")
			w.(*zkWriter).conn.Create("/bench", nil, 0, zk.WorldACL(zk.PermAll))
			if err := parallel(services*per, func(i int) error {
				s, k := i/per, i%per
				return w.put(nodePath("zookeeper", s, fmt.Sprintf("i%02d", k)), record(fmt.Sprintf("i%02d", k), 10000+i, nil))
			}); err != nil {
				b.Fatal(err)
			}
			p := startSynapse(b, bin, "zookeeper", hosts, services, false, mode.spacing)
			// With do_socket off, a server is in HAProxy's state only once a
			// worker loaded a config holding it: every initial server there
			// means the initial load's reloads are done, and the count
			// starts from here.
			if err := p.waitAll(120*time.Second, services*per); err != nil {
				b.Fatal(err)
			}
			reloads0 := p.reloads.total()
			reloadSum0, reloadCount0 := p.metric("synapse_haproxy_reload_seconds_sum"), p.metric("synapse_haproxy_reload_seconds_count")
			b.ResetTimer()
			var lat []time.Duration
			for i := range mode.changes {
				name := fmt.Sprintf("x%03d", i/2)
				server := fmt.Sprintf("%s_127.0.0.1:%d", name, 30000+i/2)
				t0 := time.Now()
				var cond func(map[string]testserver.ServerState) bool
				if i%2 == 0 {
					w.put(nodePath("zookeeper", 0, name), record(name, 30000+i/2, nil))
					cond = func(m map[string]testserver.ServerState) bool { _, ok := m[server]; return ok }
				} else {
					w.del(nodePath("zookeeper", 0, name))
					cond = func(m map[string]testserver.ServerState) bool { _, ok := m[server]; return !ok }
				}
				if _, err := p.waitFor(60*time.Second, "svc0000", cond); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			// The reload path's own latency, apart from the spacing: synapse's
			// histogram of reload request → new worker answering (it
			// excludes the wait for reload_min_interval and the render and
			// haproxy -c before the request).
			reloadN := p.metric("synapse_haproxy_reload_seconds_count") - reloadCount0
			reloadMean := 0.0
			if reloadN > 0 {
				reloadMean = (p.metric("synapse_haproxy_reload_seconds_sum") - reloadSum0) / reloadN * 1000
			}
			report(b, "reload-per-change/"+mode.name, map[string]float64{
				"p50-ms": ms(percentile(lat, .5)), "max-ms": ms(percentile(lat, 1)), "changes": float64(mode.changes),
				"reloads": float64(p.reloads.total() - reloads0), "backends": float64(services * per),
				"reload-min-interval-ms": ms(mode.spacing), "reload-path-mean-ms": reloadMean,
			})
		})
	}
}

// BenchmarkDrainCyclesUnderLoad drains and undrains a backend 100 times
// (20 quick) through overrides while a load generator sends requests
// through HAProxy, with the runtime API and with a reload per change.
// Target: 0 failed requests.
func BenchmarkDrainCyclesUnderLoad(b *testing.B) {
	cycles := 100
	if quick() {
		cycles = 20
	}
	for _, mode := range []struct {
		name     string
		doSocket bool
	}{{"runtime-api", true}, {"reload-per-change", false}} {
		b.Run(mode.name, func(b *testing.B) {
			bin := buildBinary(b, "synapse")
			srv := testserver.StartEtcd(b)
			w := newEtcdWriter(b, srv.Endpoint)
			b.Cleanup(w.close)
			backs := map[string]*testserver.Backend{}
			for i, id := range []string{"a", "b", "c"} {
				bk := testserver.StartBackend(b, id, fmt.Sprintf("127.0.0.1%d", i+1))
				backs[id] = bk
				in := registry.Instance{Host: bk.Host, Port: bk.Port, Name: id}
				data, _ := in.Encode()
				w.put("/bench/svc0000/"+id, data)
			}
			p := startSynapseWithFrontend(b, bin, srv.Endpoint, mode.doSocket)
			// Three servers in HAProxy's state: the initial config is loaded
			// (with do_socket off, by a worker that holds it), so the reload
			// count starts from here.
			if err := p.waitAll(30*time.Second, 3); err != nil {
				b.Fatal(err)
			}
			reloads0, ownReloads0 := p.reloads.total(), p.metric("synapse_haproxy_reloads_total")
			load := testserver.StartLoad(fmt.Sprintf("http://127.0.0.1:%d/", p.port), 4, 2*time.Millisecond)
			b.ResetTimer()
			start := time.Now()
			ovr := w.overrides()
			for range cycles {
				ovr.PutOverride(context.Background(), registry.Override{Target: "b", State: registry.StateDrain, At: time.Now()})
				if _, err := p.waitFor(10*time.Second, "svc0000", func(m map[string]testserver.ServerState) bool {
					for n, s := range m {
						if strings.HasPrefix(n, "b_") {
							return s.Admin&0x08 != 0 || (!mode.doSocket && s.Weight == 0)
						}
					}
					return false
				}); err != nil {
					b.Fatal(err)
				}
				// The dwell is a measured interval, not a wait: each state is
				// held 50 ms so the load sees it.
				time.Sleep(50 * time.Millisecond)
				ovr.DeleteOverride(context.Background(), "b")
				if _, err := p.waitFor(10*time.Second, "svc0000", func(m map[string]testserver.ServerState) bool {
					for n, s := range m {
						if strings.HasPrefix(n, "b_") {
							return s.Admin == 0 && s.Weight != 0
						}
					}
					return false
				}); err != nil {
					b.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond) // the dwell again
			}
			b.StopTimer()
			load.Stop()
			report(b, "drain-cycles-under-load/"+mode.name, map[string]float64{
				"cycles": float64(cycles), "duration-s": time.Since(start).Seconds(), "requests-ok": float64(load.OK.Load()), "requests-failed": float64(load.Failed.Load()),
				"reloads": float64(p.reloads.total() - reloads0), "reloads-synapse-counter": p.metric("synapse_haproxy_reloads_total") - ownReloads0,
			})
			if f := load.Failures(); len(f) > 0 {
				b.Logf("first failures: %v", f)
			}
		})
	}
}
