package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// This file is the matrix's fleet: a 3-member registry cluster (ZooKeeper
// ensemble or etcd cluster of real processes), one synapse managing HAProxy,
// nerves with their backends started per scenario, and two observers that
// run the whole time: HAProxy's `show servers state` every 10 ms and the
// registry's own contents (records and overrides) every 50 ms.

const (
	mxService     = "web"
	mxPath        = "/services/web"
	mxRoot        = "/syncstack"
	mxSessionTime = 4 * time.Second // nerve's zk_session_timeout
	mxLeaseTTL    = 3 * time.Second // nerve's etcd_lease_ttl
)

// member is one registry server process.
type member interface {
	Kill()
	Start()
	Freeze()
	Thaw()
	Running() bool
	name() string
	addr() string // as clients dial it
}

// cluster is the registry under test, seen the same way for both kinds.
type cluster interface {
	members() []member
	// leader is the member leading now, or nil.
	leader() member
	// waitHealthy waits until every member serves with a leader elected.
	waitHealthy(timeout time.Duration) error
	// reader opens a client that reads the registry's contents; it
	// refuses what a server that distrusted names answered.
	reader(distrusted func(addr string) bool) (registryReader, error)
	nerveRegistry() string // nerve's service keys
	synapseHosts() string  // synapse's hosts list (YAML flow)
	synctlFlag() []string
}

type zkMember struct{ *testserver.ZKNode }

func (m zkMember) name() string { return fmt.Sprintf("zk%d", m.ID) }
func (m zkMember) addr() string { return m.Addr }

type zkCluster struct{ e *testserver.ZKEnsemble }

func (c zkCluster) members() []member {
	out := make([]member, len(c.e.Nodes))
	for i, n := range c.e.Nodes {
		out[i] = zkMember{n}
	}
	return out
}

func (c zkCluster) leader() member {
	if l := c.e.Leader(); l != nil {
		return zkMember{l}
	}
	return nil
}

// waitHealthy waits until every node serves and exactly one says leader
// (a thawed leader says so until it notices it was deposed).
func (c zkCluster) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.e.Nodes {
		if err := n.WaitServing(time.Until(deadline)); err != nil {
			return err
		}
	}
	for {
		var modes []string
		leaders := 0
		for _, n := range c.e.Nodes {
			m, err := n.Mode()
			if err != nil {
				m = err.Error()
			}
			if m == "leader" {
				leaders++
			}
			modes = append(modes, fmt.Sprintf("zk%d %s", n.ID, m))
		}
		if leaders == 1 && !slices.ContainsFunc(modes, func(m string) bool { return !strings.HasSuffix(m, " leader") && !strings.HasSuffix(m, " follower") }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper: not one leader and followers after %v: %s", timeout, strings.Join(modes, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c zkCluster) nerveRegistry() string {
	return fmt.Sprintf("zk_hosts: [%s]\n    zk_path: %s", strings.Join(c.e.Servers(), ", "), mxPath)
}
func (c zkCluster) synapseHosts() string { return strings.Join(c.e.Servers(), ", ") }
func (c zkCluster) synctlFlag() []string {
	return []string{"--zk", strings.Join(c.e.Servers(), ",")}
}

type etcdMember struct{ *testserver.EtcdMember }

func (m etcdMember) name() string { return "etcd-" + m.Name }
func (m etcdMember) addr() string { return m.ClientURL }

type etcdCluster struct{ c *testserver.EtcdCluster }

func (c etcdCluster) members() []member {
	out := make([]member, len(c.c.Members))
	for i, m := range c.c.Members {
		out[i] = etcdMember{m}
	}
	return out
}

func (c etcdCluster) leader() member {
	if l := c.c.Leader(); l != nil {
		return etcdMember{l}
	}
	return nil
}

func (c etcdCluster) waitHealthy(timeout time.Duration) error { return c.c.WaitHealthy(timeout) }

func (c etcdCluster) nerveRegistry() string {
	return fmt.Sprintf("etcd_endpoints: [%s]\n    etcd_path: %s", strings.Join(c.c.Endpoints(), ", "), mxPath)
}
func (c etcdCluster) synapseHosts() string { return strings.Join(c.c.Endpoints(), ", ") }
func (c etcdCluster) synctlFlag() []string {
	return []string{"--etcd", strings.Join(c.c.Endpoints(), ",")}
}

// registrySnap is one read of the registry: the service's records by HAProxy
// server name (more than one is a duplicate registration) and the overrides.
type registrySnap struct {
	start, end time.Time
	records    map[string][]record
	overrides  []registry.Override
}

// record is one registered instance and the identity of the node or key
// that holds it (ZooKeeper: the sequential node's name; etcd: the key and
// its create revision), which changes when a record is deleted and made
// again, as after a session or lease loss.
type record struct {
	registry.Instance
	id string
}

// raw is one record as read.
type raw struct {
	id   string
	data []byte
}

// registryReader reads the registry directly (not through the project's
// registry package, which is what is under test).
type registryReader interface {
	read() (registrySnap, error)
	// interrupt ends a read blocked on a dead server (from any goroutine).
	interrupt()
	close()
}

func snapOf(start time.Time, recs, ovrs []raw) registrySnap {
	s := registrySnap{start: start, end: time.Now(), records: map[string][]record{}}
	for _, r := range recs {
		in, err := registry.Decode(r.data, registry.DecodeOptions{})
		if err != nil {
			continue // nerve writes none of these; synapse skips them too
		}
		name := generators.Backend{Instance: in}.ServerName()
		s.records[name] = append(s.records[name], record{Instance: in, id: r.id})
	}
	for _, r := range ovrs {
		if o, err := registry.DecodeOverride(r.data); err == nil {
			s.overrides = append(s.overrides, o)
		}
	}
	return s
}

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}

