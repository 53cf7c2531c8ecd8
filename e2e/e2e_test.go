package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/fleettest"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func TestZooKeeper(t *testing.T) { suite(t, "zookeeper") }

func TestEtcd(t *testing.T) { suite(t, "etcd") }

func suite(t *testing.T, method string) {
	f := newFleet(t, method)
	// Sequential on one fleet: each scenario starts with every process up
	// and all three backends in HAProxy, whatever the one before left.
	run := func(name string, scenario func(*testing.T, *fleet)) {
		t.Run(name, func(t *testing.T) {
			f.heal(t)
			scenario(t, f)
		})
	}
	run("RollingRestart", rollingRestart)
	run("BackendKilled", backendKilled)
	if method == "zookeeper" {
		run("LeaderKilled", leaderKilled)
	}
	run("MaliciousRegistrations", malicious)
	run("HAProxyKilled", haproxyKilled)
	run("Upgrade", upgrade)
	run("SynapseKilledRegistryDown", synapseKilledRegistryDown)
	run("RegistryDown30s", registryDown)
}

// 1. Each backend in turn: drain --wait, stop, start, add-to-lb: not one
// failed request, no reload.
func rollingRestart(t *testing.T, f *fleet) {
	f.t = t
	pid := f.workerPID()
	l := startLoad(f)
	for _, id := range ids {
		host := strings.Split(f.addrs[id], ":")[0]
		f.synctl("drain", host, "--reason", "rolling restart", "--wait", "--timeout", "20s")
		want := map[string]int{"a": 0, "b": 0, "c": 0}
		want[id] = 8
		f.waitServers(want, 2*time.Second)
		f.backends[id].stop()
		// nerve deregisters after fall rounds; synapse removes the server.
		delete(want, id)
		f.waitServers(want, 10*time.Second)
		f.startBackend(id)
		want[id] = 8 // back, still drained by the override
		f.waitServers(want, 10*time.Second)
		f.synctl("add-to-lb", host, "--wait", "--timeout", "20s")
		f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 2*time.Second)
	}
	ok, failed := l.finish(t, "rolling restart")
	if failed != 0 || ok < 100 {
		t.Errorf("rolling restart: %d failed requests (want 0): %v", failed, l.Failures())
	}
	if p := f.workerPID(); p != pid {
		t.Errorf("HAProxy reloaded during the rolling restart (worker %d → %d)", pid, p)
	}
}

// 2. A backend killed with -9: removed after nerve's fall rounds; not one
// request fails (HAProxy's retry-on and redispatch send it elsewhere).
func backendKilled(t *testing.T, f *fleet) {
	f.t = t
	l := startLoad(f)
	registrytest.Eventually(t, 5*time.Second, "b serving under load", func() bool { return l.Served()["b"] > 0 })
	f.backends["b"].kill()
	took := f.waitServers(map[string]int{"a": 0, "c": 0}, 10*time.Second)
	ok, failed := l.finish(t, "backend killed")
	t.Logf("b removed from HAProxy %v after kill -9 (fall 2 × 200ms checks); %d of %d requests failed", took, failed, ok+failed)
	// retry-on conn-failure empty-response response-timeout + redispatch:
	// a request whose server died under it goes to another.
	if failed != 0 {
		t.Errorf("%d failed requests: %v", failed, l.Failures())
	}
	if took > 3*time.Second {
		t.Errorf("removal took %v, want about fall × interval", took)
	}
	f.startBackend("b")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 10*time.Second)
}

