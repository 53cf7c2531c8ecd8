package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/fleettest"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

var binDir string

// backendEnv makes the test binary an HTTP backend process: "host:port id".
const backendEnv = "SYNCSTACK_E2E_BACKEND"

func TestMain(m *testing.M) {
	if spec := os.Getenv(backendEnv); spec != "" {
		serveBackend(spec)
		return
	}
	dir, err := os.MkdirTemp("", "e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	if out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/nerve", "../cmd/synapse", "../cmd/synctl").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func serveBackend(spec string) {
	addr, id, _ := strings.Cut(spec, " ")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, id)
	})}
	go func() {
		sigs := make(chan os.Signal, 1)
		signalNotify(sigs)
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // graceful: in-flight requests finish
	}()
	srv.Serve(ln)
}

// proc is a child process whose output goes to a log file.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc starts a process; it is killed when root's test ends (not a
// subtest's: processes outlive the scenario that started them).
func startProc(t, root *testing.T, logPath string, env []string, name string, args ...string) *proc {
	t.Helper()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	log.Close()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	root.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits (up to 15s, then SIGKILL).
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// fleet is one registry, three backend hosts with a nerve each, one
// synapse managing HAProxy, and synctl.
type fleet struct {
	t        *testing.T // the running (sub)test
	root     *testing.T // owns the processes
	method   string
	hosts    string // for configs
	flag     []string
	dir      string
	port     int // HAProxy frontend
	admin    int // synapse admin
	backends map[string]*proc
	addrs    map[string]string // id → host:port
	nerves   map[string]*proc
	synapse  *proc
	zk       *testserver.ZKEnsemble
	etcd     *testserver.Etcd
}

var ids = []string{"a", "b", "c"}

func newFleet(t *testing.T, method string) *fleet {
	f := &fleet{t: t, root: t, method: method, dir: t.TempDir(), backends: map[string]*proc{}, addrs: map[string]string{}, nerves: map[string]*proc{}}
	switch method {
	case "zookeeper":
		f.zk = testserver.StartZKEnsemble(t, 3)
		f.hosts = strings.Join(f.zk.Servers(), ", ")
		f.flag = []string{"--zk", strings.Join(f.zk.Servers(), ",")}
	case "etcd":
		f.etcd = testserver.StartEtcd(t)
		f.hosts = f.etcd.Endpoint
		f.flag = []string{"--etcd", f.etcd.Endpoint}
	}
	f.port, f.admin = testserver.FreePort(t), testserver.FreePort(t)
	for i, id := range ids {
		f.addrs[id] = fmt.Sprintf("127.0.0.1%d:%d", i+1, testserver.FreePort(t))
		f.startBackend(id)
		f.startNerve(id)
	}
	testserver.KillHAProxyAtCleanup(t, filepath.Join(f.dir, "haproxy.pid"))
	f.startSynapse()
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 30*time.Second)
	f.waitAck(30 * time.Second)
	return f
}

