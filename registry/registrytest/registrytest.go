// Package registrytest holds the behaviour every registry.Backend must show.
// Each backend's tests run it against a real server.
package registrytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// Harness connects the suite to one backend and its running server.
type Harness struct {
	// New returns a fresh client (its own session) of the server; the
	// harness closes it in t.Cleanup.
	New func(t *testing.T) registry.Backend
	// Plant writes raw data as a persistent record named name under dir,
	// bypassing every check, as a buggy or hostile writer would.
	Plant func(t *testing.T, dir, name string, data []byte)
	// Raw reads the stored bytes of a registration.
	Raw func(t *testing.T, key string) []byte
	// Skipped reads the skipped-record counter of b for dir.
	Skipped func(b registry.Backend, dir string) float64
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	t.Run("RegisterWatchDeregister", func(t *testing.T) { registerWatchDeregister(t, h) })
	t.Run("CloseRemovesRegistrations", func(t *testing.T) { closeRemoves(t, h) })
	t.Run("ContextCancelDeregisters", func(t *testing.T) { contextCancel(t, h) })
	t.Run("RejectsBadInput", func(t *testing.T) { rejectsBadInput(t, h) })
	t.Run("BadRecordsSkippedAndCounted", func(t *testing.T) { badRecords(t, h) })
	t.Run("OverridesAndAcks", func(t *testing.T) { overridesAndAcks(t, h) })
	t.Run("History", func(t *testing.T) { history(t, h) })
	t.Run("CatalogOutlivesSession", func(t *testing.T) { catalog(t, h) })
	t.Run("RegistrationOrder", func(t *testing.T) { registrationOrder(t, h) })
	t.Run("WatchOverridesDeliversTheLatest", func(t *testing.T) { overridesLatest(t, h) })
}

// Inst is a short constructor for tests.
func Inst(host string, port int, name string) registry.Instance {
	return registry.Instance{Host: host, Port: port, Name: name}
}

// Watcher runs Watch in the background and records every set it sends.
type Watcher struct {
	C    chan []registry.Instance
	Sets [][]registry.Instance
}

// StartWatch watches dir until the test ends.
func StartWatch(t *testing.T, b registry.Backend, dir string) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{C: make(chan []registry.Instance, 100)}
	done := make(chan error, 1)
	go func() { done <- b.Watch(ctx, dir, registry.DecodeOptions{}, w.C) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, registry.ErrClosed) {
			t.Errorf("Watch returned %v", err)
		}
	})
	return w
}

// WaitFor reads sets until one satisfies ok, and returns it.
func (w *Watcher) WaitFor(t *testing.T, timeout time.Duration, what string, ok func([]registry.Instance) bool) []registry.Instance {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-w.C:
			w.Sets = append(w.Sets, s)
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("watch: no set with %s within %v; sets seen: %v", what, timeout, w.Sets)
		}
	}
}

// Quiet fails the test if the watcher sends anything within d.
func (w *Watcher) Quiet(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case s := <-w.C:
		w.Sets = append(w.Sets, s)
		t.Fatalf("watch sent %v %s", s, why)
	case <-time.After(d):
	}
}

// HasLen matches a set of n instances.
func HasLen(n int) func([]registry.Instance) bool {
	return func(s []registry.Instance) bool { return len(s) == n }
}

// Has matches a set that holds the named instance.
func Has(name string) func([]registry.Instance) bool {
	return func(s []registry.Instance) bool {
		for _, in := range s {
			if in.Name == name {
				return true
			}
		}
		return false
	}
}

// dir is a path of the test's own, so that subtests sharing a server do
// not see each other's records.
func dir(t *testing.T, rest string) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return "/t/" + name + rest
}

func newPair(t *testing.T, h Harness) (registry.Backend, registry.Backend) {
	return h.New(t), h.New(t)
}

