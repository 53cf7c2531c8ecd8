package etcd

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// pinnedRegistration is one registering client (no watches, like nerve)
// whose lease keep-alives start on a chosen member.
type pinnedRegistration struct {
	c     *Client
	name  string
	key   string
	lease clientv3.LeaseID
}

// registerPinnedToEach registers one instance per member of cl under dir,
// each through a client whose keep-alives start on that member. A client
// pinned to the member before the faulty one moves to the faulty one first
// when its own member is left (pins go round in order), so every path a
// keep-alive can take is covered.
func registerPinnedToEach(t *testing.T, cl *testserver.EtcdCluster, dir string) []*pinnedRegistration {
	t.Helper()
	var regs []*pinnedRegistration
	for j, m := range cl.Members {
		c := newClusterClient(t, cl, j)
		name := "on-" + m.Name
		r, err := c.Register(context.Background(), dir, inst(fmt.Sprintf("10.0.1.%d", j+1), 80, name))
		if err != nil {
			t.Fatal(err)
		}
		lease, _ := c.leaseNow()
		regs = append(regs, &pinnedRegistration{c: c, name: name, key: r.Key(), lease: lease})
	}
	return regs
}

// checkKept fails the test unless every registration is in etcd under the
// lease it started with, read through member m (an unanswered read, as
// during an election, says nothing).
func checkKept(t *testing.T, probe *Client, regs []*pinnedRegistration, since time.Time) {
	t.Helper()
	for _, r := range regs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := probe.cli.Get(ctx, r.key)
		cancel()
		if err != nil {
			continue
		}
		if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != r.lease {
			t.Fatalf("%v after the fault: key %s = %v, want it under lease %x",
				time.Since(since).Round(time.Millisecond), r.key, resp.Kvs, int64(r.lease))
		}
	}
}

// TestMemberFaultKeepsLeases kills (kill -9) and, in a second pass, freezes
// (SIGSTOP) each member of a 3-member cluster in turn, the leader first,
// for three lease TTLs, with one registering client pinned to each member
// and a watching client pinned to the faulty one; the client pinned to the
// member before the faulty one is moved onto the faulty one as the fault
// starts. No registration may be
// deleted or change lease (a DELETE seen through a healthy member, a read
// that finds the key missing or under another lease, a lease loss
// counted), and a registration made during the fault reaches the watcher
// within watchBound. A killed member is then restarted and the clients
// must still hold their leases a TTL later.
func TestMemberFaultKeepsLeases(t *testing.T) {
	cl := testserver.StartEtcdCluster(t, 3)
	for _, fault := range []string{"kill", "freeze"} {
		done := map[int]bool{}
		for round := range cl.Members {
			if err := cl.WaitHealthy(15 * time.Second); err != nil {
				t.Fatal(err)
			}
			// The leader first, then a follower, then the member left.
			i := -1
			leader := cl.Leader()
			for j, m := range cl.Members {
				if !done[j] && (i < 0 || (round == 0) == (m == leader)) {
					i = j
				}
			}
			done[i] = true
			bad := cl.Members[i]
			role := "follower"
			if bad == leader {
				role = "leader"
			}
			t.Run(fmt.Sprintf("%s/%s_%s", fault, bad.Name, role), func(t *testing.T) {
				healthy := cl.Members[(i+1)%len(cl.Members)]
				dir := fmt.Sprintf("/%s/%s", fault, bad.Name)
				regs := registerPinnedToEach(t, cl, dir)
				var deletes []*deleteWatch
				for _, r := range regs {
					deletes = append(deletes, watchDeletes(t, healthy, r.key))
				}
				w := startWatch(t, newClusterClient(t, cl, i), dir)
				w.WaitFor(t, 5*time.Second, "the registrations", func(s []registry.Instance) bool {
					return has(regs[0].name)(s) && has(regs[1].name)(s) && has(regs[2].name)(s)
				})
				writer := newClient(t, healthy.ClientURL)
				probe := newClient(t, healthy.ClientURL)
				noDeletes := func() {
					t.Helper()
					for j, d := range deletes {
						if s := d.seen(); len(s) > 0 {
							t.Fatalf("registration of the client pinned to %s deleted: %v", cl.Members[j].Name, s)
						}
					}
				}

				start := time.Now()
				if fault == "kill" {
					bad.Kill()
					t.Cleanup(bad.Start)
				} else {
					bad.Freeze()
					t.Cleanup(bad.Thaw)
				}
				// The client pinned to the member before the faulty one
				// leaves its member now, as after a stall: its next pin
				// is the faulty member, which it must leave in turn.
				before := regs[(i+len(regs)-1)%len(regs)].c
				before.pinMu.Lock()
				p := before.pin
				before.pinMu.Unlock()
				if p == nil {
					t.Fatal("the client pinned before the faulty member has no pin")
				}
				before.abandon(p, "test: move onto the faulty member")
				if _, err := writer.Register(context.Background(), dir, inst("10.0.0.2", 80, "during")); err != nil {
					t.Fatal(err)
				}
				written := time.Now()
				w.WaitFor(t, watchBound+5*time.Second, "the instance registered during the fault", has("during"))
				if d := time.Since(written); d > watchBound {
					t.Errorf("watcher on the faulty member saw a change %v after it was written, want within %v",
						d.Round(time.Millisecond), watchBound)
				}
				// Long enough for an unrenewed lease to expire.
				for deadline := start.Add(3 * regs[0].c.cfg.LeaseTTL); time.Now().Before(deadline); {
					noDeletes()
					checkKept(t, probe, regs, start)
					select {
					case s := <-w.C:
						w.Sets = append(w.Sets, s)
					case <-time.After(50 * time.Millisecond):
					}
				}
				noDeletes()
				if fault == "kill" {
					// Back, and a lease TTL more with it serving: a member
					// that returns must not cost a lease either.
					bad.Start()
					if err := cl.WaitHealthy(15 * time.Second); err != nil {
						t.Fatal(err)
					}
					for deadline := time.Now().Add(regs[0].c.cfg.LeaseTTL); time.Now().Before(deadline); {
						noDeletes()
						checkKept(t, probe, regs, start)
						select {
						case s := <-w.C:
							w.Sets = append(w.Sets, s)
						case <-time.After(50 * time.Millisecond):
						}
					}
					noDeletes()
				}
				// (A frozen leader thawed after more than a TTL may revoke
				// leases itself: etcd-io/etcd#15247, see
				// TestFrozenMemberKeepsLeasesAndWatches. So the frozen
				// member is judged while frozen, and thawed at Cleanup.)
				for _, r := range regs {
					if now, _ := r.c.leaseNow(); now != r.lease {
						t.Errorf("client pinned to %s: lease changed from %x to %x", r.name, int64(r.lease), int64(now))
					}
					if n := testutil.ToFloat64(r.c.m.SessionLosses.WithLabelValues(backendName)); n != 0 {
						t.Errorf("client pinned to %s: %v lease losses counted", r.name, n)
					}
				}
			})
			if fault == "freeze" {
				bad.Thaw()
			}
		}
	}
}

