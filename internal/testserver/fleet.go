package testserver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The read tiers a large fleet puts between its hosts and the quorum:
// ZooKeeper observers (non-voting servers that serve reads and watches) and
// etcd's grpc-proxy (one watch on the cluster per key range, fanned out to
// every client watching it). And the process ids of every server, so a
// benchmark can read their CPU and memory from /proc.

// Pid returns the process id of the running server, or 0.
func (p *serverProcess) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// StartZKEnsembleWithObservers starts voters voting servers and observers
// non-voting ones (peerType=observer) as one ensemble on loopback, and
// waits until every node serves clients. Observers come last in Nodes.
// Every process is killed in t.Cleanup.
func StartZKEnsembleWithObservers(t testing.TB, voters, observers int) *ZKEnsemble {
	t.Helper()
	return startZKEnsemble(t, voters, observers, []string{
		// The 4lw whitelist given last wins: wchs (the watch summary)
		// and cons, for the scale benchmark.
		"4lw.commands.whitelist=ruok,srvr,stat,mntr,wchs,cons",
		// A fleet reconnects all at once after an ensemble restart.
		"globalOutstandingLimit=10000",
	}, 60*time.Second)
}

// EtcdGRPCProxy is one `etcd grpc-proxy start` process in front of a
// cluster: clients connect to Addr as to a member.
type EtcdGRPCProxy struct {
	Addr string // 127.0.0.1:port
	dir  string
	args []string
	t    testing.TB

	serverProcess
}

// StartEtcdGRPCProxy starts Debian's etcd as a grpc-proxy for endpoints
// and waits until it accepts connections. It is killed in t.Cleanup.
func StartEtcdGRPCProxy(t testing.TB, endpoints []string) *EtcdGRPCProxy {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		t.Fatalf("testserver: %s is missing: apt-get install etcd-server (make test does it)", EtcdBinary)
	}
	eps := make([]string, len(endpoints))
	for i, e := range endpoints {
		eps[i] = strings.TrimPrefix(e, "http://")
	}
	p := &EtcdGRPCProxy{Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), dir: t.TempDir(), t: t}
	p.args = []string{"grpc-proxy", "start",
		"--endpoints", strings.Join(eps, ","),
		"--listen-addr", p.Addr,
		"--advertise-client-url", p.Addr,
	}
	t.Cleanup(p.Kill)
	p.Start()
	deadline := time.Now().Add(20 * time.Second)
	for !dials(p.Addr) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(p.dir, "proxy.log"))
			t.Fatalf("testserver: grpc-proxy on %s not listening after 20s:\n%s", p.Addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// Start (re)starts the proxy process; it does not wait for it to listen.
func (p *EtcdGRPCProxy) Start() {
	p.start(p.t, "etcd grpc-proxy", filepath.Join(p.dir, "proxy.log"), append([]string{EtcdBinary}, p.args...)...)
}

// dials reports whether something accepts TCP connections on addr.
func dials(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
