package zookeeper

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A service whose backends were all replaced, the new ones seen before the
// old ones left (a deploy, the benchmark's mass churn), ends with as many
// children as before; its entries must not keep the memory of twice as
// many (a Go map never shrinks).
func TestEntriesShrinkAfterReplacement(t *testing.T) {
	const services, per = 500, 10
	heap := registrytest.HeapAlloc
	name := func(kind string, k int) string { return fmt.Sprintf("member_%s%010d", kind, k) }
	ws := make([]*childWatch[registry.Instance], services)
	h0 := heap()
	for s := range ws {
		w := &childWatch[registry.Instance]{entries: map[string]entry[registry.Instance]{}}
		for k := range per {
			w.entries[name("old", k)] = entry[registry.Instance]{ok: true}
		}
		w.compact() // after the pass that listed them
		ws[s] = w
	}
	listed := heap() - h0
	for _, w := range ws {
		for k := range per { // one pass sees the new ones
			w.entries[name("new", k)] = entry[registry.Instance]{ok: true}
		}
		w.compact()
		for k := range per { // the next, the old ones gone
			delete(w.entries, name("old", k))
		}
		w.compact()
		if len(w.entries) != per {
			t.Fatalf("%d entries after the replacement, want %d", len(w.entries), per)
		}
		for k := range per {
			if _, ok := w.entries[name("new", k)]; !ok {
				t.Fatalf("%s missing", name("new", k))
			}
		}
	}
	churned := heap() - h0
	t.Logf("entries: %d B per service listed, %d B after every child was replaced", listed/services, churned/services)
	if churned > listed*5/4 {
		t.Errorf("entries: %d B per service after every child was replaced, %d B when listed: the map kept its growth", churned/services, listed/services)
	}
	runtime.KeepAlive(ws)
}
