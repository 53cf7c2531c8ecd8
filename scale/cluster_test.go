package scale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/syncstack/syncstack/internal/testserver"
)

// cluster is one registry cluster as the benchmark drives and reads it.
type cluster interface {
	name() string
	hosts() []string // for the synapses' config
	ports() []int    // client ports of the servers (connection counts)
	pids() []int
	put(key string, data []byte) error
	del(key string) error
	// stats reads the server-side counters: watches, reads, heap.
	stats() serverStats
	// killLeader kills the leader and returns the function that starts it again.
	killLeader() (restart func(), err error)
	killAll()
	startAll()
	// waitQuorum waits until the cluster serves writes again.
	waitQuorum(timeout time.Duration) error
	// bare opens n sessions that watch nothing (cost per connection).
	bare(n int) (closeAll func(), err error)
	// tier is the read tier's address: a ZooKeeper observer, an etcd
	// grpc-proxy (started on first use).
	tier() []string
}

// serverStats is summed over the servers.
type serverStats struct {
	Watches   float64 `json:"watches"`   // ZooKeeper zk_watch_count; etcd etcd_debugging_mvcc_watcher_total
	Reads     float64 `json:"reads"`     // etcd range requests (etcd_debugging_mvcc_range_total); ZooKeeper packets received
	HeapKB    float64 `json:"heap_kb"`   // live heap after a full GC: ZooKeeper jcmd GC.run + jstat; etcd /debug/pprof/heap?gc=1, then go_memstats_heap_alloc_bytes
	RSSKB     float64 `json:"rss_kb"`    // resident set, /proc
	CPUTicks  int64   `json:"cpu_ticks"` // utime+stime, /proc
	Conns     int     `json:"conns"`     // established client connections, /proc/net/tcp
	WatchStrm float64 `json:"etcd_watch_streams,omitempty"`
}

// ---- ZooKeeper

type zkCluster struct {
	b    *testing.B
	ens  *testserver.ZKEnsemble
	conn *zk.Conn
	// voters are the nodes that form the quorum (observers, if any, follow).
	voters int
}

func startZK(b *testing.B, observers int) *zkCluster {
	ens := testserver.StartZKEnsembleWithObservers(b, 3, observers)
	conn, _, err := zk.Connect(ens.Servers()[:3], 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	return &zkCluster{b: b, ens: ens, conn: conn, voters: 3}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func (c *zkCluster) name() string { return "zookeeper" }
func (c *zkCluster) tier() []string {
	return c.ens.Servers()[c.voters:]
}
func (c *zkCluster) hosts() []string { return c.ens.Servers()[:c.voters] }
func (c *zkCluster) ports() []int {
	var out []int
	for _, n := range c.ens.Nodes {
		out = append(out, n.ClientPort)
	}
	return out
}
func (c *zkCluster) pids() []int {
	var out []int
	for _, n := range c.ens.Nodes {
		if p := n.Pid(); p != 0 {
			out = append(out, p)
		}
	}
	return out
}

func (c *zkCluster) put(key string, data []byte) error {
	for range 3 {
		_, err := c.conn.Create(key, data, 0, zk.WorldACL(zk.PermAll))
		switch {
		case errors.Is(err, zk.ErrNodeExists):
			_, err = c.conn.Set(key, data, -1)
			return err
		case errors.Is(err, zk.ErrNoNode):
			if err := c.put(path.Dir(key), nil); err != nil && !errors.Is(err, zk.ErrNodeExists) {
				return err
			}
			continue
		default:
			return err
		}
	}
	return fmt.Errorf("create %s: parents keep vanishing", key)
}

func (c *zkCluster) del(key string) error { return c.conn.Delete(key, -1) }

func (c *zkCluster) stats() serverStats {
	var s serverStats
	for _, n := range c.ens.Nodes {
		if !n.Running() {
			continue
		}
		out, err := testserver.FourLetter(n.Addr, "mntr")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			v, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "zk_watch_count":
				s.Watches += v
			case "zk_packets_received":
				s.Reads += v
			}
		}
		s.HeapKB += jvmLiveHeapKB(n.Pid())
	}
	procStats(&s, c.pids(), c.ports())
	return s
}

// jvmLiveHeapKB is the heap in use after a full collection: what the
// server's data, sessions and watches hold, without garbage.
func jvmLiveHeapKB(pid int) float64 {
	if pid == 0 {
		return 0
	}
	exec.Command("jcmd", strconv.Itoa(pid), "GC.run").Run()
	out, err := exec.Command("jstat", "-gc", strconv.Itoa(pid)).Output()
	if err != nil {
		return 0
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return 0
	}
	head, vals := strings.Fields(lines[0]), strings.Fields(lines[1])
	var kb float64
	for i, h := range head {
		if i < len(vals) && (h == "S0U" || h == "S1U" || h == "EU" || h == "OU") {
			v, _ := strconv.ParseFloat(vals[i], 64)
			kb += v
		}
	}
	return kb
}

func (c *zkCluster) killLeader() (func(), error) {
	l := c.ens.Leader()
	if l == nil {
		return nil, errors.New("no leader")
	}
	l.Kill()
	return func() { l.Start() }, nil
}

func (c *zkCluster) killAll() {
	for _, n := range c.ens.Nodes {
		n.Kill()
	}
}

func (c *zkCluster) startAll() {
	for _, n := range c.ens.Nodes {
		n.Start()
	}
}

