package zookeeper

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// The watches a synapse sets (a data watch per backend, a child watch per
// service) cost go-zookeeper a map key each and no channel: their events
// reach the client's callback, which is all the watch loop reads. With a
// channel, its buffer and a slice per watch they were ~2 MB of a synapse
// with 10,000 backends (its heap profile at the benchmark's peak).
func TestWatchedBackendsCostNoChannel(t *testing.T) {
	const n = 2000
	zks := testserver.StartZooKeeper(t)
	writer := newClient(t, zks.Servers())
	if _, err := writer.conn.Create("/mem", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if err := testserver.Parallel(n, 16, func(i int) error {
		rec, _ := registry.Instance{Host: "10.0.0.1", Port: 10000 + i, Name: fmt.Sprintf("i%04d", i)}.Encode()
		_, err := writer.conn.Create(fmt.Sprintf("/mem/member_%010d", i), rec, 0, zk.WorldACL(zk.PermAll))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, zks.Servers())
	out := make(chan []registry.Instance, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Cleanup(func() { cancel(); <-done })
	before := registrytest.HeapAlloc()
	go func() { done <- c.Watch(ctx, "/mem", registry.DecodeOptions{}, out) }()
	var last []registry.Instance
	for deadline := time.After(20 * time.Second); len(last) != n; {
		select {
		case last = <-out:
		case <-deadline:
			t.Fatalf("%d of %d instances after 20s", len(last), n)
		}
	}
	per := (int64(registrytest.HeapAlloc()) - int64(before)) / n
	t.Logf("%d B of heap per watched backend (its record, the watch's entry, go-zookeeper's watch)", per)
	if per > 720 {
		t.Errorf("%d B of heap per watched backend, want ≤ 720 (~810 with a channel per watch)", per)
	}
	// Gone, they leave no watch behind: a fired watch's key goes with it.
	if err := testserver.Parallel(n, 16, func(i int) error {
		return writer.conn.Delete(fmt.Sprintf("/mem/member_%010d", i), -1)
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(20 * time.Second); len(last) != 0; {
		select {
		case last = <-out:
		case <-deadline:
			t.Fatalf("%d instances left 20s after all were deleted", len(last))
		}
	}
	if w := c.conn.Watches(); w > 2 {
		t.Errorf("go-zookeeper keeps %d watches once every backend is gone, want the directory's only", w)
	}
}

// A data watch set without a channel is set again when the client
// reconnects within its session (go-zookeeper's setWatches), like one with
// a channel: a weight changed after the reconnect reaches the watch (the
// relist after a reconnect reads only new children).
func TestDataWatchesSurviveAReconnect(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
	writer := newClient(t, zks.Servers())
	c := newClient(t, []string{proxy.Addr}, func(cfg *Config) { cfg.SessionTimeout = 10 * time.Second })
	if _, err := writer.conn.Create("/dw", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	node := "/dw/member_0000000001"
	rec, _ := inst("10.0.0.1", 80, "a").Encode()
	if _, err := writer.conn.Create(node, rec, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, c, "/dw")
	w.WaitFor(t, 5*time.Second, "a", hasLen(1))
	_, sid, _ := c.session()
	proxy.Cut()
	registrytest.Eventually(t, 5*time.Second, "disconnected", func() bool { ok, _, _ := c.session(); return !ok })
	proxy.Restore()
	registrytest.Eventually(t, 10*time.Second, "reconnected in the same session", func() bool {
		ok, id, _ := c.session()
		return ok && id == sid
	})
	weighted := inst("10.0.0.1", 80, "a")
	seven := 7
	weighted.Weight = &seven
	rec, _ = weighted.Encode()
	if _, err := writer.conn.Set(node, rec, -1); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "weight 7", func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 7
	})
}