func registerWatchDeregister(t *testing.T, h Harness) {
	reg, watch := newPair(t, h)
	w := StartWatch(t, watch, dir(t, "/services/web/services"))
	w.WaitFor(t, 10*time.Second, "the empty first set", HasLen(0))

	ctx := context.Background()
	// The bound is on the best of three rounds, from the registration
	// being written to the watcher holding it: one scheduling hiccup on a
	// loaded 2-core machine (-race, other packages' servers) is not a
	// property of the registry.
	best := time.Hour
	var r registry.Registration
	var got []registry.Instance
	for round := range 3 {
		var err error
		r, err = reg.Register(ctx, dir(t, "/services/web/services"), Inst("127.0.0.11", 8080, "i-1"))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		got = w.WaitFor(t, 5*time.Second, "i-1", Has("i-1"))
		best = min(best, time.Since(start))
		if round < 2 {
			if err := r.Deregister(ctx); err != nil {
				t.Fatal(err)
			}
			w.WaitFor(t, 5*time.Second, "no instance", HasLen(0))
		}
	}
	if best > 100*time.Millisecond {
		t.Errorf("register → watch took %v at best, want < 100ms", best)
	}
	if got[0].Address() != "127.0.0.11:8080" {
		t.Errorf("got %+v", got)
	}
	if !strings.HasPrefix(r.Key(), dir(t, "/services/web/services/i-1_")) {
		t.Errorf("key %q is not under the path with the name first", r.Key())
	}
	if raw, want := string(h.Raw(t, r.Key())), `{"host":"127.0.0.11","port":8080,"name":"i-1"}`; raw != want {
		t.Errorf("record = %s, want nerve's %s", raw, want)
	}

	weight := 7
	updated := Inst("127.0.0.11", 8080, "i-1")
	updated.Weight = &weight
	if err := r.Update(ctx, updated); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "weight 7", func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 7
	})

	start := time.Now()
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "no instance", HasLen(0))
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("deregister → watch took %v, want well under 100ms (250ms allowed for a loaded machine)", d)
	}
}

