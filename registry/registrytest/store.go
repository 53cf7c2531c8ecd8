package registrytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// StoreHarness connects the store suite to one backend's registry.Store
// and its running server.
type StoreHarness struct {
	// New returns the store of a fresh client (its own session or lease)
	// and a function that closes that client; the harness also closes it
	// in t.Cleanup.
	New func(t *testing.T) (registry.Store, func())
	// Skipped reads the skipped-record counter of s's client for dir.
	Skipped func(s registry.Store, dir string) float64
}

// RunStore runs the store suite: the behaviour registry.Records relies
// on, so that overrides, acks, catalogs and history behave the same on
// every backend.
func RunStore(t *testing.T, h StoreHarness) {
	t.Run("PutListDelete", func(t *testing.T) { storePutListDelete(t, h) })
	t.Run("ListsInNameOrder", func(t *testing.T) { storeSorted(t, h) })
	t.Run("RejectsBadNames", func(t *testing.T) { storeRejectsBadNames(t, h) })
	t.Run("AppendKeepsTheNewest", func(t *testing.T) { storeAppend(t, h) })
	t.Run("KeepIsEphemeral", func(t *testing.T) { storeKeep(t, h) })
	t.Run("Watch", func(t *testing.T) { storeWatch(t, h) })
}

func names(l registry.Listing) []string {
	var n []string
	for _, r := range l.Records {
		n = append(n, r.Name)
	}
	return n
}

func list(t *testing.T, s registry.Store, dir string, opts registry.ListOptions) registry.Listing {
	t.Helper()
	l, err := s.List(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("List(%s, %+v): %v", dir, opts, err)
	}
	return l
}

// storePutListDelete: persistent records, replaced in place, listed in name
// order by any client, outliving their writer; revisions that grow with
// every write and cover removals.
func storePutListDelete(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, closeWriter := h.New(t)
	reader, _ := h.New(t)
	d := dir(t, "/records")
	if l := list(t, s, d, registry.ListOptions{Deletions: true}); len(l.Records) != 0 {
		t.Fatalf("a missing directory lists %v, want nothing", names(l))
	}
	var revs []int64
	for _, w := range []struct{ name, data string }{{"b", "b1"}, {"a", "a1"}, {"a", "a2"}} {
		rev, err := s.Put(ctx, d, w.name, []byte(w.data))
		if err != nil {
			t.Fatalf("Put(%s): %v", w.name, err)
		}
		if len(revs) > 0 && rev <= revs[len(revs)-1] {
			t.Errorf("Put(%s) = revision %d, not after the previous write's %d", w.name, rev, revs[len(revs)-1])
		}
		revs = append(revs, rev)
	}
	l := list(t, reader, d, registry.ListOptions{})
	if got := names(l); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List = %v, want [a b] (sorted, a replaced in place)", got)
	}
	a, b := l.Records[0], l.Records[1]
	if string(a.Data) != "a2" || string(b.Data) != "b1" || a.Ephemeral || b.Ephemeral {
		t.Errorf("records = %+v, want a=a2 and b=b1, persistent", l.Records)
	}
	if a.Rev != revs[2] || b.Rev != revs[0] {
		t.Errorf("record revisions a=%d b=%d, want those of their last writes %d and %d", a.Rev, b.Rev, revs[2], revs[0])
	}
	for _, want := range []struct {
		name string
		rev  int64
	}{{"a", revs[2]}, {"b", revs[0]}} {
		if rev, ok, err := reader.Revision(ctx, d, want.name); err != nil || !ok || rev != want.rev {
			t.Errorf("Revision(%s) = %d, %v, %v; want %d, the revision Put returned for its last write", want.name, rev, ok, err, want.rev)
		}
	}
	if l.Rev < revs[2] {
		t.Errorf("listing revision %d is before the last write's %d", l.Rev, revs[2])
	}

	del, err := s.Delete(ctx, d, "a")
	if err != nil || del <= revs[2] {
		t.Fatalf("Delete(a) = %d, %v; want a revision after %d", del, err, revs[2])
	}
	l = list(t, reader, d, registry.ListOptions{Deletions: true})
	if got := names(l); !slices.Equal(got, []string{"b"}) || l.Rev < del {
		t.Errorf("after Delete(a): %v at revision %d, want [b] at ≥ %d", got, l.Rev, del)
	}
	if _, err := s.Delete(ctx, d, "a"); err != nil {
		t.Errorf("deleting a missing record: %v", err)
	}
	if rev, ok, err := reader.Revision(ctx, d, "a"); err != nil || ok {
		t.Errorf("Revision of a deleted record = %d, %v, %v; want not found", rev, ok, err)
	}
	if rev, ok, err := reader.Revision(ctx, d+"-missing", "a"); err != nil || ok {
		t.Errorf("Revision in a missing directory = %d, %v, %v; want not found", rev, ok, err)
	}

	closeWriter()
	if got := names(list(t, reader, d, registry.ListOptions{})); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after the writer closed: %v, want [b] (persistent)", got)
	}
}

