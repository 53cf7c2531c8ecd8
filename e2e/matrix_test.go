package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// The fault × change matrix (issue 10, item 2), on a 3-member ZooKeeper
// ensemble and a 3-member etcd cluster, in parallel.
//
// Each fault is one scenario on the fleet of its registry: a fresh set of
// service hosts (127.0.<row>.20..29, one backend and one nerve each, all in
// service "web"), one host per change, every change made concurrently while
// the fault lasts. Two observers run the whole time: HAProxy's servers every
// 10 ms, the registry's records and overrides every 50 ms. A cell passes when
//
//  1. landed: within landBound after recovery (every registry member
//     serving again, or the frozen nerve resumed), the registry holds what
//     the change asked for (exactly one record for a registered instance,
//     none for a deregistered one, the override's state, the weight), and
//     HAProxy holds the same server in the same state and weight; both stay
//     so until the end of the scenario;
//  2. never lost: at no 10 ms sample did HAProxy lack the server while the
//     registry held it (in the same node or key, in every read from settle
//     before the sample to the first read after it: settle is the
//     pipeline's latency plus the observers' skew, not a grace for faults),
//     whether HAProxy dropped it or, outside the fault and its bound, never
//     picked it up;
//  3. never stale: from landBound after recovery on, HAProxy never held
//     the server while the registry did not;
//  4. steady: a server whose host stays in service (unchanged, weight,
//     drain, add-to-lb) is in HAProxy at every sample, fault or not.
//
// synctl during a fault: it either exits 0 (the override is written: it
// must land as above) or exits 1 (refused: the registry is unreachable);
// after an exit 1 the test runs it again after recovery, as an operator
// would, and the bound counts from recovery or from that failed run's exit,
// whichever is later. Any other outcome (exit 2, still running after 30 s)
// fails the cell.
//
// Run one registry, one fault, or one cell (the fault's changes always run
// together; the filter picks which cells are judged):
//
//	go test -race -count=1 -run 'TestMatrix/etcd/LeaderKill/deregister' -v ./e2e/
func TestMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the matrix runs real clusters for about three minutes")
	}
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			f := newMxFleet(t, method)
			for i, fk := range faults {
				t.Run(fk.name, func(t *testing.T) {
					f.heal(t)
					runScenario(t, f, i+1, fk)
				})
			}
		})
	}
}

const (
	// landBound is the recovery bound this matrix states: a change made
	// during a fault is in the registry and in HAProxy at most this long
	// after recovery.
	landBound = 5 * time.Second
	// settle is how long the registry must have agreed before HAProxy is
	// held to it (pipeline latency and observer skew; milliseconds in
	// practice).
	settle = time.Second
	// hold is how long every cell must stay landed before a scenario ends.
	hold = 2 * time.Second
)

// want is a server as the registry and HAProxy should have it.
type want struct {
	present bool
	state   string // ready, drain, maint
	weight  int    // compared when ready
}

var (
	absent = want{}
	ready  = want{present: true, state: "ready", weight: 1}
)

func (w want) String() string {
	switch {
	case !w.present:
		return "absent"
	case w.state == "ready":
		return fmt.Sprintf("ready weight %d", w.weight)
	default:
		return w.state
	}
}

// view is a server as one observer saw it.
type view struct {
	count  int // records (registry) or servers (HAProxy) with the name
	state  string
	weight int
	admin  int // HAProxy's admin bits, for messages
}

func (v view) present() bool { return v.count > 0 }

func (w want) matches(v view) bool {
	if !w.present {
		return v.count == 0
	}
	return v.count == 1 && v.state == w.state && (w.state != "ready" || v.weight == w.weight)
}

// HAProxy's SRV_ADMF_* bits: FMAINT|IMAINT|CMAINT|RMAINT and FDRAIN|IDRAIN.
const (
	admMaint = 0x01 | 0x02 | 0x04 | 0x20
	admDrain = 0x08 | 0x10
)

func haView(h haproxySnap, server string) view {
	s, ok := h.servers[server]
	if !ok {
		return view{}
	}
	v := view{count: 1, state: "ready", weight: s.Weight, admin: s.Admin}
	switch {
	case s.Admin&admMaint != 0:
		v.state = "maint"
	case s.Admin&admDrain != 0:
		v.state = "drain"
	}
	return v
}

