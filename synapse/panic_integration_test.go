package synapse

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/synctl"
)

// tenBackends starts b0..b9 on 127.0.0.11..20.
func tenBackends(t *testing.T) []registry.Instance {
	var out []registry.Instance
	for i := range 10 {
		b := testserver.StartBackend(t, fmt.Sprintf("b%d", i), fmt.Sprintf("127.0.0.%d", 11+i))
		out = append(out, inst(b, fmt.Sprintf("b%d", i)))
	}
	return out
}

// waitHAProxy waits until backend has exactly total servers, ready of them
// with no admin flag (serving) and the rest drained.
func (e *env) waitHAProxy(t *testing.T, backend string, total, ready int) {
	t.Helper()
	var got map[string]testserver.ServerState
	registrytest.Eventually(t, 15*time.Second, fmt.Sprintf("%s: %d servers, %d ready", backend, total, ready), func() bool {
		var err error
		if got, err = testserver.TryHAProxyServers(e.stats, backend); err != nil {
			return false
		}
		n := 0
		for _, s := range got {
			if s.Admin == 0 {
				n++
			}
		}
		return len(got) == total && n == ready
	})
}

// panicOf returns the /status panic entry of service.
func (e *env) panicOf(t *testing.T, service string) (PanicStatus, bool) {
	for _, p := range e.status(t).Panic {
		if p.Service == service {
			return p, true
		}
	}
	return PanicStatus{}, false
}

func runSynctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := synctl.Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }, Now: time.Now, By: "operator@test"}
	code := synctl.Main(context.Background(), args, env)
	return out.String() + errOut.String(), code
}

