package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func newClient(t *testing.T, servers []string, tweak ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{Servers: servers, SessionTimeout: 4 * time.Second, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"}
	for _, f := range tweak {
		f(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	inst       = registrytest.Inst
	startWatch = registrytest.StartWatch
	hasLen     = registrytest.HasLen
	has        = registrytest.Has
)

func TestConformance(t *testing.T) {
	conformance(t)
}

// conformance runs the registry conformance suite on a ZooKeeper server,
// with clients made with tweak (TestConformanceWithAuth: credentials); the
// records it plants carry the ACL those clients write with.
func conformance(t *testing.T, tweak ...func(*Config)) {
	zks := testserver.StartZooKeeper(t)
	admin := newClient(t, zks.Servers(), tweak...)
	registrytest.Run(t, registrytest.Harness{
		New: func(t *testing.T) registry.Backend { return newClient(t, zks.Servers(), tweak...) },
		Plant: func(t *testing.T, dir, name string, data []byte) {
			if err := admin.ensurePath(dir); err != nil {
				t.Fatal(err)
			}
			_, err := admin.conn.Create(dir+"/"+name, data, 0, admin.acl())
			if errors.Is(err, zk.ErrNodeExists) {
				_, err = admin.conn.Set(dir+"/"+name, data, -1)
			}
			if err != nil {
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
		Skipped: func(b registry.Backend, dir string) float64 {
			return testutil.ToFloat64(b.(*Client).m.RecordsSkipped.WithLabelValues(backendName, dir))
		},
	})
}

// A weight change arrives through the child's data watch: one read, no
// re-list. A path-encoded child is decoded from its name: no read at all.
func TestReadsOnlyWhatChanged(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	w := startWatch(t, c, "/svc")
	w.WaitFor(t, 5*time.Second, "empty", hasLen(0))
	// The registration on a client of its own: its keeper's reads (the
	// read-back after its own update) are not the watcher's.
	r, err := newClient(t, zks.Servers()).Register(context.Background(), "/svc", inst("10.0.0.1", 80, "a"))
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "a", has("a"))
	reads := func(op string) float64 { return testutil.ToFloat64(c.m.Reads.WithLabelValues(backendName, op)) }
	children, gets := reads("children"), reads("get")
	weighted := inst("10.0.0.1", 80, "a")
	weight := 3
	weighted.Weight = &weight
	if err := r.Update(context.Background(), weighted); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "weight 3", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Weight != nil })
	if dc, dg := reads("children")-children, reads("get")-gets; dc != 0 || dg != 1 {
		t.Errorf("a data change cost %v children and %v get reads, want 0 and 1", dc, dg)
	}

	children, gets = reads("children"), reads("get")
	rec, _ := inst("10.0.0.7", 80, "encoded").Encode()
	if _, err := c.conn.Create("/svc/"+registry.EncodeChildName(rec)+"0000000007", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "encoded", has("encoded"))
	if dc, dg := reads("children")-children, reads("get")-gets; dc != 1 || dg != 0 {
		t.Errorf("a path-encoded child cost %v children and %v get reads, want 1 and 0", dc, dg)
	}
}

func TestRegisterWhileDownFailsWithinOpTimeout(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	zks.Nodes[0].Kill()
	c := newClient(t, zks.Servers(), func(cfg *Config) { cfg.OpTimeout = 500 * time.Millisecond })
	start := time.Now()
	_, err := c.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "a"))
	if err == nil {
		t.Fatal("Register with no server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Register took %v to fail, want about the 500ms OpTimeout", d)
	}
}

// The registrant is cut off until its session expires: the server drops its
// node (a real removal), and it is back as soon as the new session exists.
func TestSessionExpiryReregisters(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
	reg := newClient(t, []string{proxy.Addr}, func(cfg *Config) { cfg.SessionTimeout = time.Second })
	watch := newClient(t, zks.Servers())
	w := startWatch(t, watch, "/svc")
	if _, err := watch.Register(context.Background(), "/svc", inst("10.0.0.2", 80, "other")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "both", hasLen(2))
	_, oldSession, _ := reg.session()

	proxy.Cut()
	w.WaitFor(t, 10*time.Second, "the expired node gone", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Name == "other" })
	proxy.Restore()

	// The moment the new session exists, the clock starts.
	var newSessionAt time.Time
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(time.Millisecond) {
		if ok, id, _ := reg.session(); ok && id != oldSession {
			newSessionAt = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new session after the partition healed")
		}
	}
	w.WaitFor(t, 5*time.Second, "mine back", has("mine"))
	if d := time.Since(newSessionAt); d > time.Second {
		t.Errorf("re-registered %v after the new session, want ≤ 1s", d)
	}
	registrytest.Eventually(t, time.Second, "reregistrations counted", func() bool {
		return testutil.ToFloat64(reg.m.Reregistrations.WithLabelValues(backendName)) >= 1
	})
	w.KeptAfterSeen(t, "other")
}

