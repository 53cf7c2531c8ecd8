package haproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

func holdBackendOf(h *testserver.HoldBackend) generators.Backend {
	return generators.Backend{Instance: registry.Instance{Host: h.Host, Port: h.Port, Name: h.ID}, State: registry.StateReady}
}

// result of a request through HAProxy.
type result struct {
	status int
	body   string
	err    error
}

// hold sends a request to url/hold and returns its result channel once
// the request is attached to server in HAProxy (its scur counts it) and
// has reached the backend.
func (r *rig) hold(t *testing.T, url, server string, h *testserver.HoldBackend) <-chan result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url + "hold")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-h.Entered:
	case res := <-done:
		t.Fatalf("the request ended before reaching the backend: %+v", res)
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.scur(t, server) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy never counted the request on %s", server)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return done
}

// scur is the current sessions of backend/server from `show stat`.
func (r *rig) scur(t *testing.T, id string) int {
	t.Helper()
	be, srv, _ := strings.Cut(id, "/")
	out, err := r.g.rt.Run(context.Background(), "show stat")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out[0], "\n") {
		f := strings.Split(l, ",")
		if len(f) > 4 && f[0] == be && f[1] == srv {
			n, _ := strconv.Atoi(f[4])
			return n
		}
	}
	return 0
}

// server is backend/name as HAProxy has it now (ok false: not there).
func (r *rig) server(t *testing.T, id string) (serverState, bool) {
	t.Helper()
	be, name, _ := strings.Cut(id, "/")
	out, err := r.g.rt.Run(context.Background(), "show servers state "+be)
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseServersState(out[0])
	if err != nil {
		t.Fatal(err)
	}
	s, ok := st[be][name]
	return s, ok
}

// settle applies st whenever the generator asks for a retry, until it has
// no unfinished work (removals waiting for their connections), as synapse
// does.
func (r *rig) settle(t *testing.T, st generators.State) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for at := r.g.RetryAt(); !at.IsZero() && at.Before(deadline); at = r.g.RetryAt() {
		time.Sleep(time.Until(at))
		r.apply(t, st)
	}
	if at := r.g.RetryAt(); !at.IsZero() {
		t.Fatalf("the generator still has work at %v", at)
	}
}

// membershipOps counts add and del commands sent, whatever their result.
func (r *rig) membershipOps() float64 {
	var n float64
	for _, op := range []string{"add server", "del server"} {
		for _, res := range []string{"ok", "error", "pending"} {
			n += testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues(op, res))
		}
	}
	return n
}