type zkReader struct {
	conn       *zk.Conn
	distrusted func(addr string) bool
}

func (c zkCluster) reader(distrusted func(addr string) bool) (registryReader, error) {
	// A short session: after a fault the reader is back on a live server
	// quickly; an expired reader session costs nothing.
	conn, _, err := zk.Connect(c.e.Servers(), 2*time.Second, zk.WithLogger(quietZK{}),
		zk.WithHostProvider(&trustedHosts{distrusted: distrusted}))
	if err != nil {
		return nil, err
	}
	return zkReader{conn, distrusted}, nil
}

// trustedHosts is the reader's ZooKeeper host list: round robin, skipping
// a frozen server (whose port still accepts connections, so the client
// would hang on it until the fault ends and see nothing meanwhile).
type trustedHosts struct {
	servers    []string
	next, runs int
	distrusted func(string) bool
}

func (h *trustedHosts) Init(servers []string) error { h.servers = servers; return nil }
func (h *trustedHosts) Len() int                    { return len(h.servers) }
func (h *trustedHosts) Connected()                  { h.runs = 0 }

func (h *trustedHosts) Next() (string, bool) {
	var s string
	for range h.servers {
		s = h.servers[h.next%len(h.servers)]
		h.next++
		if !h.distrusted(s) {
			break
		}
	}
	h.runs++
	retryStart := h.runs >= len(h.servers)
	if retryStart {
		h.runs = 0
	}
	return s, retryStart
}

func (r zkReader) children(dir string) ([]raw, error) {
	names, _, err := r.conn.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []raw
	for _, n := range names {
		data, _, err := r.conn.Get(dir + "/" + n)
		if errors.Is(err, zk.ErrNoNode) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, raw{id: n, data: data})
	}
	return out, nil
}

func (r zkReader) read() (registrySnap, error) {
	start := time.Now()
	// A server answers reads from its own copy: one that was frozen or cut
	// off answers from a stale one until it notices. sync brings it up to
	// the leader's state first (and fails on a server without a quorum).
	if _, err := r.conn.Sync(mxPath); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return registrySnap{}, err
	}
	recs, err := r.children(mxPath)
	if err != nil {
		return registrySnap{}, err
	}
	ovrs, err := r.children(mxRoot + "/overrides")
	if err != nil {
		return registrySnap{}, err
	}
	// A thawed leader answers even sync from its old state until it
	// notices it was deposed (about syncLimit ticks).
	if srv := r.conn.Server(); r.distrusted(srv) {
		return registrySnap{}, fmt.Errorf("read from %s, a server just thawed: maybe stale", srv)
	}
	return snapOf(start, recs, ovrs), nil
}

func (r zkReader) interrupt() { r.conn.Close() }
func (r zkReader) close()     { r.conn.Close() }

