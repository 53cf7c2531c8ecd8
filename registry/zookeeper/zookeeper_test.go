package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
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

func inst(host string, port int, name string) registry.Instance {
	return registry.Instance{Host: host, Port: port, Name: name}
}

// watcher runs Watch in the background and records every set it sends.
type watcher struct {
	ch   chan []registry.Instance
	sets [][]registry.Instance
}

func startWatch(t *testing.T, c *Client, dir string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{ch: make(chan []registry.Instance, 100)}
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, dir, registry.DecodeOptions{}, w.ch) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, registry.ErrClosed) {
			t.Errorf("Watch returned %v", err)
		}
	})
	return w
}

// waitFor reads sets until one satisfies ok, and returns it.
func (w *watcher) waitFor(t *testing.T, timeout time.Duration, what string, ok func([]registry.Instance) bool) []registry.Instance {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-w.ch:
			w.sets = append(w.sets, s)
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("watch: no set with %s within %v; sets seen: %v", what, timeout, w.sets)
		}
	}
}

func hasLen(n int) func([]registry.Instance) bool {
	return func(s []registry.Instance) bool { return len(s) == n }
}

func has(name string) func([]registry.Instance) bool {
	return func(s []registry.Instance) bool {
		for _, in := range s {
			if in.Name == name {
				return true
			}
		}
		return false
	}
}

