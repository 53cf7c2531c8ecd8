package testserver

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestEtcdClusterFaults: a 3-member cluster elects a leader, keeps serving
// writes while any one member is killed or frozen, and takes a killed member
// back with its data.
func TestEtcdClusterFaults(t *testing.T) {
	c := StartEtcdCluster(t, 3)
	leader := c.Leader()
	if leader == nil {
		t.Fatal("no leader after start")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	put := func(m *EtcdMember, v string) {
		t.Helper()
		// Ask a healthy member directly: the balancer may still hold a
		// connection to a frozen one.
		one, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer one.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := one.Put(ctx, "/k", v); err != nil {
			t.Fatalf("put via %s: %v", m.Name, err)
		}
	}
	other := func(not *EtcdMember) *EtcdMember {
		for _, m := range c.Members {
			if m != not {
				return m
			}
		}
		return nil
	}

	// Kill the leader: another is elected, writes go on, and the killed
	// member comes back with the same data dir.
	leader.Kill()
	if leader.Running() {
		t.Fatal("killed member still running")
	}
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if l := c.Leader(); l == nil || l == leader {
		t.Fatalf("leader after kill = %v", l)
	}
	put(other(leader), "after-kill")
	leader.Start()
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := leader.status(time.Second)
	if err != nil || st.Leader == 0 {
		t.Fatalf("restarted member: %v %v", st, err)
	}

	// Freeze the (new) leader: the others elect a new one and serve writes.
	leader = c.Leader()
	leader.Freeze()
	if !leader.Running() {
		t.Fatal("a frozen member is running")
	}
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if l := c.Leader(); l == nil || l == leader {
		t.Fatalf("leader while %s is frozen = %v", leader.Name, l)
	}
	put(other(leader), "while-frozen")
	leader.Thaw()
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "while-frozen" {
		t.Fatalf("get /k = %v, %v", resp, err)
	}

	// Freeze a follower: the cluster stays healthy; Kill of a frozen
	// member returns at once.
	var follower *EtcdMember
	if l := c.Leader(); l != nil {
		follower = other(l)
	}
	follower.Freeze()
	if err := c.WaitHealthy(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	follower.Kill()
	if follower.Running() || follower.Frozen() {
		t.Fatal("killed frozen member still running or frozen")
	}
}

func TestRevokesAfterStall(t *testing.T) {
	for v, want := range map[string]bool{
		"etcd Version: 3.4.23\nGit SHA: Not provided (use ./build instead of go build)\n": true,
		"etcd Version: 3.4.28\n": false,
		"etcd Version: 3.5.10\n": true,
		"etcd Version: 3.5.11\n": false,
		"etcd Version: 3.6.16\n": false,
		"nonsense":               false,
	} {
		if got := revokesAfterStall(v); got != want {
			t.Errorf("revokesAfterStall(%q) = %v, want %v", v, got, want)
		}
	}
}