// Issue 11 item 4 on a real ZooKeeper and HAProxy: 80 % of a service's
// records deleted at once leave HAProxy with the threshold's share (5 of
// 10); the metrics, /status and the ack say so. The records coming back
// lift it. Deleted again, an operator's `synctl confirm` lifts it and the
// rest are removed; the confirmation is in the audit trail.
func TestPanicThresholdMassDeregistration(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	ctx := context.Background()
	insts := tenBackends(t)
	regs := make([]registry.Registration, len(insts))
	register := func(from int) {
		for i := from; i < len(insts); i++ {
			r, err := reg.Register(ctx, "/services/web", insts[i])
			if err != nil {
				t.Fatal(err)
			}
			regs[i] = r
		}
	}
	register(0)
	e := startEnv(t, envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}, Overrides: true})
	e.waitHAProxy(t, "web", 10, 10)

	// 8 of 10 records deleted at once (concurrently, as a registry wipe
	// or a bad deploy would).
	deregister := func() {
		var wg sync.WaitGroup
		for i := 2; i < 10; i++ {
			wg.Go(func() {
				if err := regs[i].Deregister(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	deregister()
	registrytest.Eventually(t, 10*time.Second, "/status: web in panic, 8 of 10 missing", func() bool {
		p, ok := e.panicOf(t, "web")
		return ok && p.Missing == 8
	})
	e.waitHAProxy(t, "web", 5, 5)
	p, _ := e.panicOf(t, "web")
	if len(p.Held) != 3 || p.Reference != 10 || p.Threshold != 50 {
		t.Errorf("/status panic: %+v", p)
	}
	if n := testutil.ToFloat64(e.m.Held.WithLabelValues("web")); n != 3 {
		t.Errorf("synapse_panic_held_backends{web} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(e.m.Panics.WithLabelValues("web")); n != 1 {
		t.Errorf("synapse_panics_total{web} = %v, want 1", n)
	}
	registrytest.Eventually(t, 5*time.Second, "the ack names the 3 held servers", func() bool {
		acks, err := reg.Acks(ctx)
		return err == nil && len(acks) == 1 && len(acks[0].Held) == 3 && strings.HasPrefix(acks[0].Held[0], "web/")
	})
	out, code := runSynctl(t, "status", "--zk", zks.Nodes[0].Addr, "--root", "/syncstack-test")
	if code != 0 || strings.Count(out, "HOLDING web/") != 3 || !strings.Contains(out, "synctl confirm web") {
		t.Errorf("synctl status (exit %d) does not show the 3 held removals:\n%s", code, out)
	}
	// Still held a while later: nothing ages a panic out.
	time.Sleep(200 * time.Millisecond) // a negative check: nothing to wait for
	e.waitHAProxy(t, "web", 5, 5)

	// The registry recovers: the records come back, the panic lifts.
	register(2)
	e.waitHAProxy(t, "web", 10, 10)
	registrytest.Eventually(t, 5*time.Second, "panic lifted", func() bool {
		_, ok := e.panicOf(t, "web")
		return !ok && testutil.ToFloat64(e.m.Held.WithLabelValues("web")) == 0
	})

	// Deleted again, and this time intended: an operator confirms.
	deregister()
	registrytest.Eventually(t, 10*time.Second, "in panic again", func() bool {
		p, ok := e.panicOf(t, "web")
		return ok && p.Missing == 8
	})
	e.waitHAProxy(t, "web", 5, 5)
	if n := testutil.ToFloat64(e.m.Panics.WithLabelValues("web")); n != 2 {
		t.Errorf("synapse_panics_total{web} = %v, want 2", n)
	}
	out, code = runSynctl(t, "confirm", "web", "--reason", "scale-in to 2", "--wait", "--zk", zks.Nodes[0].Addr, "--root", "/syncstack-test")
	if code != 0 {
		t.Fatalf("synctl confirm: exit %d:\n%s", code, out)
	}
	e.waitHAProxy(t, "web", 2, 2)
	if _, ok := e.panicOf(t, "web"); ok {
		t.Error("/status: still in panic after the confirmation")
	}
	hist, err := reg.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(h registry.HistoryEntry) bool {
		return h.Action == "confirm" && h.Reason == "scale-in to 2" && h.By == "operator@test" && slices.Equal(h.Services, []string{"web"})
	}) {
		t.Errorf("no confirm entry in the audit trail: %+v", hist)
	}
}

// The same guard against an override mass-drain written straight to the
// registry (bypassing synctl's --max-drained): 8 of 10 hosts drained
// leave 5 serving and 5 drained; clearing some drains lifts it; a
// confirmation written through the registry lets the rest go.
func TestPanicThresholdOverrideMassDrain(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ec := etcdClient(t, srv.Endpoint)
	ctx := context.Background()
	insts := tenBackends(t)
	for _, in := range insts {
		if _, err := ec.Register(ctx, "/services/web", in); err != nil {
			t.Fatal(err)
		}
	}
	e := startEnv(t, envOpts{Method: "etcd", Hosts: srv.Endpoint, Services: []string{"web"}, Overrides: true})
	e.waitHAProxy(t, "web", 10, 10)

	drain := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				o := registry.Override{Target: insts[i].Host, State: registry.StateDrain, Reason: "attack", By: "nobody", At: time.Now().UTC()}
				if _, err := ec.PutOverride(ctx, o); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	drain(2, 10)
	registrytest.Eventually(t, 10*time.Second, "/status: web in panic, 8 of 10 out", func() bool {
		p, ok := e.panicOf(t, "web")
		return ok && p.Missing == 8 && len(p.Held) == 3
	})
	e.waitHAProxy(t, "web", 10, 5) // 5 serving, 5 drained
	if n := testutil.ToFloat64(e.m.Held.WithLabelValues("web")); n != 3 {
		t.Errorf("synapse_panic_held_backends{web} = %v, want 3", n)
	}

	// Half the drains are lifted: 4 of 10 out is under the threshold.
	for i := 6; i < 10; i++ {
		if _, err := ec.DeleteOverride(ctx, registry.OverrideKey(insts[i].Host, nil, false)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitHAProxy(t, "web", 10, 6)
	registrytest.Eventually(t, 5*time.Second, "panic lifted", func() bool {
		_, ok := e.panicOf(t, "web")
		return !ok
	})

	// Drained again (within the window: the 4 still out count too), then
	// confirmed by a record written straight to the registry.
	drain(6, 10)
	registrytest.Eventually(t, 10*time.Second, "in panic again", func() bool {
		p, ok := e.panicOf(t, "web")
		return ok && p.Missing == 8
	})
	e.waitHAProxy(t, "web", 10, 5)
	exp := time.Now().Add(time.Minute).UTC()
	if _, err := ec.PutOverride(ctx, registry.Override{Target: "web", State: registry.StateConfirm, Services: []string{"web"}, Reason: "migration", By: "op", At: time.Now().UTC(), ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	e.waitHAProxy(t, "web", 10, 2)
	if _, ok := e.panicOf(t, "web"); ok {
		t.Error("/status: still in panic after the confirmation")
	}
}

// A synapse restarted in the middle of a panic holds the same removals:
// its state cache records the panic, so the restart does not let go what
// the running synapse held.
func TestPanicSurvivesRestart(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg := zkClient(t, zks.Servers())
	ctx := context.Background()
	insts := tenBackends(t)
	var regs []registry.Registration
	for _, in := range insts {
		r, err := reg.Register(ctx, "/services/web", in)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	o := envOpts{Method: "zookeeper", Hosts: zks.Nodes[0].Addr, Services: []string{"web"}}
	e := startEnv(t, o)
	e.waitHAProxy(t, "web", 10, 10)
	for _, r := range regs[2:] {
		if err := r.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	registrytest.Eventually(t, 10*time.Second, "in panic, 8 missing", func() bool {
		p, ok := e.panicOf(t, "web")
		return ok && p.Missing == 8
	})
	e.waitHAProxy(t, "web", 5, 5)
	cachePath := filepath.Join(e.dir, "synapse-state.json")
	registrytest.Eventually(t, 5*time.Second, "the panic in the state cache", func() bool {
		c, err := loadCache(cachePath)
		return err == nil && c != nil && len(c.Panic["web"]) == 8 && len(c.Sets["web"]) == 2
	})
	e.stop()

	o.dir, o.ports = e.dir, e.ports
	e2 := startEnv(t, o)
	registrytest.Eventually(t, 10*time.Second, "the restarted synapse in panic, from the registry", func() bool {
		st := e2.status(t)
		p, ok := e2.panicOf(t, "web")
		return ok && p.Missing == 8 && len(p.Held) == 3 && st.Watched["web"]
	})
	e2.waitHAProxy(t, "web", 5, 5)
}
