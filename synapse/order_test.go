package synapse

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// registryEnv is a registry both nerve (a Registrar) and synapse (through
// its config) use: ZooKeeper or etcd, started for the test.
type registryEnv struct {
	method, hosts string
	reg           registry.Registrar
}

func startRegistry(t *testing.T, method string) registryEnv {
	t.Helper()
	switch method {
	case "zookeeper":
		zks := testserver.StartZooKeeper(t)
		return registryEnv{method, zks.Nodes[0].Addr, zkClient(t, zks.Servers())}
	case "etcd":
		srv := testserver.StartEtcd(t)
		c, err := etcd.New(etcd.Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return registryEnv{method, srv.Endpoint, c}
	}
	t.Fatalf("method %q", method)
	return registryEnv{}
}

// leader_election: of backends registered in order, only the first is in
// HAProxy; when it deregisters, the next one replaces it at runtime within
// milliseconds, with no reload (HAProxy's own count).
func TestLeaderElection(t *testing.T) {
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			r := startRegistry(t, method)
			ctx := context.Background()
			// Registered in an order that is not their name order: the
			// leader is the first registered, whatever its name.
			names := []string{"n3", "n1", "n4", "n2", "n0"}
			regs := make([]registry.Registration, len(names))
			for i, n := range names {
				b := testserver.StartBackend(t, n, fmt.Sprintf("127.0.0.%d", 21+i))
				var err error
				if regs[i], err = r.reg.Register(ctx, "/services/web", inst(b, n)); err != nil {
					t.Fatal(err)
				}
			}
			e := startEnv(t, envOpts{Method: r.method, Hosts: r.hosts, Services: []string{"web"}, ServiceExtra: "    leader_election: true\n"})
			e.waitServers(t, "web", map[string]int{names[0]: 0})
			if got := get(t, e.url("web")); got != names[0] {
				t.Fatalf("the leader %s should answer, got %q", names[0], got)
			}
			before := e.haproxyNow(t)
			var took []time.Duration
			for i := 0; i+1 < len(names); i++ {
				if err := regs[i].Deregister(ctx); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				took = append(took, e.waitLeader(t, names[i+1], names[i], start))
				// The old leader leaves HAProxy entirely (no connection
				// holds it), and nothing else comes in.
				e.waitServers(t, "web", map[string]int{names[i+1]: 0})
				if got := get(t, e.url("web")); got != names[i+1] {
					t.Errorf("after %s left, %q answered, want %s", names[i], got, names[i+1])
				}
			}
			e.assertNoReloadSince(t, before)
			slices.Sort(took)
			t.Logf("%s: leader deregistered → next leader ready in HAProxy: p50 %v, max %v (%d changes: %v)", method, took[len(took)/2], took[len(took)-1], len(took), took)
			if took[len(took)-1] > time.Second {
				t.Errorf("a leader change took %v", took[len(took)-1])
			}
		})
	}
}

// waitLeader polls HAProxy (1 ms) until next is ready and old no longer
// takes requests, and returns how long it took from start.
func (e *env) waitLeader(t *testing.T, next, old string, start time.Time) time.Duration {
	t.Helper()
	var got map[string]testserver.ServerState
	for deadline := start.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var err error
		if got, err = testserver.TryHAProxyServers(e.stats, "web"); err != nil {
			continue
		}
		nextReady, oldServing := false, false
		for name, s := range got {
			switch {
			case hasPrefix(name, next):
				nextReady = s.Admin == 0
			case hasPrefix(name, old):
				oldServing = s.Admin == 0
			case s.Admin == 0:
				t.Fatalf("%s is in HAProxy and ready, not only the leader: %+v", name, got)
			}
		}
		if nextReady && !oldServing {
			return time.Since(start)
		}
	}
	t.Fatalf("the next leader %s never took over from %s: %+v", next, old, got)
	return 0
}

func hasPrefix(server, name string) bool {
	return len(server) > len(name) && server[:len(name)+1] == name+"_"
}

// backend_order no_shuffle writes the servers in registration order (as
// Airbnb's watchers hand them over), not by name; a later registration
// comes last.
func TestNoShuffleIsRegistrationOrder(t *testing.T) {
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			r := startRegistry(t, method)
			ctx := context.Background()
			names := []string{"c", "a", "d", "b"}
			register := func(i int) {
				t.Helper()
				b := testserver.StartBackend(t, names[i], fmt.Sprintf("127.0.0.%d", 31+i))
				if _, err := r.reg.Register(ctx, "/services/web", inst(b, names[i])); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 3 {
				register(i)
			}
			e := startEnv(t, envOpts{Method: r.method, Hosts: r.hosts, Services: []string{"web"}, HAProxyExtra: "      backend_order: no_shuffle\n"})
			var order []string
			registrytest.Eventually(t, 10*time.Second, "haproxy.cfg with c, a, d in registration order", func() bool {
				order = e.serverOrder(t, "web")
				return len(order) == 3
			})
			if !slices.Equal(order, names[:3]) {
				t.Errorf("server lines %v, want registration order %v", order, names[:3])
			}
			before := e.haproxyNow(t)
			register(3)
			registrytest.Eventually(t, 10*time.Second, "haproxy.cfg with b last", func() bool {
				order = e.serverOrder(t, "web")
				return len(order) == 4
			})
			if !slices.Equal(order, names) {
				t.Errorf("server lines %v, want registration order %v", order, names)
			}
			e.waitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0, "d": 0})
			e.assertNoReloadSince(t, before) // the order is the file's: runtime adds need no reload
		})
	}
}
