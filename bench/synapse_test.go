package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// scale is the benchmark's size: 1000 services × 10 backends in full mode.
func scale() (services, perService, changes int) {
	if quick() {
		return 100, 10, 200
	}
	return 1000, 10, 1000
}

// writer writes raw records to the registry, as many nerves would.
type writer interface {
	put(path string, data []byte) error
	del(path string) error
	overrides() registry.Backend
	close()
}

type zkWriter struct {
	conn *zk.Conn
	ovr  *zookeeper.Client
}

func newZKWriter(b *testing.B, servers []string) *zkWriter {
	conn, _, err := zk.Connect(servers, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		b.Fatal(err)
	}
	ovr, err := zookeeper.New(zookeeper.Config{Servers: servers, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		b.Fatal(err)
	}
	return &zkWriter{conn: conn, ovr: ovr}
}

func (w *zkWriter) put(path string, data []byte) error {
	_, err := w.conn.Create(path, data, 0, zk.WorldACL(zk.PermAll))
	if err == zk.ErrNodeExists {
		_, err = w.conn.Set(path, data, -1)
	}
	if err == zk.ErrNoNode { // parent first
		w.conn.Create(filepath.Dir(path), nil, 0, zk.WorldACL(zk.PermAll))
		_, err = w.conn.Create(path, data, 0, zk.WorldACL(zk.PermAll))
	}
	return err
}

func (w *zkWriter) del(path string) error       { return w.conn.Delete(path, -1) }
func (w *zkWriter) overrides() registry.Backend { return w.ovr }
func (w *zkWriter) close()                      { w.conn.Close(); w.ovr.Close() }

type etcdWriter struct {
	cli *clientv3.Client
	ovr *etcd.Client
}

func newEtcdWriter(b *testing.B, endpoint string) *etcdWriter {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ovr, err := etcd.New(etcd.Config{Endpoints: []string{endpoint}, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		b.Fatal(err)
	}
	return &etcdWriter{cli: cli, ovr: ovr}
}

func (w *etcdWriter) put(path string, data []byte) error {
	_, err := w.cli.Put(context.Background(), path, string(data))
	return err
}
func (w *etcdWriter) del(path string) error {
	_, err := w.cli.Delete(context.Background(), path)
	return err
}
func (w *etcdWriter) overrides() registry.Backend { return w.ovr }
func (w *etcdWriter) close()                      { w.cli.Close(); w.ovr.Close() }

// parallel runs f for 0..n-1 on 64 workers.
func parallel(n int, f func(i int) error) error { return testserver.Parallel(n, 64, f) }

func record(name string, port int, weight *int) []byte {
	in := registry.Instance{Host: "127.0.0.1", Port: port, Name: name, Weight: weight}
	data, _ := in.Encode()
	return data
}

// synapseProc is the synapse binary managing its own HAProxy.
type synapseProc struct {
	dir, stats string
	admin      int
	port       int // frontend of svc0000, when it has one
	cmd        *exec.Cmd
	peak       atomic.Int64 // largest RSS sampled (KB), every 100ms
	// reloads counts HAProxy's reloads from its master CLI, not from
	// synapse's own counter: failed reloads and restarts count too.
	reloads *reloadCounter
}

func (p *synapseProc) peakRSS() int64 { return p.peak.Load() }

// startSynapseWithFrontend runs one etcd service, svc0000, with a frontend.
func startSynapseWithFrontend(b *testing.B, bin, endpoint string, doSocket bool) *synapseProc {
	return startSynapseOpts(b, bin, "etcd", endpoint, 1, doSocket, time.Millisecond, testserver.FreePort(b), "")
}

func startSynapse(b *testing.B, bin, method, hosts string, services int, doSocket bool, minInterval time.Duration) *synapseProc {
	return startSynapseOpts(b, bin, method, hosts, services, doSocket, minInterval, 0, "")
}

// startSynapseOpts starts synapse; backend is each service's backend lines
// (a YAML list) when it has no frontend, "" for [balance roundrobin].
func startSynapseOpts(b *testing.B, bin, method, hosts string, services int, doSocket bool, minInterval time.Duration, port int, backend string) *synapseProc {
	if backend == "" {
		backend = "[balance roundrobin]"
	}
	p := &synapseProc{dir: b.TempDir(), admin: testserver.FreePort(b), port: port}
	p.stats = filepath.Join(p.dir, "stats.sock")
	p.reloads = newReloadCounter(b, filepath.Join(p.dir, "master.sock"))
	testserver.KillHAProxyAtCleanup(b, filepath.Join(p.dir, "haproxy.pid"))
	var cfg strings.Builder
	// The profiles (SYNCSTACK_BENCH_PPROF) need admin.pprof.
	fmt.Fprintf(&cfg, `id: bench
admin: {listen: "127.0.0.1:%[2]d", pprof: %[7]v}
overrides: {method: %[3]s, hosts: [%[4]s], root: /syncstack}
# The benchmarks replace every backend at once on purpose: no panic hold.
panic_threshold: 0
haproxy:
  manage: true
  do_socket: %[5]v
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  reload_min_interval: %[6]s
  global: [maxconn 1000]
  defaults: [mode http, timeout connect 1s, timeout client 10s, timeout server 10s]
services:
`, p.dir, p.admin, method, hosts, doSocket, minInterval, os.Getenv("SYNCSTACK_BENCH_PPROF") != "")
	for s := range services {
		section := "backend: " + backend
		if port > 0 {
			section = fmt.Sprintf("port: %d, bind_address: 127.0.0.1, listen: [mode http, retries 3, option redispatch]", port)
		}
		fmt.Fprintf(&cfg, "  svc%04d:\n    discovery: {method: %s, hosts: [%s], path: /bench/svc%04d}\n    haproxy: {%s}\n", s, method, hosts, s, section)
	}
	path := filepath.Join(p.dir, "synapse.yaml")
	os.WriteFile(path, []byte(cfg.String()), 0o644)
	log, _ := os.Create(filepath.Join(p.dir, "synapse.log"))
	p.cmd = exec.Command(bin, "-config", path, "-log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if s, err := sampleProc(p.cmd.Process.Pid); err == nil && s.rssKB > p.peak.Load() {
				p.peak.Store(s.rssKB)
			}
		}
	}()
	b.Cleanup(func() {
		close(stop)
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		// With profiles on, synapse's log is kept beside them (with
		// GODEBUG=gctrace=1 in the environment it holds the GC trace).
		if dir := os.Getenv("SYNCSTACK_BENCH_PPROF"); dir != "" {
			if data, err := os.ReadFile(filepath.Join(p.dir, "synapse.log")); err == nil {
				os.WriteFile(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "-")+"-synapse.log"), data, 0o644)
			}
		}
	})
	return p
}

