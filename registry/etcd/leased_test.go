package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

func TestFaults(t *testing.T) {
	srv := testserver.StartEtcd(t)
	admin := newClient(t, srv.Endpoint)
	registrytest.RunFaults(t, registrytest.FaultHarness{
		Harness: registrytest.Harness{
			New: func(t *testing.T) registry.Backend { return newClient(t, srv.Endpoint) },
			// A put by another writer: other data, and no lease.
			Plant: func(t *testing.T, dir, name string, data []byte) {
				if _, err := admin.cli.Put(context.Background(), dir+"/"+name, string(data)); err != nil {
					t.Fatal(err)
				}
			},
			Raw: func(t *testing.T, key string) []byte {
				resp, err := admin.cli.Get(context.Background(), key)
				if err != nil || len(resp.Kvs) != 1 {
					t.Fatalf("get %s: %v %v", key, resp, err)
				}
				return resp.Kvs[0].Value
			},
		},
		NewCutOff: func(t *testing.T) (registry.Backend, registrytest.Cutter) {
			p := testserver.StartProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
			// The lease outlives the cut: the case where a lost removal
			// stays for good.
			return newClient(t, "http://"+p.Addr, func(cfg *Config) {
				cfg.DialTimeout, cfg.LeaseTTL, cfg.OpTimeout = time.Second, 10*time.Second, 2*time.Second
			}), p
		},
		Delete: func(t *testing.T, key string) {
			if _, err := admin.cli.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// A Deregister made while etcd is down lands once it is back (etcd keeps
// leases while it has no leader, so the key would otherwise stay).
func TestDeregisterWhileEtcdDown(t *testing.T) {
	srv := testserver.StartEtcd(t)
	reg := newClient(t, srv.Endpoint, func(cfg *Config) { cfg.DialTimeout, cfg.OpTimeout = time.Second, 2*time.Second })
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = r.Deregister(ctx)
	cancel()
	if err == nil {
		t.Fatal("Deregister returned nil with etcd down")
	}
	// Longer than one attempt's OpTimeout: the keeper must keep trying.
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	err = r.Deregister(ctx)
	cancel()
	if err == nil {
		t.Fatal("Deregister returned nil with etcd down")
	}
	srv.Start()
	up := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister after etcd returned: %v", err)
	}
	t.Logf("removal confirmed %v after etcd served again", time.Since(up))
	admin := newClient(t, srv.Endpoint)
	resp, err := admin.cli.Get(context.Background(), "/svc/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("keys after the removal: %v %v", resp, err)
	}
}

// A put of our very record without our lease (it would outlive us) is put
// back under the lease.
func TestPutWithoutLeaseIsPutBackUnderLease(t *testing.T) {
	srv := testserver.StartEtcd(t)
	admin := newClient(t, srv.Endpoint)
	reg := newClient(t, srv.Endpoint)
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := admin.cli.Get(ctx, r.Key())
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("get %s: %v %v", r.Key(), resp, err)
	}
	lease, data := resp.Kvs[0].Lease, resp.Kvs[0].Value
	if _, err := admin.cli.Put(ctx, r.Key(), string(data)); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, registrytest.RepairBound, "the record under our lease again", func() bool {
		resp, err := admin.cli.Get(ctx, r.Key())
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease == lease && string(resp.Kvs[0].Value) == string(data)
	})
}

// The periodic read-back alone (watch events ignored) puts back a record
// somebody rewrote.
func TestReadBackRepairsWithoutWatch(t *testing.T) {
	old := readBackEvery.Swap(int64(200 * time.Millisecond))
	t.Cleanup(func() { readBackEvery.Store(old) })
	ignoreWatch.Store(true)
	t.Cleanup(func() { ignoreWatch.Store(false) })
	srv := testserver.StartEtcd(t)
	admin := newClient(t, srv.Endpoint)
	reg := newClient(t, srv.Endpoint)
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := admin.cli.Get(ctx, r.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", r.Key(), resp, err)
	}
	want := resp.Kvs[0].Value
	if _, err := admin.cli.Put(ctx, r.Key(), `{"host":"10.6.6.6","port":80,"name":"mine"}`); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 2*time.Second, "the record read back and put back", func() bool {
		resp, err := admin.cli.Get(ctx, r.Key())
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == string(want) && resp.Kvs[0].Lease != 0
	})
}

// A keeper whose watch etcd ends because it has no leader (quorum lost)
// watches again after a jittered backoff, not in a tight loop.
func TestWatchWithoutLeaderBacksOff(t *testing.T) {
	cluster := testserver.StartEtcdCluster(t, 3)
	survivor := cluster.Members[0]
	reg := newClient(t, survivor.ClientURL, func(cfg *Config) { cfg.LeaseTTL = 10 * time.Second })
	r, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	k := r.(registry.Kept).Keeper.(*leasedKey)
	cluster.Members[1].Kill()
	cluster.Members[2].Kill()
	registrytest.Eventually(t, 10*time.Second, "the watch ended for want of a leader", func() bool { return k.watches.Load() > 1 })
	before, start := k.watches.Load(), time.Now()
	time.Sleep(3 * time.Second) // count the watches started meanwhile
	n := k.watches.Load() - before
	t.Logf("%d watches in %v without a leader", n, time.Since(start))
	// 100 ms doubling to 5 s: about six in 3 s.
	if n > 12 {
		t.Errorf("%d watches started in 3s without a leader, want a backoff (≤ 12)", n)
	}
}
