package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// applyDeferred applies st, and again when the generator defers a reload
// (reload_min_interval), at the time it names, as synapse does.
func (r *rig) applyDeferred(t *testing.T, st generators.State) {
	t.Helper()
	for {
		err := r.g.Apply(context.Background(), st)
		var deferred *generators.DeferredError
		if !errors.As(err, &deferred) {
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			return
		}
		time.Sleep(time.Until(deferred.At))
	}
}

func quarantinedIDs(g *Generator) map[string]bool {
	out := map[string]bool{}
	for _, q := range g.Quarantined() {
		out[q.Service+"/"+q.Server] = true
	}
	return out
}

// Issue 10 item 4: servers HAProxy rejects (options refused by `add server`
// at runtime, a host name that does not resolve, options refused by
// haproxy -c on the reload path of a static-balance service) are
// quarantined: Apply succeeds, every other server and service keeps
// converging, the bad ones are listed and counted, logged once, and tried
// again when their record changes.
func TestRejectedServersQuarantined(t *testing.T) {
	webPort, apiPort, legacyPort := testserver.FreePort(t), testserver.FreePort(t), testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{
		"web":    {Port: webPort, BindAddress: "127.0.0.1"},
		"api":    {Port: apiPort, BindAddress: "127.0.0.1"},
		"legacy": {Port: legacyPort, BindAddress: "127.0.0.1", Listen: []string{"balance static-rr"}},
	})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	a2 := testserver.StartBackend(t, "a2", "127.0.0.12")
	b := testserver.StartBackend(t, "b", "127.0.0.13")
	c := testserver.StartBackend(t, "c", "127.0.0.14")
	d := testserver.StartBackend(t, "d", "127.0.0.15")
	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

	// Valid records (registry.Validate accepts them) that HAProxy refuses.
	badOpts := generators.Backend{Instance: registry.Instance{Host: "127.0.0.41", Port: 80, Name: "badopts", HAProxyServerOptions: "proto nosuch"}, State: registry.StateReady}
	noName := generators.Backend{Instance: registry.Instance{Host: "nosuch.invalid", Port: 80, Name: "noname"}, State: registry.StateReady}
	badLegacy := badOpts
	badLegacy.Name = "badlegacy"
	for _, bk := range []generators.Backend{badOpts, noName} {
		if err := bk.Instance.Validate(); err != nil {
			t.Fatalf("the test record %+v is not valid: %v", bk.Instance, err)
		}
	}
	mk := func(web, api, legacy []generators.Backend) generators.State {
		st := generators.State{Services: generators.ServicesOf(map[string]generators.Service{})}
		for name, bs := range map[string][]generators.Backend{"web": web, "api": api, "legacy": legacy} {
			generators.SortBackends(bs)
			st.Services = st.Services.With(name, generators.Service{Backends: bs})
		}
		return st
	}
	// Start with good servers only, so that the bad ones come at runtime.
	r.apply(t, mk([]generators.Backend{backend(a, "a")}, []generators.Backend{backend(b, "b")}, []generators.Backend{backend(c, "c")}))
	pid := r.pid(t)

	// At runtime: `add server` refuses badopts; noname has no address.
	st := mk([]generators.Backend{backend(a, "a"), badOpts, noName}, []generators.Backend{backend(b, "b")}, []generators.Backend{backend(c, "c")})
	if err := r.g.Apply(context.Background(), st); err != nil {
		t.Fatalf("Apply with rejected servers: %v, want them quarantined and no error", err)
	}
	got := map[string]generators.Quarantined{}
	for _, q := range r.g.Quarantined() {
		got[q.Service+"/"+q.Server] = q
		t.Logf("quarantined %s/%s: %s", q.Service, q.Server, q.Reason)
		if q.Reason == "" || q.Since.IsZero() || q.RetryAt.IsZero() {
			t.Errorf("quarantine entry lacks its reason or times: %+v", q)
		}
	}
	if q := got["web/"+badOpts.ServerName()]; len(got) != 2 || !strings.Contains(q.Reason, "add server") || got["web/"+noName.ServerName()].Server == "" {
		t.Fatalf("quarantined %v, want badopts (refused by add server) and noname", got)
	}
	if p := r.pid(t); p != pid {
		t.Error("rejected servers of a dynamic service made HAProxy reload")
	}

	// Every other change keeps applying, in every service: membership
	// (web, at runtime), a weight (api), membership of the static-balance
	// service (a reload, whose haproxy -c must not fail for badlegacy).
	w := 5
	bw := backend(b, "b")
	bw.Weight = &w
	st = mk([]generators.Backend{backend(a2, "a2"), badOpts, noName}, []generators.Backend{bw}, []generators.Backend{backend(c, "c"), backend(d, "d"), badLegacy})
	r.applyDeferred(t, st)
	if got := quarantinedIDs(r.g); len(got) != 3 || !got["legacy/"+badLegacy.ServerName()] {
		t.Fatalf("quarantined %v, want badlegacy too (refused by haproxy -c)", got)
	}
	for svc, n := range map[string]float64{"web": 2, "legacy": 1, "api": 0} {
		if got := testutil.ToFloat64(r.g.m.Quarantined.WithLabelValues(svc)); got != n {
			t.Errorf("synapse_haproxy_servers_quarantined{service=%q} = %v, want %v", svc, got, n)
		}
	}
	if got := spread(t, url(webPort), 10); got["a2"] != 10 {
		t.Errorf("web after its change: %v, want a2 only", got)
	}
	if s, _ := r.server(t, "api/"+bw.ServerName()); s.Weight != 5 {
		t.Errorf("api's weight change not applied: %+v", s)
	}
	if got := spread(t, url(legacyPort), 10); got["c"] == 0 || got["d"] == 0 {
		t.Errorf("legacy after its change: %v, want c and d", got)
	}
	if n := testutil.ToFloat64(r.g.m.Quarantines.WithLabelValues("web")); n != 2 {
		t.Errorf("web quarantines counted %v times, want 2 (once each)", n)
	}
	r.g.Flush()
	cfg, _ := os.ReadFile(r.cfg.ConfigFilePath)
	for _, name := range []string{"badopts", "badlegacy", "nosuch.invalid"} {
		if strings.Contains(string(cfg), name) {
			t.Errorf("haproxy.cfg carries the quarantined %s", name)
		}
	}
	if !strings.Contains(string(cfg), "server a2_") || !strings.Contains(string(cfg), "server d_") {
		t.Errorf("haproxy.cfg lacks the changes made next to the quarantined servers:\n%s", cfg)
	}

	// A quarantined record that changes is tried again: fixed, it is in.
	fixed := badOpts
	fixed.HAProxyServerOptions = "maxconn 10"
	st = mk([]generators.Backend{backend(a2, "a2"), fixed}, []generators.Backend{bw}, []generators.Backend{backend(c, "c"), backend(d, "d"), badLegacy})
	r.applyDeferred(t, st)
	if _, ok := r.server(t, "web/"+fixed.ServerName()); !ok {
		t.Error("the fixed record is not in HAProxy")
	}
	if got := quarantinedIDs(r.g); len(got) != 1 || !got["legacy/"+badLegacy.ServerName()] {
		t.Errorf("quarantined after the fix and the removal: %v, want only legacy's", got)
	}
	if got := testutil.ToFloat64(r.g.m.Quarantined.WithLabelValues("web")); got != 0 {
		t.Errorf("web's quarantine gauge = %v after the fix, want 0", got)
	}

	// Its retry due with the same record, the line haproxy -c rejected is
	// tried again by the file writer: still rejected, still quarantined,
	// counted and logged once.
	r.g.runtime.q.mu.Lock()
	r.g.runtime.q.quarantined[serverKey{"legacy", badLegacy.ServerName()}].retryAt = time.Now()
	r.g.runtime.q.mu.Unlock()
	failures := testutil.ToFloat64(r.g.m.ValidationFailures)
	r.applyDeferred(t, st)
	r.g.Flush()
	if n := testutil.ToFloat64(r.g.m.ValidationFailures) - failures; n != 1 {
		t.Errorf("%v haproxy -c failures on the retry, want 1 (the trial)", n)
	}
	if got := quarantinedIDs(r.g); !got["legacy/"+badLegacy.ServerName()] {
		t.Errorf("quarantined after a failed retry: %v", got)
	}
	if n := testutil.ToFloat64(r.g.m.Quarantines.WithLabelValues("legacy")); n != 1 {
		t.Errorf("legacy quarantines counted %v times, want 1", n)
	}
	cfg, _ = os.ReadFile(r.cfg.ConfigFilePath)
	if strings.Contains(string(cfg), "badlegacy") {
		t.Error("the failed retry reached haproxy.cfg")
	}

	// Fixed, the static-balance record is in (by a reload) and released.
	fixedLegacy := badLegacy
	fixedLegacy.HAProxyServerOptions = "maxconn 10"
	st = mk([]generators.Backend{backend(a2, "a2"), fixed}, []generators.Backend{bw}, []generators.Backend{backend(c, "c"), backend(d, "d"), fixedLegacy})
	r.applyDeferred(t, st)
	if got := quarantinedIDs(r.g); len(got) != 0 {
		t.Errorf("quarantined after every fix: %v", got)
	}
	if _, ok := r.server(t, "legacy/"+fixedLegacy.ServerName()); !ok {
		t.Error("the fixed static-balance record is not in HAProxy")
	}
}