// etcdReader reads through a fresh client after any failure: a client
// whose every endpoint was down waits out gRPC's reconnect backoff (up to
// two minutes), which would blind the observer long after recovery.
type etcdReader struct {
	endpoints []string
	cli       *clientv3.Client
}

// reader ignores distrusted: etcd's reads are linearizable (a deposed
// leader cannot answer one).
func (c etcdCluster) reader(func(string) bool) (registryReader, error) {
	return &etcdReader{endpoints: c.c.Endpoints()}, nil
}

func (r *etcdReader) read() (registrySnap, error) {
	start := time.Now()
	if r.cli == nil {
		cli, err := clientv3.New(clientv3.Config{Endpoints: r.endpoints, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			return registrySnap{}, err
		}
		r.cli = cli
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// One transaction: records and overrides of the same revision,
	// linearizable (a member without quorum answers nothing).
	resp, err := r.cli.Txn(ctx).Then(
		clientv3.OpGet(mxPath+"/", clientv3.WithPrefix()),
		clientv3.OpGet(mxRoot+"/overrides/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		r.close()
		return registrySnap{}, err
	}
	var recs, ovrs []raw
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		recs = append(recs, raw{id: fmt.Sprintf("%s@%d", kv.Key, kv.CreateRevision), data: kv.Value})
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		ovrs = append(ovrs, raw{id: string(kv.Key), data: kv.Value})
	}
	return snapOf(start, recs, ovrs), nil
}

// interrupt does nothing: an etcd read gives up after a second anyway.
func (r *etcdReader) interrupt() {}

func (r *etcdReader) close() {
	if r.cli != nil {
		r.cli.Close()
		r.cli = nil
	}
}

// haproxySnap is one `show servers state web`.
type haproxySnap struct {
	at      time.Time
	servers map[string]testserver.ServerState
}

// mxNode is one service host of a scenario: a backend and its nerve.
type mxNode struct {
	name    string // nerve's instance_id
	host    string
	port    int
	admin   int // nerve's admin API
	backend *proc
	nerve   *proc
}

func (n *mxNode) addr() string { return fmt.Sprintf("%s:%d", n.host, n.port) }

// server is the node's HAProxy server name (and its key in registrySnap).
func (n *mxNode) server() string { return fmt.Sprintf("%s_%s:%d", n.name, n.host, n.port) }

// mxFleet is the fleet of one registry kind for the whole matrix.
type mxFleet struct {
	t       *testing.T // owns the registry, synapse and HAProxy
	method  string
	cl      cluster
	dir     string
	port    int
	admin   int
	synapse *proc
	anchor  *mxNode

	mu       sync.Mutex
	distrust map[string]time.Time // registry server → until when its reads are ignored
	hs       []haproxySnap
	rs       []registrySnap
	hErrs    int   // failed HAProxy samples since resetObs
	rErrs    int   // failed registry reads
	hErr     error // the last failed HAProxy sample
	stopObs  func()
}

func newMxFleet(t *testing.T, method string) *mxFleet {
	testserver.CheckHAProxy(t)
	f := &mxFleet{t: t, method: method, dir: t.TempDir()}
	switch method {
	case "zookeeper":
		f.cl = zkCluster{testserver.StartZKEnsemble(t, 3)}
	case "etcd":
		f.cl = etcdCluster{testserver.StartEtcdCluster(t, 3)}
	}
	f.port, f.admin = testserver.FreePort(t), testserver.FreePort(t)
	testserver.KillHAProxyAtCleanup(t, filepath.Join(f.dir, "haproxy.pid"))
	f.startSynapse()
	t.Cleanup(f.keepLogs) // runs before the temp dir goes
	f.observe()
	// The anchor: one host in service for the whole matrix, so the
	// service is never empty (synapse keeps the last backends of an empty
	// read, which would hide a scenario's removals at its teardown).
	f.anchor = &mxNode{name: "anchor", host: "127.0.0.10", port: testserver.FreePort(t), admin: testserver.FreePort(t)}
	if err := f.startBackend(f.anchor); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.anchor.backend.kill() })
	f.startNerve(t, f.anchor)
	since := time.Now()
	for deadline := since.Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h, hok := f.latestHAProxy(since)
		r, rok := f.latestRegistry(since)
		if hok && rok && ready.matches(haView(h, f.anchor.server())) && ready.matches(regView(r, f.anchor.server())) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the anchor host is not in the registry and HAProxy after 30s\nsynapse log:\n%s", method, tail(filepath.Join(f.dir, "synapse.log"), 20))
		}
	}
}

