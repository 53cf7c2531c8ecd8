package haproxy

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
)

// stays is a bounded negative check: it fails as soon as cond stops
// holding during d. It is for what must NOT happen after a change (a
// second reload, say): a condition to wait for uses waitFor.
func stays(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatalf("within %v of the change: %s no longer holds", d, what)
		}
	}
}

// stot is the total sessions HAProxy counted on backend/server (`show
// stat`): a request it served, whether or not it is still in flight.
func (r *rig) stot(t *testing.T, id string) int {
	t.Helper()
	be, srv, _ := strings.Cut(id, "/")
	out, err := r.g.rt.Run(context.Background(), "show stat")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out[0], "\n") {
		f := strings.Split(l, ",")
		if len(f) > 7 && f[0] == be && f[1] == srv {
			n, _ := strconv.Atoi(f[7])
			return n
		}
	}
	return 0
}

// applyWhenDue applies st, and when the generator defers it (a reload
// within reload_min_interval) applies it again at the time the
// generator's own DeferredError names: the second try must go through.
func (r *rig) applyWhenDue(t *testing.T, st generators.State) {
	t.Helper()
	err := r.g.Apply(context.Background(), st)
	var deferred *generators.DeferredError
	if errors.As(err, &deferred) {
		time.Sleep(time.Until(deferred.At))
		err = r.g.Apply(context.Background(), st)
	}
	if err != nil {
		t.Fatalf("Apply (at the time the generator named): %v", err)
	}
}

// batches is how many runtime command batches the generator sent (the
// samples of synapse_haproxy_runtime_batch_seconds).
func (r *rig) batches(t *testing.T) uint64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.g.m.RuntimeBatchSeconds)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %v, %d families", err, len(mfs))
	}
	return mfs[0].GetMetric()[0].GetHistogram().GetSampleCount()
}

// restartDone waits until the generator counted n restarts of its HAProxy
// and the last one is done (a restart holds the apply lock from the
// moment it is counted until HAProxy runs the state), and succeeded.
func (r *rig) restartDone(t *testing.T, n float64) {
	t.Helper()
	waitFor(t, func() bool { return testutil.ToFloat64(r.g.m.Restarts) >= n }, "HAProxy to be restarted")
	r.g.mu.Lock()
	attached := r.g.proc.attached
	r.g.mu.Unlock()
	if !attached {
		t.Fatal("the restart failed")
	}
}
