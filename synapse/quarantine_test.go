package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func etcdClient(t *testing.T, endpoint string) *etcd.Client {
	t.Helper()
	ec, err := etcd.New(etcd.Config{Endpoints: []string{endpoint}, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	return ec
}

// server returns HAProxy's server of backend whose name starts with
// prefix_, by `show servers state`.
func (e *env) server(t *testing.T, backend, prefix string) (id int, s testserver.ServerState, ok bool) {
	t.Helper()
	out, err := testserver.HAProxyCommand(e.stats, "show servers state "+backend)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 19 || strings.HasPrefix(l, "#") || !strings.HasPrefix(f[3], prefix+"_") {
			continue
		}
		id, _ = strconv.Atoi(f[2])
		admin, _ := strconv.Atoi(f[6])
		weight, _ := strconv.Atoi(f[7])
		port, _ := strconv.Atoi(f[18])
		return id, testserver.ServerState{Addr: f[4], Port: port, Admin: admin, Weight: weight}, true
	}
	return 0, testserver.ServerState{}, false
}

func (e *env) status(t *testing.T) Status {
	t.Helper()
	rec := httptest.NewRecorder()
	e.s.AdminHandler(prometheus.NewRegistry()).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("/status: %v: %s", err, rec.Body)
	}
	return st
}

// Issue 10 item 4, end to end on a real registry: records HAProxy rejects
// (an unresolvable host name; options `add server` refuses) sit next to
// good ones. synapse does not freeze: drains, weights and membership of
// every service keep applying, acks advance, and the bad servers are in
// /status and the quarantine metric.
func TestBadRecordsQuarantinedAcksFlow(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ec := etcdClient(t, srv.Endpoint)
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	d := testserver.StartBackend(t, "d", "127.0.0.14")
	ctx := context.Background()
	for _, r := range []struct {
		path string
		in   registry.Instance
	}{{"/services/web", inst(a, "a")}, {"/services/web", inst(b, "b")}, {"/services/api", inst(c, "c")}} {
		if _, err := ec.Register(ctx, r.path, r.in); err != nil {
			t.Fatal(err)
		}
	}
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web", "api"}, Overrides: true})
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0})
	e.waitServers(t, "api", map[string]int{"c": 0})
	pid := testserver.HAProxyWorkerPID(t, e.master)

	start := time.Now()
	for _, bad := range []registry.Instance{
		{Host: "nosuch.invalid", Port: 80, Name: "noname"},
		{Host: "127.0.0.41", Port: 80, Name: "badopts", HAProxyServerOptions: "proto nosuch"},
	} {
		if _, err := ec.Register(ctx, "/services/web", bad); err != nil {
			t.Fatalf("register %+v: %v", bad, err)
		}
	}
	registrytest.Eventually(t, 5*time.Second, "both bad servers quarantined", func() bool {
		return testutil.ToFloat64(e.hm.Quarantined.WithLabelValues("web")) == 2
	})
	t.Logf("bad records registered → quarantined: %v", time.Since(start))
	start = time.Now()

	// A drain in web, a weight in api, a new server in api: all applied,
	// and acked.
	rev, err := ec.PutOverride(ctx, registry.Override{Target: "127.0.0.11", State: registry.StateDrain, Reason: "test", By: "t", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	w := 6
	wrev, err := ec.PutOverride(ctx, registry.Override{Target: "127.0.0.13", State: registry.StateReady, Weight: &w, By: "t", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec.Register(ctx, "/services/api", inst(d, "d")); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0x08, "b": 0})
	t.Logf("drain next to quarantined servers → HAProxy: %v", time.Since(start))
	e.waitServers(t, "api", map[string]int{"c": 0, "d": 0})
	registrytest.Eventually(t, 5*time.Second, "api's weight applied", func() bool {
		_, s, ok := e.server(t, "api", "c")
		return ok && s.Weight == 6
	})
	registrytest.Eventually(t, 5*time.Second, "an ack at the overrides' revision", func() bool {
		acks, err := ec.Acks(ctx)
		return err == nil && len(acks) == 1 && acks[0].Revision >= max(rev, wrev)
	})
	t.Logf("overrides written → acked: %v", time.Since(start))
	st := e.status(t)
	if st.Build.Version == "" || st.Build.GoVersion == "" {
		t.Errorf("/status has no build: %+v", st.Build)
	}
	if st.LastError != "" {
		t.Errorf("/status last_error = %q, want none: quarantined servers are not apply errors", st.LastError)
	}
	var got []string
	for _, q := range st.Quarantined {
		got = append(got, q.Service+"/"+q.Server)
		if q.Reason == "" {
			t.Errorf("quarantine without a reason: %+v", q)
		}
	}
	if len(got) != 2 || !strings.Contains(strings.Join(got, " "), "noname_nosuch.invalid:80") || !strings.Contains(strings.Join(got, " "), "badopts_127.0.0.41:80") {
		t.Errorf("/status quarantined = %v, want noname and badopts of web", got)
	}
	if p := testserver.HAProxyWorkerPID(t, e.master); p != pid {
		t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
	}
	// The ack names them, so synctl status shows them per synapse.
	registrytest.Eventually(t, 5*time.Second, "the ack names both quarantined servers", func() bool {
		acks, err := ec.Acks(ctx)
		if err != nil || len(acks) != 1 || len(acks[0].Quarantined) != 2 {
			return false
		}
		q := strings.Join(acks[0].Quarantined, "\n")
		return strings.Contains(q, "web/noname_nosuch.invalid:80: ") && strings.Contains(q, "web/badopts_127.0.0.41:80: ")
	})
}

// scur is HAProxy's current sessions of backend's server named prefix_….
func (e *env) scur(t *testing.T, backend, prefix string) int {
	t.Helper()
	out, err := testserver.HAProxyCommand(e.stats, "show stat")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, ",")
		if len(f) > 4 && f[0] == backend && strings.HasPrefix(f[1], prefix+"_") {
			n, _ := strconv.Atoi(f[4])
			return n
		}
	}
	return 0
}