func closeRemoves(t *testing.T, h Harness) {
	reg, watch := newPair(t, h)
	w := StartWatch(t, watch, dir(t, ""))
	for i := range 3 {
		if _, err := reg.Register(context.Background(), dir(t, ""), Inst("10.0.0.1", 8000+i, fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	w.WaitFor(t, 5*time.Second, "3 instances", HasLen(3))
	reg.Close()
	w.WaitFor(t, 5*time.Second, "none after Close", HasLen(0))
	if _, err := reg.Register(context.Background(), dir(t, ""), Inst("10.0.0.1", 1, "x")); err == nil {
		t.Error("Register after Close succeeded")
	}
}

func contextCancel(t *testing.T, h Harness) {
	c := h.New(t)
	w := StartWatch(t, c, dir(t, ""))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := c.Register(ctx, dir(t, ""), Inst("10.0.0.1", 80, "a")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "a", Has("a"))
	cancel()
	w.WaitFor(t, 5*time.Second, "none", HasLen(0))
}

func rejectsBadInput(t *testing.T, h Harness) {
	c := h.New(t)
	for _, tc := range []struct {
		path string
		in   registry.Instance
		want string
	}{
		{dir(t, ""), Inst("10.0.0.1", 70000, "a"), "port"},
		{dir(t, ""), registry.Instance{Host: "10.0.0.1", Port: 80, HAProxyServerOptions: "backup\nserver evil 1.2.3.4:80"}, "haproxy_server_options"},
		{dir(t, ""), Inst("10.0.0.1", 80, "a b"), "name"},
		{"svc", Inst("10.0.0.1", 80, "a"), "path"},
		{"/svc/../x", Inst("10.0.0.1", 80, "a"), "path"},
	} {
		_, err := c.Register(context.Background(), tc.path, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%q, %+v) = %v, want an error naming %s", tc.path, tc.in, err, tc.want)
		}
	}
	ctx := context.Background()
	if _, err := c.DeleteOverride(ctx, "../x"); err == nil {
		t.Error("DeleteOverride accepted a key with a slash")
	}
	bad := registry.Override{Target: "10.0.0.1", State: registry.StateDrain, Reason: "line\nbreak", At: time.Now()}
	if _, err := c.PutOverride(ctx, bad); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("PutOverride with a newline in the reason = %v, want an error naming reason", err)
	}
	if err := c.PutAck(ctx, registry.Ack{ID: "no/slash", Revision: 1}); err == nil {
		t.Error("PutAck accepted an id with a slash")
	}
}

func badRecords(t *testing.T, h Harness) {
	c := h.New(t)
	good, _ := Inst("10.0.0.1", 80, "good").Encode()
	h.Plant(t, dir(t, ""), "good_0000000001", good)
	h.Plant(t, dir(t, ""), "evil_0000000002", []byte(`{"host":"10.0.0.2","port":80,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`))
	h.Plant(t, dir(t, ""), "big_0000000003", []byte(`{"host":"10.0.0.3","port":80,"labels":{"x":"`+strings.Repeat("a", 100<<10)+`"}}`))
	h.Plant(t, dir(t, ""), "junk_0000000004", []byte("not json"))
	h.Plant(t, dir(t, ""), "port_0000000005", []byte(`{"host":"10.0.0.5","port":70000}`))
	h.Plant(t, dir(t, ""), "hash_0000000006", []byte(`{"host":"10.0.0.6#x","port":80}`))
	h.Plant(t, dir(t, ""), "dup_0000000007", []byte(`{"host":"10.0.0.7","port":80,"host":"6.6.6.6"}`))
	h.Plant(t, dir(t, ""), "crt_0000000008", []byte(`{"host":"10.0.0.8","port":80,"haproxy_server_options":"ssl crt /etc/shadow"}`))
	w := StartWatch(t, c, dir(t, ""))
	got := w.WaitFor(t, 5*time.Second, "the good record", HasLen(1))
	if got[0].Name != "good" {
		t.Errorf("got %v, want only good", got)
	}
	if n := h.Skipped(c, dir(t, "")); n != 7 {
		t.Errorf("skipped = %v, want 7", n)
	}
	// A bad record fixed in place is picked up; a new bad one leaves the rest.
	h.Plant(t, dir(t, ""), "port_0000000005", []byte(`{"host":"10.0.0.5","port":7000,"name":"fixed"}`))
	w.WaitFor(t, 5*time.Second, "the fixed record", HasLen(2))
	h.Plant(t, dir(t, ""), "good_0000000001", []byte(`{"host":"10.0.0.1","port":80,"name":"good","weight":999}`))
	got = w.WaitFor(t, 5*time.Second, "the record that went bad dropped", HasLen(1))
	if got[0].Name != "fixed" {
		t.Errorf("got %v, want only fixed", got)
	}
}

// testRoot is the registry root both backends' harnesses configure.
const testRoot = "/syncstack-test"

func overridesAndAcks(t *testing.T, h Harness) {
	ctl, syn := newPair(t, h)
	ctx := context.Background()
	sets := make(chan registry.OverrideSet, 10)
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go syn.WatchOverrides(wctx, sets)
	if first := <-sets; len(first.Overrides) != 0 {
		t.Fatalf("first set = %+v, want empty", first)
	}
	next := func(rev int64) registry.OverrideSet {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case s := <-sets:
				if s.Revision >= rev {
					return s
				}
			case <-timeout:
				t.Fatalf("no override set at revision ≥ %d", rev)
			}
		}
	}

	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	o := registry.Override{Target: "127.0.0.12", State: registry.StateDrain, Services: []string{"web"},
		Reason: "deploy #42? no: deploy 42", By: "ops@host", At: time.Now().UTC(), ExpiresAt: &exp}
	if _, err := ctl.PutOverride(ctx, o); err == nil {
		t.Fatal("PutOverride accepted '#' in the reason")
	}
	o.Reason = "deploy 42"
	rev, err := ctl.PutOverride(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	got := next(rev)
	if len(got.Overrides) != 1 || got.Overrides[0].Key() != "127.0.0.12@web" || !got.Overrides[0].ExpiresAt.Equal(exp) {
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
	if err != nil || read.Revision < rev || len(read.Overrides) != 1 {
		t.Fatalf("Overrides() = %+v, %v; want the override at ≥ %d", read, err, rev)
	}

	delRev, err := ctl.DeleteOverride(ctx, o.Key())
	if err != nil || delRev <= rev {
		t.Fatalf("DeleteOverride = %d, %v; want a revision after %d", delRev, err, rev)
	}
	if got = next(delRev); len(got.Overrides) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
	if _, err := ctl.DeleteOverride(ctx, o.Key()); err != nil {
		t.Errorf("deleting a missing override: %v", err)
	}
	if err := syn.PutAck(ctx, registry.Ack{ID: "synapse-1", Revision: got.Revision}); err != nil {
		t.Fatal(err)
	}
	if acks, _ := ctl.Acks(ctx); len(acks) != 1 || acks[0].Revision != got.Revision {
		t.Fatalf("acks after update = %+v", acks)
	}
	// Acks that cannot lie: one written to outlive any session (a plain
	// node, a key without a lease) or under another synapse's name is
	// not an ack: skipped and counted, never waited on as "applied".
	acksDir := testRoot + "/acks"
	before := h.Skipped(ctl, acksDir)
	h.Plant(t, acksDir, "ghost", []byte(`{"id":"ghost","revision":999999999}`))
	h.Plant(t, acksDir, "impostor", []byte(`{"id":"synapse-1","revision":999999999}`))
	if acks, _ := ctl.Acks(ctx); len(acks) != 1 || acks[0].ID != "synapse-1" || acks[0].Revision != got.Revision {
		t.Fatalf("acks with planted ones = %+v", acks)
	}
	if n := h.Skipped(ctl, acksDir) - before; n != 2 {
		t.Errorf("planted acks skipped = %v, want 2", n)
	}
	// Acks live with their session: a synapse that is gone is not waited for.
	syn.Close()
	if acks, _ := ctl.Acks(ctx); len(acks) != 0 {
		t.Fatalf("acks after the synapse closed = %+v", acks)
	}
}

// KeptAfterSeen fails the test if a set sent after the first one holding
// name lacks it.
func (w *Watcher) KeptAfterSeen(t *testing.T, name string) {
	t.Helper()
	seen := false
	for _, s := range w.Sets {
		in := Has(name)(s)
		if seen && !in {
			t.Errorf("%s vanished from the watched set at some point: %v", name, w.Sets)
			return
		}
		seen = seen || in
	}
	if !seen {
		t.Errorf("%s never seen: %v", name, w.Sets)
	}
}

// Eventually waits up to timeout for cond, for effects that follow the
// event a test watched (a counter bumped after the write it saw).
func Eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("not within %v: %s", timeout, what)
			return
		}
	}
}

