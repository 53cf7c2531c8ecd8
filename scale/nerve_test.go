package scale

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// The nerves of the fleet: during the storms the registry holds not only
// the harness's persistent records but the ephemeral registrations of N
// real nerve processes (ZooKeeper sessions, etcd leases), as on hosts
// where every machine runs both. Every synapse watches them as the
// service nerveService.

const (
	nerveService = "nerve"
	nervePath    = "/scale/nerve"
)

// nerveProc is one nerve process; it registers one instance, named
// nerveName(idx), whose TCP check answers on its own listener.
type nerveProc struct {
	idx   int
	admin int
	cmd   *exec.Cmd
}

func nerveName(i int) string { return fmt.Sprintf("n%03d", i) }

// startNerves starts n nerves registering in cl (through hosts) and
// waits until each says it is registered.
func startNerves(b *testing.B, cl cluster, hosts []string, n int) []*nerveProc {
	bin := testserver.BuildAsShipped(b, "../cmd/nerve")
	root := b.TempDir()
	var nerves []*nerveProc
	for i := range n {
		// Each instance's own listener: its check passes, and its
		// host:port is its own.
		port := testserver.StartTCPAcceptor(b)
		np := &nerveProc{idx: i, admin: testserver.FreePort(b)}
		registry := fmt.Sprintf("reporter_type: zookeeper\n    zk_hosts: [%s]\n    zk_path: %s", strings.Join(hosts, ", "), nervePath)
		if cl.name() == "etcd" {
			registry = fmt.Sprintf("reporter_type: etcd\n    etcd_endpoints: [%s]\n    etcd_path: %s", strings.Join(hosts, ", "), nervePath)
		}
		cfg := fmt.Sprintf(`instance_id: %[1]s
admin: {listen: "127.0.0.1:%[2]d"}
services:
  web:
    host: 127.0.0.1
    port: %[3]d
    check_interval: 1s
    checks: [{type: tcp, timeout: 500ms}]
    %[4]s
`, nerveName(i), np.admin, port, registry)
		np.cmd = startDaemon(b, bin, filepath.Join(root, nerveName(i)), cfg)
		nerves = append(nerves, np)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, np := range nerves {
		for np.metric("nerve_service_registered") != 1 {
			if time.Now().After(deadline) {
				b.Fatalf("nerve %d not registered after 2 minutes (logs in %s)", np.idx, root)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nerves
}

// metric sums the samples of one metric family from nerve's /metrics
// (-1 when it cannot be read).
func (np *nerveProc) metric(name string) float64 {
	return sumMetric(fmt.Sprintf("http://127.0.0.1:%d/metrics", np.admin), func(l string) bool {
		return strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ")
	})
}

// nerveTotals sums a metric over every nerve.
func nerveTotals(nerves []*nerveProc, name string) float64 {
	var sum float64
	for _, np := range nerves {
		if v := np.metric(name); v > 0 {
			sum += v
		}
	}
	return sum
}

// allNerves reports whether a synapse's nerve service holds every nerve.
func allNerves(n int) func(map[string]bool) bool {
	return func(set map[string]bool) bool {
		for i := range n {
			if !set[nerveName(i)] {
				return false
			}
		}
		return true
	}
}