// 3. The ZooKeeper leader killed: not one failed request, no backend lost.
func leaderKilled(t *testing.T, f *fleet) {
	f.t = t
	l := startLoad(f)
	leader := f.zk.Leader()
	if leader == nil {
		t.Fatal("no leader")
	}
	all := map[string]int{"a": 0, "b": 0, "c": 0}
	stopWatching := f.watchServers(all)
	leader.Kill()
	// The election is over when another member leads; throughout it (and
	// until synapse is seen serving all three after it), HAProxy keeps
	// every backend.
	registrytest.Eventually(t, 30*time.Second, "a new ZooKeeper leader", func() bool {
		now := f.zk.Leader()
		return now != nil && now != leader
	})
	f.waitServers(all, time.Second)
	if bad := stopWatching(); len(bad) > 0 {
		t.Errorf("HAProxy's servers changed during the leader election:\n%s", strings.Join(bad, "\n"))
	}
	ok, failed := l.finish(t, "leader killed")
	if failed != 0 || ok == 0 {
		t.Errorf("%d failed requests during the leader election: %v", failed, l.Failures())
	}
	leader.Start()
	if err := leader.WaitServing(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Still registered and watched through the new leader.
	f.synctl("drain", "127.0.0.13", "--wait", "--timeout", "20s")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 8}, 2*time.Second)
	f.synctl("add-to-lb", "127.0.0.13", "--wait", "--timeout", "20s")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 2*time.Second)
}