// heal restarts whatever a failed scenario left stopped (a backend, a
// registry server, synapse) and waits until HAProxy has all three
// backends ready, so one failure does not fail every scenario after it.
func (f *fleet) heal(t *testing.T) {
	f.t = t
	for _, id := range ids {
		if f.backends[id].exited() {
			t.Logf("heal: backend %s was left stopped; starting it", id)
			f.startBackend(id)
		}
		if f.nerves[id].exited() {
			t.Logf("heal: nerve %s was left stopped; starting it", id)
			f.startNerve(id)
		}
	}
	if f.zk != nil {
		for _, n := range f.zk.Nodes {
			if !n.Running() {
				t.Log("heal: a ZooKeeper node was left stopped; starting it")
				n.Start()
				if err := n.WaitServing(60 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if f.etcd != nil && !f.etcd.Running() {
		t.Log("heal: etcd was left stopped; starting it")
		f.etcd.Start()
	}
	if f.synapse.exited() {
		t.Log("heal: synapse was left stopped; starting it")
		f.startSynapse()
	}
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 30*time.Second)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (f *fleet) startBackend(id string) {
	self, _ := os.Executable()
	f.backends[id] = startProc(f.t, f.root, filepath.Join(f.dir, "backend-"+id+".log"), []string{backendEnv + "=" + f.addrs[id] + " " + id}, self)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", f.addrs[id]); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("backend %s not listening", id)
		}
	}
}

func (f *fleet) startNerve(id string) {
	host, port, _ := net.SplitHostPort(f.addrs[id])
	reg := fmt.Sprintf("zk_hosts: [%s]\n    zk_path: /services/web", f.hosts)
	if f.method == "etcd" {
		reg = fmt.Sprintf("etcd_endpoints: [%s]\n    etcd_path: /services/web", f.hosts)
	}
	cfg := fmt.Sprintf(`instance_id: %s
admin: {listen: "off"}
zk_session_timeout: 4s
etcd_lease_ttl: 3s
services:
  web:
    host: %s
    port: %s
    check_interval: 200ms
    rise: 2
    fall: 2
    checks: [{type: http, uri: /health, timeout: 150ms}]
    %s
`, id, host, port, reg)
	path := filepath.Join(f.dir, "nerve-"+id+".yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	f.nerves[id] = startProc(f.t, f.root, filepath.Join(f.dir, "nerve-"+id+".log"), nil, filepath.Join(binDir, "nerve"), "-config", path)
}

func (f *fleet) startSynapse() {
	cfg := fmt.Sprintf(`id: e2e-synapse
state_file_path: %[1]s/synapse-state.json
admin: {listen: "127.0.0.1:%[4]d"}
overrides: {method: %[2]s, hosts: [%[3]s], root: /syncstack}
haproxy:
  manage: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  removal_grace: 5s
  defaults: [mode http, timeout connect 500ms, timeout client 10s, timeout server 10s, retries 3, option redispatch, "retry-on conn-failure empty-response response-timeout"]
services:
  web:
    discovery: {method: %[2]s, hosts: [%[3]s], path: /services/web}
    haproxy: {port: %[5]d, bind_address: 127.0.0.1, listen: [mode http, balance roundrobin]}
`, f.dir, f.method, f.hosts, f.admin, f.port)
	path := filepath.Join(f.dir, "synapse.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	f.synapse = startProc(f.t, f.root, filepath.Join(f.dir, "synapse.log"), nil, filepath.Join(binDir, "synapse"), "-config", path)
}

func (f *fleet) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", f.port) }

func (f *fleet) stats() string { return filepath.Join(f.dir, "stats.sock") }

func (f *fleet) waitServers(want map[string]int, timeout time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	var got map[string]testserver.ServerState
	for time.Since(start) < timeout {
		var err error
		if got, err = testserver.TryHAProxyServers(f.stats(), "web"); err == nil && fleettest.Matches(got, want) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatalf("HAProxy web servers %+v, want %v\nsynapse log:\n%s\nnerve logs:\n%s\n%s\n%s", got, want, tail(filepath.Join(f.dir, "synapse.log"), 30),
		tail(filepath.Join(f.dir, "nerve-a.log"), 15), tail(filepath.Join(f.dir, "nerve-b.log"), 15), tail(filepath.Join(f.dir, "nerve-c.log"), 15))
	return 0
}

// watchServers polls HAProxy every 10ms until stop is called, and returns
// every moment its web servers did not match want (a backend missing, or
// not ready), at most ten.
func (f *fleet) watchServers(want map[string]int) (stop func() []string) {
	done := make(chan struct{})
	out := make(chan []string, 1)
	go func() {
		var bad []string
		for {
			select {
			case <-done:
				out <- bad
				return
			case <-time.After(10 * time.Millisecond):
			}
			got, err := testserver.TryHAProxyServers(f.stats(), "web")
			if err == nil && !fleettest.Matches(got, want) && len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), got))
			}
		}
	}()
	return func() []string { close(done); return <-out }
}

func (f *fleet) synctl(args ...string) string {
	f.t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "synctl"), append(args, f.flag...)...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("synctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitAck waits until synctl sees the synapse's ack and, through it, all
// three backends registered.
func (f *fleet) waitAck(timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := exec.Command(filepath.Join(binDir, "synctl"), append([]string{"status"}, f.flag...)...).CombinedOutput()
		if err == nil && strings.Contains(string(out), "e2e-synapse: revision") &&
			strings.Count(string(out), " ready ") == 3 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no ack from synapse after %v:\n%s", timeout, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *fleet) metric(name string) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", f.admin))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (f *fleet) workerPID() int {
	return testserver.HAProxyWorkerPID(f.t, filepath.Join(f.dir, "master.sock"))
}

// leaseRecoveries counts, per nerve, the times its etcd lease was kept
// alive again after an interruption (from its log: nerve's admin API is
// off in the fleet).
func (f *fleet) leaseRecoveries() map[string]int {
	out := map[string]int{}
	for id := range f.nerves {
		b, _ := os.ReadFile(filepath.Join(f.dir, "nerve-"+id+".log"))
		out[id] = strings.Count(string(b), "lease kept alive again after an interruption")
	}
	return out
}

// waitLeasesRecovered waits until every nerve's etcd lease was kept alive
// again since before (a count from leaseRecoveries taken before the
// registry came back). A registry stopped again before that would expire
// the leases it had just extended: two outages, not the one a scenario
// means. ZooKeeper sessions need no such wait.
func (f *fleet) waitLeasesRecovered(before map[string]int, timeout time.Duration) {
	f.t.Helper()
	if f.method != "etcd" {
		return
	}
	registrytest.Eventually(f.t, timeout, "every nerve's lease kept alive again after the outage", func() bool {
		now := f.leaseRecoveries()
		for id, n := range before {
			if now[id] <= n {
				return false
			}
		}
		return true
	})
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// load runs the load generator until stop; it reports with t.Logf.
type load struct {
	*testserver.Load
	once sync.Once
}

func startLoad(f *fleet) *load {
	return &load{Load: testserver.StartLoad(f.url(), 4, 5*time.Millisecond)}
}

func (l *load) finish(t *testing.T, what string) (ok, failed int64) {
	l.once.Do(l.Stop)
	ok, failed = l.OK.Load(), l.Failed.Load()
	t.Logf("%s: %d requests ok, %d failed, by backend %v", what, ok, failed, l.Served())
	return ok, failed
}
