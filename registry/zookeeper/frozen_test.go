package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// zkWatchBound is how soon after a write a watcher whose server froze must
// see it, with the tests' 4 s session timeout: the frozen connection is
// given up after a quarter of the session timeout (1 s), then the watch
// re-lists on another server, after its share of the relist spread
// (0–relistSpread after a reconnect, so that a fleet's relists do not all
// land at once: SCALING.md).
var zkWatchBound = 2500*time.Millisecond + relistSpread

// orderedHosts connects to its servers in their order, starting with the
// first, so that a test decides where a session starts.
type orderedHosts struct {
	mu      sync.Mutex
	servers []string
	next    int
	tried   int
}

func (h *orderedHosts) Init([]string) error { return nil } // zk.Connect shuffles them
func (h *orderedHosts) Len() int            { return len(h.servers) }
func (h *orderedHosts) Connected()          { h.mu.Lock(); h.tried = 0; h.mu.Unlock() }
func (h *orderedHosts) Next() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.servers[h.next]
	h.next = (h.next + 1) % len(h.servers)
	h.tried++
	retry := h.tried > len(h.servers)
	if retry {
		h.tried = 1
	}
	return s, retry
}

// newEnsembleClient is a client of the whole ensemble whose session starts
// on node first.
func newEnsembleClient(t *testing.T, ens *testserver.ZKEnsemble, first int) *Client {
	t.Helper()
	servers := ens.Servers()
	servers = append(servers[first:], servers[:first]...)
	return newClient(t, servers, func(cfg *Config) { cfg.hostProvider = &orderedHosts{servers: servers} })
}

// nodeWatch records the deletion of one node, seen through one server.
type nodeWatch struct {
	mu   sync.Mutex
	gone []string
}