// 6. Malicious registrations: skipped and counted; haproxy.cfg unchanged.
func malicious(t *testing.T, f *fleet) {
	f.t = t
	// The file as it is once the background writer (config_write_interval
	// 1s) has caught up with what HAProxy runs, whatever the scenario
	// before changed last.
	before := f.waitConfigFile(map[string]int{"a": 0, "b": 0, "c": 0}, 10*time.Second)
	records := map[string]string{
		"evil1_0000000001": `{"host":"127.0.0.66","port":80,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`,
		"evil2_0000000002": `{"host":"127.0.0.66","port":80,"labels":{"x":"` + strings.Repeat("a", 1000_000) + `"}}`,
		"evil3_0000000003": `this is not json`,
		"evil4_0000000004": `{"host":"127.0.0.66","port":70000}`,
	}
	plant(t, f, records)
	registryDeadline := time.Now().Add(10 * time.Second)
	for {
		m := f.metric(`syncstack_registry_records_skipped_total{backend="` + f.method + `",path="/services/web"}`)
		if strings.HasSuffix(m, " 4") {
			t.Logf("metrics: %s", m)
			break
		}
		if time.Now().After(registryDeadline) {
			t.Fatalf("skipped records not counted: %q", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A change made after the planted records, written to the file: the
	// file then holds everything synapse knew, the planted records
	// included; apart from that change it must be as before.
	f.synctl("drain", "127.0.0.13", "--reason", "after the planted records", "--wait", "--timeout", "20s")
	after := f.waitConfigFile(map[string]int{"a": 0, "b": 0, "c": 8}, 10*time.Second)
	if got := strings.Replace(after, drainedSuffix, "", 1); got != before {
		t.Errorf("haproxy.cfg changed beyond the drain of c:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	f.synctl("add-to-lb", "127.0.0.13", "--wait", "--timeout", "20s")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, time.Second)
	unplant(t, f, records)
}

func plant(t *testing.T, f *fleet, records map[string]string) {
	switch f.method {
	case "zookeeper":
		conn, _, err := zk.Connect(f.zk.Servers(), 5*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for name, rec := range records {
			if _, err := conn.Create("/services/web/"+name, []byte(rec), 0, zk.WorldACL(zk.PermAll)); err != nil {
				t.Fatalf("plant %s: %v", name, err)
			}
		}
	case "etcd":
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{f.etcd.Endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		for name, rec := range records {
			if _, err := cli.Put(context.Background(), "/services/web/"+name, rec); err != nil {
				t.Fatalf("plant %s: %v", name, err)
			}
		}
	}
}

func unplant(t *testing.T, f *fleet, records map[string]string) {
	switch f.method {
	case "zookeeper":
		conn, _, err := zk.Connect(f.zk.Servers(), 5*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for name := range records {
			conn.Delete("/services/web/"+name, -1)
		}
	case "etcd":
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{f.etcd.Endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		for name := range records {
			cli.Delete(context.Background(), "/services/web/"+name)
		}
	}
}

// 7. HAProxy itself killed with -9 (master and workers): synapse starts it
// again from the current state, a drained host still drained.
func haproxyKilled(t *testing.T, f *fleet) {
	f.t = t
	f.synctl("drain", "127.0.0.12", "--reason", "haproxy kill test", "--wait", "--timeout", "20s")
	f.waitServers(map[string]int{"a": 0, "b": 8, "c": 0}, 2*time.Second)
	pid := f.workerPID()
	testserver.KillHAProxy(filepath.Join(f.dir, "haproxy.pid"))
	killed := time.Now()
	for {
		if p, err := testserver.TryHAProxyWorkerPID(filepath.Join(f.dir, "master.sock")); err == nil && p != pid {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("HAProxy not started again 15s after kill -9\nsynapse log:\n%s", tail(filepath.Join(f.dir, "synapse.log"), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("HAProxy serving again %v after kill -9", time.Since(killed))
	f.waitServers(map[string]int{"a": 0, "b": 8, "c": 0}, 5*time.Second)
	if m := f.metric("synapse_haproxy_restarts_total"); m != "synapse_haproxy_restarts_total 1" {
		t.Errorf("restarts: %q", m)
	}
	f.synctl("add-to-lb", "127.0.0.12", "--wait", "--timeout", "20s")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 2*time.Second)
}

// 5. synapse killed with -9, restarted while the registry is down: HAProxy
// is untouched and synapse resumes from its state cache.
func synapseKilledRegistryDown(t *testing.T, f *fleet) {
	f.t = t
	pid := f.workerPID()
	l := startLoad(f)
	f.synapse.kill()
	f.registryDown()
	f.startSynapse()
	// The new synapse has applied its cached state to HAProxy (a first
	// apply counted ok, with the registry down it can only come from the
	// cache): only then would it have touched HAProxy, if it did.
	registrytest.Eventually(t, 15*time.Second, "the restarted synapse applied its cache", func() bool {
		return counterAtLeast(f.metric(`synapse_applies_total{generator="haproxy",result="ok"}`), 1)
	})
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, time.Second)
	if p := f.workerPID(); p != pid {
		t.Errorf("HAProxy was touched: worker %d → %d", pid, p)
	}
	log := tail(filepath.Join(f.dir, "synapse.log"), 200)
	if !strings.Contains(log, "state cache loaded") {
		t.Errorf("synapse did not start from its cache:\n%s", log)
	}
	leases := f.leaseRecoveries()
	f.registryUp()
	_, failed := l.finish(t, "synapse killed, registry down")
	if failed != 0 {
		t.Errorf("%d failed requests: %v", failed, l.Failures())
	}
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 30*time.Second)
	// Every config it rendered, from the cache and after, was valid: once
	// the file shows what HAProxy runs, the background writer has written
	// (validated) the last state; a rejected one would have kept the file
	// behind.
	f.waitConfigFile(map[string]int{"a": 0, "b": 0, "c": 0}, 10*time.Second)
	if m := f.metric("synapse_haproxy_validation_failures_total"); m != "synapse_haproxy_validation_failures_total 0" {
		t.Errorf("restarted synapse: %s\n%s", m, tail(filepath.Join(f.dir, "synapse.log"), 20))
	}
	// The next scenario stops the registry again: first the nerves' leases
	// must be kept alive again, or that outage would be a second one.
	f.waitLeasesRecovered(leases, 15*time.Second)
}

// 4. Every registry server down for 30s: HAProxy keeps serving every
// backend; afterwards the state is reconciled.
func registryDown(t *testing.T, f *fleet) {
	f.t = t
	l := startLoad(f)
	all := map[string]int{"a": 0, "b": 0, "c": 0}
	stopWatching := f.watchServers(all)
	f.registryDown()
	// The outage itself: 30 s is the interval under test, not a wait.
	time.Sleep(30 * time.Second)
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, time.Second)
	f.registryUp()
	_, failed := l.finish(t, "registry down 30s")
	if failed != 0 {
		t.Errorf("%d failed requests: %v", failed, l.Failures())
	}
	// Reconciled: a change made now reaches HAProxy. (Nerves whose session
	// expired meanwhile registered again.)
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 30*time.Second)
	// synapse's ack lived with its session, which expired during the
	// outage: it is written again once synapse has a new session. Nerves
	// whose session or lease ran out register again.
	f.waitAck(30 * time.Second)
	// Throughout the outage and the recovery (sessions and leases resumed
	// or renewed), HAProxy never lost a backend, not even for a moment.
	if bad := stopWatching(); len(bad) > 0 {
		t.Errorf("HAProxy's servers changed during the outage or the recovery:\n%s", strings.Join(bad, "\n"))
	}
	out := f.synctl("drain", "127.0.0.11", "--wait", "--timeout", "30s")
	t.Log(strings.TrimSpace(out))
	f.waitServers(map[string]int{"a": 8, "b": 0, "c": 0}, 2*time.Second)
	f.synctl("add-to-lb", "127.0.0.11", "--wait", "--timeout", "30s")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 2*time.Second)
}

func (f *fleet) registryDown() {
	switch f.method {
	case "zookeeper":
		for _, n := range f.zk.Nodes {
			n.Kill()
		}
	case "etcd":
		f.etcd.Stop()
	}
}

func (f *fleet) registryUp() {
	switch f.method {
	case "zookeeper":
		for _, n := range f.zk.Nodes {
			n.Start()
		}
		for _, n := range f.zk.Nodes {
			if err := n.WaitServing(60 * time.Second); err != nil {
				f.t.Fatal(err)
			}
		}
	case "etcd":
		f.etcd.Start()
	}
}

// drainedSuffix is how haproxy.cfg renders a drained server (a config
// cannot say drain; the runtime state carries the real one).
const drainedSuffix = " weight 0 # drained"

// waitConfigFile waits until haproxy.cfg's servers are exactly want (by
// name prefix; 8 drained, 1 disabled, 0 ready), as fleettest.Matches
// reads HAProxy, and returns the file. It is how a test knows the
// background writer has caught up: it writes the newest state, at most
// once per config_write_interval, and only after haproxy -c accepts it.
func (f *fleet) waitConfigFile(want map[string]int, timeout time.Duration) string {
	f.t.Helper()
	path := filepath.Join(f.dir, "haproxy.cfg")
	var content string
	var got map[string]testserver.ServerState
	for start := time.Now(); time.Since(start) < timeout; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		content, got = string(b), configServers(string(b))
		if fleettest.Matches(got, want) {
			return content
		}
	}
	f.t.Fatalf("haproxy.cfg servers %+v, want %v (validation failures: %s)\n%s", got, want,
		f.metric("synapse_haproxy_validation_failures_total"), content)
	return ""
}

// configServers reads the server lines of a rendered haproxy.cfg.
func configServers(cfg string) map[string]testserver.ServerState {
	out := map[string]testserver.ServerState{}
	for _, l := range strings.Split(cfg, "\n") {
		fields := strings.Fields(l)
		if len(fields) < 3 || fields[0] != "server" {
			continue
		}
		st := testserver.ServerState{}
		switch {
		case strings.HasSuffix(l, drainedSuffix):
			st.Admin = 8
		case slices.Contains(fields, "disabled"):
			st.Admin = 1
		}
		out[fields[1]] = st
	}
	return out
}

// counterAtLeast reports whether a metric line ("name{labels} value")
// holds at least n.
func counterAtLeast(line string, n float64) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	return err == nil && v >= n
}
