//go:build !race

// The race detector doubles the stack the runtime keeps free below every
// frame, so stack sizes are only meaningful without it.

package zookeeper

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers/registrywatch"
)

// A watch goroutine parked between changes must have a stack the runtime
// can shrink to 4 KB: the runtime halves a stack at a GC while less than a
// quarter of it is used (its frames plus 800 bytes it keeps free), and a
// synapse runs one watch per service (1000 watches: 4 MB of 4 KB stacks
// against 8 MB of 8 KB ones, which the loop in one large function with a
// 0.75 KB frame kept).
func TestWatchStackStaysSmall(t *testing.T) {
	const watches = 300
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// Warm up the client (its session) so that only the watches count.
	warm := make(chan []registry.Instance, 1)
	wctx, wcancel := context.WithCancel(ctx)
	wg.Go(func() { c.Watch(wctx, "/warm", registry.DecodeOptions{}, warm) })
	<-warm
	wcancel()

	before := stackInuse()
	outs := make([]chan []registry.Instance, watches)
	for i := range outs {
		outs[i] = make(chan []registry.Instance)
		w := &registrywatch.Watcher{Client: c, Path: fmt.Sprintf("/svc%d", i)}
		// As synapse runs them: a goroutine per watch, through the
		// watcher's Run.
		wg.Go(func() { w.Run(ctx, outs[i]) })
	}
	deadline := time.After(60 * time.Second)
	for i, out := range outs {
		select {
		case <-out: // read and watching
		case <-deadline:
			t.Fatalf("watch %d did not deliver its first set", i)
		}
	}
	after := stackInuse()
	perWatch := float64(after-before) / watches / 1024
	t.Logf("goroutine stacks: %.1f KB per watch", perWatch)
	if perWatch > 6 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 6 KB (a 4 KB stack for the watch loop)", perWatch)
	}
}

// stackInuse is the goroutine stacks in use once the GC had the chance to
// shrink them (a stack halves at most once per GC).
func stackInuse() uint64 {
	var ms runtime.MemStats
	for range 4 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}