// regView applies the overrides to the server's record as synapse does.
func regView(r registrySnap, server string) view {
	recs := r.records[server]
	if len(recs) == 0 {
		return view{}
	}
	in := recs[0].Instance
	v := view{count: len(recs), weight: 1}
	if in.Weight != nil {
		v.weight = *in.Weight
	}
	rank := map[registry.OverrideState]int{registry.StateReady: 0, registry.StateDrain: 1, registry.StateMaint: 2}
	cur := registry.StateReady
	var weightAt time.Time
	for _, o := range r.overrides {
		if !o.Active(r.end) || !o.Matches(mxService, in) {
			continue
		}
		if rank[o.State] > rank[cur] {
			cur = o.State
		}
		if o.Weight != nil && !o.At.Before(weightAt) {
			v.weight, weightAt = *o.Weight, o.At
		}
	}
	v.state = string(cur)
	return v
}

func (v view) haString() string {
	if !v.present() {
		return "absent"
	}
	return fmt.Sprintf("%s weight %d (admin 0x%x)", v.state, v.weight, v.admin)
}

func (v view) regString() string {
	switch {
	case !v.present():
		return "no record"
	case v.count > 1:
		return fmt.Sprintf("%d records (a duplicate registration), %s weight %d", v.count, v.state, v.weight)
	default:
		return fmt.Sprintf("1 record, %s weight %d", v.state, v.weight)
	}
}

// change is one column of the matrix: a host's pre-fault state, what is
// done to it during the fault, and the state it must end in.
type change struct {
	name      string
	noBackend bool // its backend starts only with the change
	// prepare sets the pre-fault state once the host is registered.
	prepare func(sc *scenario, n *mxNode) error
	before  want // after prepare
	// apply makes the change during the fault; it runs on its own
	// goroutine, concurrently with every other change.
	apply  func(sc *scenario, c *cell) error
	after  want
	steady bool // stays in service the whole time: never out of HAProxy
}

var changes = []change{
	{name: "unchanged", before: ready, after: ready, steady: true},
	{
		name: "register", noBackend: true, before: absent, after: ready,
		apply: func(sc *scenario, c *cell) error { return sc.f.startBackend(c.node) },
	},
	{
		name: "deregister", before: ready, after: absent,
		apply: func(sc *scenario, c *cell) error { c.node.backend.kill(); return nil },
	},
	{
		name: "maint-on", before: ready, after: absent,
		apply: func(sc *scenario, c *cell) error {
			return sc.f.nerveAdmin(c.node, "POST", "/services/web/maintenance", `{"reason":"matrix"}`)
		},
	},
	{
		name: "maint-off", before: absent, after: ready,
		prepare: func(sc *scenario, n *mxNode) error {
			return sc.f.nerveAdmin(n, "POST", "/services/web/maintenance", `{"reason":"matrix"}`)
		},
		apply: func(sc *scenario, c *cell) error {
			return sc.f.nerveAdmin(c.node, "DELETE", "/services/web/maintenance", "")
		},
	},
	{
		// On at the fault's start, off half-way through: one record
		// after, not the old one plus a new one.
		name: "maint-on-off", before: ready, after: ready,
		apply: func(sc *scenario, c *cell) error {
			if err := sc.f.nerveAdmin(c.node, "POST", "/services/web/maintenance", `{"reason":"matrix"}`); err != nil {
				return err
			}
			time.Sleep(time.Until(sc.mid)) // the fault's schedule, not a wait for a result
			return sc.f.nerveAdmin(c.node, "DELETE", "/services/web/maintenance", "")
		},
	},
	{
		name: "weight", before: ready, after: want{present: true, state: "ready", weight: 5}, steady: true,
		apply: func(sc *scenario, c *cell) error {
			return sc.f.nerveAdmin(c.node, "PUT", "/services/web/weight", `{"weight":5}`)
		},
	},
	{
		name: "drain", before: ready, after: want{present: true, state: "drain"}, steady: true,
		apply: func(sc *scenario, c *cell) error {
			return sc.synctlChange(c, "drain", c.node.host, "--force", "--reason", "matrix")
		},
	},
	{
		name: "add-to-lb", before: want{present: true, state: "drain"}, after: ready, steady: true,
		prepare: func(sc *scenario, n *mxNode) error {
			if res := sc.f.synctl("drain", n.host, "--force", "--reason", "matrix"); res.code != 0 {
				return fmt.Errorf("synctl drain: exit %d: %s", res.code, res.out)
			}
			return nil
		},
		apply: func(sc *scenario, c *cell) error { return sc.synctlChange(c, "add-to-lb", c.node.host) },
	},
}