// profile saves a 3s CPU profile of synapse to $SYNCSTACK_BENCH_PPROF/name.pb
// when that is set; the channel closes when it is done.
func (p *synapseProc) profile(b *testing.B, name string) <-chan struct{} {
	done := make(chan struct{})
	dir := os.Getenv("SYNCSTACK_BENCH_PPROF")
	if dir == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=3", p.admin))
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		os.WriteFile(filepath.Join(dir, name+".pb"), data, 0o644)
	}()
	return done
}

// heapProfile saves synapse's heap profile when SYNCSTACK_BENCH_PPROF is set.
func (p *synapseProc) heapProfile(b *testing.B, name string) {
	dir := os.Getenv("SYNCSTACK_BENCH_PPROF")
	if dir == "" {
		return
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", p.admin))
	if err != nil {
		b.Logf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	os.WriteFile(filepath.Join(dir, name+".pb"), data, 0o644)
	// The text form ends with the runtime's MemStats: heap in use, idle,
	// released, stacks.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1", p.admin)); err == nil {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		os.WriteFile(filepath.Join(dir, name+".txt"), data, 0o644)
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", p.admin)); err == nil {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		os.WriteFile(filepath.Join(dir, name+"-goroutines.txt"), data, 0o644)
	}
}

// metric sums a Prometheus counter's series whose line starts with prefix.
func (p *synapseProc) metric(prefix string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", p.admin))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	data, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, prefix) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// histogram is a Prometheus histogram's cumulative buckets (le → count),
// summed over its series.
type histogram map[float64]float64

// histogram reads the buckets of the histogram name from /metrics.
func (p *synapseProc) histogram(name string) histogram {
	h := histogram{}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", p.admin))
	if err != nil {
		return h
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(l, name+"_bucket{")
		if !ok {
			continue
		}
		i := strings.Index(rest, `le="`)
		if i < 0 {
			continue
		}
		le := rest[i+4:]
		le = le[:strings.IndexByte(le, '"')]
		bound, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			bound, err = math.Inf(1), nil
		}
		if err != nil {
			continue
		}
		f := strings.Fields(l)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		h[bound] += v
	}
	return h
}

// quantile is the q-quantile of the observations in h but not in before
// (a window of the run), as the upper bound of the bucket holding it (in
// ms): a bucket's resolution, enough to say where a tail is spent.
func (h histogram) quantile(before histogram, q float64) float64 {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return -1
	}
	total := h[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	if total <= 0 {
		return -1
	}
	for _, b := range bounds {
		if h[b]-before[b] >= q*total {
			if math.IsInf(b, 1) {
				return -1
			}
			return b * 1000
		}
	}
	return -1
}

// servers returns backend → server count from a full show servers state.
func (p *synapseProc) servers() (map[string]map[string]testserver.ServerState, error) {
	out, err := testserver.HAProxyCommand(p.stats, "show servers state")
	if err != nil {
		return nil, err
	}
	res := map[string]map[string]testserver.ServerState{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 19 || strings.HasPrefix(l, "#") {
			continue
		}
		admin, _ := strconv.Atoi(f[6])
		w, _ := strconv.Atoi(f[7])
		port, _ := strconv.Atoi(f[18])
		if res[f[1]] == nil {
			res[f[1]] = map[string]testserver.ServerState{}
		}
		res[f[1]][f[3]] = testserver.ServerState{Addr: f[4], Port: port, Admin: admin, Weight: w}
	}
	return res, nil
}

func (p *synapseProc) waitFor(timeout time.Duration, backend string, cond func(map[string]testserver.ServerState) bool) (time.Duration, error) {
	start := time.Now()
	for {
		if st, err := testserver.TryHAProxyServers(p.stats, backend); err == nil && cond(st) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("backend %s: condition not met within %v", backend, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// waitAll waits until HAProxy holds want servers in all, as counted by a
// full `show servers state`, and HAProxy's master has been seen (so that
// reloads are counted from here on).
func (p *synapseProc) waitAll(timeout time.Duration, want int) error {
	start := time.Now()
	for {
		st, err := p.servers()
		n := 0
		for _, s := range st {
			n += len(s)
		}
		if err == nil && n == want && p.reloads.started() {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("only %d of %d servers after %v", n, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// result is one row of the benchmark table.
type result struct {
	Name  string             `json:"name"`
	Stats map[string]float64 `json:"stats"`
}

var results struct {
	sync.Mutex
	rows []result
}

func report(b *testing.B, name string, stats map[string]float64) {
	results.Lock()
	results.rows = append(results.rows, result{name, stats})
	results.Unlock()
	keys := make([]string, 0, len(stats))
	for k := range stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var line []string
	for _, k := range keys {
		b.ReportMetric(stats[k], k)
		line = append(line, fmt.Sprintf("%s=%.4g", k, stats[k]))
	}
	b.Logf("%s: %s", name, strings.Join(line, " "))
	data, _ := json.MarshalIndent(results.rows, "", "  ")
	os.WriteFile(os.Getenv("SYNCSTACK_BENCH_JSON"), data, 0o644)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// afterWrite is each change's latency less its registry write: the
// registry's delivery, synapse and HAProxy.
func afterWrite(lat, writes []time.Duration) []time.Duration {
	out := make([]time.Duration, len(lat))
	for i := range lat {
		out[i] = lat[i] - writes[i]
	}
	return out
}

// BenchmarkConvergence registers services × backends, starts synapse, then
// times single changes (add, weight, drain, remove) from the registry write
// until `show servers state` shows them; then all backends replaced at
// once. Targets (BENCHMARKS.md): p50 ≤ 5 ms, p99 ≤ 10 ms, max ≤ 50 ms;
// mass churn: HAProxy exact ≤ 0.25 s after the last write; 0 reloads,
// counted by HAProxy's master; synapse RSS ≤ 64 MB at peak and at rest.
func BenchmarkConvergence(b *testing.B) {
	for _, method := range []string{"zookeeper", "etcd"} {
		b.Run(method, func(b *testing.B) { convergence(b, method) })
	}
}

func setupRegistry(b *testing.B, method string) (writer, string) {
	switch method {
	case "zookeeper":
		zks := testserver.StartZooKeeper(b)
		w := newZKWriter(b, zks.Servers())
		b.Cleanup(w.close)
		return w, zks.Nodes[0].Addr
	default:
		srv := testserver.StartEtcd(b)
		w := newEtcdWriter(b, srv.Endpoint)
		b.Cleanup(w.close)
		return w, srv.Endpoint
	}
}

func nodePath(method string, s int, name string) string {
	if method == "zookeeper" {
		return fmt.Sprintf("/bench/svc%04d/%s_0000000000", s, name)
	}
	return fmt.Sprintf("/bench/svc%04d/%s", s, name)
}

func convergence(b *testing.B, method string) {
	services, per, changes := scale()
	bin := buildBinary(b, "synapse")
	w, hosts := setupRegistry(b, method)
	if method == "zookeeper" {
		w.(*zkWriter).conn.Create("/bench", nil, 0, zk.WorldACL(zk.PermAll))
	}
	if err := parallel(services*per, func(i int) error {
		s, k := i/per, i%per
		return w.put(nodePath(method, s, fmt.Sprintf("i%02d", k)), record(fmt.Sprintf("i%02d", k), 10000+i, nil))
	}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	p := startSynapse(b, bin, method, hosts, services, true, 2*time.Second)
	if err := p.waitAll(120*time.Second, services*per); err != nil {
		b.Fatal(err)
	}
	initial := time.Since(start)
	// The high-water mark of the initial load alone (the changes' and the
	// churn's follow), before the profile, which costs synapse memory.
	loaded, _ := sampleProc(p.cmd.Process.Pid)
	p.heapProfile(b, "heap-initial-"+method) // what the initial load left
	reloads0, ownReloads0 := p.reloads.total(), p.metric("synapse_haproxy_reloads_total")
	reads0 := p.metric(`syncstack_registry_reads_total{backend="zookeeper",op="get"}`) + p.metric(`syncstack_registry_reads_total{backend="zookeeper",op="children"}`) + p.metric(`syncstack_registry_reads_total{backend="etcd"`)
	cpu0, _ := sampleProc(p.cmd.Process.Pid)

	// The latency's breakdown inside synapse: from a watcher's update
	// received to its state applied, and the runtime batch alone (the
	// rest of the bench's figure is the registry's delivery and the
	// decoding in the watcher, and seeing it in HAProxy).
	conv0, batch0 := p.histogram("synapse_convergence_seconds"), p.histogram("synapse_haproxy_runtime_batch_seconds")
	b.ResetTimer()
	profiled := p.profile(b, "convergence-"+method)
	var lat, writes []time.Duration
	var trace *os.File
	if dir := os.Getenv("SYNCSTACK_BENCH_PPROF"); dir != "" {
		trace, _ = os.Create(filepath.Join(dir, "changes-"+method+".txt"))
		defer trace.Close()
	}
	ovr := w.overrides()
	for i := range changes {
		s := i / 4 % services
		backend := fmt.Sprintf("svc%04d", s)
		name := fmt.Sprintf("x%05d", i/4)
		port := 30000 + i/4%2000
		server := fmt.Sprintf("%s_127.0.0.1:%d", name, port)
		t0 := time.Now()
		var cond func(map[string]testserver.ServerState) bool
		switch i % 4 {
		case 0: // add
			if err := w.put(nodePath(method, s, name), record(name, port, nil)); err != nil {
				b.Fatal(err)
			}
			cond = func(m map[string]testserver.ServerState) bool { _, ok := m[server]; return ok }
		case 1: // weight
			wt := 7
			if err := w.put(nodePath(method, s, name), record(name, port, &wt)); err != nil {
				b.Fatal(err)
			}
			cond = func(m map[string]testserver.ServerState) bool { return m[server].Weight == 7 }
		case 2: // drain
			if _, err := ovr.PutOverride(context.Background(), registry.Override{Target: name, State: registry.StateDrain, At: time.Now()}); err != nil {
				b.Fatal(err)
			}
			cond = func(m map[string]testserver.ServerState) bool { return m[server].Admin&0x08 != 0 }
		case 3: // remove
			if err := w.del(nodePath(method, s, name)); err != nil {
				b.Fatal(err)
			}
			cond = func(m map[string]testserver.ServerState) bool { _, ok := m[server]; return !ok }
		}
		// The registry's own part: the write until its server answered
		// (ZooKeeper and etcd both fsync their log before they do).
		writes = append(writes, time.Since(t0))
		if _, err := p.waitFor(10*time.Second, backend, cond); err != nil {
			b.Fatalf("change %d (%d): %v", i, i%4, err)
		}
		lat = append(lat, time.Since(t0))
		if trace != nil {
			// With profiles on: each change's write time and latency,
			// to line up with synapse's own timings.
			fmt.Fprintf(trace, "%d %s %d %d\n", t0.UnixNano(), backend, i%4, time.Since(t0).Microseconds())
		}
		if i%4 == 3 {
			ovr.DeleteOverride(context.Background(), name)
		}
	}
	b.StopTimer()
	<-profiled
	p.heapProfile(b, "heap-"+method)
	cpu1, _ := sampleProc(p.cmd.Process.Pid)
	conv1, batch1 := p.histogram("synapse_convergence_seconds"), p.histogram("synapse_haproxy_runtime_batch_seconds")
	reloads := p.reloads.total() - reloads0
	ownReloads := p.metric("synapse_haproxy_reloads_total") - ownReloads0
	reads := p.metric(`syncstack_registry_reads_total{backend="zookeeper",op="get"}`) + p.metric(`syncstack_registry_reads_total{backend="zookeeper",op="children"}`) + p.metric(`syncstack_registry_reads_total{backend="etcd"`) - reads0
	report(b, "convergence/"+method, map[string]float64{
		"p50-ms": ms(percentile(lat, .5)), "p90-ms": ms(percentile(lat, .9)), "p99-ms": ms(percentile(lat, .99)), "max-ms": ms(percentile(lat, 1)),
		"write-p50-ms": ms(percentile(writes, .5)), "write-p99-ms": ms(percentile(writes, .99)),
		"after-write-p50-ms": ms(percentile(afterWrite(lat, writes), .5)), "after-write-p99-ms": ms(percentile(afterWrite(lat, writes), .99)),
		"changes": float64(changes), "reloads": float64(reloads), "reloads-synapse-counter": ownReloads, "registry-reads-per-change": reads / float64(changes),
		"initial-load-s": initial.Seconds(), "synapse-rss-hwm-initial-MB": float64(loaded.hwmKB) / 1024, "synapse-rss-MB": float64(cpu1.rssKB) / 1024, "synapse-cpu-%core": cpuPercent(cpu0, cpu1),
		"backends": float64(services * per),
		// Bucket upper bounds (ms), so coarse: where the tail is spent.
		"in-synapse-p50-ms-bucket": conv1.quantile(conv0, .5), "in-synapse-p99-ms-bucket": conv1.quantile(conv0, .99),
		"runtime-batch-p50-ms-bucket": batch1.quantile(batch0, .5), "runtime-batch-p99-ms-bucket": batch1.quantile(batch0, .99),
	})

	// Mass churn: every backend replaced at once. The high-water mark so
	// far (the initial load and the single changes) is read, then reset
	// (clear_refs 5), so that the churn's own peak is known too.
	beforeChurn, _ := sampleProc(p.cmd.Process.Pid)
	hwmReset := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0) == nil
	reloads0 = p.reloads.total()
	t0 := time.Now()
	// With profiles on, one more halfway through the writes: its
	// inuse_space is what is live in the middle of the churn (it costs
	// synapse memory and time: the churn figures of such a run are not
	// the benchmark's).
	var midProfile sync.Once
	var midDone sync.WaitGroup
	if err := parallel(services*per, func(i int) error {
		if i == services*per/2 && os.Getenv("SYNCSTACK_BENCH_PPROF") != "" {
			midProfile.Do(func() { midDone.Go(func() { p.heapProfile(b, "heap-midchurn-"+method) }) })
		}
		s, k := i/per, i%per
		if err := w.put(nodePath(method, s, fmt.Sprintf("n%02d", k)), record(fmt.Sprintf("n%02d", k), 20000+i, nil)); err != nil {
			return err
		}
		return w.del(nodePath(method, s, fmt.Sprintf("i%02d", k)))
	}); err != nil {
		b.Fatal(err)
	}
	written := time.Since(t0)
	midDone.Wait()
	for {
		st, err := p.servers()
		ok := err == nil && len(st) == services
		for _, m := range st {
			if len(m) != per {
				ok = false
				break
			}
			for name := range m {
				if !strings.HasPrefix(name, "n") {
					ok = false
				}
			}
		}
		if ok {
			break
		}
		if time.Since(t0) > 120*time.Second {
			b.Fatal("mass churn not converged after 120s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	converged := time.Since(t0)
	end, _ := sampleProc(p.cmd.Process.Pid)
	// At rest: the same 10k backends, nothing changing, 10 s on. The sleep
	// is the measured interval (how long "at rest" lasts), not a wait.
	time.Sleep(10 * time.Second)
	settled, _ := sampleProc(p.cmd.Process.Pid)
	// After the samples, so that taking it does not count in them: its
	// alloc_space less heap-<method>'s is what the churn (and the rest
	// after it) allocated, its inuse_space what stays at rest.
	p.heapProfile(b, "heap-churn-"+method)
	const targetMB = 64
	rest, hwm := float64(settled.rssKB)/1024, float64(max(settled.hwmKB, beforeChurn.hwmKB))/1024
	churnHWM := -1.0 // unknown: clear_refs refused
	if hwmReset {
		churnHWM = float64(settled.hwmKB) / 1024
	}
	report(b, "mass-churn/"+method, map[string]float64{
		// From the first write (the writer's own 20,000 writes included)
		// and from the last.
		"from-first-write-s": converged.Seconds(), "writes-took-s": written.Seconds(), "from-last-write-s": (converged - written).Seconds(),
		"reloads":        float64(p.reloads.total() - reloads0),
		"synapse-rss-MB": float64(end.rssKB) / 1024, "synapse-rss-peak-sampled-MB": float64(p.peakRSS()) / 1024,
		// At rest and the kernel's high-water mark (VmHWM over the whole
		// run: the initial load of 10k, the single changes and the churn;
		// also apart: before the churn, and the churn's own), each against
		// the 64 MB target (1 met, 0 missed).
		"synapse-rss-rest-MB": rest, "synapse-rss-hwm-MB": hwm, "rss-target-MB": targetMB,
		"synapse-rss-hwm-before-churn-MB": float64(beforeChurn.hwmKB) / 1024, "synapse-rss-hwm-churn-MB": churnHWM,
		"rss-rest-met": verdict(rest, targetMB), "rss-hwm-met": verdict(hwm, targetMB),
		"backends": float64(services * per),
	})
	b.Logf("synapse RSS at %d backends: at rest %.1f MB (%s), peak (VmHWM) %.1f MB (%s), target %d MB (at 10k backends)",
		services*per, rest, verdictWord(rest, targetMB), hwm, verdictWord(hwm, targetMB), targetMB)
}
