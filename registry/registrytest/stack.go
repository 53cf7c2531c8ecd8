package registrytest

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// StackPerWatch starts n watches on d (a goroutine each, as synapse runs
// them), waits for every first set, and returns the goroutine stacks they
// added, in KB per watch, once the collector had the chance to shrink them.
// A warm-up watch first connects the client, so only the watches count.
// settled, when not nil, is polled after the first sets until it holds:
// the watches are parked (etcd's are created after their list).
// Stack sizes mean something only without the race detector (it doubles
// the room the runtime keeps below every frame): callers build with
// !race.
func StackPerWatch(t *testing.T, d registry.Discovery, n int, timeout time.Duration, settled func() bool) float64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	warm := make(chan []registry.Instance, 1)
	wctx, wcancel := context.WithCancel(ctx)
	wg.Go(func() { d.Watch(wctx, "/warm", registry.DecodeOptions{}, warm) })
	<-warm
	wcancel()

	before := stackInuse()
	outs := make([]chan []registry.Instance, n)
	for i := range outs {
		outs[i] = make(chan []registry.Instance)
		wg.Go(func() { d.Watch(ctx, fmt.Sprintf("/svc%d", i), registry.DecodeOptions{}, outs[i]) })
	}
	deadline := time.After(timeout)
	for i, out := range outs {
		select {
		case <-out: // read and watching
		case <-deadline:
			t.Fatalf("watch %d did not deliver its first set within %v", i, timeout)
		}
	}
	if settled != nil {
		Eventually(t, timeout, "the watches settled", settled)
	}
	return float64(stackInuse()-before) / float64(n) / 1024
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

// HeapAlloc is the live heap once the collector ran twice (the second
// collection frees what the first one's finalizers released).
func HeapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