// expiredNerve is SessionExpiry's own cell: the nerve that is frozen past
// its session timeout; its registration must come back.
var expiredNerve = change{name: "expired-nerve", before: ready, after: ready}

// fault is one row of the matrix. inject puts the fault in place, calls
// sc.applyChanges while it lasts, ends it and returns the moment the
// registry (or the frozen nerve) is whole again: recovery.
type fault struct {
	name   string
	extra  []change
	inject func(sc *scenario) time.Time
}

var faults = []fault{
	{name: "RegistryDown30s", inject: func(sc *scenario) time.Time {
		for _, m := range sc.f.cl.members() {
			m.Kill()
		}
		return sc.during(30*time.Second, sc.restartAll)
	}},
	{name: "QuorumLost", inject: func(sc *scenario) time.Time {
		// The leader and one follower: the survivor has no quorum.
		l := sc.leader()
		killed := []member{l}
		for _, m := range sc.f.cl.members() {
			if m.name() != l.name() && len(killed) < 2 {
				killed = append(killed, m)
			}
		}
		for _, m := range killed {
			m.Kill()
		}
		sc.t.Logf("killed %s and %s", killed[0].name(), killed[1].name())
		return sc.during(15*time.Second, sc.restartAll)
	}},
	{name: "LeaderKill", inject: func(sc *scenario) time.Time {
		l := sc.leader()
		l.Kill()
		sc.t.Logf("killed the leader %s (kill -9); restarted after 5s", l.name())
		return sc.during(5*time.Second, sc.restartAll)
	}},
	{name: "MemberFrozen", inject: func(sc *scenario) time.Time {
		// The leader carries most streams and sessions; frozen for two
		// session timeouts (etcd: more than two lease TTLs).
		l := sc.leader()
		l.Freeze()
		sc.f.distrustUntil(l.addr(), time.Now().Add(time.Hour))
		sc.t.Logf("froze the leader %s (SIGSTOP) for 8s", l.name())
		return sc.during(2*mxSessionTime, func() time.Time {
			thawed := time.Now()
			l.Thaw()
			if sc.f.method == "etcd" && testserver.EtcdRevokesAfterStall() {
				sc.staleRevoke.from, sc.staleRevoke.to = thawed, thawed.Add(5*time.Second)
			}
			rec := sc.waitHealthy()
			// The observer trusts it again a while after it serves as
			// a member (a deposed leader's stale answers stop then).
			sc.f.distrustUntil(l.addr(), rec.Add(3*time.Second))
			return rec
		})
	}},
	{name: "SessionExpiry", extra: []change{expiredNerve}, inject: func(sc *scenario) time.Time {
		n := sc.cells["expired-nerve"].node
		freeze(n.nerve)
		frozen := time.Now()
		sc.mid = frozen.Add(mxSessionTime / 2)
		wait := sc.applyChanges()
		// Frozen until the registry has dropped its record: its session
		// (lease) expired.
		gone := false
		for deadline := frozen.Add(mxSessionTime + 15*time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if r, ok := sc.f.latestRegistry(frozen.Add(mxSessionTime / 2)); ok && !regView(r, n.server()).present() {
				gone = true
				break
			}
		}
		if !gone {
			sc.t.Errorf("%s, SessionExpiry: the frozen nerve's record was still in the registry %v after SIGSTOP (session timeout %v, lease TTL %v): the fault did not happen",
				sc.f.method, time.Since(frozen).Round(time.Millisecond), mxSessionTime, mxLeaseTTL)
		} else {
			sc.t.Logf("the frozen nerve's record left the registry %v after SIGSTOP", time.Since(frozen).Round(time.Millisecond))
		}
		thaw(n.nerve)
		rec := time.Now()
		wait()
		return rec
	}},
	{name: "SynapseRestartRegistryDown", inject: func(sc *scenario) time.Time {
		sc.f.synapse.kill()
		for _, m := range sc.f.cl.members() {
			m.Kill()
		}
		return sc.during(10*time.Second, sc.restartAll, func() {
			// synapse comes back (from its state cache) while the
			// registry is still down.
			sc.f.startSynapse()
		})
	}},
}

