package registrytest

import (
	"context"
	"path"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// Cutter partitions a client from its server and heals the partition
// (testserver.Proxy is one).
type Cutter interface {
	Cut()
	Restore()
}

// FaultHarness connects the fault cases to one backend: registrations that
// must reach the registry however long it is out of reach, and records put
// back when somebody else changes them.
type FaultHarness struct {
	Harness
	// NewCutOff returns a fresh client that reaches the server only through
	// the returned Cutter. The session (or lease) must outlive a cut of a
	// second or two: that is the case where a lost removal stays for good.
	NewCutOff func(t *testing.T) (registry.Backend, Cutter)
	// Delete removes a record by hand, as an operator or a buggy tool would.
	Delete func(t *testing.T, key string)
}

// RecoveryBound is how soon after the partition heals a change made while
// it lasted must be in the registry. It covers the client's reconnect
// (go-zookeeper and gRPC back off up to about a second between attempts)
// and the retry that follows.
const RecoveryBound = 3 * time.Second

// RepairBound is how soon a record changed or deleted by somebody else
// must be put back.
const RepairBound = 2 * time.Second

// RunFaults runs the fault cases.
func RunFaults(t *testing.T, h FaultHarness) {
	t.Run("DeregisterWhileCutOffLandsAfterRecovery", func(t *testing.T) { deregisterWhileCutOff(t, h) })
	t.Run("RegisterWhileCutOffLeavesNothing", func(t *testing.T) { registerWhileCutOff(t, h) })
	t.Run("RecordRewrittenOrDeletedIsPutBack", func(t *testing.T) { putBack(t, h) })
}

// A Deregister that cannot reach the registry fails (the removal is not
// confirmed), keeps trying in the background, and lands once the registry
// is reachable again; registering the instance again then makes one record,
// not two.
func deregisterWhileCutOff(t *testing.T, h FaultHarness) {
	reg, cut := h.NewCutOff(t)
	w := StartWatch(t, h.New(t), dir(t, ""))
	w.WaitFor(t, 10*time.Second, "the empty first set", HasLen(0))
	r, err := reg.Register(context.Background(), dir(t, ""), Inst("10.0.0.1", 80, "i-1"))
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "registered", Has("i-1"))

	cut.Cut()
	for range 2 { // a second call waits again: Deregister is idempotent
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := r.Deregister(ctx)
		cancel()
		if err == nil {
			t.Fatal("Deregister returned nil while the registry was out of reach: the removal cannot have been confirmed")
		}
		t.Logf("Deregister while cut off: %v", err)
	}
	cut.Restore()
	restored := time.Now()
	w.WaitFor(t, 10*time.Second, "the record removed after the partition healed", HasLen(0))
	took := time.Since(restored)
	t.Logf("removed %v after the partition healed", took)
	if took > RecoveryBound {
		t.Errorf("removed %v after the partition healed, want ≤ %v", took, RecoveryBound)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Deregister(ctx); err != nil {
		t.Errorf("Deregister after the removal landed: %v", err)
	}

	// Registered again: exactly one record.
	if _, err := reg.Register(context.Background(), dir(t, ""), Inst("10.0.0.1", 80, "i-1")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "registered again", HasLen(1))
	w.Quiet(t, 500*time.Millisecond, "after registering again (a second record?)")
}

// A Register that fails while the registry is out of reach leaves no record
// behind once it is back.
func registerWhileCutOff(t *testing.T, h FaultHarness) {
	reg, cut := h.NewCutOff(t)
	w := StartWatch(t, h.New(t), dir(t, ""))
	w.WaitFor(t, 10*time.Second, "the empty first set", HasLen(0))
	// Reach the server once, so the client has a session or lease to keep.
	if _, err := reg.Register(context.Background(), dir(t, "-warm"), Inst("10.0.0.1", 81, "warm")); err != nil {
		t.Fatal(err)
	}
	cut.Cut()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := reg.Register(ctx, dir(t, ""), Inst("10.0.0.1", 80, "i-1"))
	cancel()
	if err == nil {
		t.Fatal("Register succeeded while the registry was out of reach")
	}
	cut.Restore()
	w.Quiet(t, RecoveryBound, "after a failed Register (a record it left behind?)")
}

// A record rewritten by somebody else (another host, say) or deleted by
// hand is put back by its keeper.
func putBack(t *testing.T, h FaultHarness) {
	reg := h.New(t)
	w := StartWatch(t, h.New(t), dir(t, ""))
	w.WaitFor(t, 10*time.Second, "the empty first set", HasLen(0))
	mine := Inst("10.0.0.1", 80, "i-1")
	r, err := reg.Register(context.Background(), dir(t, ""), mine)
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "registered", Has("i-1"))
	isMine := func(s []registry.Instance) bool {
		return len(s) == 1 && s[0].Host == mine.Host && s[0].Port == mine.Port
	}

	evil, _ := Inst("10.6.6.6", 80, "i-1").Encode()
	h.Plant(t, path.Dir(r.Key()), path.Base(r.Key()), evil)
	w.WaitFor(t, 5*time.Second, "the rewritten record", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Host == "10.6.6.6" })
	changed := time.Now()
	w.WaitFor(t, RepairBound, "our record written back", isMine)
	t.Logf("rewritten record put back after %v", time.Since(changed))

	// The watcher may never show the gap (the delete and the put back can
	// reach it as one change), so the record itself is read at the end.
	h.Delete(t, r.Key())
	deleted := time.Now()
	w.WaitFor(t, RepairBound, "our record back", isMine)
	t.Logf("deleted record put back after %v", time.Since(deleted))
	w.Quiet(t, 300*time.Millisecond, "after the repairs (a write loop?)")
	want, _ := mine.Encode()
	if got := h.Raw(t, r.Key()); string(got) != string(want) {
		t.Errorf("record at %s = %s, want %s", r.Key(), got, want)
	}
}
