package synapse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/go-zookeeper/zk"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// env is one synapse + HAProxy pair in a temp dir.
type env struct {
	dir, stats, master, cfgFile string
	ports                       map[string]int
	hm                          *haproxy.Metrics
	m                           *Metrics
	rm                          *registry.Metrics
	cancel                      context.CancelFunc
	done                        chan error
	s                           *Synapse
}

const baseTemplate = `id: {{.ID}}
state_file_path: {{.Dir}}/synapse-state.json
admin: {listen: "off"}
haproxy:
  manage: true
  config_file_path: {{.Dir}}/haproxy.cfg
  socket_file_path: {{.Dir}}/stats.sock
  master_socket_path: {{.Dir}}/master.sock
  pid_file: {{.Dir}}/haproxy.pid
  reload_min_interval: 100ms
  global: [maxconn 2000]
  defaults: [mode http, timeout connect 1s, timeout client 10s, timeout server 10s, retries 2, option redispatch]
{{.Extra}}{{if .Overrides}}overrides: {method: {{.Method}}, hosts: [{{.Hosts}}], root: /syncstack-test}
{{end}}services:
{{range .Services}}  {{.}}:
    discovery: {method: {{$.Method}}, hosts: [{{$.Hosts}}], path: /services/{{.}}}
{{$.ServiceExtra}}    haproxy:
      port: {{index $.Ports .}}
      bind_address: 127.0.0.1
      listen: [mode http, balance roundrobin]
{{$.HAProxyExtra}}{{end}}`