func history(t *testing.T, h Harness) {
	c := h.New(t)
	ctx := context.Background()
	for i := range 3 {
		e := registry.HistoryEntry{At: time.Now().UTC(), By: "ops@h", Action: "drain", Targets: []string{fmt.Sprintf("10.0.0.%d", i)}, Reason: "r", Revision: int64(i)}
		if err := c.AppendHistory(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.History(ctx, 2)
	if err != nil || len(got) != 2 || got[0].Targets[0] != "10.0.0.1" || got[1].Targets[0] != "10.0.0.2" {
		t.Fatalf("History(2) = %+v, %v; want the two newest, oldest first", got, err)
	}
	if err := c.AppendHistory(ctx, registry.HistoryEntry{At: time.Now(), Action: "drain", Reason: "a\nb"}); err == nil {
		t.Error("AppendHistory accepted a newline in the reason")
	}
}

func catalog(t *testing.T, h Harness) {
	ctx := context.Background()
	c := h.New(t)
	id := fmt.Sprintf("synapse-%d", time.Now().UnixNano())
	if rev, ok, err := c.CatalogRevision(ctx, id); err != nil || ok {
		t.Fatalf("CatalogRevision before any write = %d, %v, %v; want none", rev, ok, err)
	}
	var rev int64
	for _, services := range []map[string]string{
		{"web": "/services/web"},
		{"web": "/services/web", "api": "/services/api"}, // replaces the first
	} {
		var err error
		if rev, err = c.PutCatalog(ctx, registry.Catalog{ID: id, At: time.Now().UTC(), Services: services}); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok, err := c.CatalogRevision(ctx, id); err != nil || !ok || got != rev {
		t.Errorf("CatalogRevision = %d, %v, %v; want %d, the last write's", got, ok, err, rev)
	}
	c.Close()
	// Read through another session, the first one gone.
	got, err := h.New(t).Catalogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine *registry.Catalog
	for i := range got {
		if got[i].ID == id {
			mine = &got[i]
		}
	}
	if mine == nil || len(mine.Services) != 2 || mine.Services["api"] != "/services/api" {
		t.Errorf("catalog after its writer closed: %+v (all: %+v)", mine, got)
	}

	// A catalog under another synapse's name is skipped and counted: synctl
	// takes the catalog named by a live ack's ID as that synapse's.
	b := h.New(t)
	catalogDir := b.(interface{ CatalogDir() string }).CatalogDir()
	skipped0 := h.Skipped(b, catalogDir)
	impostor := fmt.Sprintf("impostor-%d", time.Now().UnixNano())
	h.Plant(t, catalogDir, impostor, []byte(`{"id":"`+id+`","at":"2026-01-01T00:00:00Z","services":{"web":"/elsewhere"}}`))
	got, err = b.Catalogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cat := range got {
		if cat.Services["web"] == "/elsewhere" {
			t.Errorf("Catalogs returned the catalog stored as %s that claims to be %s: %+v", impostor, id, cat)
		}
	}
	if n := h.Skipped(b, catalogDir) - skipped0; n != 1 {
		t.Errorf("skipped catalogs: %v, want 1 (the impostor)", n)
	}
	for _, bad := range []registry.Catalog{
		{ID: "bad id", At: time.Now(), Services: map[string]string{"web": "/x"}},
		{ID: "ok", At: time.Now(), Services: map[string]string{"web": "relative"}},
		{ID: "ok", Services: map[string]string{"web": "/x"}},
	} {
		if _, err := h.New(t).PutCatalog(ctx, bad); err == nil {
			t.Errorf("PutCatalog accepted %+v", bad)
		}
	}
}

// registrationOrder: Watch gives each instance its registration order
// (Seq), earlier registrations lower, and a record registered again comes
// after the others: leader_election and no_shuffle rely on it.
func registrationOrder(t *testing.T, h Harness) {
	reg, watch := newPair(t, h)
	d := dir(t, "/services/web/services")
	w := StartWatch(t, watch, d)
	w.WaitFor(t, 10*time.Second, "the empty first set", HasLen(0))
	ctx := context.Background()
	seqs := func(s []registry.Instance) map[string]int64 {
		m := map[string]int64{}
		for _, in := range s {
			m[in.Name] = in.Seq
		}
		return m
	}
	var regs []registry.Registration
	for i, name := range []string{"a", "b", "c"} {
		r, err := reg.Register(ctx, d, Inst("127.0.0.1", 9100+i, name))
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	got := seqs(w.WaitFor(t, 10*time.Second, "a, b and c", HasLen(3)))
	if !(0 < got["a"] && got["a"] < got["b"] && got["b"] < got["c"]) {
		t.Fatalf("Seq of a, b, c = %d, %d, %d; want increasing and > 0", got["a"], got["b"], got["c"])
	}
	if err := regs[0].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, "a gone", HasLen(2))
	if _, err := reg.Register(ctx, d, Inst("127.0.0.1", 9100, "a")); err != nil {
		t.Fatal(err)
	}
	again := seqs(w.WaitFor(t, 10*time.Second, "a back", HasLen(3)))
	if again["a"] <= again["c"] || again["b"] != got["b"] || again["c"] != got["c"] {
		t.Fatalf("after a registered again: Seq %v (before %v); want a after c, b and c unchanged", again, got)
	}
}

// overridesLatest: a synapse busy while overrides change still gets the
// set with every change (the latest), and never an older set after a
// newer one.
func overridesLatest(t *testing.T, h Harness) {
	ctl, syn := newPair(t, h)
	ctx := context.Background()
	sets := make(chan registry.OverrideSet) // read only when the test wants
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go syn.WatchOverrides(wctx, sets)
	recv := func() registry.OverrideSet {
		t.Helper()
		select {
		case s := <-sets:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no override set within 5s")
		}
		return registry.OverrideSet{}
	}
	first := recv()
	var rev int64
	for i := range 5 {
		o := registry.Override{Target: fmt.Sprintf("10.9.0.%d", i), State: registry.StateDrain, At: time.Now().UTC()}
		r, err := ctl.PutOverride(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.DeleteOverride(ctx, o.Key()) })
		rev = r
	}
	last := first.Revision
	for {
		s := recv()
		if s.Revision < last {
			t.Fatalf("set at revision %d after one at %d", s.Revision, last)
		}
		last = s.Revision
		if s.Revision >= rev {
			if n := len(s.Overrides) - len(first.Overrides); n != 5 {
				t.Fatalf("the latest set (revision %d) has %d new overrides, want 5: %+v", s.Revision, n, s.Overrides)
			}
			return
		}
	}
}