// startSynapse starts synapse with the panic threshold off: a scenario's
// teardown takes nine of the service's ten backends away at once, which
// the guard against mass removal would (rightly) hold; this matrix is
// about convergence.
func (f *mxFleet) startSynapse() {
	cfg := fmt.Sprintf(`id: matrix-synapse
panic_threshold: 0
state_file_path: %[1]s/synapse-state.json
admin: {listen: "127.0.0.1:%[4]d"}
overrides: {method: %[2]s, hosts: [%[3]s], root: %[6]s}
haproxy:
  manage: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  removal_grace: 5s
  defaults: [mode http, timeout connect 500ms, timeout client 10s, timeout server 10s, retries 3, option redispatch]
services:
  %[7]s:
    discovery: {method: %[2]s, hosts: [%[3]s], path: %[8]s}
    haproxy: {port: %[5]d, bind_address: 127.0.0.1, listen: [mode http, balance roundrobin]}
`, f.dir, f.method, f.cl.synapseHosts(), f.admin, f.port, mxRoot, mxService, mxPath)
	path := filepath.Join(f.dir, "synapse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.synapse = startProc(f.t, f.t, filepath.Join(f.dir, "synapse.log"), nil, filepath.Join(binDir, "synapse"), "-config", path)
}

// observe starts the two observers; they run until the fleet's test ends.
func (f *mxFleet) observe() {
	rd, err := f.cl.reader(f.distrusted)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			got, err := testserver.TryHAProxyServers(f.stats(), mxService)
			f.mu.Lock()
			if err != nil {
				f.hErrs++
				f.hErr = err
			} else {
				f.hs = append(f.hs, haproxySnap{at: time.Now(), servers: got})
			}
			f.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A read can block while the registry is down; the next one
			// starts when it returns.
			snap, err := rd.read()
			f.mu.Lock()
			if err != nil {
				f.rErrs++
			} else {
				f.rs = append(f.rs, snap)
			}
			f.mu.Unlock()
		}
	}()
	f.t.Cleanup(func() {
		cancel()
		rd.interrupt()
		wg.Wait()
		rd.close()
	})
}

// distrustUntil makes the observer ignore what the registry server at
// addr answers until the time given.
func (f *mxFleet) distrustUntil(addr string, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.distrust == nil {
		f.distrust = map[string]time.Time{}
	}
	f.distrust[addr] = until
}

func (f *mxFleet) distrusted(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.distrust[addr])
}

// resetObs drops what the observers saw so far (a scenario's window starts).
func (f *mxFleet) resetObs() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hs, f.rs, f.hErrs, f.rErrs, f.hErr = nil, nil, 0, 0, nil
}

// obsErrors says how many samples and reads failed since resetObs.
func (f *mxFleet) obsErrors() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("%d HAProxy samples failed, %d registry reads failed", f.hErrs, f.rErrs)
	if f.hErr != nil {
		s += fmt.Sprintf(" (last HAProxy error: %v)", f.hErr)
	}
	return s
}

// keepLogs copies the fleet's logs to $SYNCSTACK_E2E_KEEP/<test>/ when
// that is set: the temp dir goes with the test.
func (f *mxFleet) keepLogs() {
	dst := os.Getenv("SYNCSTACK_E2E_KEEP")
	if dst == "" {
		return
	}
	dst = filepath.Join(dst, strings.ReplaceAll(f.t.Name(), "/", "_"))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		f.t.Log(err)
		return
	}
	logs, _ := filepath.Glob(filepath.Join(f.dir, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			os.WriteFile(filepath.Join(dst, filepath.Base(l)), b, 0o644)
		}
	}
}

// obs returns copies of what the observers saw since resetObs.
func (f *mxFleet) obs() ([]haproxySnap, []registrySnap) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hs), slices.Clone(f.rs)
}

// latestRegistry is the newest successful registry read that started
// after since.
func (f *mxFleet) latestRegistry(since time.Time) (registrySnap, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.rs); n > 0 && !f.rs[n-1].start.Before(since) {
		return f.rs[n-1], true
	}
	return registrySnap{}, false
}