type envOpts struct {
	Method, Hosts string
	Services      []string
	Overrides     bool
	Extra         string // top-level config lines
	ServiceExtra  string // lines of every service (indented 4)
	HAProxyExtra  string // lines of every service's haproxy section (indented 6)
	BeforeRun     func(*Synapse)
	dir           string
	ports         map[string]int
}

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	testserver.CheckHAProxy(t)
	e := &env{dir: o.dir, ports: o.ports}
	if e.dir == "" {
		e.dir = t.TempDir()
		testserver.KillHAProxyAtCleanup(t, filepath.Join(e.dir, "haproxy.pid"))
	}
	if e.ports == nil {
		e.ports = map[string]int{}
	}
	for _, s := range o.Services {
		if e.ports[s] == 0 {
			e.ports[s] = testserver.FreePort(t)
		}
	}
	e.stats, e.master = filepath.Join(e.dir, "stats.sock"), filepath.Join(e.dir, "master.sock")
	var buf bytes.Buffer
	template.Must(template.New("").Parse(baseTemplate)).Execute(&buf, map[string]any{
		"ID": "synapse-test", "Dir": e.dir, "Method": o.Method, "Hosts": o.Hosts, "Services": o.Services, "Ports": e.ports, "Overrides": o.Overrides, "Extra": o.Extra,
		"ServiceExtra": o.ServiceExtra, "HAProxyExtra": o.HAProxyExtra,
	})
	e.cfgFile = filepath.Join(e.dir, "synapse.yaml")
	if err := os.WriteFile(e.cfgFile, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(e.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	e.hm, e.m, e.rm = haproxy.NewMetrics(nil), NewMetrics(nil), registry.NewMetrics(nil)
	e.s, err = New(cfg, Options{Metrics: e.m, HAProxyMetrics: e.hm, RegistryMetrics: e.rm})
	if err != nil {
		t.Fatal(err)
	}
	if o.BeforeRun != nil {
		o.BeforeRun(e.s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.s.Run(ctx) }()
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func (e *env) url(svc string) string { return fmt.Sprintf("http://127.0.0.1:%d/", e.ports[svc]) }

func (e *env) reloads() float64 {
	var n float64
	for _, why := range haproxy.ReloadReasons {
		n += testutil.ToFloat64(e.hm.Reloads.WithLabelValues(string(why)))
	}
	return n
}

// waitServers waits until HAProxy's backend has exactly the given servers
// (by name prefix) in the given admin state.
func (e *env) waitServers(t *testing.T, backend string, want map[string]int) {
	t.Helper()
	var got map[string]testserver.ServerState
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var err error
		if got, err = testserver.TryHAProxyServers(e.stats, backend); err == nil && matches(got, want) {
			return
		}
	}
	t.Fatalf("backend %s: servers %+v, want %v", backend, got, want)
}

func matches(got map[string]testserver.ServerState, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for prefix, admin := range want {
		found := false
		for name, s := range got {
			if strings.HasPrefix(name, prefix+"_") && s.Admin == admin {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func zkClient(t *testing.T, servers []string) *zookeeper.Client {
	c, err := zookeeper.New(zookeeper.Config{Servers: servers, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func inst(b *testserver.Backend, name string) registry.Instance {
	return registry.Instance{Host: b.Host, Port: b.Port, Name: name}
}

func TestZooKeeperMembershipWithoutReload(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	ctx := context.Background()
	if _, err := reg.Register(ctx, "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}})
	e.waitServers(t, "web", map[string]int{"a": 0})
	if got := get(t, e.url("web")); got != "a" {
		t.Fatalf("got %q", got)
	}
	before := e.haproxyNow(t)
	reloads := e.reloads()

	// Register → routed, no reload.
	start := time.Now()
	rb, err := reg.Register(ctx, "/services/web", inst(b, "b"))
	if err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0})
	t.Logf("register → HAProxy: %v", time.Since(start))
	seen := map[string]int{}
	for range 20 {
		seen[get(t, e.url("web"))]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("requests after b registered: %v", seen)
	}

	// Weight: live.
	w := 7
	wb := inst(b, "b")
	wb.Weight = &w
	if err := rb.Update(ctx, wb); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 5*time.Second, "weight 7 in HAProxy", func() bool {
		for name, s := range testserver.HAProxyServers(t, e.stats, "web") {
			if strings.HasPrefix(name, "b_") {
				return s.Weight == 7
			}
		}
		return false
	})

	// Deregister → no new request reaches it.
	if err := rb.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0})
	served := b.Served.Load()
	for range 20 {
		get(t, e.url("web"))
	}
	if n := b.Served.Load() - served; n != 0 {
		t.Errorf("b served %d requests after it deregistered", n)
	}
	e.assertNoReloadSince(t, before)
	if n := e.reloads() - reloads; n != 0 {
		t.Errorf("synapse counted %v reloads for membership and weight changes", n)
	}
	if n := testutil.CollectAndCount(e.m.Convergence); n == 0 {
		t.Error("no convergence observations")
	}
}

// A record with an injection attempt is skipped and counted: haproxy.cfg
// carries only the valid records and nothing of the injected text, and
// every apply succeeds (a bad record that got through would make HAProxy
// refuse the file or a command: an apply error, a retry loop, or a
// quarantined server).
func TestInjectionRecordSkipped(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	z := testserver.StartBackend(t, "z", "127.0.0.12")
	if _, err := reg.Register(context.Background(), "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}})
	e.waitServers(t, "web", map[string]int{"a": 0})
	before := e.haproxyNow(t)

	conn := rawZK(t, zks.Servers())
	bad := []string{
		`{"host":"127.0.0.66","port":80,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`,
		`{"host":"127.0.0.66\nlisten evil","port":80}`,
		`{"host":"127.0.0.66","port":70000}`,
		`not json`,
		`{"host":"127.0.0.66","port":80,"labels":{"x":"` + strings.Repeat("a", 200<<10) + `"}}`,
	}
	for i, rec := range bad {
		conn(fmt.Sprintf("/services/web/evil_%010d", i), []byte(rec))
	}
	registrytest.Eventually(t, 5*time.Second, "every bad record counted as skipped", func() bool {
		return testutil.ToFloat64(e.rm.RecordsSkipped) >= float64(len(bad))
	})
	// A valid record written after them: once it is in HAProxy and in the
	// file, the watcher has read the bad ones too.
	if _, err := reg.Register(context.Background(), "/services/web", inst(z, "z")); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0, "z": 0})
	var after []byte
	registrytest.Eventually(t, 5*time.Second, "haproxy.cfg with z", func() bool {
		after, _ = os.ReadFile(filepath.Join(e.dir, "haproxy.cfg"))
		return strings.Contains(string(after), "server z_")
	})
	if n := testutil.ToFloat64(e.rm.RecordsSkipped); n != float64(len(bad)) {
		t.Errorf("%v records skipped, want %d (each bad record once)", n, len(bad))
	}
	if n := strings.Count(string(after), "\n    server "); n != 2 {
		t.Errorf("haproxy.cfg has %d server lines, want a and z:\n%s", n, after)
	}
	if strings.Contains(string(after), "evil") || strings.Contains(string(after), "6.6.6.6") || strings.Contains(string(after), "127.0.0.66") {
		t.Errorf("injected text reached haproxy.cfg:\n%s", after)
	}
	// The state with z was applied cleanly: no apply error (no retry
	// loop), nothing quarantined, z went in at runtime.
	st := e.s.Status()
	if n := testutil.ToFloat64(e.m.Applies.WithLabelValues("haproxy", "error")); n != 0 || st.LastError != "" {
		t.Errorf("%v failed applies, last error %q", n, st.LastError)
	}
	if len(st.Quarantined) != 0 {
		t.Errorf("quarantined: %+v", st.Quarantined)
	}
	if n := len(st.State.Services.Get("web").Backends); n != 2 {
		t.Errorf("applied state has %d backends, want a and z: %+v", n, st.State.Services.Get("web"))
	}
	e.assertNoReloadSince(t, before)
}

// Overrides: a drain reaches HAProxy at runtime and is acked with the
// write's revision; an expiring drain heals by itself.
func TestOverridesDrainAckAndExpiry(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ec, err := etcd.New(etcd.Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	ctx := context.Background()
	for _, in := range []registry.Instance{inst(a, "a"), inst(b, "b")} {
		if _, err := ec.Register(ctx, "/services/web", in); err != nil {
			t.Fatal(err)
		}
	}
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web"}, Overrides: true})
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0})
	pid := testserver.HAProxyWorkerPID(t, e.master)

	exp := time.Now().Add(1500 * time.Millisecond)
	rev, err := ec.PutOverride(ctx, registry.Override{Target: "127.0.0.12", State: registry.StateDrain, Reason: "test", By: "t", At: time.Now(), ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0x08})
	// The latency target is measured by make bench; here a bound loose
	// enough for a loaded CI machine still tells runtime from reload.
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("drain reached HAProxy after %v, want well under 100ms (500ms allowed here)", d)
	}
	registrytest.Eventually(t, 5*time.Second, "an ack at the drain's revision", func() bool {
		acks, err := ec.Acks(ctx)
		return err == nil && len(acks) == 1 && acks[0].ID == "synapse-test" && acks[0].Revision >= rev
	})
	served := b.Served.Load()
	for range 10 {
		get(t, e.url("web"))
	}
	if n := b.Served.Load() - served; n != 0 {
		t.Errorf("drained b served %d new requests", n)
	}
	// The drain expires: b is ready again without anyone deleting it.
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0})
	if p := testserver.HAProxyWorkerPID(t, e.master); p != pid {
		t.Errorf("a reload happened (worker %d → %d)", pid, p)
	}
}

