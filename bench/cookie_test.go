package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// BenchmarkCookieReload measures what cookie persistence costs with
// HAProxy 2.6, which takes no `cookie` on `add server` (and has no
// `set server ... cookie`): an added server serves at once through the
// runtime API, and one reload (reason cookie, spaced by
// reload_min_interval, 2 s here) gives it its cookie. Removals, weights
// and drains need no cookie and must stay at 0 reloads. Reloads are
// counted by HAProxy's master (`show proc`), not by synapse.
//
// 100 services × 10 backends with `cookie SERVERID insert indirect
// nocache`, etcd; 10 adds (5 quick), each waited out before the next, then
// the same servers reweighted, drained and removed.
func BenchmarkCookieReload(b *testing.B) {
	const services, per = 100, 10
	adds := 10
	if quick() {
		adds = 5
	}
	bin := buildBinary(b, "synapse")
	w, endpoint := setupRegistry(b, "etcd")
	if err := parallel(services*per, func(i int) error {
		s, k := i/per, i%per
		return w.put(nodePath("etcd", s, fmt.Sprintf("i%02d", k)), record(fmt.Sprintf("i%02d", k), 10000+i, nil))
	}); err != nil {
		b.Fatal(err)
	}
	const minInterval = 2 * time.Second
	p := startSynapseOpts(b, bin, "etcd", endpoint, services, true, minInterval, 0,
		"[balance roundrobin, cookie SERVERID insert indirect nocache]")
	if err := p.waitAll(120*time.Second, services*per); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	server := func(i int) (name, full string, port int) {
		port = 30000 + i
		name = fmt.Sprintf("x%02d", i)
		return name, fmt.Sprintf("%s_127.0.0.1:%d", name, port), port
	}
	reloads0 := p.reloads.total()
	var inRuntime, withCookie []time.Duration
	for i := range adds {
		name, full, port := server(i)
		before := p.reloads.total()
		t0 := time.Now()
		if err := w.put(nodePath("etcd", 0, name), record(name, port, nil)); err != nil {
			b.Fatal(err)
		}
		if _, err := p.waitFor(10*time.Second, "svc0000", func(m map[string]testserver.ServerState) bool { _, ok := m[full]; return ok }); err != nil {
			b.Fatal(err)
		}
		inRuntime = append(inRuntime, time.Since(t0))
		// The cookie arrives with the next worker: wait for HAProxy's
		// master to count a reload after the add, the server still there.
		for deadline := time.Now().Add(3*minInterval + 10*time.Second); ; time.Sleep(10 * time.Millisecond) {
			if p.reloads.total() > before {
				if st, err := testserver.TryHAProxyServers(p.stats, "svc0000"); err == nil {
					if _, ok := st[full]; ok {
						break
					}
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("add %d: no reload for its cookie", i)
			}
		}
		withCookie = append(withCookie, time.Since(t0))
	}
	addReloads := p.reloads.total() - reloads0

	// Weights, drains, removals of the same servers, cookies on: each one
	// runtime command, no reload.
	reloads1 := p.reloads.total()
	ovr := w.overrides()
	var other []time.Duration
	for i := range adds {
		name, full, port := server(i)
		wt := 7
		steps := []struct {
			do   func() error
			cond func(m map[string]testserver.ServerState) bool
		}{
			{func() error { return w.put(nodePath("etcd", 0, name), record(name, port, &wt)) },
				func(m map[string]testserver.ServerState) bool { return m[full].Weight == 7 }},
			{func() error {
				_, err := ovr.PutOverride(context.Background(), registry.Override{Target: name, State: registry.StateDrain, At: time.Now()})
				return err
			}, func(m map[string]testserver.ServerState) bool { return m[full].Admin&0x08 != 0 }},
			{func() error { return w.del(nodePath("etcd", 0, name)) },
				func(m map[string]testserver.ServerState) bool { _, ok := m[full]; return !ok }},
		}
		for _, st := range steps {
			t0 := time.Now()
			if err := st.do(); err != nil {
				b.Fatal(err)
			}
			if _, err := p.waitFor(10*time.Second, "svc0000", st.cond); err != nil {
				b.Fatalf("server %s: %v", full, err)
			}
			other = append(other, time.Since(t0))
		}
		ovr.DeleteOverride(context.Background(), name)
	}
	// A reload for these would come at most reload_min_interval after the
	// last change: wait that long (and a second more) before counting, so
	// that a late one is caught. This is the interval in which a reload
	// would show, not a stand-in for a condition.
	time.Sleep(minInterval + time.Second)
	otherReloads := p.reloads.total() - reloads1
	b.StopTimer()
	reloads, failed, restarts := p.reloads.counts()
	report(b, "cookie-reload", map[string]float64{
		"backends": services * per, "adds": float64(adds), "reload-min-interval-ms": ms(minInterval),
		"add-in-runtime-p50-ms": ms(percentile(inRuntime, .5)), "add-in-runtime-max-ms": ms(percentile(inRuntime, 1)),
		"add-with-cookie-p50-ms": ms(percentile(withCookie, .5)), "add-with-cookie-max-ms": ms(percentile(withCookie, 1)),
		"reloads-for-adds": float64(addReloads), "reloads-per-add": float64(addReloads) / float64(adds),
		"weight-drain-remove-changes": float64(len(other)), "weight-drain-remove-p50-ms": ms(percentile(other, .5)),
		"reloads-for-weight-drain-remove": float64(otherReloads),
		"haproxy-reloads-total":           float64(reloads), "haproxy-reloads-failed": float64(failed), "haproxy-restarts": float64(restarts),
	})
}