// Issue 10 item 6, end to end: a server added at runtime, with a request in
// flight, gains a weight in its nerve record, then gets a synctl weight
// override and a drain: the request completes with 200, the server keeps
// its id, no add or del is sent, and HAProxy does not reload.
func TestWeightChangesKeepRequestInFlight(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ec := etcdClient(t, srv.Endpoint)
	ctx := context.Background()
	// The one server is drained: panic_threshold 0, or the guard against
	// mass removal would hold it (100 % of the service out at once).
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web"}, Overrides: true, Extra: "panic_threshold: 0\n"})
	registrytest.Eventually(t, 10*time.Second, "HAProxy started", func() bool {
		_, err := testserver.TryHAProxyWorkerPID(e.master)
		return err == nil
	})
	h := testserver.StartHoldBackend(t, "h", "127.0.0.21")
	reg, err := ec.Register(ctx, "/services/web", registry.Instance{Host: h.Host, Port: h.Port, Name: "h"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"h": 0}) // added at runtime
	pid := testserver.HAProxyWorkerPID(t, e.master)
	id, _, _ := e.server(t, "web", "h")
	ops := func() float64 {
		var n float64
		for _, op := range []string{"add server", "del server"} {
			for _, res := range []string{"ok", "error", "pending"} {
				n += testutil.ToFloat64(e.hm.RuntimeOps.WithLabelValues(op, res))
			}
		}
		return n
	}
	before := ops()

	done := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(e.url("web") + "hold")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	select {
	case <-h.Entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	registrytest.Eventually(t, 5*time.Second, "HAProxy counts the request on h", func() bool { return e.scur(t, "web", "h") == 1 })

	check := func(what string, weight, admin int) {
		t.Helper()
		registrytest.Eventually(t, 5*time.Second, what+" in HAProxy", func() bool {
			_, s, ok := e.server(t, "web", "h")
			return ok && s.Weight == weight && s.Admin == admin
		})
		if now, _, ok := e.server(t, "web", "h"); !ok || now != id {
			t.Fatalf("after %s: server id %d → %d (present %v): replaced", what, id, now, ok)
		}
		if n := e.scur(t, "web", "h"); n != 1 {
			t.Errorf("after %s: %d sessions on h, want the one in flight", what, n)
		}
	}
	w := 5
	if err := reg.Update(ctx, registry.Instance{Host: h.Host, Port: h.Port, Name: "h", Weight: &w}); err != nil {
		t.Fatal(err)
	}
	check("the record's weight 5", 5, 0)
	ow := 3
	if _, err := ec.PutOverride(ctx, registry.Override{Target: h.Host, State: registry.StateReady, Weight: &ow, By: "t", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	check("synctl weight 3", 3, 0)
	if _, err := ec.PutOverride(ctx, registry.Override{Target: h.Host, State: registry.StateDrain, By: "t", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	check("a drain", 3, 0x08)
	if n := ops() - before; n != 0 {
		t.Errorf("%v add/del server commands for weight and drain changes, want 0", n)
	}
	h.Free()
	select {
	case got := <-done:
		if got != "200 h" {
			t.Errorf("the request in flight: %q, want 200 h", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never ended")
	}
	if p := testserver.HAProxyWorkerPID(t, e.master); p != pid {
		t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
	}
}

// Issue 10 item 5, end to end: a service whose records carry a host name
// (localhost, from /etc/hosts) next to an IP-only service. Changes of the
// IP service apply at runtime and HAProxy's worker never changes (today
// the first one reloads for "moved to a DNS name", and so does every one
// after); a record whose name does not resolve is quarantined.
func TestHostNameServiceNextToIPServiceNoReloads(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ec := etcdClient(t, srv.Endpoint)
	ctx := context.Background()
	h := testserver.StartBackend(t, "h", "127.0.0.1")
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	if _, err := ec.Register(ctx, "/services/names", registry.Instance{Host: "localhost", Port: h.Port, Name: "h"}); err != nil {
		t.Fatal(err)
	}
	ra, err := ec.Register(ctx, "/services/ips", inst(a, "a"))
	if err != nil {
		t.Fatal(err)
	}
	// b drained, then a deregistered: every server of ips out within the
	// panic window. panic_threshold 0: this test is about reloads.
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"names", "ips"}, Overrides: true, Extra: "panic_threshold: 0\n"})
	e.waitServers(t, "names", map[string]int{"h": 0})
	e.waitServers(t, "ips", map[string]int{"a": 0})
	if got := get(t, e.url("names")); got != "h" {
		t.Fatalf("names answered %q", got)
	}
	pid, reloads := testserver.HAProxyWorkerPID(t, e.master), e.reloads()

	// IP-service changes: membership, weight, drain, removal.
	rb, err := ec.Register(ctx, "/services/ips", inst(b, "b"))
	if err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "ips", map[string]int{"a": 0, "b": 0})
	w := 3
	wb := inst(b, "b")
	wb.Weight = &w
	if err := rb.Update(ctx, wb); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 5*time.Second, "b's weight 3", func() bool {
		_, s, ok := e.server(t, "ips", "b")
		return ok && s.Weight == 3
	})
	if _, err := ec.PutOverride(ctx, registry.Override{Target: "127.0.0.12", State: registry.StateDrain, By: "t", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "ips", map[string]int{"a": 0, "b": 0x08})
	if err := ra.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "ips", map[string]int{"b": 0x08})
	// An unresolvable name joins the host-name service: quarantined.
	if _, err := ec.Register(ctx, "/services/names", registry.Instance{Host: "nosuch.invalid", Port: h.Port, Name: "x"}); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 5*time.Second, "the unresolvable name quarantined", func() bool {
		return testutil.ToFloat64(e.hm.Quarantined.WithLabelValues("names")) == 1
	})
	if got := get(t, e.url("names")); got != "h" {
		t.Errorf("names answered %q", got)
	}
	if p := testserver.HAProxyWorkerPID(t, e.master); p != pid {
		t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
	}
	if n := e.reloads() - reloads; n != 0 {
		t.Errorf("%v reloads, want 0", n)
	}
}
