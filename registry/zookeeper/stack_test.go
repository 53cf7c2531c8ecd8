//go:build !race

// The race detector doubles the stack the runtime keeps free below every
// frame, so stack sizes are only meaningful without it.

package zookeeper

import (
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A watch goroutine parked between changes must have a stack the runtime
// can shrink to 4 KB: the runtime halves a stack at a GC while less than a
// quarter of it is used (its frames plus 800 bytes it keeps free), and a
// synapse runs one watch per service (1000 watches: 4 MB of 4 KB stacks
// against 8 MB of 8 KB ones, which the loop in one large function with a
// 0.75 KB frame kept).
func TestWatchStackStaysSmall(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	perWatch := registrytest.StackPerWatch(t, newClient(t, zks.Servers()), 300, 60*time.Second, nil)
	t.Logf("goroutine stacks: %.1f KB per watch", perWatch)
	if perWatch > 6 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 6 KB (a 4 KB stack for the watch loop)", perWatch)
	}
}
