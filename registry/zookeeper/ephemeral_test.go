package zookeeper

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func faultHarness(t *testing.T, zks *testserver.ZKEnsemble) registrytest.FaultHarness {
	admin := newClient(t, zks.Servers())
	return registrytest.FaultHarness{
		Harness: registrytest.Harness{
			New: func(t *testing.T) registry.Backend { return newClient(t, zks.Servers()) },
			Plant: func(t *testing.T, dir, name string, data []byte) {
				if _, err := admin.conn.Set(dir+"/"+name, data, -1); err != nil {
					t.Fatal(err)
				}
			},
			Raw: func(t *testing.T, key string) []byte {
				data, _, err := admin.conn.Get(key)
				if err != nil {
					t.Fatal(err)
				}
				return data
			},
		},
		NewCutOff: func(t *testing.T) (registry.Backend, registrytest.Cutter) {
			p := testserver.StartProxy(t, zks.Nodes[0].Addr)
			// The session outlives the cut: the case where a lost
			// removal stays for good.
			return newClient(t, []string{p.Addr}, func(cfg *Config) { cfg.SessionTimeout = 10 * time.Second }), p
		},
		Delete: func(t *testing.T, key string) {
			if err := admin.conn.Delete(key, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				t.Fatal(err)
			}
		},
	}
}

func TestFaults(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	registrytest.RunFaults(t, faultHarness(t, zks))
}

// A Deregister made while the whole ensemble is down lands once it is back
// (the session survives a restart of the ensemble).
func TestDeregisterWhileEnsembleDown(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := newClient(t, zks.Servers(), func(cfg *Config) { cfg.SessionTimeout = 10 * time.Second })
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	zks.Nodes[0].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = r.Deregister(ctx)
	cancel()
	if err == nil {
		t.Fatal("Deregister returned nil with the ensemble down")
	}
	zks.Nodes[0].Start()
	if err := zks.Nodes[0].WaitServing(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister after the ensemble returned: %v", err)
	}
	t.Logf("removal confirmed %v after the ensemble served again", time.Since(up))
	w := startWatch(t, newClient(t, zks.Servers()), "/svc")
	w.WaitFor(t, 5*time.Second, "no record", hasLen(0))
}

// The periodic read-back alone (watch events ignored) puts back a record
// somebody rewrote.
func TestReadBackRepairsWithoutWatch(t *testing.T) {
	setReadBack(t, 200*time.Millisecond)
	ignoreWatch.Store(true)
	t.Cleanup(func() { ignoreWatch.Store(false) })
	zks := testserver.StartZooKeeper(t)
	admin := newClient(t, zks.Servers())
	reg := newClient(t, zks.Servers())
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := admin.conn.Get(r.Key())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.conn.Set(r.Key(), []byte(`{"host":"10.6.6.6","port":80,"name":"mine"}`), -1); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 2*time.Second, "the record read back and written back", func() bool {
		got, _, err := admin.conn.Get(r.Key())
		return err == nil && string(got) == string(want)
	})
}

func setReadBack(t *testing.T, d time.Duration) {
	old := readBackEvery.Swap(int64(d))
	t.Cleanup(func() { readBackEvery.Store(old) })
}

// A keeper looking for the node of a create whose answer was lost takes
// only a node of its own name that no other keeper of the process holds:
// never a sibling's (deleting it would leave the lost node as a second
// record of the instance).
func TestFindOwnSkipsSiblingsNodes(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	ctx := context.Background()
	r, err := c.Register(ctx, "/svc", inst("10.0.0.1", 80, "web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, "/svc", inst("10.0.0.1", 81, "web_b")); err != nil {
		t.Fatal(err)
	}
	sid := c.SessionID()
	lost, err := c.conn.Create("/svc/web_", []byte("{}"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	e := &ephemeral{c: c, dir: "/svc", child: "web_", sequential: true}
	got, err := e.findOwn(sid)
	if err != nil || got != lost {
		t.Errorf("findOwn = %q, %v; want the unclaimed %q, not %q (a sibling's) nor web_b's", got, err, lost, r.Key())
	}
	if err := c.conn.Delete(lost, -1); err != nil {
		t.Fatal(err)
	}
	if got, err := e.findOwn(sid); err != nil || got != "" {
		t.Errorf("findOwn with only a sibling's node left = %q, %v; want none", got, err)
	}
}

func TestIsSequence(t *testing.T) {
	for s, want := range map[string]bool{
		"0000000001": true, "1234567890": true,
		"": false, "000000001": false, "b_00000001": false, "00000000012": false,
	} {
		if got := isSequence(s); got != want {
			t.Errorf("isSequence(%q) = %v, want %v", s, got, want)
		}
	}
}