func TestRegisterWatchDeregister(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := newClient(t, zks.Servers())
	watch := newClient(t, zks.Servers())
	w := startWatch(t, watch, "/services/web/services")
	w.waitFor(t, 10*time.Second, "the empty first set", hasLen(0))

	ctx := context.Background()
	start := time.Now()
	r, err := reg.Register(ctx, "/services/web/services", inst("127.0.0.11", 8080, "i-1"))
	if err != nil {
		t.Fatal(err)
	}
	got := w.waitFor(t, 5*time.Second, "i-1", has("i-1"))
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("register → watch took %v, want < 100ms", d)
	}
	if got[0].Address() != "127.0.0.11:8080" {
		t.Errorf("got %+v", got)
	}
	if !strings.HasPrefix(r.Key(), "/services/web/services/i-1_") {
		t.Errorf("node %q is not <path>/<name>_<seq>", r.Key())
	}
	data, _, err := reg.conn.Get(r.Key())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"host":"127.0.0.11","port":8080,"name":"i-1"}`; string(data) != want {
		t.Errorf("record = %s, want nerve's %s", data, want)
	}

	// A weight change arrives through the child's data watch: one read, no re-list.
	reads := func(op string) float64 { return testutil.ToFloat64(watch.m.Reads.WithLabelValues(backendName, op)) }
	children, gets := reads("children"), reads("get")
	weight := 7
	updated := inst("127.0.0.11", 8080, "i-1")
	updated.Weight = &weight
	if err := r.Update(ctx, updated); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 5*time.Second, "weight 7", func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 7
	})
	if dc, dg := reads("children")-children, reads("get")-gets; dc != 0 || dg != 1 {
		t.Errorf("a data change cost %v children and %v get reads, want 0 and 1", dc, dg)
	}

	start = time.Now()
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 5*time.Second, "no instance", hasLen(0))
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("deregister → watch took %v, want < 100ms", d)
	}
}

func TestCloseRemovesRegistrations(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	watch := newClient(t, zks.Servers())
	w := startWatch(t, watch, "/svc")
	reg := newClient(t, zks.Servers())
	for i := range 3 {
		if _, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 8000+i, fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	w.waitFor(t, 5*time.Second, "3 instances", hasLen(3))
	reg.Close()
	w.waitFor(t, 5*time.Second, "none after Close", hasLen(0))
	if _, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 1, "x")); err == nil {
		t.Error("Register after Close succeeded")
	}
}

func TestRegisterContextCancelDeregisters(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	w := startWatch(t, c, "/svc")
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := c.Register(ctx, "/svc", inst("10.0.0.1", 80, "a")); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 5*time.Second, "a", has("a"))
	cancel()
	w.waitFor(t, 5*time.Second, "none", hasLen(0))
}

func TestRegisterRejectsBadInput(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	for _, tc := range []struct {
		path string
		in   registry.Instance
		want string
	}{
		{"/svc", inst("10.0.0.1", 70000, "a"), "port"},
		{"/svc", registry.Instance{Host: "10.0.0.1", Port: 80, HAProxyServerOptions: "backup\nserver evil 1.2.3.4:80"}, "haproxy_server_options"},
		{"svc", inst("10.0.0.1", 80, "a"), "path"},
		{"/svc/../x", inst("10.0.0.1", 80, "a"), "path"},
	} {
		_, err := c.Register(context.Background(), tc.path, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%q, %+v) = %v, want an error naming %s", tc.path, tc.in, err, tc.want)
		}
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
	w.waitFor(t, 5*time.Second, "both", hasLen(2))
	_, oldSession, _ := reg.session()

	proxy.Cut()
	w.waitFor(t, 10*time.Second, "the expired node gone", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Name == "other" })
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
	w.waitFor(t, 5*time.Second, "mine back", has("mine"))
	if d := time.Since(newSessionAt); d > time.Second {
		t.Errorf("re-registered %v after the new session, want ≤ 1s", d)
	}
	if n := testutil.ToFloat64(reg.m.Reregistrations.WithLabelValues(backendName)); n != 1 {
		t.Errorf("reregistrations = %v, want 1", n)
	}
	for _, s := range w.sets {
		if !has("other")(s) {
			t.Errorf("the watcher lost the other node at some point: %v", w.sets)
		}
	}
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
	w.waitFor(t, 5*time.Second, "3", hasLen(3))
	_, oldSession, _ := watch.session()

	proxy.Cut()
	// While the watcher is partitioned, a fourth instance registers.
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 8003, "n3")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // well past the 1s session timeout
	select {
	case s := <-w.ch:
		t.Fatalf("the partitioned watcher sent %v", s)
	default:
	}
	proxy.Restore()
	w.waitFor(t, 10*time.Second, "4 after the new session", hasLen(4))
	if _, id, _ := watch.session(); id == oldSession {
		t.Error("the watcher's session did not expire: the test did not test expiry")
	}
	for _, s := range w.sets {
		if len(s) < 3 {
			t.Errorf("a set shrank: %v", w.sets)
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
	w.waitFor(t, 10*time.Second, "a", has("a"))

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
	w.waitFor(t, 15*time.Second, "b with a follower down", has("b"))
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
	got := w.waitFor(t, 30*time.Second, "c after the leader was killed", has("c"))
	if len(got) != 3 {
		t.Errorf("after failover: %v, want a, b, c", got)
	}
	seen := false
	for _, s := range w.sets {
		seen = seen || has("a")(s)
		if seen && !has("a")(s) {
			t.Errorf("a vanished during failover: %v", w.sets)
		}
	}
}

func TestBadRecordsSkippedAndCounted(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	c := newClient(t, zks.Servers())
	if err := c.ensurePath("/svc"); err != nil {
		t.Fatal(err)
	}
	plant := func(name string, data []byte) {
		t.Helper()
		if _, err := c.conn.Create("/svc/"+name, data, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := inst("10.0.0.1", 80, "good").Encode()
	plant("good_0000000001", good)
	plant("evil_0000000002", []byte(`{"host":"10.0.0.2","port":80,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`))
	plant("big_0000000003", []byte(`{"host":"10.0.0.3","port":80,"labels":{"x":"`+strings.Repeat("a", 100<<10)+`"}}`))
	plant("junk_0000000004", []byte("not json"))
	plant("port_0000000005", []byte(`{"host":"10.0.0.5","port":70000}`))
	plant("hash_0000000006", []byte(`{"host":"10.0.0.6#x","port":80}`))
	// A path-encoded child carries its record in its name.
	rec, _ := inst("10.0.0.7", 80, "encoded").Encode()
	plant(registry.EncodeChildName(rec)+"0000000007", nil)

	w := startWatch(t, c, "/svc")
	got := w.waitFor(t, 5*time.Second, "the good records", hasLen(2))
	if got[0].Name != "encoded" || got[1].Name != "good" {
		t.Errorf("got %v, want encoded and good", got)
	}
	if n := testutil.ToFloat64(c.m.RecordsSkipped.WithLabelValues(backendName, "/svc")); n != 5 {
		t.Errorf("skipped = %v, want 5", n)
	}
	// A bad record fixed in place is picked up.
	if _, err := c.conn.Set("/svc/port_0000000005", []byte(`{"host":"10.0.0.5","port":7000,"name":"fixed"}`), -1); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 5*time.Second, "the fixed record", has("fixed"))
}

func TestOverridesAndAcks(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	ctl := newClient(t, zks.Servers())
	syn := newClient(t, zks.Servers())
	ctx := context.Background()

	sets := make(chan registry.OverrideSet, 10)
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go syn.WatchOverrides(wctx, sets)
	first := <-sets
	if len(first.Overrides) != 0 {
		t.Fatalf("first set = %+v, want empty", first)
	}

	o := registry.Override{Target: "127.0.0.12", State: registry.StateDrain, Services: []string{"web"}, Reason: "deploy", By: "ops@host", At: time.Now().UTC()}
	rev, err := ctl.PutOverride(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var got registry.OverrideSet
	for got = range sets {
		if got.Revision >= rev {
			break
		}
	}
	if len(got.Overrides) != 1 || got.Overrides[0].Target != "127.0.0.12" || got.Overrides[0].Key() != "127.0.0.12@web" {
		t.Fatalf("watched %+v", got)
	}
	if err := syn.PutAck(ctx, registry.Ack{ID: "synapse-1", Revision: got.Revision}); err != nil {
		t.Fatal(err)
	}
	acks, err := ctl.Acks(ctx)
	if err != nil || len(acks) != 1 || acks[0].Revision < rev {
		t.Fatalf("acks = %+v, %v; want synapse-1 at ≥ %d", acks, err, rev)
	}
	read, err := ctl.Overrides(ctx)
	if err != nil || read.Revision != got.Revision || len(read.Overrides) != 1 {
		t.Fatalf("Overrides() = %+v, %v; want the watched set", read, err)
	}

	delRev, err := ctl.DeleteOverride(ctx, o.Key())
	if err != nil || delRev <= rev {
		t.Fatalf("DeleteOverride = %d, %v; want a revision after %d", delRev, err, rev)
	}
	for got = range sets {
		if got.Revision >= delRev {
			break
		}
	}
	if len(got.Overrides) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
	if err := syn.PutAck(ctx, registry.Ack{ID: "synapse-1", Revision: got.Revision}); err != nil {
		t.Fatal(err)
	}
	if acks, _ := ctl.Acks(ctx); len(acks) != 1 || acks[0].Revision != got.Revision {
		t.Fatalf("acks after update = %+v", acks)
	}
	// Acks are ephemeral: a synapse that is gone is not waited for.
	syn.Close()
	if acks, _ := ctl.Acks(ctx); len(acks) != 0 {
		t.Fatalf("acks after the synapse closed = %+v", acks)
	}
	if _, err := ctl.DeleteOverride(ctx, "../x"); err == nil {
		t.Error("DeleteOverride accepted a key with a slash")
	}
	bad := o
	bad.Reason = "line\nbreak"
	if _, err := ctl.PutOverride(ctx, bad); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("PutOverride with a newline in the reason = %v, want an error naming reason", err)
	}
}