// refusingCatalog is the real registry's catalog writer that refuses
// writes while refuse is set (a registry that will not take it yet).
type refusingCatalog struct {
	registry.CatalogWriter
	refuse atomic.Bool
}

func (c *refusingCatalog) PutCatalog(ctx context.Context, cat registry.Catalog) (int64, error) {
	if c.refuse.Load() {
		return 0, errors.New("refused by the test")
	}
	return c.CatalogWriter.PutCatalog(ctx, cat)
}

// An ack names the synapse's services (for synctl to find the backends)
// only while its catalog, which holds the same map, is not known to be in
// the registry as written: at 1000 services that map is ~40 KB of JSON,
// written at every override change by every synapse. Otherwise the ack
// leaves them to the catalog ("services": null). A catalog deleted by
// hand, or rewritten by another writer, is found at the next check: the
// ack names the services again at once, and the catalog is written again.
func TestAckLeavesServicesToTheCatalog(t *testing.T) {
	for _, method := range []string{"etcd", "zookeeper"} {
		t.Run(method, func(t *testing.T) { testAckLeavesServicesToTheCatalog(t, method) })
	}
}

func testAckLeavesServicesToTheCatalog(t *testing.T, method string) {
	ctx := context.Background()
	var reg registry.Backend
	var hosts string
	var deleteCatalog func()
	const catalogPath = "/syncstack-test/catalog/synapse-test"
	switch method {
	case "etcd":
		srv := testserver.StartEtcd(t)
		hosts = srv.Endpoint
		ec, err := etcd.New(etcd.Config{Endpoints: []string{hosts}, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
		if err != nil {
			t.Fatal(err)
		}
		reg = ec
		raw, err := clientv3.New(clientv3.Config{Endpoints: []string{hosts}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		deleteCatalog = func() {
			if _, err := raw.Delete(ctx, catalogPath); err != nil {
				t.Fatal(err)
			}
		}
	case "zookeeper":
		zks := testserver.StartZooKeeper(t)
		hosts = zks.Nodes[0].Addr
		zc, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"})
		if err != nil {
			t.Fatal(err)
		}
		reg = zc
		conn, _, err := zk.Connect(zks.Servers(), 5*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		deleteCatalog = func() {
			if err := conn.Delete(catalogPath, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { reg.Close() })
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	if _, err := reg.Register(ctx, "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	catalog := &refusingCatalog{}
	catalog.refuse.Store(true)
	e := startEnv(t, envOpts{Method: method, Hosts: hosts, Services: []string{"web"}, Overrides: true,
		BeforeRun: func(s *Synapse) {
			catalog.CatalogWriter = s.catalog
			s.catalog = catalog
			s.catalogCheck = 200 * time.Millisecond
		}})
	e.waitServers(t, "web", map[string]int{"a": 0})
	drain := func(target string) int64 {
		t.Helper()
		rev, err := reg.PutOverride(ctx, registry.Override{Target: target, State: registry.StateDrain, Reason: "test", By: "t", At: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	// waitAck waits for the ack at rev (0: any) to name the services
	// (named) or to leave them to the catalog.
	waitAck := func(rev int64, named bool) {
		t.Helper()
		var last registry.Ack
		registrytest.Eventually(t, 10*time.Second, fmt.Sprintf("an ack at revision ≥ %d naming the services: %v", rev, named), func() bool {
			acks, err := reg.Acks(ctx)
			if err != nil || len(acks) != 1 {
				return false
			}
			last = acks[0]
			if named {
				return last.Revision >= rev && last.Services["web"] == "/services/web" && !last.ServicesInCatalog
			}
			return last.Revision >= rev && len(last.Services) == 0 && last.ServicesInCatalog
		})
	}
	catalogNames := func(want string) func() bool {
		return func() bool {
			cats, err := reg.Catalogs(ctx)
			return err == nil && len(cats) == 1 && cats[0].Services["web"] == want
		}
	}

	// No catalog yet: the ack is where synctl finds the services.
	waitAck(drain("127.0.0.98"), true)
	// The catalog written: the last ack is rewritten without them, with no
	// override change, and so is the next.
	catalog.refuse.Store(false)
	registrytest.Eventually(t, 10*time.Second, "the catalog written", catalogNames("/services/web"))
	waitAck(0, false)
	waitAck(drain("127.0.0.99"), false)

	// Deleted by hand (and not to be written again yet): the ack names the
	// services again, with no override change.
	catalog.refuse.Store(true)
	deleteCatalog()
	waitAck(0, true)
	catalog.refuse.Store(false)
	registrytest.Eventually(t, 10*time.Second, "the catalog written again", catalogNames("/services/web"))
	waitAck(0, false)

	// Rewritten by another writer (a second synapse under this id): put
	// back as this synapse has it.
	if _, err := reg.PutCatalog(ctx, registry.Catalog{ID: "synapse-test", At: time.Now().UTC(), Services: map[string]string{"web": "/elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 10*time.Second, "the catalog put back", catalogNames("/services/web"))
	if n := testutil.ToFloat64(e.m.CatalogChecks.WithLabelValues("lost")); n != 2 {
		t.Errorf("synapse_catalog_checks_total{result=lost} = %v, want 2 (deleted, then rewritten)", n)
	}
	waitAck(0, false)
}

// ZooKeeper down: the backends stay and HAProxy serves; once it is back,
// synapse reconciles.
func TestRegistryOutageKeepsBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("30s outage")
	}
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	if _, err := reg.Register(context.Background(), "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}})
	e.waitServers(t, "web", map[string]int{"a": 0})

	load := testserver.StartLoad(e.url("web"), 2, 20*time.Millisecond)
	zks.Nodes[0].Kill()
	// Not a wait for a condition: the sleep is the outage, long enough
	// for sessions to expire, with the load running through it.
	time.Sleep(30 * time.Second)
	e.waitServers(t, "web", map[string]int{"a": 0})
	load.Stop()
	if f := load.Failed.Load(); f != 0 || load.OK.Load() == 0 {
		t.Errorf("during the outage: %d ok, %d failed %v", load.OK.Load(), f, load.Failures())
	}
	zks.Nodes[0].Start()
	if err := zks.Nodes[0].WaitServing(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	reg2 := zkClient(t, zks.Servers())
	if _, err := reg2.Register(context.Background(), "/services/web", inst(b, "b")); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 0})
}

// A synapse restarted while the registry is down serves from its cache:
// HAProxy keeps every backend (nothing is emptied).
func TestRestartFromCacheWhileRegistryDown(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	if _, err := reg.Register(context.Background(), "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	o := envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}}
	e := startEnv(t, o)
	e.waitServers(t, "web", map[string]int{"a": 0})
	// What the restart depends on: the state cache holds a.
	registrytest.Eventually(t, 5*time.Second, "the state cache with a", func() bool {
		c, err := loadCache(filepath.Join(e.dir, "synapse-state.json"))
		return err == nil && c != nil && len(c.Sets["web"]) == 1 && c.Sets["web"][0].Name == "a"
	})
	e.stop()
	zks.Nodes[0].Kill()

	// HAProxy is gone too (a host reboot): the new synapse must start it
	// with the cached backends.
	testserver.KillHAProxy(filepath.Join(e.dir, "haproxy.pid"))
	os.Remove(filepath.Join(e.dir, "haproxy.cfg"))

	o.dir, o.ports = e.dir, e.ports
	e2 := startEnv(t, o)
	e2.waitServers(t, "web", map[string]int{"a": 0})
	if got := get(t, e2.url("web")); got != "a" {
		t.Errorf("after restart from cache: %q", got)
	}
}

// A new service in the config (a SIGHUP, or a restart) costs exactly one
// reload and no failed request on the other services.
func TestNewServiceOneReload(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	for _, p := range []string{"/services/web", "/services/api"} {
		if _, err := reg.Register(context.Background(), p, inst(a, "a")); err != nil {
			t.Fatal(err)
		}
	}
	o := envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}}
	e := startEnv(t, o)
	e.waitServers(t, "web", map[string]int{"a": 0})
	before := e.haproxyNow(t)
	load := testserver.StartLoad(e.url("web"), 4, 5*time.Millisecond)
	registrytest.Eventually(t, 5*time.Second, "the load running before the change", func() bool { return load.OK.Load() >= 20 })
	e.stop()

	o.dir, o.ports, o.Services = e.dir, e.ports, []string{"web", "api"}
	e2 := startEnv(t, o)
	e2.waitServers(t, "api", map[string]int{"a": 0})
	registrytest.Eventually(t, 5*time.Second, "HAProxy reloaded once, to a new worker", func() bool {
		now := e2.haproxyNow(t)
		return now.reloads == before.reloads+1 && now.pid != before.pid
	})
	// And only once: a bounded negative check with the load still running.
	e2.noReloadWithin(t, 500*time.Millisecond, e2.haproxyNow(t))
	ok := load.OK.Load()
	registrytest.Eventually(t, 5*time.Second, "the load running after the change", func() bool { return load.OK.Load() >= ok+20 })
	load.Stop()
	if n := e2.reloads(); n != 1 {
		t.Errorf("synapse counted %v reloads for a new service, want 1", n)
	}
	if f := load.Failed.Load(); f != 0 || load.OK.Load() < 50 {
		t.Errorf("during the change: %d ok, %d failed: %v", load.OK.Load(), f, load.Failures())
	}
	if got := get(t, e2.url("api")); got != "a" {
		t.Errorf("new service answered %q", got)
	}
}

// A deregistered backend with a request in flight: the request completes,
// and the server leaves HAProxy once it has ended, with no further change
// to trigger it (the generator asks synapse for the retry).
func TestRemovalFinishesAfterRequestInFlight(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartHoldBackend(t, "b", "127.0.0.12")
	ctx := context.Background()
	rb, err := reg.Register(ctx, "/services/web", registry.Instance{Host: b.Host, Port: b.Port, Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}})
	e.waitServers(t, "web", map[string]int{"b": 0})
	before := e.haproxyNow(t)

	done := e.holdRequest(t, "web", b) // in flight on b: HAProxy counts it
	if _, err := reg.Register(ctx, "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	if err := rb.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 0, "b": 1}) // maint: no new requests
	// While the request holds it, b stays (in maint).
	if got := e.sessions(t, "web", "b"); got != 1 {
		t.Fatalf("b has %d sessions in HAProxy, want the held request", got)
	}
	b.Free()
	start := time.Now()
	e.waitServers(t, "web", map[string]int{"a": 0})
	t.Logf("b deleted %v after its request ended", time.Since(start))
	if got := <-done; got != "b" {
		t.Errorf("the request in flight on b answered %q", got)
	}
	e.assertNoReloadSince(t, before)
}

// A secured etcd (TLS with client certificates, and a password): synapse
// watches and acks through etcd_security.
func TestSecuredEtcd(t *testing.T) {
	pki := testserver.NewPKI(t)
	srv := testserver.StartEtcdTLS(t, pki)
	sec := etcd.Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	var ecfg etcd.Config
	ecfg.Endpoints, ecfg.Root, ecfg.Metrics = []string{srv.Endpoint}, "/syncstack-test", registry.NewMetrics(nil)
	if err := sec.Apply(&ecfg); err != nil {
		t.Fatal(err)
	}
	reg, err := etcd.New(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	if _, err := reg.Register(context.Background(), "/services/web", inst(a, "a")); err != nil {
		t.Fatal(err)
	}
	// The one server is drained below: panic_threshold 0, or the guard
	// against mass removal would hold it (100 % of the service out).
	extra := fmt.Sprintf("etcd_security: {ca_file: %s, cert_file: %s, key_file: %s}\npanic_threshold: 0\n", pki.CA, pki.ClientCert, pki.ClientKey)
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web"}, Overrides: true, Extra: extra})
	e.waitServers(t, "web", map[string]int{"a": 0})
	if got := get(t, e.url("web")); got != "a" {
		t.Errorf("got %q", got)
	}
	// An override through the secured registry reaches HAProxy, and is acked.
	rev, err := reg.PutOverride(context.Background(), registry.Override{Target: "127.0.0.11", State: registry.StateDrain, Reason: "tls test", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	e.waitServers(t, "web", map[string]int{"a": 8})
	registrytest.Eventually(t, 5*time.Second, "the ack over TLS", func() bool {
		acks, err := reg.Acks(context.Background())
		return err == nil && len(acks) == 1 && acks[0].Revision >= rev
	})
}
