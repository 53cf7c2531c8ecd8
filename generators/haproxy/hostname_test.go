package haproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// Issue 10 item 5: a service whose backends are host names (localhost
// resolves here through /etc/hosts), next to an IP-only service. The name
// is resolved by synapse and HAProxy gets the address: HAProxy never
// reloads, through IP-service changes and the periodic full sync (which
// today reloads for "moved to a DNS name" every 30 s), and an unresolvable
// name is quarantined while the rest converge.
func TestHostNameBackendsWithoutReloads(t *testing.T) {
	namesPort, ipsPort := testserver.FreePort(t), testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{
		"names": {Port: namesPort, BindAddress: "127.0.0.1"},
		"ips":   {Port: ipsPort, BindAddress: "127.0.0.1"},
	})
	h := testserver.StartBackend(t, "h", "127.0.0.1")
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	named := generators.Backend{Instance: registry.Instance{Host: "localhost", Port: h.Port, Name: "h"}, State: registry.StateReady}
	unresolvable := generators.Backend{Instance: registry.Instance{Host: "nosuch.invalid", Port: h.Port, Name: "x"}, State: registry.StateReady}
	mk := func(names []generators.Backend, ips ...generators.Backend) generators.State {
		generators.SortBackends(names)
		generators.SortBackends(ips)
		return generators.State{Services: generators.ServicesOf(map[string]generators.Service{"names": {Backends: names}, "ips": {Backends: ips}})}
	}
	namesURL, ipsURL := fmt.Sprintf("http://127.0.0.1:%d/", namesPort), fmt.Sprintf("http://127.0.0.1:%d/", ipsPort)

	r.apply(t, mk([]generators.Backend{named}, backend(a, "a")))
	if got := get(t, namesURL); got != "h" {
		t.Fatalf("the host-name backend answered %q", got)
	}
	pid, reloads := r.pid(t), r.reloads()

	w := 4
	drained := backend(b, "b")
	drained.State = registry.StateDrain
	weighted := backend(b, "b")
	weighted.Weight = &w
	for i, ips := range [][]generators.Backend{
		{backend(a, "a"), backend(b, "b")},
		{backend(a, "a"), weighted},
		{backend(a, "a"), drained},
		{backend(b, "b")},
		{backend(a, "a"), backend(b, "b")},
	} {
		// Every step stands for a periodic full sync as well (every
		// fullSyncEvery), where the host-name service is read again.
		r.g.runtime.lastFullSync = time.Time{}
		names := []generators.Backend{named}
		if i >= 2 {
			names = append(names, unresolvable)
		}
		if err := r.g.Apply(context.Background(), mk(names, ips...)); err != nil {
			t.Fatalf("step %d: Apply: %v", i, err)
		}
		if got := get(t, namesURL); got != "h" {
			t.Errorf("step %d: names answered %q", i, got)
		}
		for _, bk := range ips {
			s, ok := r.server(t, "ips/"+bk.ServerName())
			wantW := 1
			if bk.Weight != nil {
				wantW = *bk.Weight
			}
			if !ok || s.state() != string(bk.State) || s.Weight != wantW {
				t.Errorf("step %d: ips/%s is %+v (present %v), want %s weight %d", i, bk.ServerName(), s, ok, bk.State, wantW)
			}
		}
	}
	if got := spread(t, ipsURL, 10); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("ips at the end: %v", got)
	}
	if p := r.pid(t); p != pid {
		t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
	}
	if n := r.reloads() - reloads; n != 0 {
		t.Errorf("%v reloads with a host-name service next to the IP one, want 0", n)
	}
	if s, ok := r.server(t, "names/"+named.ServerName()); !ok || s.Addr != "127.0.0.1" {
		t.Errorf("names/%s: %+v, want address 127.0.0.1", named.ServerName(), s)
	}
	q := quarantinedIDs(r.g)
	if len(q) != 1 || !q["names/"+unresolvable.ServerName()] {
		t.Errorf("quarantined %v, want only the unresolvable name", q)
	}
}

// serveAt answers every request with id on host:port.
func serveAt(t *testing.T, id, host string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, id) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// A host name whose address changes is moved at runtime (set server addr)
// when it is looked up again: no reload, same server. A lookup that fails
// later keeps the last address.
func TestHostNameAddressChange(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1"}})
	bport := testserver.FreePort(t)
	serveAt(t, "old", "127.0.0.51", bport)
	serveAt(t, "new", "127.0.0.52", bport)
	addr := netip.MustParseAddr("127.0.0.51")
	var fail error
	r.g.res.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host != "svc.example" {
			return nil, fmt.Errorf("unknown %s", host)
		}
		return []netip.Addr{addr}, fail
	}
	bk := generators.Backend{Instance: registry.Instance{Host: "svc.example", Port: bport, Name: "s"}, State: registry.StateReady}
	st := state("web", bk)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	r.apply(t, st)
	if got := get(t, url); got != "old" {
		t.Fatalf("got %q", got)
	}
	pid := r.pid(t)
	before, _ := r.server(t, "web/"+bk.ServerName())

	// refresh: as if dnsRefresh had passed; the apply that notices starts
	// a background lookup, the next one applies what it found.
	refresh := func() {
		r.g.res.mu.Lock()
		for _, e := range r.g.res.addrs {
			e.at = time.Time{}
		}
		r.g.res.mu.Unlock()
		r.apply(t, st)
		r.g.res.wg.Wait()
		r.apply(t, st)
	}
	addr = netip.MustParseAddr("127.0.0.52")
	refresh()
	if got := get(t, url); got != "new" {
		t.Errorf("after the address change: %q", got)
	}
	if s, _ := r.server(t, "web/"+bk.ServerName()); s.ID != before.ID || s.Addr != "127.0.0.52" {
		t.Errorf("server after the address change: %+v (was %+v)", s, before)
	}
	fail = fmt.Errorf("dns down")
	refresh()
	if got := get(t, url); got != "new" {
		t.Errorf("after a failed lookup: %q, want the last address kept", got)
	}
	if p := r.pid(t); p != pid {
		t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
	}
	if q := r.g.Quarantined(); len(q) != 0 {
		t.Errorf("quarantined %v", q)
	}
}