// The watcher is cut off until its own session expires: it must never send a
// smaller set, and afterwards it must catch up with what changed meanwhile.
func TestWatcherSessionExpiryNeverShrinks(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
	watch := newClient(t, []string{proxy.Addr}, func(cfg *Config) { cfg.SessionTimeout = time.Second })
	reg := newClient(t, zks.Servers())
	ctx := context.Background()
	for i := range 3 {
		if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 8000+i, fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	w := startWatch(t, watch, "/svc")
	w.WaitFor(t, 5*time.Second, "3", hasLen(3))
	_, oldSession, _ := watch.session()

	proxy.Cut()
	// While the watcher is partitioned, a fourth instance registers.
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 8003, "n3")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // well past the 1s session timeout
	select {
	case s := <-w.C:
		t.Fatalf("the partitioned watcher sent %v", s)
	default:
	}
	proxy.Restore()
	w.WaitFor(t, 10*time.Second, "4 after the new session", hasLen(4))
	if _, id, _ := watch.session(); id == oldSession {
		t.Error("the watcher's session did not expire: the test did not test expiry")
	}
	for _, s := range w.Sets {
		if len(s) < 3 {
			t.Errorf("a set shrank: %v", w.Sets)
		}
	}
}

func TestEnsembleFailover(t *testing.T) {
	zks := testserver.StartZKEnsemble(t, 3)
	reg := newClient(t, zks.Servers())
	watch := newClient(t, zks.Servers())
	w := startWatch(t, watch, "/svc")
	ctx := context.Background()
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 80, "a")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a", has("a"))

	var follower *testserver.ZKNode
	for _, n := range zks.Nodes {
		if m, _ := n.Mode(); m == "follower" {
			follower = n
			break
		}
	}
	if follower == nil {
		t.Fatal("no follower in the ensemble")
	}
	follower.Kill()
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 81, "b")); err != nil {
		t.Fatalf("register with one follower down: %v", err)
	}
	w.WaitFor(t, 15*time.Second, "b with a follower down", has("b"))
	follower.Start()
	if err := follower.WaitServing(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	leader := zks.Leader()
	if leader == nil {
		t.Fatal("no leader")
	}
	leader.Kill()
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 82, "c")); err != nil {
		t.Fatalf("register after the leader was killed: %v", err)
	}
	got := w.WaitFor(t, 30*time.Second, "c after the leader was killed", has("c"))
	if len(got) != 3 {
		t.Errorf("after failover: %v, want a, b, c", got)
	}
	w.KeptAfterSeen(t, "a")
}

// The client's receive buffer starts at 64 KB and grows to a reply's
// length (third_party/zk): a directory whose child list alone is larger
// (1,200 path-encoded children, ~130 KB of names) is read whole.
func TestChildListLargerThanTheReceiveBuffer(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	const n = 1200
	if _, err := c.conn.Create("/big", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	var names int
	err := testserver.Parallel(n, 16, func(i int) error {
		rec, _ := inst("10.0.0.1", 10000+i, fmt.Sprintf("instance-with-a-long-name-%04d", i)).Encode()
		_, err := c.conn.Create(fmt.Sprintf("/big/%s%010d", registry.EncodeChildName(rec), i), nil, 0, zk.WorldACL(zk.PermAll))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	children, _, err := c.conn.Children("/big")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range children {
		names += 4 + len(name)
	}
	if names <= 64<<10 {
		t.Fatalf("the child list is %d bytes: not larger than the receive buffer's start", names)
	}
	w := startWatch(t, c, "/big")
	w.WaitFor(t, 10*time.Second, fmt.Sprintf("%d instances", n), hasLen(n))
}