// cell is one change within one scenario.
type cell struct {
	change
	node *mxNode

	mu     sync.Mutex
	errs   []string  // the change itself failed
	notes  []string  // what the change did, for the log
	retry  []string  // synctl args to run again after recovery
	ref    time.Time // the bound counts from here (recovery, or a later exit 1)
	failAt time.Time // when a synctl run made during the fault exited 1
}

func (c *cell) errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

func (c *cell) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// scenario is one fault (a row) on one fleet.
type scenario struct {
	t     *testing.T
	f     *mxFleet
	fault fault
	row   int
	cells map[string]*cell
	order []string

	start, faultAt, recovered, end time.Time
	mid                            time.Time // when maint-on-off switches off
	// staleRevoke: the window after a frozen etcd leader thaws in which
	// etcd 3.4 < 3.4.28 revokes every lease it no longer owns
	// (etcd-io/etcd#15247; no client can stop it). A steady host's record
	// vanishing from the registry itself inside it is the server's bug,
	// not ours: nerve re-puts it within ~50 ms. (The revokes commit once
	// the cluster has settled: up to ~1.9 s after the thaw, seen in CI.)
	staleRevoke struct{ from, to time.Time }
}

func runScenario(t *testing.T, f *mxFleet, row int, fk fault) {
	sc := &scenario{t: t, f: f, fault: fk, row: row, cells: map[string]*cell{}}
	f.resetObs()
	t.Cleanup(sc.teardown)
	sc.startHosts(append(append([]change{}, changes...), fk.extra...))

	sc.start = time.Now()
	sc.faultAt = time.Now()
	sc.recovered = fk.inject(sc)
	t.Logf("%s, %s: fault at %s, recovered at %s (%v later)", f.method, fk.name,
		sc.faultAt.Format("15:04:05.000"), sc.recovered.Format("15:04:05.000"), sc.recovered.Sub(sc.faultAt).Round(time.Millisecond))
	sc.retryAfterRecovery()
	sc.observe()

	hs, rs := f.obs()
	t.Logf("%s, %s: observers: %d HAProxy samples (longest gap %v), %d registry reads (longest gap %v); %s", f.method, fk.name,
		len(hs), longestGap(hs, func(h haproxySnap) time.Time { return h.at }, sc.start, sc.end),
		len(rs), longestGap(rs, func(r registrySnap) time.Time { return r.end }, sc.start, sc.end), f.obsErrors())
	for _, name := range sc.order {
		c := sc.cells[name]
		t.Run(name, func(t *testing.T) { sc.judge(t, c, hs, rs) })
	}
}

// startHosts starts one backend and nerve per change and waits until the
// registry and HAProxy hold every host in its pre-fault state.
func (sc *scenario) startHosts(cs []change) {
	t := sc.t
	for i, ch := range cs {
		n := &mxNode{
			name:  fmt.Sprintf("r%d-%s", sc.row, ch.name),
			host:  fmt.Sprintf("127.0.%d.%d", sc.row, 20+i),
			port:  testserver.FreePort(t),
			admin: testserver.FreePort(t),
		}
		c := &cell{change: ch, node: n}
		sc.cells[ch.name], sc.order = c, append(sc.order, ch.name)
		if !ch.noBackend {
			if err := sc.f.startBackend(n); err != nil {
				t.Fatal(err)
			}
		}
		sc.f.startNerve(t, n)
	}
	// Registered first, then prepared (synctl drains only a known host).
	sc.waitAll(func(c *cell) want {
		if c.noBackend {
			return absent
		}
		return ready
	}, "registered")
	for _, name := range sc.order {
		c := sc.cells[name]
		if c.prepare != nil {
			if err := c.prepare(sc, c.node); err != nil {
				t.Fatalf("%s: prepare %s: %v", sc.f.method, name, err)
			}
		}
	}
	sc.waitAll(func(c *cell) want { return c.before }, "in their pre-fault state")
}