func (c *zkCluster) waitQuorum(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if l := c.ens.Leader(); l != nil {
			// A write through the quorum answers only once it is back.
			ctxDone := make(chan error, 1)
			go func() {
				_, err := c.conn.Set("/scale", nil, -1)
				ctxDone <- err
			}()
			select {
			case err := <-ctxDone:
				if err == nil {
					return nil
				}
			case <-time.After(time.Until(deadline)):
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper: no quorum after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *zkCluster) bare(n int) (func(), error) {
	var conns []*zk.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range n {
		srv := c.hosts()[i%len(c.hosts())]
		conn, ev, err := zk.Connect([]string{srv}, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
		if err != nil {
			closeAll()
			return nil, err
		}
		conns = append(conns, conn)
		for e := range ev {
			if e.State == zk.StateHasSession {
				break
			}
		}
	}
	return closeAll, nil
}

// ---- etcd

type etcdCluster struct {
	b     *testing.B
	cl    *testserver.EtcdCluster
	cli   *clientv3.Client
	proxy *testserver.EtcdGRPCProxy
}

func (c *etcdCluster) tier() []string {
	if c.proxy == nil {
		c.proxy = testserver.StartEtcdGRPCProxy(c.b, c.cl.Endpoints())
	}
	return []string{c.proxy.Addr}
}

func startEtcd(b *testing.B) *etcdCluster {
	cl := testserver.StartEtcdCluster(b, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cl.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return &etcdCluster{b: b, cl: cl, cli: cli}
}

func (c *etcdCluster) name() string    { return "etcd" }
func (c *etcdCluster) hosts() []string { return c.cl.Endpoints() }
func (c *etcdCluster) ports() []int {
	var out []int
	for _, m := range c.cl.Members {
		p, _ := strconv.Atoi(m.ClientURL[strings.LastIndexByte(m.ClientURL, ':')+1:])
		out = append(out, p)
	}
	if c.proxy != nil {
		p, _ := strconv.Atoi(c.proxy.Addr[strings.LastIndexByte(c.proxy.Addr, ':')+1:])
		out = append(out, p)
	}
	return out
}
func (c *etcdCluster) pids() []int {
	var out []int
	for _, m := range c.cl.Members {
		if p := m.Pid(); p != 0 {
			out = append(out, p)
		}
	}
	if c.proxy != nil && c.proxy.Pid() != 0 {
		out = append(out, c.proxy.Pid())
	}
	return out
}

func (c *etcdCluster) put(key string, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.cli.Put(ctx, key, string(data))
	return err
}

func (c *etcdCluster) del(key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.cli.Delete(ctx, key)
	return err
}

func (c *etcdCluster) stats() serverStats {
	var s serverStats
	for _, m := range c.cl.Members {
		if !m.Running() {
			continue
		}
		// The live heap, as for ZooKeeper: a collection first (a heap
		// profile with gc=1), then the bytes allocated and not freed.
		if resp, err := http.Get(m.ClientURL + "/debug/pprof/heap?gc=1"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		metrics := scrape(m.ClientURL + "/metrics")
		s.Watches += metrics["etcd_debugging_mvcc_watcher_total"]
		s.WatchStrm += metrics["etcd_debugging_mvcc_watch_stream_total"]
		s.Reads += metrics["etcd_debugging_mvcc_range_total"]
		s.HeapKB += metrics["go_memstats_heap_alloc_bytes"] / 1024
	}
	procStats(&s, c.pids(), c.ports())
	return s
}

func (c *etcdCluster) killLeader() (func(), error) {
	l := c.cl.Leader()
	if l == nil {
		return nil, errors.New("no leader")
	}
	l.Kill()
	return l.Start, nil
}

func (c *etcdCluster) killAll() {
	for _, m := range c.cl.Members {
		m.Kill()
	}
}

func (c *etcdCluster) startAll() {
	for _, m := range c.cl.Members {
		m.Start()
	}
}

func (c *etcdCluster) waitQuorum(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.cli.Put(ctx, "/scale/.quorum", "x")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd: no quorum after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *etcdCluster) bare(n int) (func(), error) {
	var clis []*clientv3.Client
	closeAll := func() {
		for _, c := range clis {
			c.Close()
		}
	}
	eps := c.hosts()
	for i := range n {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[i%len(eps)]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			closeAll()
			return nil, err
		}
		clis = append(clis, cli)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Get(ctx, "/scale/.bare") // connect now
		cancel()
		if err != nil {
			closeAll()
			return nil, err
		}
	}
	return closeAll, nil
}

// ---- helpers

// scrape reads a Prometheus text endpoint: metric name → sum of its series.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		name := l[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}

// procStats adds the CPU and RSS of pids and the established connections
// to ports.
func procStats(s *serverStats, pids, ports []int) {
	for _, pid := range pids {
		ticks, rss := procSample(pid)
		s.CPUTicks += ticks
		s.RSSKB += float64(rss)
	}
	s.Conns = established(ports)
}

func procSample(pid int) (ticks, rssKB int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return ut + st, rssKB
}

// established counts ESTABLISHED TCP connections whose local port is one
// of ports (the server side of client connections), from /proc/net/tcp.
func established(ports []int) int {
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("%04X", p)] = true
	}
	// Java listens on IPv6 sockets (IPv4-mapped): read tcp6 too.
	var lines []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines = append(lines, strings.Split(string(data), "\n")[1:]...)
	}
	n := 0
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		local := f[1]
		if i := strings.IndexByte(local, ':'); i >= 0 && want[local[i+1:]] {
			n++
		}
	}
	return n
}