// TestStartWithPinnedMemberDown starts a watching and a registering client
// whose first pin is a member that is down (killed before they start, as
// when a synapse or nerve starts during a member's outage): both must work
// within watchBound of starting, through the other members.
func TestStartWithPinnedMemberDown(t *testing.T) {
	cl := testserver.StartEtcdCluster(t, 3)
	down := cl.Members[0]
	down.Kill()
	if err := cl.WaitHealthy(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	writer := newClient(t, cl.Members[1].ClientURL)
	if _, err := writer.Register(context.Background(), "/down", inst("10.0.0.1", 80, "before")); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	w := startWatch(t, newClusterClient(t, cl, 0), "/down")
	w.WaitFor(t, watchBound, "the instance registered before the watch", has("before"))
	t.Logf("first set %v after the watch started", time.Since(start).Round(time.Millisecond))

	reg := newClusterClient(t, cl, 0)
	start = time.Now()
	if _, err := reg.Register(context.Background(), "/down", inst("10.0.0.2", 80, "started")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, watchBound, "the instance of the client started while its member was down", has("started"))
	t.Logf("registered and seen %v after the register call", time.Since(start).Round(time.Millisecond))
	lease, _ := reg.leaseNow()
	// Kept alive for longer than a TTL, through the other members.
	for deadline := time.Now().Add(2 * reg.cfg.LeaseTTL); time.Now().Before(deadline); {
		select {
		case s := <-w.C:
			w.Sets = append(w.Sets, s)
			if !has("started")(s) {
				t.Fatalf("registration lost: %v", s)
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	if now, _ := reg.leaseNow(); now != lease {
		t.Errorf("lease changed from %x to %x", int64(lease), int64(now))
	}
}

// A lease call that failed because the member did not answer, cannot be
// reached or has no leader moves the lease to another member; an answer
// another member would give too does not.
func TestLeaveMember(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		leave bool
	}{
		{"nil", nil, false},
		{"no answer", errNoAnswer, true},
		{"deadline", context.DeadlineExceeded, true},
		{"grpc deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{"no leader", rpctypes.ErrGRPCNoLeader, true},
		{"connection refused", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), true},
		{"request timed out", rpctypes.ErrGRPCTimeout, true},
		{"stream broken", io.EOF, true},
		{"connection closing", status.Error(codes.Canceled, "grpc: the client connection is closing"), true},
		{"permission denied", rpctypes.ErrGRPCPermissionDenied, false},
		{"lease not found", rpctypes.ErrGRPCLeaseNotFound, false},
		{"too many requests", rpctypes.ErrGRPCRequestTooManyRequests, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why, leave := leaveMember(tc.err, time.Second)
			if leave != tc.leave || (leave && why == "") {
				t.Errorf("leaveMember(%v) = %q, %v; want leave %v", tc.err, why, leave, tc.leave)
			}
		})
	}
}