func (f *mxFleet) latestHAProxy(since time.Time) (haproxySnap, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.hs); n > 0 && !f.hs[n-1].at.Before(since) {
		return f.hs[n-1], true
	}
	return haproxySnap{}, false
}

func (f *mxFleet) stats() string { return filepath.Join(f.dir, "stats.sock") }

// startBackend starts n's HTTP backend and waits until it listens. It
// may run on a goroutine other than the test's: it reports, not fails.
func (f *mxFleet) startBackend(n *mxNode) error {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), backendEnv+"="+n.addr()+" "+n.name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start backend %s: %w", n.name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	n.backend = p
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", n.addr()); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend %s not listening on %s", n.name, n.addr())
		}
	}
}

func (f *mxFleet) startNerve(t *testing.T, n *mxNode) {
	cfg := fmt.Sprintf(`instance_id: %s
admin: {listen: "127.0.0.1:%d"}
zk_session_timeout: %v
etcd_lease_ttl: %v
services:
  %s:
    host: %s
    port: %d
    check_interval: 250ms
    rise: 2
    fall: 3
    checks: [{type: http, uri: /health, timeout: 250ms}]
    %s
`, n.name, n.admin, mxSessionTime, mxLeaseTTL, mxService, n.host, n.port, f.cl.nerveRegistry())
	path := filepath.Join(f.dir, "nerve-"+n.name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n.nerve = startProc(t, f.t, filepath.Join(f.dir, "nerve-"+n.name+".log"), nil, filepath.Join(binDir, "nerve"), "-config", path)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.admin)); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nerve %s: admin API not answering\n%s", n.name, tail(filepath.Join(f.dir, "nerve-"+n.name+".log"), 20))
		}
	}
}

var adminClient = &http.Client{Timeout: 5 * time.Second}

// nerveAdmin calls nerve's admin API; the change is accepted when it
// answers 2xx.
func (f *mxFleet) nerveAdmin(n *mxNode, method, path, body string) error {
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", n.admin, path), strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := adminClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(b.String()))
	}
	return nil
}

// nerveStatus is nerve's GET /status, for failure messages.
func (f *mxFleet) nerveStatus(n *mxNode) string {
	resp, err := adminClient.Get(fmt.Sprintf("http://127.0.0.1:%d/status", n.admin))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err.Error()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// synctlResult is one synctl run: its exit code and output.
type synctlResult struct {
	code int
	out  string
}

// synctl runs synctl against the fleet's registry, bounded by 30 s (its own
// registry timeout is 5 s per call: a run that outlives 30 s hangs).
func (f *mxFleet) synctl(args ...string) synctlResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "synctl"), append(args, f.cl.synctlFlag()...)...).CombinedOutput()
	res := synctlResult{out: strings.TrimSpace(string(out))}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		res.code = -1
		res.out += "\n(killed: still running after 30s)"
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		res.code = -1
		res.out += "\n" + err.Error()
	}
	return res
}

// synctlUntil retries a synctl change until it exits 0 or deadline passes,
// with the project's jittered backoff, as an operator would after an exit 1.
func (f *mxFleet) synctlUntil(deadline time.Time, args ...string) (synctlResult, int) {
	b := backoff.New(100*time.Millisecond, time.Second)
	for tries := 1; ; tries++ {
		res := f.synctl(args...)
		if res.code == 0 || res.code != 1 || time.Now().After(deadline) {
			return res, tries
		}
		time.Sleep(b.Next())
	}
}

// freeze and thaw a nerve (or any child process) with SIGSTOP / SIGCONT.
func freeze(p *proc) { p.cmd.Process.Signal(syscall.SIGSTOP) }
func thaw(p *proc)   { p.cmd.Process.Signal(syscall.SIGCONT) }

// heal puts the registry back together (every member running, thawed,
// serving) and synapse running, whatever a scenario left.
func (f *mxFleet) heal(t *testing.T) {
	for _, m := range f.cl.members() {
		m.Thaw()
		if !m.Running() {
			m.Start()
		}
	}
	if err := f.cl.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("registry not healthy after a scenario: %v", err)
	}
	if f.synapse.exited() {
		t.Log("heal: synapse was left stopped; starting it")
		f.startSynapse()
	}
}
