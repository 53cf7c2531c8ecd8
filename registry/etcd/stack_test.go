//go:build !race

// The race detector doubles the stack the runtime keeps free below every
// frame, so stack sizes are only meaningful without it.

package etcd

import (
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
func TestWatchStackStaysSmall(t *testing.T) {
	srv := testserver.StartEtcd(t)
	watchers0 := serverGauge(t, "etcd_debugging_mvcc_watcher_total")
	perWatch := registrytest.StackPerWatch(t, newClient(t, srv.Endpoint), 300, 30*time.Second, func() bool {
		return serverGauge(t, "etcd_debugging_mvcc_watcher_total")-watchers0 >= 300
	})
	t.Logf("goroutine stacks: %.1f KB per watch", perWatch)
	// 3.9–6.2 KB measured (the runtime does not shrink every stack at
	// every collection).
	if perWatch > 7 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 7 KB (a 4 KB stack for the watch loop, and the runtime's spread)", perWatch)
	}
}
