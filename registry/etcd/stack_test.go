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
// synapse runs one watch per service (1000 watches: 4 MB of 8 KB stacks
// against 4 MB of 4 KB ones). The etcd client's own goroutine per watch
// (serveSubstream) parks at 4 KB, so a watch costs ≤ 8 KB of stacks; with
// the loop in one large function (a 1.2 KB frame) it was 12 KB.
func TestWatchStackStaysSmall(t *testing.T) {
	srv := testserver.StartEtcd(t)
	perWatch := registrytest.StackPerWatch(t, newClient(t, srv.Endpoint), 300, 30*time.Second)
	t.Logf("goroutine stacks: %.1f KB per watch (ours and the etcd client's)", perWatch)
	// 7.1–9.2 KB measured; the loop in one function: 12.8–13.0 KB.
	if perWatch > 11 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 11 KB (a 4 KB stack for the watch loop, 4 KB for the etcd client's, and the runtime's spread)", perWatch)
	}
}
