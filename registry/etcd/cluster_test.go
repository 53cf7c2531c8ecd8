package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// watchBound is how soon after a write a watcher whose member froze must
// see it: the progress monitor notices within Config.ProbeInterval +
// progressTimeout (1.5 s), then the watch resumes on another member.
const watchBound = 2 * time.Second

// pinFirst makes c's first pin go to its first endpoint, so that the test
// decides which member carries its lease and watches.
func pinFirst(c *Client) { c.pinNext = 0 }

// newClusterClient is a client of the whole cluster whose long-lived calls
// start on member first.
func newClusterClient(t *testing.T, cl *testserver.EtcdCluster, first int) *Client {
	t.Helper()
	eps := cl.Endpoints()
	eps = append(eps[first:], eps[:first]...)
	c := newClient(t, eps[0], func(cfg *Config) { cfg.Endpoints = eps })
	pinFirst(c)
	return c
}

// deleteWatch records DELETE events for one key, seen through member m
// alone.
type deleteWatch struct {
	mu      sync.Mutex
	deletes []string
	last    time.Time // when the last was seen
}

func watchDeletes(t *testing.T, m *testserver.EtcdMember, key string) *deleteWatch {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &deleteWatch{}
	done := make(chan struct{})
	// Created before it returns, so no delete can slip past it.
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		t.Fatalf("delete watch on %s: %v", m.Name, resp.Err())
	}
	go func() {
		defer close(done)
		for resp := range wch {
			d.mu.Lock()
			for _, ev := range resp.Events {
				d.deletes = append(d.deletes, fmt.Sprintf("%s at revision %d", ev.Kv.Key, ev.Kv.ModRevision))
				d.last = time.Now()
			}
			if err := resp.Err(); err != nil && ctx.Err() == nil {
				d.deletes = append(d.deletes, "watch ended: "+err.Error())
			}
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cli.Close() })
	return d
}

func (d *deleteWatch) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.deletes...)
}

