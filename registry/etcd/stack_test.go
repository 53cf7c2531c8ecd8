//go:build !race

// The race detector doubles the stack the runtime keeps free below every
// frame, so stack sizes are only meaningful without it.

package etcd

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A watch goroutine parked between events must have a stack the runtime
// can shrink to 4 KB: the runtime halves a stack at a GC while less than a
// quarter of it is used (its frames plus 800 bytes it keeps free), and a
// synapse runs one watch per service (1000 watches: 8 MB of 8 KB stacks
// against 4 MB of 4 KB ones). The watches share one stream and its reader
// (watchStream), so that is all a watch costs in stacks: with clientv3's
// Watcher (a goroutine per watch) it was 8.0–9.3 KB, and with the loop in
// one large function (a 1.2 KB frame) 12.8–13.0 KB.
//
// The server runs as a process of its own: the embedded one would add its
// own goroutines' stacks (they grow while it serves 300 new watches) to
// what this process measures, and made the figure 4 or 7 KB run to run.
func TestWatchStackStaysSmall(t *testing.T) {
	member := testserver.StartEtcdCluster(t, 1).Members[0]
	watchers0 := processGauge(t, member.ClientURL, "etcd_debugging_mvcc_watcher_total")
	perWatch := registrytest.StackPerWatch(t, newClient(t, member.ClientURL), 300, 30*time.Second, func() bool {
		return processGauge(t, member.ClientURL, "etcd_debugging_mvcc_watcher_total")-watchers0 >= 300
	})
	t.Logf("goroutine stacks: %.1f KB per watch", perWatch)
	// 3.9–4.2 KB over 15 runs with the server out of process.
	if perWatch > 6 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 6 KB (a 4 KB stack for the watch loop, and the runtime's spread)", perWatch)
	}
}

// processGauge reads one unlabelled gauge from an etcd process's /metrics.
func processGauge(t *testing.T, clientURL, name string) float64 {
	t.Helper()
	resp, err := http.Get(clientURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("etcd gauge %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("etcd gauge %s not found at %s/metrics", name, clientURL)
	return 0
}