// `disabled` in server options (the operator's may say it) marks servers
// CMAINT, which `set server … state ready` leaves set although the server
// serves. Counting it as maint made synapse skip `set server … state
// maint` before `del server`, which HAProxy then refused forever (issue 10
// item 4: applies failed, acks stopped). Such a server is set ready, then
// removed like any other.
func TestDisabledOptionServerRemoved(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", ServerOptions: confutil.StringOrList{"disabled"},
		Listen: []string{"mode http", "balance roundrobin", "http-reuse never"}}})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	r.apply(t, state("web", backend(a, "a")))
	r.apply(t, state("web", backend(a, "a"), backend(b, "b"))) // b at runtime
	if got := spread(t, url, 10); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("a and b set ready: %v", got)
	}
	only := state("web", backend(a, "a"))
	if err := r.g.Apply(context.Background(), only); err != nil {
		t.Fatalf("removing b: %v", err)
	}
	r.settle(t, only)
	if _, ok := r.server(t, "web/"+backend(b, "b").ServerName()); ok {
		t.Error("b is still in HAProxy")
	}
	if q := r.g.Quarantined(); len(q) != 0 {
		t.Errorf("quarantined: %v", q)
	}
	// The same state again sends nothing: ready is ready despite CMAINT.
	ops := testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues("set server", "ok"))
	r.g.runtime.lastFullSync = time.Time{}
	r.apply(t, only)
	if n := testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues("set server", "ok")) - ops; n != 0 {
		t.Errorf("%v set server commands for an unchanged state", n)
	}
}