// Issue 10 item 6: a weight, drain, maint or ready change of a server that
// was added at runtime, with a request in flight on it, is a runtime
// setting of that server: the request completes, the server keeps its id
// (it is never deleted and added again), no add or del is sent, and HAProxy
// does not reload.
func TestChangesKeepRequestInFlight(t *testing.T) {
	port := testserver.FreePort(t)
	// http-reuse never: a finished request leaves no idle server
	// connection behind, so a removal between subtests ends at once.
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http", "balance roundrobin", "http-reuse never"}}})
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	r.apply(t, generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {}})}) // starts HAProxy, no server
	pid := r.pid(t)

	weight := func(w int) func(*generators.Backend) {
		return func(b *generators.Backend) { b.Weight = &w }
	}
	set := func(s registry.OverrideState) func(*generators.Backend) {
		return func(b *generators.Backend) { b.State = s }
	}
	for i, tc := range []struct {
		name  string
		base  func(*generators.Backend) // how the server is added
		steps []func(*generators.Backend)
	}{
		{"WeightSet", nil, []func(*generators.Backend){weight(5)}}, // synctl weight; a record that gains a weight
		{"WeightChanged", weight(2), []func(*generators.Backend){weight(5), weight(1)}},
		{"Drain", nil, []func(*generators.Backend){set(registry.StateDrain)}},
		{"Maint", nil, []func(*generators.Backend){set(registry.StateMaint)}},
		{"Ready", nil, []func(*generators.Backend){set(registry.StateDrain), set(registry.StateReady), set(registry.StateMaint), set(registry.StateReady)}},
		{"WeightAndDrain", nil, []func(*generators.Backend){weight(5), set(registry.StateDrain), weight(0), set(registry.StateReady)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testserver.StartHoldBackend(t, fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.0.%d", 21+i))
			b := holdBackendOf(h)
			if tc.base != nil {
				tc.base(&b)
			}
			st := state("web", b)
			r.apply(t, st) // added at runtime (the previous subtest's server goes)
			r.settle(t, st)
			id := "web/" + b.ServerName()
			before, ok := r.server(t, id)
			if !ok {
				t.Fatalf("%s not in HAProxy", id)
			}
			ops, reloads := r.membershipOps(), r.reloads()
			done := r.hold(t, url, id, h)

			for n, step := range tc.steps {
				step(&b)
				r.apply(t, state("web", b))
				now, ok := r.server(t, id)
				if !ok || now.ID != before.ID {
					t.Fatalf("step %d: %s replaced (id %d → present %v, id %d): the request in flight is cut", n, id, before.ID, ok, now.ID)
				}
				wantW := 1
				if b.Weight != nil {
					wantW = *b.Weight
				}
				if now.Weight != wantW || now.state() != string(b.State) {
					t.Errorf("step %d: %s has weight %d state %s, want %d %s", n, id, now.Weight, now.state(), wantW, b.State)
				}
				if got := r.scur(t, id); got != 1 {
					t.Errorf("step %d: %d sessions on %s, want the one in flight", n, got, id)
				}
			}
			if d := r.membershipOps() - ops; d != 0 {
				t.Errorf("%v add/del server commands sent for weight/state changes, want 0", d)
			}
			h.Free()
			select {
			case res := <-done:
				if res.err != nil || res.status != 200 || res.body != h.ID {
					t.Errorf("the request in flight: %+v, want 200 %q", res, h.ID)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request in flight never ended")
			}
			if n := r.reloads() - reloads; n != 0 {
				t.Errorf("%v reloads", n)
			}
			if p := r.pid(t); p != pid {
				t.Errorf("worker PID %d → %d: HAProxy reloaded", pid, p)
			}
		})
	}
}

// A change of the options a server was added with needs a new server (same
// name): the old one takes no new request but keeps the one in flight, and
// is replaced only once it has ended: no request cut, and never "Already
// exists a server with the same name".
func TestOptionChangeDrainsBeforeReplacing(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http", "balance roundrobin", "http-reuse never"}}})
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	r.cfg.RemovalGrace = confutil.Duration(time.Minute) // the request must end by itself
	r.apply(t, generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {}})})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	h := testserver.StartHoldBackend(t, "h", "127.0.0.31")
	b := holdBackendOf(h)
	r.apply(t, state("web", backend(a, "a"), b))
	id := "web/" + b.ServerName()
	before, _ := r.server(t, id)
	// Round robin: requests alternate; hold one on h.
	var done <-chan result
	for range 4 {
		if got := r.scur(t, id); got > 0 {
			break
		}
		if d := r.holdMaybe(t, url, id, h); d != nil {
			done = d
			break
		}
	}
	if done == nil {
		t.Fatal("no request landed on h")
	}

	ok := func(op string) float64 { return testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues(op, "ok")) }
	adds, dels := ok("add server"), ok("del server")
	b.HAProxyServerOptions = "maxconn 50"
	st := state("web", backend(a, "a"), b)
	r.apply(t, st)
	now, present := r.server(t, id)
	if !present || now.ID != before.ID || now.state() != "maint" || ok("del server") != dels {
		t.Fatalf("with a request in flight, %s: present %v id %d→%d state %s; want the old one kept in maint", id, present, before.ID, now.ID, now.state())
	}
	if got := spread(t, url, 10); got["h"] != 0 {
		t.Errorf("the server being replaced took new requests: %v", got)
	}
	r.apply(t, st) // a retry while the request lasts changes nothing
	if _, present := r.server(t, id); !present || ok("del server") != dels {
		t.Fatal("the old server went while its request was in flight")
	}
	h.Free()
	if res := <-done; res.err != nil || res.status != 200 {
		t.Errorf("the request in flight: %+v", res)
	}
	r.settle(t, st)
	now, present = r.server(t, id)
	if !present || now.state() != "ready" || ok("del server")-dels != 1 || ok("add server")-adds != 1 {
		t.Errorf("after the request ended: present %v state %s, %v deleted, %v added; want it replaced by a new ready server", present, now.state(), ok("del server")-dels, ok("add server")-adds)
	}
	if n := testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues("add server", "error")); n != 0 {
		t.Errorf("%v add server errors", n)
	}
	if got := spread(t, url, 10); got["h"] == 0 {
		t.Errorf("the new server takes no requests: %v", got)
	}
}

// holdMaybe sends a /hold request; it returns its result channel if it
// reached h, nil if round robin sent it elsewhere (answered at once).
func (r *rig) holdMaybe(t *testing.T, url, id string, h *testserver.HoldBackend) <-chan result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url + "hold")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-h.Entered:
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		t.Fatal("the request got no answer")
	}
	for deadline := time.Now().Add(5 * time.Second); r.scur(t, id) < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy never counted the request on %s", id)
		}
	}
	return done
}