func watchNode(t *testing.T, servers []string, path string) *nodeWatch {
	t.Helper()
	conn, _, err := zk.Connect(servers, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(zkLogger{slog.Default()}))
	if err != nil {
		t.Fatal(err)
	}
	w := &nodeWatch{}
	ok, _, ch, err := conn.ExistsW(path)
	if err != nil || !ok {
		t.Fatalf("exists %s: %v %v", path, ok, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, open := <-ch
			if !open || ev.Type == zk.EventNotWatching {
				return
			}
			if ev.Type == zk.EventNodeDeleted {
				w.mu.Lock()
				w.gone = append(w.gone, fmt.Sprintf("%s deleted at %s", path, time.Now().Format("15:04:05.000")))
				w.mu.Unlock()
			}
			for {
				_, _, ch, err = conn.ExistsW(path)
				if err == nil {
					break
				}
				if errors.Is(err, zk.ErrClosing) {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return w
}

func (w *nodeWatch) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.gone...)
}

// TestFrozenServerKeepsSessionAndWatches freezes each server of a 3-node
// ensemble in turn (SIGSTOP, quorum intact; the leader first), with a
// registering and a watching client whose sessions sit on exactly that
// server. For twice the session timeout: the registration is never deleted
// (as seen through a healthy server), the session stays the same, and a
// registration made by someone else meanwhile reaches the watcher within
// zkWatchBound.
func TestFrozenServerKeepsSessionAndWatches(t *testing.T) {
	ens := testserver.StartZKEnsemble(t, 3)
	done := map[int]bool{}
	for round := range ens.Nodes {
		i := -1
		leader := ens.Leader()
		for j, n := range ens.Nodes {
			if !done[j] && (i < 0 || (round == 0) == (n == leader)) {
				i = j
			}
		}
		done[i] = true
		frozen := ens.Nodes[i]
		role := "follower"
		if frozen == leader {
			role = "leader"
		}
		t.Run(fmt.Sprintf("node%d_%s", frozen.ID, role), func(t *testing.T) {
			healthy := ens.Nodes[(i+1)%len(ens.Nodes)]
			dir := fmt.Sprintf("/frozen/node%d", frozen.ID)
			reg := newEnsembleClient(t, ens, i)
			r, err := reg.Register(context.Background(), dir, inst("10.0.0.1", 80, "kept"))
			if err != nil {
				t.Fatal(err)
			}
			session := reg.SessionID()
			if got := reg.conn.Server(); got != frozen.Addr {
				t.Fatalf("registering session on %s, want %s", got, frozen.Addr)
			}
			third := ens.Nodes[(i+2)%len(ens.Nodes)]
			deletes := watchNode(t, []string{healthy.Addr, third.Addr}, r.Key())
			// A bystander on a healthy server whose next server is the
			// frozen one: when the leader freezes, the followers drop their
			// clients while they elect a new one, and it tries the frozen
			// server first.
			bystander := newClient(t, []string{healthy.Addr, frozen.Addr, third.Addr}, func(cfg *Config) {
				cfg.hostProvider = &orderedHosts{servers: []string{healthy.Addr, frozen.Addr, third.Addr}}
			})
			b, err := bystander.Register(context.Background(), dir, inst("10.0.0.4", 80, "bystander"))
			if err != nil {
				t.Fatal(err)
			}
			bystanderSession := bystander.SessionID()
			bystanderDeletes := watchNode(t, []string{healthy.Addr, third.Addr}, b.Key())
			wc := newEnsembleClient(t, ens, i)
			w := startWatch(t, wc, dir)
			w.WaitFor(t, 10*time.Second, "the registrations", func(s []registry.Instance) bool { return has("kept")(s) && has("bystander")(s) })
			if got := wc.conn.Server(); got != frozen.Addr {
				t.Fatalf("watching session on %s, want %s", got, frozen.Addr)
			}
			writer := newClient(t, []string{healthy.Addr})
			if _, err := writer.Register(context.Background(), dir, inst("10.0.0.9", 80, "warmup")); err != nil {
				t.Fatal(err)
			}

			frozen.Freeze()
			t.Cleanup(frozen.Thaw)
			frozenAt := time.Now()
			// A change made while the watcher's server is frozen (it may
			// wait for a new leader to be elected).
			if _, err := writer.Register(context.Background(), dir, inst("10.0.0.2", 80, "during")); err != nil {
				t.Fatal(err)
			}
			written := time.Now()
			w.WaitFor(t, zkWatchBound+10*time.Second, "the instance registered during the freeze", has("during"))
			if d := time.Since(written); d > zkWatchBound {
				t.Errorf("watcher on the frozen server saw a change %v after it was written (%v after the freeze), want within %v",
					d.Round(time.Millisecond), time.Since(frozenAt).Round(time.Millisecond), zkWatchBound)
			}
			t.Logf("%s frozen: change seen %v after the write, %v after the freeze", role,
				time.Since(written).Round(time.Millisecond), time.Since(frozenAt).Round(time.Millisecond))

			// Stay frozen for twice the session timeout, long enough for a
			// session left on the frozen server to expire.
			deadline := frozenAt.Add(2 * reg.cfg.SessionTimeout)
			for time.Now().Before(deadline) {
				if d := append(deletes.seen(), bystanderDeletes.seen()...); len(d) > 0 {
					t.Fatalf("registration deleted while node %d was frozen: %v", frozen.ID, d)
				}
				if id := reg.SessionID(); id != 0 && id != session {
					t.Fatalf("session %x replaced by %x", session, id)
				}
				select {
				case s := <-w.C:
					w.Sets = append(w.Sets, s)
					if !has("kept")(s) || !has("bystander")(s) {
						t.Fatalf("watcher lost the registration: %v", s)
					}
				case <-time.After(50 * time.Millisecond):
				}
			}
			frozen.Thaw()
			if err := frozen.WaitServing(20 * time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := writer.Register(context.Background(), dir, inst("10.0.0.3", 80, "after")); err != nil {
				t.Fatal(err)
			}
			w.WaitFor(t, zkWatchBound, "the instance registered after the thaw", func(s []registry.Instance) bool {
				return has("after")(s) && has("kept")(s) && has("during")(s)
			})
			if d := append(deletes.seen(), bystanderDeletes.seen()...); len(d) > 0 {
				t.Errorf("registration deleted: %v", d)
			}
			if id := reg.SessionID(); id != session {
				t.Errorf("session %x is now %x", session, id)
			}
			if id := bystander.SessionID(); id != bystanderSession {
				t.Errorf("bystander's session %x is now %x", bystanderSession, id)
			}
			if n := testutil.ToFloat64(reg.m.SessionLosses.WithLabelValues(backendName)); n != 0 {
				t.Errorf("%v session losses counted", n)
			}
		})
	}
}

func init() {
	if os.Getenv("SYNCSTACK_TEST_DEBUG") != "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
}

// deadlineRecorder is a net.Conn that only records read deadlines.
type deadlineRecorder struct {
	net.Conn
	got []time.Duration // from now; 0: none
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		d.got = append(d.got, 0)
	} else {
		d.got = append(d.got, time.Until(t).Round(100*time.Millisecond))
	}
	return nil
}

// stallConn shortens go-zookeeper's read deadlines: the connect answer's
// (ten recvTimeouts, then none for its body) to the handshake limit, and
// every later one from recvTimeout (2/3 of the session timeout) to a
// quarter of the session timeout; it learns recvTimeout on the way.
func TestStallConnDeadlines(t *testing.T) {
	c := &Client{}
	rec := &deadlineRecorder{}
	s := &stallConn{Conn: rec, c: c, handshake: 1300 * time.Millisecond}
	now := time.Now()
	recv := 8 * time.Second // session timeout 12 s
	for _, d := range []time.Time{now.Add(10 * recv), {}, now.Add(recv), {}, now.Add(recv)} {
		s.SetReadDeadline(d)
	}
	want := []time.Duration{1300 * time.Millisecond, 1300 * time.Millisecond, 3 * time.Second, 0, 3 * time.Second}
	if fmt.Sprint(rec.got) != fmt.Sprint(want) {
		t.Errorf("deadlines set = %v, want %v", rec.got, want)
	}
	if got := time.Duration(c.recvTimeout.Load()).Round(100 * time.Millisecond); got != recv {
		t.Errorf("recvTimeout learnt = %v, want %v", got, recv)
	}
}