// storeSorted: List returns records in name order however the server
// keeps them (ZooKeeper lists children in hash order).
func storeSorted(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, _ := h.New(t)
	d := dir(t, "/records")
	var want []string
	for i := range 20 {
		name := fmt.Sprintf("r%02d", (i*7)%20) // written out of order
		if _, err := s.Put(ctx, d, name, []byte("x")); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	slices.Sort(want)
	if got := names(list(t, s, d, registry.ListOptions{})); !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	if got := names(list(t, s, d, registry.ListOptions{Newest: 3})); !slices.Equal(got, want[17:]) {
		t.Errorf("List newest 3 = %v, want %v", got, want[17:])
	}
}

func storeRejectsBadNames(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, _ := h.New(t)
	d := dir(t, "/records")
	for _, name := range []string{"", ".", "..", "a/b", "../x", "a#b", "a\nb", "a\x00b"} {
		if _, err := s.Put(ctx, d, name, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded", name)
		}
		if _, _, err := s.Revision(ctx, d, name); err == nil {
			t.Errorf("Revision(%q) succeeded", name)
		}
		if _, err := s.Delete(ctx, d, name); err == nil {
			t.Errorf("Delete(%q) succeeded", name)
		}
		if err := s.Keep(ctx, d, name, []byte("x")); err == nil {
			t.Errorf("Keep(%q) succeeded", name)
		}
	}
	if l := list(t, s, dir(t, ""), registry.ListOptions{}); len(l.Records) != 0 {
		t.Errorf("refused names wrote %v", names(l))
	}
}

// storeAppend: appended records come back oldest first, and only the
// newest keep of them stay.
func storeAppend(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, _ := h.New(t)
	d := dir(t, "/log")
	for i := range 5 {
		if err := s.Append(ctx, d, fmt.Appendf(nil, "e%d", i), 3); err != nil {
			t.Fatal(err)
		}
	}
	data := func(l registry.Listing) []string {
		var out []string
		for _, r := range l.Records {
			out = append(out, string(r.Data))
		}
		return out
	}
	if got := data(list(t, s, d, registry.ListOptions{})); !slices.Equal(got, []string{"e2", "e3", "e4"}) {
		t.Errorf("after 5 appends keeping 3: %v, want [e2 e3 e4]", got)
	}
	if got := data(list(t, s, d, registry.ListOptions{Newest: 2})); !slices.Equal(got, []string{"e3", "e4"}) {
		t.Errorf("the newest 2: %v, want [e3 e4]", got)
	}
}

// storeKeep: an ephemeral record is visible to others as ephemeral, is
// updated in place, and goes with its client.
func storeKeep(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, closeWriter := h.New(t)
	reader, _ := h.New(t)
	d := dir(t, "/live")
	for _, data := range []string{"v1", "v2"} {
		if err := s.Keep(ctx, d, "me", []byte(data)); err != nil {
			t.Fatalf("Keep(%s): %v", data, err)
		}
		var l registry.Listing
		Eventually(t, 5*time.Second, "the record at "+data, func() bool {
			l = list(t, reader, d, registry.ListOptions{})
			return len(l.Records) == 1 && string(l.Records[0].Data) == data
		})
		if len(l.Records) == 1 && !l.Records[0].Ephemeral {
			t.Errorf("a kept record lists as persistent: %+v", l.Records[0])
		}
	}
	closeWriter()
	if l := list(t, reader, d, registry.ListOptions{}); len(l.Records) != 0 {
		t.Errorf("after its client closed: %v, want nothing", names(l))
	}
}

// storeWatch: a first snapshot (empty), then one per change, with a
// revision at least that of the change; records decode refuses are left
// out and counted.
func storeWatch(t *testing.T, h StoreHarness) {
	ctx := context.Background()
	s, _ := h.New(t)
	writer, _ := h.New(t)
	d := dir(t, "/watched")
	decode := func(name string, data []byte) (any, error) {
		if string(data) == "bad" {
			return nil, errors.New("bad record")
		}
		return name + "=" + string(data), nil
	}
	snaps := make(chan registry.Snapshot)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Watch(wctx, d, decode, snaps) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v after its context ended", err)
		}
	})
	values := func(s registry.Snapshot) []string {
		var out []string
		for _, v := range s.Values {
			out = append(out, v.(string))
		}
		slices.Sort(out)
		return out
	}
	next := func(what string, rev int64, want []string) registry.Snapshot {
		t.Helper()
		timeout := time.After(5 * time.Second)
		var seen []registry.Snapshot
		for {
			select {
			case snap := <-snaps:
				seen = append(seen, snap)
				if snap.Rev >= rev && slices.Equal(values(snap), want) {
					return snap
				}
			case <-timeout:
				t.Fatalf("no snapshot with %s (%v at revision ≥ %d) within 5s; seen %+v", what, want, rev, seen)
			}
		}
	}
	next("nothing", 0, nil)
	rev, err := writer.Put(ctx, d, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	next("a", rev, []string{"a=1"})

	before := h.Skipped(s, d)
	rev, err = writer.Put(ctx, d, "b", []byte("bad"))
	if err != nil {
		t.Fatal(err)
	}
	next("the bad record left out", rev, []string{"a=1"})
	if n := h.Skipped(s, d) - before; n != 1 {
		t.Errorf("bad records skipped = %v, want 1", n)
	}
	rev, err = writer.Put(ctx, d, "b", []byte("2"))
	if err != nil {
		t.Fatal(err)
	}
	next("b fixed", rev, []string{"a=1", "b=2"})
	rev, err = writer.Delete(ctx, d, "a")
	if err != nil {
		t.Fatal(err)
	}
	next("a removed", rev, []string{"b=2"})
}
