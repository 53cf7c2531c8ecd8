package etcd

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A service whose backends were all replaced, the new ones registered
// before the old ones left (a deploy, the benchmark's mass churn), ends
// with as many keys as before; its entries must not keep the memory of
// twice as many (a Go map never shrinks: 2 KB more per service of 10).
func TestEntriesShrinkAfterReplacement(t *testing.T) {
	const services, per = 500, 10
	ws := make([]*prefixWatch[registry.Instance, int], services)
	heap := registrytest.HeapAlloc
	key := func(s int, name string, k int) []byte {
		return fmt.Appendf(nil, "/syncstack-test/services/svc%04d/%s%02d", s, name, k)
	}
	resp := func(typ mvccpb.Event_EventType, s int, name string) *pb.WatchResponse {
		r := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 2}}
		for k := range per {
			r.Events = append(r.Events, &mvccpb.Event{Type: typ, Kv: &mvccpb.KeyValue{Key: key(s, name, k), ModRevision: 2}})
		}
		return r
	}
	h0 := heap()
	for s := range ws {
		w := &prefixWatch[registry.Instance, int]{prefix: fmt.Sprintf("/syncstack-test/services/svc%04d/", s), skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}),
			decode:  func(string, []byte) (registry.Instance, error) { return registry.Instance{}, nil },
			build:   func(map[string]entry[registry.Instance], int64) (int, bool) { return 0, false },
			entries: map[string]entry[registry.Instance]{}}
		for k := range per {
			w.put(&mvccpb.KeyValue{Key: key(s, "old", k)})
		}
		ws[s] = w
	}
	listed := heap() - h0
	for s, w := range ws {
		for _, r := range []*pb.WatchResponse{resp(mvccpb.PUT, s, "new"), resp(mvccpb.DELETE, s, "old")} {
			if more, _ := w.applyOne(r); !more {
				t.Fatal("apply ended the watch")
			}
		}
		if len(w.entries) != per {
			t.Fatalf("service %d: %d entries after the replacement, want %d", s, len(w.entries), per)
		}
		for k := range per {
			if _, ok := w.entries[fmt.Sprintf("new%02d", k)]; !ok {
				t.Fatalf("service %d: new%02d missing", s, k)
			}
		}
	}
	churned := heap() - h0
	t.Logf("entries: %d B per service listed, %d B after every key was replaced", listed/services, churned/services)
	if churned > listed*5/4 {
		t.Errorf("entries: %d B per service after every key was replaced, %d B when listed: the map kept its growth", churned/services, listed/services)
	}
	runtime.KeepAlive(ws)
}
