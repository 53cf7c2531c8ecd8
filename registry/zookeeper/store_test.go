package zookeeper

import (
	"context"
	"encoding/json"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func storeHarness(servers []string, tweak ...func(*Config)) registrytest.StoreHarness {
	return registrytest.StoreHarness{
		New: func(t *testing.T) (registry.Store, func()) {
			c := newClient(t, servers, tweak...)
			return store{c}, func() { c.Close() }
		},
		Skipped: func(s registry.Store, dir string) float64 {
			return testutil.ToFloat64(s.(store).c.m.RecordsSkipped.WithLabelValues(backendName, dir))
		},
	}
}

func TestStore(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	registrytest.RunStore(t, storeHarness(zks.Servers()))
}

// With credentials every node the store creates carries the client's ACL,
// and the suite behaves the same.
func TestStoreWithAuth(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	registrytest.RunStore(t, storeHarness(zks.Servers(), withAuth(&Auth{User: "fleet", Password: "fleet-secret"})))
}

// The fleet-wide records stay where earlier versions put them (and where
// Airbnb-style tools and SetupLayout's ACLs expect them): records written
// raw in that layout are read, and records written now land there.
func TestRecordsLayout(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	admin := newClient(t, zks.Servers())
	ctx := context.Background()
	root := "/syncstack-test"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := registry.Override{Target: "10.0.0.1", State: registry.StateDrain, Services: []string{"web"}, Reason: "old", By: "ops", At: at}
	plant := func(p string, data []byte, flags int32) {
		t.Helper()
		if err := admin.ensurePath(parentOf(p)); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.conn.Create(p, data, flags, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("plant %s: %v", p, err)
		}
	}
	data, _ := old.Encode()
	plant(root+"/overrides/10.0.0.1@web", data, 0)
	plant(root+"/catalog/syn-old", []byte(`{"id":"syn-old","at":"2026-01-02T03:04:05Z","services":{"web":"/services/web"}}`), 0)
	plant(root+"/history/entry-", []byte(`{"at":"2026-01-02T03:04:05Z","by":"ops","action":"drain","targets":["10.0.0.1"],"revision":1}`), zk.FlagSequence)

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

	raw := func(p string) ([]byte, *zk.Stat) {
		t.Helper()
		data, stat, err := admin.conn.Get(p)
		if err != nil {
			t.Fatalf("get %s: %v", p, err)
		}
		return data, stat
	}
	o := registry.Override{Target: "10.0.0.2", State: registry.StateReady, Weight: new(int), At: at}
	if _, err := c.PutOverride(ctx, o); err != nil {
		t.Fatal(err)
	}
	want, _ := o.Encode()
	if got, stat := raw(root + "/overrides/10.0.0.2~weight"); string(got) != string(want) || stat.EphemeralOwner != 0 {
		t.Errorf("override node = %s (ephemeral owner %x), want %s, persistent", got, stat.EphemeralOwner, want)
	}
	a := registry.Ack{ID: "syn-1", Revision: 7, At: at}
	if err := c.PutAck(ctx, a); err != nil {
		t.Fatal(err)
	}
	want, _ = registry.EncodeAck(a)
	if got, stat := raw(root + "/acks/syn-1"); string(got) != string(want) || stat.EphemeralOwner != c.SessionID() {
		t.Errorf("ack node = %s (ephemeral owner %x), want %s on session %x", got, stat.EphemeralOwner, want, c.SessionID())
	}
	cat := registry.Catalog{ID: "syn-1", At: at, Services: map[string]string{"web": "/services/web"}}
	if _, err := c.PutCatalog(ctx, cat); err != nil {
		t.Fatal(err)
	}
	want, _ = cat.Encode()
	if got, stat := raw(root + "/catalog/syn-1"); string(got) != string(want) || stat.EphemeralOwner != 0 {
		t.Errorf("catalog node = %s, want %s, persistent", got, want)
	}
	h := registry.HistoryEntry{At: at, By: "ops", Action: "weight", Targets: []string{"10.0.0.2"}, Revision: 8}
	if err := c.AppendHistory(ctx, h); err != nil {
		t.Fatal(err)
	}
	names, _, err := admin.conn.Children(root + "/history")
	if err != nil || len(names) != 2 {
		t.Fatalf("history children = %v, %v", names, err)
	}
	sort.Strings(names)
	want, _ = json.Marshal(h)
	if got, _ := raw(root + "/history/" + names[1]); !regexp.MustCompile(`^entry-\d{10}$`).MatchString(names[1]) || string(got) != string(want) {
		t.Errorf("history node %s = %s, want entry-<10 digits> = %s", names[1], got, want)
	}
	if _, err := c.DeleteOverride(ctx, "10.0.0.1@web"); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := admin.conn.Exists(root + "/overrides/10.0.0.1@web"); ok {
		t.Error("the deleted override's node is still there")
	}
}