// TestFrozenMemberKeepsLeasesAndWatches freezes each member of a 3-member
// cluster in turn (SIGSTOP: a gray failure with quorum intact), with a
// registering client and a watching client both connected to exactly that
// member. For three lease TTLs: the registration is never deleted (a
// watcher on a healthy member sees no DELETE), the lease stays the same,
// and a registration made by someone else meanwhile reaches the watcher
// within watchBound.
func TestFrozenMemberKeepsLeasesAndWatches(t *testing.T) {
	cl := testserver.StartEtcdCluster(t, 3)
	done := map[int]bool{}
	// The leader first, then a follower, then the member left.
	for round := range cl.Members {
		i := -1
		leader := cl.Leader()
		for j, m := range cl.Members {
			if !done[j] && (i < 0 || (round == 0) == (m == leader)) {
				i = j
			}
		}
		done[i] = true
		frozen := cl.Members[i]
		role := "follower"
		if frozen == leader {
			role = "leader"
		}
		t.Run(fmt.Sprintf("%s_%s", frozen.Name, role), func(t *testing.T) {
			healthy := cl.Members[(i+1)%len(cl.Members)]
			dir := "/frozen/" + frozen.Name
			reg := newClusterClient(t, cl, i)
			r, err := reg.Register(context.Background(), dir, inst("10.0.0.1", 80, "kept"))
			if err != nil {
				t.Fatal(err)
			}
			lease, _ := reg.leaseNow()
			deletes := watchDeletes(t, healthy, r.Key())
			w := startWatch(t, newClusterClient(t, cl, i), dir)
			w.WaitFor(t, 5*time.Second, "the registration", has("kept"))
			writer := newClient(t, healthy.ClientURL)

			frozen.Freeze()
			t.Cleanup(frozen.Thaw)
			frozenAt := time.Now()
			// A change made while the watcher's member is frozen (it may
			// wait for a new leader to be elected).
			if _, err := writer.Register(context.Background(), dir, inst("10.0.0.2", 80, "during")); err != nil {
				t.Fatal(err)
			}
			written := time.Now()
			w.WaitFor(t, watchBound+5*time.Second, "the instance registered during the freeze", has("during"))
			if d := time.Since(written); d > watchBound {
				t.Errorf("watcher on the frozen member saw a change %v after it was written (%v after the freeze), want within %v",
					d.Round(time.Millisecond), time.Since(frozenAt).Round(time.Millisecond), watchBound)
			}
			t.Logf("%s frozen: change seen %v after the write, %v after the freeze", role,
				time.Since(written).Round(time.Millisecond), time.Since(frozenAt).Round(time.Millisecond))

			// Stay frozen for three TTLs, long enough for an unrenewed
			// lease to expire whichever member is frozen.
			freezeFor := 3 * reg.cfg.LeaseTTL
			probe := newClient(t, healthy.ClientURL)
			deadline := time.Now().Add(freezeFor)
			for time.Now().Before(deadline) {
				if d := deletes.seen(); len(d) > 0 {
					t.Fatalf("registration deleted while %s was frozen: %v", frozen.Name, d)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				resp, err := probe.cli.Get(ctx, r.Key())
				cancel()
				if err == nil && (len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease) {
					t.Fatalf("%v after the freeze: key %s = %v, want it under lease %x", time.Since(frozenAt).Round(time.Millisecond), r.Key(), resp.Kvs, int64(lease))
				}
				select {
				case s := <-w.C:
					w.Sets = append(w.Sets, s)
					if !has("kept")(s) {
						t.Fatalf("watcher lost the registration: %v", s)
					}
				case <-time.After(50 * time.Millisecond):
				}
			}
			if d := deletes.seen(); len(d) > 0 {
				t.Fatalf("registration deleted while %s was frozen: %v", frozen.Name, d)
			}
			thawed := time.Now()
			frozen.Thaw()
			if err := cl.WaitHealthy(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			// The watcher still follows changes after the thaw.
			if _, err := writer.Register(context.Background(), dir, inst("10.0.0.3", 80, "after")); err != nil {
				t.Fatal(err)
			}
			w.WaitFor(t, watchBound, "the instance registered after the thaw", func(s []registry.Instance) bool {
				return has("after")(s) && has("kept")(s) && has("during")(s)
			})

			d := deletes.seen()
			if len(d) == 0 {
				if now, _ := reg.leaseNow(); now != lease {
					t.Errorf("lease changed from %x to %x", int64(lease), int64(now))
				}
				if n := testutil.ToFloat64(reg.m.SessionLosses.WithLabelValues(backendName)); n != 0 {
					t.Errorf("%v lease losses counted", n)
				}
				return
			}
			// etcd before 3.4.28 / 3.5.11 has a leader that resumes after a
			// stall longer than a TTL revoke every lease it still thinks it
			// owns (etcd-io/etcd#15247): no client can prevent that. Then
			// the key must be back under a new lease at once.
			if role != "leader" || !staleLeaderRevokes(t, healthy) {
				t.Fatalf("registration deleted: %v", d)
			}
			registrytest.Eventually(t, time.Second, "the key put back under a new lease", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				resp, err := probe.cli.Get(ctx, r.Key())
				return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 && clientv3.LeaseID(resp.Kvs[0].Lease) != lease
			})
			deletes.mu.Lock()
			at := deletes.last
			deletes.mu.Unlock()
			t.Logf("etcd-io/etcd#15247: the thawed leader revoked the lease %v after the thaw; key back under a new lease %v after the delete",
				at.Sub(thawed).Round(time.Millisecond), time.Since(at).Round(time.Millisecond))
		})
	}
}

// staleLeaderRevokes reports whether the cluster runs an etcd whose leader,
// resumed after a stall, revokes leases it no longer owns
// (etcd-io/etcd#15247, fixed in 3.4.28 and 3.5.11).
func staleLeaderRevokes(t *testing.T, m *testserver.EtcdMember) bool {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	var major, minor, patch int
	if _, err := fmt.Sscanf(st.Version, "%d.%d.%d", &major, &minor, &patch); err != nil {
		t.Fatalf("etcd version %q: %v", st.Version, err)
	}
	switch {
	case major == 3 && minor == 4:
		return patch < 28
	case major == 3 && minor == 5:
		return patch < 11
	default:
		return major == 3 && minor < 4
	}
}

func init() {
	if os.Getenv("SYNCSTACK_TEST_DEBUG") != "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
}

// A new pin goes to the next endpoint that has not stalled lately; when all
// have, to the one that stalled longest ago.
func TestNextEndpointSkipsStalledMembers(t *testing.T) {
	now := time.Now()
	eps := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		next    int
		stalled map[string]time.Time
		want    string
	}{
		{"none stalled", 0, nil, "a"},
		{"in order", 1, nil, "b"},
		{"skips a stalled one", 0, map[string]time.Time{"a": now}, "b"},
		{"skips two", 1, map[string]time.Time{"b": now, "c": now}, "a"},
		{"quarantine over", 0, map[string]time.Time{"a": now.Add(-2 * quarantine)}, "a"},
		{"all stalled: the oldest", 0, map[string]time.Time{"a": now, "b": now.Add(-time.Second), "c": now.Add(-2 * time.Second)}, "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{cfg: Config{Endpoints: eps}, pinNext: tc.next, stalled: map[string]time.Time{}}
			for ep, at := range tc.stalled {
				c.stalled[ep] = at
			}
			if got := c.nextEndpoint(); got != tc.want {
				t.Errorf("nextEndpoint() = %s, want %s", got, tc.want)
			}
		})
	}
}
