//go:build !race

// The race detector doubles the stack the runtime keeps free below every
// frame, so stack sizes are only meaningful without it.

package etcd

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

// A watch goroutine parked between events must have a stack the runtime
// can shrink to 4 KB: the runtime halves a stack at a GC while less than a
// quarter of it is used (its frames plus 800 bytes it keeps free), and a
// synapse runs one watch per service (1000 watches: 4 MB of 8 KB stacks
// against 4 MB of 4 KB ones). The etcd client's own goroutine per watch
// (serveSubstream) parks at 4 KB, so a watch costs ≤ 8 KB of stacks; with
// the loop in one large function (a 1.2 KB frame) it was 12 KB.
func TestWatchStackStaysSmall(t *testing.T) {
	const watches = 300
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// Warm up the client (its connection and pin) so that only the
	// watches are counted.
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
	deadline := time.After(30 * time.Second)
	for i, out := range outs {
		select {
		case <-out: // listed and watching
		case <-deadline:
			t.Fatalf("watch %d did not deliver its first set", i)
		}
	}
	after := stackInuse()
	perWatch := float64(after-before) / watches / 1024
	t.Logf("goroutine stacks: %.1f KB per watch (ours and the etcd client's)", perWatch)
	if perWatch > 10 {
		t.Errorf("goroutine stacks: %.1f KB per watch, want ≤ 10 KB (a 4 KB stack for the watch loop, 4 KB for the etcd client's)", perWatch)
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
