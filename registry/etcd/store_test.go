package etcd

import (
	"context"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func TestStore(t *testing.T) {
	srv := testserver.StartEtcd(t)
	registrytest.RunStore(t, registrytest.StoreHarness{
		New: func(t *testing.T) (registry.Store, func()) {
			c := newClient(t, srv.Endpoint)
			return store{c}, func() { c.Close() }
		},
		Skipped: func(s registry.Store, dir string) float64 {
			return testutil.ToFloat64(s.(store).c.m.RecordsSkipped.WithLabelValues(backendName, dir))
		},
	})
}

// The fleet-wide records stay where earlier versions put them (and where
// the roles of SetupRoles grant them): keys written raw in that layout
// are read, and records written now land there.
func TestRecordsLayout(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := newClient(t, srv.Endpoint)
	admin := newClient(t, srv.Endpoint)
	ctx := context.Background()
	root := "/syncstack-test"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := registry.Override{Target: "10.0.0.1", State: registry.StateDrain, Services: []string{"web"}, Reason: "old", By: "ops", At: at}
	data, _ := old.Encode()
	for key, val := range map[string]string{
		root + "/overrides/10.0.0.1@web":       string(data),
		root + "/catalog/syn-old":              `{"id":"syn-old","at":"2026-01-02T03:04:05Z","services":{"web":"/services/web"}}`,
		root + "/history/01767323045000000000": `{"at":"2026-01-02T03:04:05Z","by":"ops","action":"drain","targets":["10.0.0.1"],"revision":1}`,
	} {
		if _, err := admin.cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	set, err := c.Overrides(ctx)
	if err != nil || len(set.Overrides) != 1 || set.Overrides[0].Reason != "old" {
		t.Errorf("Overrides() = %+v, %v; want the planted one", set, err)
	}
	if cats, err := c.Catalogs(ctx); err != nil || len(cats) != 1 || cats[0].ID != "syn-old" {
		t.Errorf("Catalogs() = %+v, %v; want syn-old", cats, err)
	}
	if h, err := c.History(ctx, 0); err != nil || len(h) != 1 || h[0].Action != "drain" {
		t.Errorf("History() = %+v, %v; want the planted entry", h, err)
	}

	raw := func(key string) *mvccpb.KeyValue {
		t.Helper()
		resp, err := admin.cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v %v", key, resp, err)
		}
		return resp.Kvs[0]
	}
	o := registry.Override{Target: "10.0.0.2", State: registry.StateReady, Weight: new(int), At: at}
	if _, err := c.PutOverride(ctx, o); err != nil {
		t.Fatal(err)
	}
	want, _ := o.Encode()
	if kv := raw(root + "/overrides/10.0.0.2~weight"); string(kv.Value) != string(want) || kv.Lease != 0 {
		t.Errorf("override key = %s (lease %x), want %s on no lease", kv.Value, kv.Lease, want)
	}
	a := registry.Ack{ID: "syn-1", Revision: 7, At: at}
	if err := c.PutAck(ctx, a); err != nil {
		t.Fatal(err)
	}
	want, _ = registry.EncodeAck(a)
	lease, _ := c.leaseNow()
	if kv := raw(root + "/acks/syn-1"); string(kv.Value) != string(want) || kv.Lease == 0 || kv.Lease != int64(lease) {
		t.Errorf("ack key = %s (lease %x), want %s on the client's lease %x", kv.Value, kv.Lease, want, lease)
	}
	cat := registry.Catalog{ID: "syn-1", At: at, Services: map[string]string{"web": "/services/web"}}
	if _, err := c.PutCatalog(ctx, cat); err != nil {
		t.Fatal(err)
	}
	want, _ = cat.Encode()
	if kv := raw(root + "/catalog/syn-1"); string(kv.Value) != string(want) || kv.Lease != 0 {
		t.Errorf("catalog key = %s, want %s on no lease", kv.Value, want)
	}
	h := registry.HistoryEntry{At: at, By: "ops", Action: "weight", Targets: []string{"10.0.0.2"}, Revision: 8}
	if err := c.AppendHistory(ctx, h); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.cli.Get(ctx, root+"/history/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 2 {
		t.Fatalf("history keys = %v, %v", resp, err)
	}
	want, _ = json.Marshal(h)
	if kv := resp.Kvs[1]; !regexp.MustCompile(`^/syncstack-test/history/\d{20}$`).MatchString(string(kv.Key)) || string(kv.Value) != string(want) {
		t.Errorf("history key %s = %s, want /syncstack-test/history/<20 digits> = %s", kv.Key, kv.Value, want)
	}
	rev, err := c.DeleteOverride(ctx, "10.0.0.1@web")
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := admin.cli.Get(ctx, root+"/overrides/10.0.0.1@web"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the deleted override's key: %v %v", resp, err)
	}
	if kv := raw(root + "/overrides-deleted"); kv.ModRevision != rev {
		t.Errorf("overrides-deleted moved at %d, want the deletion's revision %d", kv.ModRevision, rev)
	} else if _, err := time.Parse(time.RFC3339Nano, string(kv.Value)); err != nil {
		t.Errorf("overrides-deleted = %q, want the time of the deletion: %v", kv.Value, err)
	}
}