// waitAll waits until the registry and HAProxy both show every host as
// wantOf says.
func (sc *scenario) waitAll(wantOf func(*cell) want, what string) {
	since := time.Now()
	deadline := since.Add(30 * time.Second)
	for {
		r, rok := sc.f.latestRegistry(since)
		h, hok := sc.f.latestHAProxy(since)
		var bad []string
		for _, name := range sc.order {
			c := sc.cells[name]
			w := wantOf(c)
			if !rok || !hok || !w.matches(regView(r, c.node.server())) || !w.matches(haView(h, c.node.server())) {
				bad = append(bad, fmt.Sprintf("%s: want %v, registry %s, HAProxy %s", c.node.server(), w,
					regView(r, c.node.server()).regString(), haView(h, c.node.server()).haString()))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("%s: hosts not %s after 30s:\n%s\nsynapse log:\n%s", sc.f.method, what, strings.Join(bad, "\n"),
				tail(sc.f.dir+"/synapse.log", 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (sc *scenario) leader() member {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if l := sc.f.cl.leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("%s: no leader", sc.f.method)
		}
	}
}

// during makes the changes while the fault lasts d (from now), runs the
// midway actions right after the changes were started, then ends the
// fault with recover, and returns the recovery time.
func (sc *scenario) during(d time.Duration, end func() time.Time, midway ...func()) time.Time {
	until := time.Now().Add(d)
	sc.mid = time.Now().Add(d / 2)
	wait := sc.applyChanges()
	for _, m := range midway {
		m()
	}
	time.Sleep(time.Until(until)) // the fault's duration
	rec := end()
	wait()
	return rec
}

// restartAll starts every member that is down and waits until the cluster
// is healthy: recovery.
func (sc *scenario) restartAll() time.Time {
	for _, m := range sc.f.cl.members() {
		if !m.Running() {
			m.Start()
		}
	}
	return sc.waitHealthy()
}

func (sc *scenario) waitHealthy() time.Time {
	if err := sc.f.cl.waitHealthy(60 * time.Second); err != nil {
		sc.t.Fatalf("%s, %s: registry not healthy again: %v", sc.f.method, sc.fault.name, err)
	}
	return time.Now()
}

// applyChanges starts every change on its own goroutine and returns a
// function that waits for them.
func (sc *scenario) applyChanges() (wait func()) {
	var wg sync.WaitGroup
	for _, name := range sc.order {
		c := sc.cells[name]
		if c.apply == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := time.Now()
			if err := c.apply(sc, c); err != nil {
				c.errorf("the change failed: %v", err)
			}
			c.note("made at %s (fault +%v), took %v", at.Format("15:04:05.000"), at.Sub(sc.faultAt).Round(time.Millisecond), time.Since(at).Round(time.Millisecond))
		}()
	}
	return wg.Wait
}

// synctlChange runs synctl during the fault: exit 0 is a change made, exit
// 1 a refusal to retry after recovery, anything else a failure.
func (sc *scenario) synctlChange(c *cell, args ...string) error {
	res := sc.f.synctl(args...)
	switch res.code {
	case 0:
		c.note("synctl %s: exit 0 during the fault", args[0])
		return nil
	case 1:
		c.mu.Lock()
		c.retry, c.failAt = args, time.Now()
		c.mu.Unlock()
		c.note("synctl %s: exit 1 during the fault (%s); run again after recovery", args[0], firstLine(res.out))
		return nil
	default:
		return fmt.Errorf("synctl %s: exit %d (want 0, or 1 while the registry is unreachable): %s", strings.Join(args, " "), res.code, res.out)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// retryAfterRecovery runs again every synctl change refused during the
// fault, concurrently, until it exits 0 (at most landBound after its
// reference time).
func (sc *scenario) retryAfterRecovery() {
	var wg sync.WaitGroup
	for _, name := range sc.order {
		c := sc.cells[name]
		c.ref = sc.recovered
		if c.failAt.After(c.ref) {
			c.ref = c.failAt
		}
		if c.retry == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, tries := sc.f.synctlUntil(c.ref.Add(landBound), c.retry...)
			if res.code != 0 {
				c.errorf("synctl %s after recovery: exit %d after %d tries: %s", strings.Join(c.retry, " "), res.code, tries, res.out)
				return
			}
			c.note("synctl %s after recovery: exit 0 at try %d, recovery +%v", c.retry[0], tries, time.Since(sc.recovered).Round(time.Millisecond))
		}()
	}
	wg.Wait()
}

// observe lets the observers run until every cell has landed and stayed
// landed for hold, and at most until landBound + hold after the latest
// reference time.
func (sc *scenario) observe() {
	latest := sc.recovered
	for _, c := range sc.cells {
		if c.ref.After(latest) {
			latest = c.ref
		}
	}
	limit := latest.Add(landBound + hold)
	for time.Now().Before(limit) {
		time.Sleep(50 * time.Millisecond)
		hs, rs := sc.f.obs()
		all := true
		var last time.Time
		for _, c := range sc.cells {
			hAt, hok := landedAt(hs, func(h haproxySnap) (time.Time, bool) {
				return h.at, c.after.matches(haView(h, c.node.server()))
			})
			rAt, rok := landedAt(rs, func(r registrySnap) (time.Time, bool) {
				return r.end, c.after.matches(regView(r, c.node.server()))
			})
			if !hok || !rok {
				all = false
				break
			}
			last = maxTime(last, hAt, rAt)
		}
		if all && time.Since(last) >= hold {
			break
		}
	}
	sc.end = time.Now()
}

// relative says when at was, relative to recovery ref.
func relative(at, ref time.Time) string {
	d := at.Sub(ref).Round(time.Millisecond)
	if d < 0 {
		return fmt.Sprintf("%v before recovery", -d)
	}
	return fmt.Sprintf("%v after recovery", d)
}

// longestGap is the longest time within [from, to] without a sample: how
// long an observer was blind (a registry without quorum answers no read).
func longestGap[S any](samples []S, at func(S) time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, s := range samples {
		t := at(s)
		if t.Before(from) || t.After(to) {
			continue
		}
		gap = max(gap, t.Sub(prev))
		prev = t
	}
	return max(gap, to.Sub(prev)).Round(time.Millisecond)
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// landedAt returns when the trailing run of matching samples began: the
// moment the state was reached for good. ok is false when the last sample
// does not match.
func landedAt[S any](samples []S, match func(S) (time.Time, bool)) (time.Time, bool) {
	var at time.Time
	found := false
	for i := len(samples) - 1; i >= 0; i-- {
		t, ok := match(samples[i])
		if !ok {
			break
		}
		at, found = t, true
	}
	return at, found
}

// registryAt says whether the registry held the server throughout the
// span from settle before t to the first read after t, in the same node or
// key (held), did not hold it throughout (gone), or neither (it changed, or
// no read covers t). r is the read from before t, for messages.
func registryAt(rs []registrySnap, server string, t time.Time) (held, gone bool, r registrySnap) {
	held, gone, r, _ = registrySpan(rs, server, t)
	return held, gone, r
}

// registrySpan is registryAt with the first read after t too.
func registrySpan(rs []registrySnap, server string, t time.Time) (held, gone bool, before, after registrySnap) {
	// Reads are sequential: start and end both increase.
	a := sort.Search(len(rs), func(i int) bool { return rs[i].end.After(t.Add(-settle)) }) - 1
	b := sort.Search(len(rs), func(i int) bool { return !rs[i].start.Before(t) })
	if a < 0 || b >= len(rs) {
		return false, false, registrySnap{}, registrySnap{}
	}
	held, gone = true, true
	first := recordIDs(rs[a], server)
	for _, r := range rs[a : b+1] {
		ids := recordIDs(r, server)
		held = held && ids != "" && ids == first
		gone = gone && ids == ""
	}
	return held, gone, rs[a], rs[b]
}

// recordSince is when the registry started holding server in the record(s)
// it holds in r: the end of the first read of the unbroken run of reads, up
// to r, that show the same records.
func recordSince(rs []registrySnap, server string, r registrySnap) time.Time {
	ids := recordIDs(r, server)
	i := sort.Search(len(rs), func(i int) bool { return !rs[i].end.Before(r.end) })
	since := r.end
	for ; i >= 0 && i < len(rs) && recordIDs(rs[i], server) == ids; i-- {
		since = rs[i].end
	}
	return since
}

// recordIDs identifies the records that hold server in r ("" for none).
func recordIDs(r registrySnap, server string) string {
	var ids []string
	for _, rec := range r.records[server] {
		ids = append(ids, rec.id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// registryWords describes what the registry did around t.
func registryWords(rs []registrySnap, server string, t time.Time) string {
	held, gone, r := registryAt(rs, server, t)
	switch {
	case held:
		return "the registry held it throughout"
	case gone:
		return "the registry had no record either"
	case r.end.IsZero():
		return "no registry read covers that moment"
	default:
		return "the registry changed around then (its record was removed or made again)"
	}
}

// interval is a run of consecutive HAProxy samples that broke a rule.
type interval struct {
	from, to time.Time
	what     string // HAProxy and the registry at its start
}

func (iv interval) String() string {
	return fmt.Sprintf("%s to %s (%v): %s", iv.from.Format("15:04:05.000"), iv.to.Format("15:04:05.000"), iv.to.Sub(iv.from).Round(time.Millisecond), iv.what)
}

// violations collects the runs of samples (within [from, to)) for which bad
// returns a description.
func violations(hs []haproxySnap, from, to time.Time, bad func(h haproxySnap) (string, bool)) []interval {
	var out []interval
	open := false
	for _, h := range hs {
		if h.at.Before(from) || !h.at.Before(to) {
			open = false
			continue
		}
		what, isBad := bad(h)
		switch {
		case isBad && open:
			out[len(out)-1].to = h.at
		case isBad:
			out = append(out, interval{from: h.at, to: h.at, what: what})
			open = true
		default:
			open = false
		}
	}
	return out
}

func report(ivs []interval) string {
	var b strings.Builder
	for i, iv := range ivs {
		if i == 5 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(ivs)-5)
			break
		}
		fmt.Fprintf(&b, "\n  %s", iv)
	}
	return b.String()
}

// judge checks one cell against everything the observers saw.
func (sc *scenario) judge(t *testing.T, c *cell, hs []haproxySnap, rs []registrySnap) {
	server := c.node.server()
	who := fmt.Sprintf("%s, fault %s, change %s (%s)", sc.f.method, sc.fault.name, c.name, server)
	for _, n := range c.notes {
		t.Logf("%s: %s", c.name, n)
	}
	for _, e := range c.errs {
		t.Errorf("%s: %s", who, e)
	}
	lastH, lastR := view{}, view{}
	var lastHAt, lastRAt time.Time
	if len(hs) > 0 {
		lastH, lastHAt = haView(hs[len(hs)-1], server), hs[len(hs)-1].at
	}
	if len(rs) > 0 {
		lastR, lastRAt = regView(rs[len(rs)-1], server), rs[len(rs)-1].end
	}
	seen := fmt.Sprintf("(last registry read %s, last HAProxy sample %s)", lastRAt.Format("15:04:05.000"), lastHAt.Format("15:04:05.000"))

	// 1. Landed within the bound, in the registry and in HAProxy.
	rAt, rok := landedAt(rs, func(r registrySnap) (time.Time, bool) { return r.end, c.after.matches(regView(r, server)) })
	hAt, hok := landedAt(hs, func(h haproxySnap) (time.Time, bool) { return h.at, c.after.matches(haView(h, server)) })
	switch {
	case !rok:
		t.Errorf("%s: not landed in the registry %v after recovery (bound %v): want %v, the registry holds %s, HAProxy %s %s\nnerve status: %s",
			who, sc.end.Sub(c.ref).Round(time.Millisecond), landBound, c.after, lastR.regString(), lastH.haString(), seen, sc.f.nerveStatus(c.node))
	case rAt.Sub(c.ref) > landBound:
		t.Errorf("%s: landed in the registry %v after recovery, over the %v bound", who, rAt.Sub(c.ref).Round(time.Millisecond), landBound)
	}
	switch {
	case !hok:
		t.Errorf("%s: not landed in HAProxy %v after recovery (bound %v): want %v, HAProxy holds %s, the registry %s %s",
			who, sc.end.Sub(c.ref).Round(time.Millisecond), landBound, c.after, lastH.haString(), lastR.regString(), seen)
	case hAt.Sub(c.ref) > landBound:
		t.Errorf("%s: landed in HAProxy %v after recovery, over the %v bound", who, hAt.Sub(c.ref).Round(time.Millisecond), landBound)
	}
	if rok && hok {
		t.Logf("%s: landed in the registry %s, in HAProxy %s", c.name, relative(rAt, c.ref), relative(hAt, c.ref))
	}

	// 2. HAProxy never lost the server while the registry held it: it
	// had the server in HAProxy since the registry made the record it
	// holds, and then not. (A record HAProxy has not picked up yet is a
	// late addition: rule 1 bounds it after a fault; outside faults it
	// too must show within settle.)
	lastIn := time.Time{} // the last sample HAProxy held the server
	lost := violations(hs, sc.start, sc.end, func(h haproxySnap) (string, bool) {
		v := haView(h, server)
		if v.present() {
			lastIn = h.at
			return "", false
		}
		held, _, r, next := registrySpan(rs, server, h.at)
		if !held {
			return "", false
		}
		what := fmt.Sprintf("HAProxy %s, the registry %s (every read from %s to %s)", v.haString(), regView(r, server).regString(),
			r.end.Format("15:04:05.000"), next.end.Format("15:04:05.000"))
		if since := recordSince(rs, server, r); !lastIn.Before(since) {
			return what + ": removed from HAProxy", true
		}
		inFault := !h.at.Before(sc.faultAt) && h.at.Before(c.ref.Add(landBound))
		return what + ": not added to HAProxy within " + settle.String(), !inFault
	})
	if len(lost) > 0 {
		t.Errorf("%s: HAProxy lacked the server while the registry held it:%s", who, report(lost))
	}

	// 3. From the bound after recovery on, HAProxy never held the server
	// when the registry did not.
	stale := violations(hs, c.ref.Add(landBound), sc.end, func(h haproxySnap) (string, bool) {
		v := haView(h, server)
		if !v.present() {
			return "", false
		}
		_, gone, r, next := registrySpan(rs, server, h.at)
		return fmt.Sprintf("HAProxy %s, the registry %s (every read from %s to %s)", v.haString(), regView(r, server).regString(),
			r.end.Format("15:04:05.000"), next.end.Format("15:04:05.000")), gone
	})
	if len(stale) > 0 {
		t.Errorf("%s: HAProxy held the server while the registry did not:%s", who, report(stale))
	}

	// 4. A host that stays in service never leaves HAProxy.
	if c.steady {
		gaps := violations(hs, sc.start, sc.end, func(h haproxySnap) (string, bool) {
			// The revoke commits when the cluster has settled after the
			// thaw (measured up to ~1.9 s later) and the re-put follows
			// within ~50 ms: an absence in the window is etcd's when the
			// registry itself did not hold the record throughout then.
			if held, _, _ := registryAt(rs, server, h.at); !haView(h, server).present() && !held && !h.at.Before(sc.staleRevoke.from) && h.at.Before(sc.staleRevoke.to) {
				c.note("out of HAProxy at %s, in the window where etcd revokes a thawed leader's leases (etcd-io/etcd#15247)", h.at.Format("15:04:05.000"))
				return "", false
			}
			return registryWords(rs, server, h.at), !haView(h, server).present()
		})
		if len(gaps) > 0 {
			t.Errorf("%s: a host that stayed in service was out of HAProxy:%s", who, report(gaps))
		}
	}
	if t.Failed() {
		t.Logf("nerve log tail:\n%s", tail(sc.f.dir+"/nerve-"+c.node.name+".log", 25))
	}
}

// teardown stops the scenario's nerves (they deregister) and backends, and
// checks that HAProxy lets their servers go.
func (sc *scenario) teardown() {
	var wg sync.WaitGroup
	for _, c := range sc.cells {
		n := c.node
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n.nerve != nil {
				thaw(n.nerve)
				n.nerve.stop()
			}
			if n.backend != nil {
				n.backend.kill()
			}
		}()
	}
	wg.Wait()
	since := time.Now()
	for deadline := since.Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h, hok := sc.f.latestHAProxy(since)
		r, rok := sc.f.latestRegistry(since)
		var left []string
		for _, c := range sc.cells {
			s := c.node.server()
			if !hok || !rok || haView(h, s).present() || regView(r, s).present() {
				left = append(left, fmt.Sprintf("%s: HAProxy %s, the registry %s", s, haView(h, s).haString(), regView(r, s).regString()))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Errorf("%s, %s: 20s after its nerves stopped, the scenario's servers are still there:\n%s", sc.f.method, sc.fault.name, strings.Join(left, "\n"))
			return
		}
	}
}
