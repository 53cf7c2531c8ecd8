package nerve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// backend is a local HTTP service whose health the test flips.
type backend struct {
	healthy atomic.Bool
	srv     *httptest.Server
	port    int
}

func startBackend(t *testing.T) *backend {
	b := &backend{}
	b.healthy.Store(true)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !b.healthy.Load() {
			http.Error(w, "sick", 503)
			return
		}
		fmt.Fprint(w, "OK")
	}))
	t.Cleanup(b.srv.Close)
	b.port = b.srv.Listener.Addr().(*net.TCPAddr).Port
	return b
}

// loadConfig renders a YAML template with data and loads it like a file.
func loadConfig(t *testing.T, tmpl string, data any) *Config {
	t.Helper()
	var buf bytes.Buffer
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(writeFile(t, t.TempDir(), "nerve.yaml", buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type harness struct {
	agent   *Agent
	metrics *Metrics
	rm      *registry.Metrics
	backs   []Registry
	cancel  context.CancelFunc
	done    chan error
}

func startAgent(t *testing.T, cfg *Config) *harness {
	t.Helper()
	h := &harness{metrics: NewMetrics(nil), rm: registry.NewMetrics(nil), done: make(chan error, 1)}
	var inner BackendFactory
	h.agent = New(cfg, Options{Metrics: h.metrics, RegistryMetrics: h.rm, NewBackend: func(svc *ServiceConfig) (Registry, error) {
		b, err := inner(svc)
		if err == nil {
			h.backs = append(h.backs, b)
		}
		return b, err
	}})
	inner = DefaultBackends(cfg, h.agent.log, h.rm)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	return h
}

func (h *harness) status(t *testing.T, name string) ServiceStatus {
	t.Helper()
	for _, s := range h.agent.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no service %s", name)
	return ServiceStatus{}
}

func (h *harness) fails(service string) float64 {
	var total float64
	for _, r := range h.agent.Status() {
		if r.Name == service {
			for _, c := range r.Checks {
				total += testutil.ToFloat64(h.metrics.CheckResults.WithLabelValues(service, c.Check, "fail"))
			}
		}
	}
	return total
}

const zkTemplate = `instance_id: host-1
services:
  web:
    host: 127.0.0.1
    port: {{.Port}}
    check_interval: 100ms
    rise: 2
    fall: 3
    checks:
      - {type: http, uri: /health, timeout: 80ms}
    zk_hosts: [{{.ZK}}]
    zk_path: /services/web/services
`

func watchZK(t *testing.T, servers []string, path string) *registrytest.Watcher {
	c, err := zookeeper.New(zookeeper.Config{Servers: servers, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return registrytest.StartWatch(t, c, path)
}

func TestRiseAndFall(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	b := startBackend(t)
	cfg := loadConfig(t, zkTemplate, map[string]any{"Port": b.port, "ZK": zks.Nodes[0].Addr})
	w := watchZK(t, zks.Servers(), "/services/web/services")
	w.WaitFor(t, 5*time.Second, "empty", registrytest.HasLen(0))

	h := startAgent(t, cfg)
	got := w.WaitFor(t, 5*time.Second, "registered", registrytest.Has("host-1"))
	if got[0].Port != b.port || got[0].Host != "127.0.0.1" {
		t.Errorf("registered %+v", got[0])
	}
	// The watcher can see the node before Register has returned to nerve.
	registrytest.Eventually(t, time.Second, "status registered and up after rise", func() bool {
		s := h.status(t, "web")
		return s.GoodStreak >= 2 && s.Registered && s.State == "up"
	})

	b.healthy.Store(false)
	w.WaitFor(t, 5*time.Second, "deregistered", registrytest.HasLen(0))
	if n := h.fails("web"); n < 3 || n > 4 {
		t.Errorf("deregistered after %v failed rounds, want fall = 3", n)
	}
	registrytest.Eventually(t, time.Second, "status down and unregistered after fall", func() bool {
		s := h.status(t, "web")
		return s.State == "down" && !s.Registered && !s.Checks[0].OK && strings.Contains(s.Checks[0].Error, "503")
	})

	b.healthy.Store(true)
	start := time.Now()
	w.WaitFor(t, 5*time.Second, "registered again", registrytest.Has("host-1"))
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("re-registered after %v: faster than rise = 2 rounds of 100ms allows", d)
	}
}

// A registry that is down is "unknown": the service stays healthy, the write
// is retried and counted, and it lands when the registry is back.
func TestRegistryDownIsUnknown(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	b := startBackend(t)
	cfg := loadConfig(t, zkTemplate+"registry_timeout: 300ms\n", map[string]any{"Port": b.port, "ZK": zks.Nodes[0].Addr})
	for _, svc := range cfg.Services {
		svc.CheckInterval = confutil.Duration(50 * time.Millisecond)
	}
	zks.Nodes[0].Kill()
	h := startAgent(t, cfg)
	registrytest.Eventually(t, 5*time.Second, "healthy, unregistered and retrying while the registry is down", func() bool {
		st := h.agent.Status()
		return len(st) == 1 && st[0].Healthy && !st[0].Registered && st[0].LastError != "" &&
			testutil.ToFloat64(h.metrics.RegistryErrors.WithLabelValues("web", "register")) >= 2
	})
	zks.Nodes[0].Start()
	if err := zks.Nodes[0].WaitServing(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	w := watchZK(t, zks.Servers(), "/services/web/services")
	w.WaitFor(t, 30*time.Second, "registered once the registry is back", registrytest.Has("host-1"))
	if n := testutil.ToFloat64(h.metrics.Transitions.WithLabelValues("web", "down")); n != 0 {
		t.Errorf("the registry outage made the service go down %v times", n)
	}

}

// After a ZooKeeper session expiry the registration is back within a second
// of the new session.
func TestSessionExpiryReregistersWithinOneSecond(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
	b := startBackend(t)
	cfg := loadConfig(t, zkTemplate+"zk_session_timeout: 1s\n", map[string]any{"Port": b.port, "ZK": proxy.Addr})
	h := startAgent(t, cfg)
	w := watchZK(t, zks.Servers(), "/services/web/services")
	w.WaitFor(t, 5*time.Second, "registered", registrytest.Has("host-1"))
	zkc := h.backs[0].(*zookeeper.Client)
	old := zkc.SessionID()

	proxy.Cut()
	w.WaitFor(t, 10*time.Second, "expired", registrytest.HasLen(0))
	proxy.Restore()
	var newSession time.Time
	registrytest.Eventually(t, 15*time.Second, "a new session", func() bool {
		id := zkc.SessionID()
		if id != 0 && id != old {
			newSession = time.Now()
			return true
		}
		return false
	})
	w.WaitFor(t, 5*time.Second, "re-registered", registrytest.Has("host-1"))
	if d := time.Since(newSession); d > time.Second {
		t.Errorf("re-registered %v after the new session, want ≤ 1s", d)
	}
	if n := testutil.ToFloat64(h.rm.Reregistrations.WithLabelValues("zookeeper")); n < 1 {
		t.Errorf("re-registrations metric = %v", n)
	}
}

func TestMaintenanceAndWeightThroughAdminAPI(t *testing.T) {
	srv := testserver.StartEtcd(t)
	b := startBackend(t)
	cfg := loadConfig(t, `instance_id: host-1
services:
  api:
    host: 127.0.0.1
    port: {{.Port}}
    weight: 5
    check_interval: 50ms
    rise: 1
    fall: 1
    checks: [{type: tcp}]
    etcd_endpoints: [{{.Etcd}}]
    etcd_path: /services/api
`, map[string]any{"Port": b.port, "Etcd": srv.Endpoint})
	h := startAgent(t, cfg)
	reg := prometheus.NewRegistry()
	api := httptest.NewServer(h.agent.AdminHandler(reg))
	t.Cleanup(api.Close)

	ec, err := etcd.New(etcd.Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	w := registrytest.StartWatch(t, ec, "/services/api")
	w.WaitFor(t, 5*time.Second, "registered with weight 5", func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 5
	})

	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, api.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %v, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	call("POST", "/services/api/maintenance", `{"reason":"kernel upgrade"}`, 200)
	w.WaitFor(t, 5*time.Second, "deregistered by maintenance", registrytest.HasLen(0))
	time.Sleep(200 * time.Millisecond) // several healthy rounds: still held out
	w.Quiet(t, 100*time.Millisecond, "during maintenance")
	st := call("GET", "/status", "", 200)
	if b, ok := st["build"].(map[string]any); !ok || b["version"] == "" || b["go_version"] == "" {
		t.Errorf("/status has no build: %v", st["build"])
	}
	svc := st["services"].([]any)[0].(map[string]any)
	if svc["state"] != "maintenance" || svc["maintenance"].(map[string]any)["reason"] != "kernel upgrade" || svc["registered"] != false {
		t.Errorf("status in maintenance: %v", svc)
	}
	call("DELETE", "/services/api/maintenance", "", 200)
	w.WaitFor(t, 5*time.Second, "back after maintenance", registrytest.HasLen(1))

	call("PUT", "/services/api/weight", `{"weight": 42}`, 200)
	w.WaitFor(t, 5*time.Second, "weight 42", func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 42
	})
	call("PUT", "/services/api/weight", `{"weight": 999}`, 400)
	call("PUT", "/services/api/weight", `{"wait": 1}`, 400)
	call("PUT", "/services/nope/weight", `{"weight": 1}`, 404)
	call("POST", "/services/api/maintenance", `{"reason":"a\nb"}`, 400)

	resp, err := http.Get(api.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/metrics = %d", resp.StatusCode)
	}
}

func TestReloadAddsRemovesAndChanges(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	b1, b2 := startBackend(t), startBackend(t)
	const tmpl = `instance_id: host-1
services:
{{range .Services}}  {{.Name}}:
    host: 127.0.0.1
    port: {{.Port}}
    weight: {{.Weight}}
    check_interval: 50ms
    rise: 1
    fall: 1
    checks: [{type: tcp}]
    zk_hosts: [{{$.ZK}}]
    zk_path: /services/{{.Name}}
{{end}}`
	type svc struct {
		Name         string
		Port, Weight int
	}
	zk := zks.Nodes[0].Addr
	h := startAgent(t, loadConfig(t, tmpl, map[string]any{"ZK": zk, "Services": []svc{{"a", b1.port, 1}, {"b", b2.port, 1}}}))
	wa := watchZK(t, zks.Servers(), "/services/a")
	wb := watchZK(t, zks.Servers(), "/services/b")
	wc := watchZK(t, zks.Servers(), "/services/c")
	wa.WaitFor(t, 5*time.Second, "a", registrytest.HasLen(1))
	wb.WaitFor(t, 5*time.Second, "b", registrytest.HasLen(1))
	wc.WaitFor(t, 5*time.Second, "no c", registrytest.HasLen(0))
	if err := h.agent.SetMaintenance("a", "keep me"); err != nil {
		t.Fatal(err)
	}
	wa.WaitFor(t, 5*time.Second, "a in maintenance", registrytest.HasLen(0))

	// a changes weight (and stays in maintenance), b goes, c comes.
	next := loadConfig(t, tmpl, map[string]any{"ZK": zk, "Services": []svc{{"a", b1.port, 9}, {"c", b2.port, 1}}})
	if err := h.agent.Reload(next); err != nil {
		t.Fatal(err)
	}
	wb.WaitFor(t, 5*time.Second, "b removed", registrytest.HasLen(0))
	wc.WaitFor(t, 5*time.Second, "c added", registrytest.HasLen(1))
	if s := h.status(t, "a"); s.State != "maintenance" {
		t.Errorf("maintenance lost over reload: %+v", s)
	}
	h.agent.ClearMaintenance("a")
	wa.WaitFor(t, 5*time.Second, "a with the new weight", func(s []registry.Instance) bool {
		return len(s) == 1 && *s[0].Weight == 9
	})
	if len(h.agent.Status()) != 2 {
		t.Errorf("status lists %d services, want 2", len(h.agent.Status()))
	}

	// Shutdown deregisters everything.
	if err := h.agent.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	wa.WaitFor(t, 5*time.Second, "a gone at shutdown", registrytest.HasLen(0))
	wc.WaitFor(t, 5*time.Second, "c gone at shutdown", registrytest.HasLen(0))
}

// An out-of-process plugin check: its answers drive rise and fall like any
// check's, and the plugin process ends with nerve.
func TestPluginCheck(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "testplugin")
	if out, err := exec.Command("go", "build", "-o", bin, "../plugin/testdata/testplugin").CombinedOutput(); err != nil {
		t.Fatalf("build the test plugin: %v\n%s", err, out)
	}
	modeFile := filepath.Join(dir, "mode")
	setMode := func(m string) {
		if err := os.WriteFile(modeFile, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setMode("ok")
	cfg := loadConfig(t, `instance_id: host-1
services:
  web:
    host: 127.0.0.1
    port: 8080
    check_interval: 100ms
    rise: 2
    fall: 2
    checks:
      - {type: plugin, plugin: {{.Bin}}, config: {mode_file: {{.Mode}}}, timeout: 80ms}
    zk_hosts: [{{.ZK}}]
    zk_path: /services/web
`, map[string]any{"Bin": bin, "Mode": modeFile, "ZK": zks.Nodes[0].Addr})
	w := watchZK(t, zks.Servers(), "/services/web")
	h := startAgent(t, cfg)
	w.WaitFor(t, 10*time.Second, "registered", registrytest.Has("host-1"))

	setMode("fail")
	w.WaitFor(t, 5*time.Second, "deregistered on the plugin's word", registrytest.HasLen(0))
	if s := h.status(t, "web"); !strings.Contains(s.Checks[0].Error, "backend says no") || s.Checks[0].Check != "plugin:testplugin" {
		t.Errorf("check status %+v", s.Checks[0])
	}
	setMode("hang") // a hung plugin is a failed check, and is replaced
	registrytest.Eventually(t, 5*time.Second, "a timeout reported", func() bool {
		return strings.Contains(h.status(t, "web").Checks[0].Error, "timed out")
	})
	setMode("ok")
	w.WaitFor(t, 10*time.Second, "registered again", registrytest.Has("host-1"))

	setMode("pid")
	var pid int
	registrytest.Eventually(t, 5*time.Second, "the plugin's PID", func() bool {
		_, err := fmt.Sscanf(h.status(t, "web").Checks[0].Error, "pid %d", &pid)
		return err == nil
	})
	h.cancel()
	<-h.done
	h.done <- nil // for the cleanup
	registrytest.Eventually(t, 5*time.Second, "the plugin process gone with nerve", func() bool { return !testserver.Alive(pid) })
}

// Registration in an etcd that requires TLS with client certificates.
func TestSecuredEtcd(t *testing.T) {
	pki := testserver.NewPKI(t)
	srv := testserver.StartEtcdTLS(t, pki)
	b := startBackend(t)
	cfg := loadConfig(t, `instance_id: host-1
etcd_security: {ca_file: {{.CA}}, cert_file: {{.Cert}}, key_file: {{.Key}}}
services:
  web:
    host: 127.0.0.1
    port: {{.Port}}
    check_interval: 100ms
    checks: [{type: tcp}]
    etcd_endpoints: [{{.Etcd}}]
    etcd_path: /services/web
`, map[string]any{"CA": pki.CA, "Cert": pki.ClientCert, "Key": pki.ClientKey, "Port": b.port, "Etcd": srv.Endpoint})
	var ecfg etcd.Config
	ecfg.Endpoints, ecfg.Metrics = []string{srv.Endpoint}, registry.NewMetrics(nil)
	if err := cfg.EtcdSecurity.Apply(&ecfg); err != nil {
		t.Fatal(err)
	}
	watcher, err := etcd.New(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watcher.Close() })
	w := registrytest.StartWatch(t, watcher, "/services/web")
	startAgent(t, cfg)
	w.WaitFor(t, 10*time.Second, "registered over TLS", registrytest.Has("host-1"))
}

// zk_auth_file: nerve writes as its digest identity, and its records are
// writable by that identity alone (readable by all).
func TestZKAuthFileFromConfig(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	b := startBackend(t)
	cred := filepath.Join(t.TempDir(), "zk-nerve")
	os.WriteFile(cred, []byte("nerve:s3cret\n"), 0o600)
	cfg := loadConfig(t, zkTemplate+"zk_auth_file: "+cred+"\n", map[string]any{"Port": b.port, "ZK": zks.Nodes[0].Addr})
	w := watchZK(t, zks.Servers(), "/services/web/services")
	startAgent(t, cfg)
	w.WaitFor(t, 5*time.Second, "registered", registrytest.Has("host-1"))

	conn, _, err := zk.Connect(zks.Servers(), 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	children, _, err := conn.Children("/services/web/services")
	if err != nil || len(children) != 1 {
		t.Fatalf("children %v %v", children, err)
	}
	acl, _, err := conn.GetACL("/services/web/services/" + children[0])
	if err != nil {
		t.Fatal(err)
	}
	nerveID := (&zookeeper.Auth{User: "nerve", Password: "s3cret"}).DigestID()
	var owner, world bool
	for _, a := range acl {
		// ZooKeeper 3.7+ masks the hash for readers without ADMIN: "nerve:x".
		owner = owner || (a.Scheme == "digest" && (a.ID == nerveID || a.ID == "nerve:x") && a.Perms == zk.PermAll)
		world = world || (a.Scheme == "world" && a.ID == "anyone" && a.Perms == zk.PermRead)
	}
	if !owner || !world {
		t.Errorf("record ACL %+v: want digest %s all, world anyone read", acl, nerveID)
	}
	// An unauthenticated client cannot rewrite it.
	if _, err := conn.Set("/services/web/services/"+children[0], []byte(`{"host":"6.6.6.6","port":80}`), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("anonymous rewrite of a nerve record: %v, want ErrNoAuth", err)
	}
}

// Between rounds a service's checks hold no goroutine (a round runs on a
// timer's goroutine of its own): 100 services used to park 100 goroutines,
// each with the stack its dials had grown (~1 MB of nerve's RSS). The
// rounds keep their interval, spread over it (not all services at once),
// and nerve still stops at once.
func TestChecksHoldNoGoroutineBetweenRounds(t *testing.T) {
	const services = 40
	zks := testserver.StartZooKeeper(t)
	b := startBackend(t)
	var cfg strings.Builder
	cfg.WriteString("instance_id: host-1\nservices:\n")
	for i := range services {
		fmt.Fprintf(&cfg, "  svc%02d:\n    host: 127.0.0.1\n    port: %d\n    check_interval: 1s\n    checks: [{type: tcp, timeout: 500ms}]\n    zk_hosts: [%s]\n    zk_path: /services/svc%02d\n",
			i, b.port, zks.Nodes[0].Addr, i)
	}
	loaded, err := Load(writeFile(t, t.TempDir(), "nerve.yaml", cfg.String()))
	if err != nil {
		t.Fatal(err)
	}
	h := startAgent(t, loaded)
	rounds := func() float64 {
		var n float64
		for _, s := range h.agent.Status() {
			n += testutil.ToFloat64(h.metrics.CheckResults.WithLabelValues(s.Name, s.Checks[0].Check, "ok"))
		}
		return n
	}
	registrytest.Eventually(t, 15*time.Second, "every service registered", func() bool {
		for _, s := range h.agent.Status() {
			if !s.Registered {
				return false
			}
		}
		return len(h.agent.Status()) == services
	})
	// Rounds go on, each service at its interval.
	first, start := rounds(), time.Now()
	registrytest.Eventually(t, 10*time.Second, "two more rounds of every service", func() bool { return rounds() >= first+2*services })
	if d := time.Since(start); d < time.Second {
		t.Errorf("two rounds of 1s took %v", d)
	}
	// The services' rounds are spread over the interval, not all at once:
	// at most 3/4 of them within any quarter of it.
	var offsets []time.Duration
	ref := h.agent.Status()[0].Checks[0].At
	for _, s := range h.agent.Status() {
		offsets = append(offsets, ((s.Checks[0].At.Sub(ref)%time.Second)+time.Second)%time.Second)
	}
	most := 0
	for _, from := range offsets {
		n := 0
		for _, o := range offsets {
			if d := ((o-from)%time.Second + time.Second) % time.Second; d < 250*time.Millisecond {
				n++
			}
		}
		most = max(most, n)
	}
	if most > services*3/4 {
		t.Errorf("%d of %d services' rounds fall within 250ms of the 1s interval, want them spread", most, services)
	}
	// Goroutines in a service's code: rounds in flight, nothing parked.
	inService := func() int {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		n := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "nerve.(*service)") {
				n++
			}
		}
		return n
	}
	least := services
	for range 5 {
		least = min(least, inService())
	}
	if least > services/4 {
		t.Errorf("%d goroutines in the services' code between rounds (%d services), want few: a goroutine parked per service", least, services)
	}
	// Stopping does not wait for the next round.
	stop := time.Now()
	h.cancel()
	select {
	case <-h.done:
		h.done <- nil // for the cleanup's receive
	case <-time.After(5 * time.Second):
		t.Fatal("nerve did not stop within 5s")
	}
	if d := time.Since(stop); d > 300*time.Millisecond {
		t.Errorf("nerve took %v to stop, want well under a check interval (1s)", d)
	}
}

func TestFirstSlotSpreadsServices(t *testing.T) {
	start := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	for _, interval := range []time.Duration{time.Millisecond, 100 * time.Millisecond, time.Second, 30 * time.Second} {
		seen := map[time.Duration]int{}
		for i := range 50 {
			name := fmt.Sprintf("svc%02d", i)
			slot := firstSlot(name, start, interval)
			if d := slot.Sub(start); d < interval/2 || d >= interval*3/2 {
				t.Errorf("interval %v: %s's second round %v after its first, want within [%v, %v)", interval, name, d, interval/2, interval*3/2)
			}
			if again := firstSlot(name, start, interval); !again.Equal(slot) {
				t.Errorf("interval %v: %s's slot moved: %v, then %v", interval, name, slot, again)
			}
			seen[slot.Sub(start)%interval]++
		}
		if interval >= 100*time.Millisecond {
			if len(seen) != checkSlots {
				t.Errorf("interval %v: 50 services at %d instants of the interval, want %d", interval, len(seen), checkSlots)
			}
			for at, n := range seen {
				if n < 5 {
					t.Errorf("interval %v: %d of 50 services at %v, want them spread evenly", interval, n, at)
				}
			}
		}
	}
}
