package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

type rig struct {
	g    *Generator
	cfg  *Config
	dir  string
	port int
}

// newRig makes a generator that manages its own HAProxy in a temp dir.
func newRig(t *testing.T, services map[string]*ServiceConfig) *rig {
	t.Helper()
	return newRigWith(t, services, nil)
}

// newRigWith is newRig with edit applied to the config before Finalize.
func newRigWith(t *testing.T, services map[string]*ServiceConfig, edit func(*Config)) *rig {
	t.Helper()
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	cfg := &Config{
		Global:            []string{"maxconn 1000"},
		Defaults:          []string{"mode http", "timeout connect 1s", "timeout client 10s", "timeout server 10s", "retries 2", "option redispatch"},
		ConfigFilePath:    filepath.Join(dir, "haproxy.cfg"),
		SocketFilePath:    filepath.Join(dir, "stats.sock"),
		MasterSocketPath:  filepath.Join(dir, "master.sock"),
		PIDFile:           filepath.Join(dir, "haproxy.pid"),
		Manage:            true,
		ReloadMinInterval: confutil.Duration(200 * time.Millisecond),
		RemovalGrace:      confutil.Duration(time.Second),
	}
	if edit != nil {
		edit(cfg)
	}
	var p confutil.Problems
	cfg.Finalize(&p)
	for name, s := range services {
		s.Finalize(name, cfg, &p)
	}
	if err := p.Err(""); err != nil {
		t.Fatal(err)
	}
	testserver.KillHAProxyAtCleanup(t, cfg.PIDFile)
	r := &rig{cfg: cfg, dir: dir}
	r.use(t, New(cfg, services, nil, NewMetrics(nil)))
	return r
}

// use makes g the rig's generator (as a restarted synapse makes a new
// one); its watchdog ends before HAProxy is killed at cleanup, or it would
// start HAProxy again in a removed directory.
func (r *rig) use(t *testing.T, g *Generator) {
	r.g = g
	t.Cleanup(func() { g.Close() })
}

func backend(b *testserver.Backend, name string) generators.Backend {
	return generators.Backend{Instance: registry.Instance{Host: b.Host, Port: b.Port, Name: name}, State: registry.StateReady}
}

func state(svc string, bs ...generators.Backend) generators.State {
	generators.SortBackends(bs)
	return generators.State{Services: generators.ServicesOf(map[string]generators.Service{svc: {Backends: bs}})}
}

func (r *rig) apply(t *testing.T, st generators.State) {
	t.Helper()
	if err := r.g.Apply(context.Background(), st); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func (r *rig) pid(t *testing.T) int {
	t.Helper()
	pid, err := r.g.WorkerPID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (r *rig) reloads() float64 {
	var n float64
	for _, why := range ReloadReasons {
		n += testutil.ToFloat64(r.g.m.Reloads.WithLabelValues(string(why)))
	}
	return n
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// spread sends n requests and counts the answers by backend.
func spread(t *testing.T, url string, n int) map[string]int {
	out := map[string]int{}
	for range n {
		out[get(t, url)]++
	}
	return out
}

func TestRuntimeChangesWithoutReload(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http", "balance roundrobin"}}})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	r.apply(t, state("web", backend(a, "a")))
	if got := get(t, url); got != "a" {
		t.Fatalf("got %q", got)
	}
	// The config names every backend: owner and group only; the sockets
	// that change HAProxy: owner only.
	for f, want := range map[string]os.FileMode{"haproxy.cfg": 0o640, "haproxy.cfg.loaded": 0o640, "stats.sock": 0o600, "master.sock": 0o600} {
		if fi, err := os.Stat(filepath.Join(r.dir, f)); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f, fi.Mode().Perm(), want)
		}
	}
	pid := r.pid(t)
	reloads := r.reloads()

	// A new backend: added live, in one batch of commands.
	batches := r.batches(t)
	r.apply(t, state("web", backend(a, "a"), backend(b, "b")))
	if n := r.batches(t) - batches; n != 1 {
		t.Errorf("%d runtime batches for one change, want 1", n)
	}
	if got := spread(t, url, 20); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("after adding b: %v", got)
	}
	// The file carries every server, so a reload would reproduce the state.
	r.g.Flush()
	cfg, _ := os.ReadFile(r.cfg.ConfigFilePath)
	if !strings.Contains(string(cfg), "server b_127.0.0.12:") {
		t.Errorf("haproxy.cfg lacks server b:\n%s", cfg)
	}

	// Weight: live.
	w := 3
	bw := backend(b, "b")
	bw.Weight = &w
	r.apply(t, state("web", backend(a, "a"), bw))
	out, err := r.g.rt.Run(context.Background(), "show servers state web")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := parseServersState(out[0])
	if st["web"][bw.ServerName()].Weight != 3 {
		t.Errorf("weight not applied: %+v", st["web"])
	}

	// Drain: no new requests.
	bw.State = registry.StateDrain
	batches = r.batches(t)
	r.apply(t, state("web", backend(a, "a"), bw))
	if n := r.batches(t) - batches; n != 1 {
		t.Errorf("%d runtime batches for a drain, want 1", n)
	}
	if got := spread(t, url, 20); got["b"] != 0 {
		t.Errorf("drained b still served %d requests", got["b"])
	}
	// Removal: gone.
	r.apply(t, state("web", backend(b, "b")))
	if got := spread(t, url, 20); got["a"] != 0 || got["b"] != 20 {
		t.Errorf("after removing a: %v", got)
	}
	if p := r.pid(t); p != pid {
		t.Errorf("worker PID changed from %d to %d: a reload happened", pid, p)
	}
	if n := r.reloads() - reloads; n != 0 {
		t.Errorf("%v reloads for membership, weight and drain changes, want 0", n)
	}
	// Idempotent: the same state again sends no command (once the
	// removal of a, which may wait for its idle connections, is done).
	for at := r.g.RetryAt(); !at.IsZero(); at = r.g.RetryAt() {
		time.Sleep(time.Until(at))
		r.apply(t, state("web", backend(b, "b")))
	}
	ops := testutil.CollectAndCount(r.g.m.RuntimeOps)
	before := testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues("set server", "ok"))
	r.apply(t, state("web", backend(b, "b")))
	if after := testutil.ToFloat64(r.g.m.RuntimeOps.WithLabelValues("set server", "ok")); after != before || testutil.CollectAndCount(r.g.m.RuntimeOps) != ops {
		t.Error("applying the same state again sent commands")
	}
}

func TestNewServiceReloadsOnceWithoutFailedRequests(t *testing.T) {
	webPort, apiPort := testserver.FreePort(t), testserver.FreePort(t)
	services := map[string]*ServiceConfig{"web": {Port: webPort, BindAddress: "127.0.0.1"}}
	r := newRig(t, services)
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	r.apply(t, state("web", backend(a, "a")))
	pid := r.pid(t)

	load := testserver.StartLoad(fmt.Sprintf("http://127.0.0.1:%d/", webPort), 4, 5*time.Millisecond)
	stopLoad := sync.OnceFunc(load.Stop)
	defer stopLoad()
	// The load runs through HAProxy before the reload: HAProxy counted
	// its requests on the server, and they were answered.
	aID := "web/" + backend(a, "a").ServerName()
	waitFor(t, func() bool { return r.stot(t, aID) >= 20 && load.OK.Load() >= 20 }, "the load to be served by HAProxy")

	// A new generator with one more service, as synapse makes on SIGHUP.
	api := &ServiceConfig{Port: apiPort, BindAddress: "127.0.0.1"}
	var p confutil.Problems
	api.Finalize("api", r.cfg, &p)
	m := r.g.m
	r.use(t, New(r.cfg, map[string]*ServiceConfig{"web": services["web"], "api": api}, nil, m))
	st := state("web", backend(a, "a"))
	st.Services = st.Services.With("api", generators.Service{Backends: []generators.Backend{backend(a, "a")}})
	before := r.reloads()
	r.apply(t, st)
	newPID := r.pid(t)
	if newPID == pid {
		t.Error("worker PID unchanged: the new service was not loaded")
	}
	// The load goes on through the new worker (its counters start at 0).
	okAt := load.OK.Load()
	waitFor(t, func() bool { return r.stot(t, aID) >= 20 && load.OK.Load() >= okAt+20 }, "the new worker to serve the load")
	// Exactly one reload: none follows (a second reload would change the
	// worker PID, or count).
	stays(t, 300*time.Millisecond, func() bool {
		p, err := r.g.WorkerPID(context.Background()) // refused: the master re-executes for a reload
		return err == nil && p == newPID && r.reloads()-before == 1
	}, "one reload, the same new worker")
	stopLoad()
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", apiPort)); got != "a" {
		t.Errorf("new service answered %q", got)
	}
	if f := load.Failed.Load(); f != 0 || load.OK.Load() < 50 {
		t.Errorf("during the reload: %d ok, %d failed: %v", load.OK.Load(), f, load.Failures())
	}
	// Applying again changes nothing.
	r.apply(t, st)
	if n := r.reloads() - before; n != 1 {
		t.Errorf("%v reloads after applying the same state again", n)
	}
}

func TestInvalidConfigKeepsTheOldFile(t *testing.T) {
	port := testserver.FreePort(t)
	svc := &ServiceConfig{Port: port, BindAddress: "127.0.0.1"}
	r := newRig(t, map[string]*ServiceConfig{"web": svc})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	r.apply(t, state("web", backend(a, "a")))
	good, _ := os.ReadFile(r.cfg.ConfigFilePath)

	bad := *svc
	bad.Listen = []string{"no-such-directive here"}
	m := r.g.m
	r.use(t, New(r.cfg, map[string]*ServiceConfig{"web": &bad}, nil, m))
	err := r.g.Apply(context.Background(), state("web", backend(a, "a")))
	if err == nil || !strings.Contains(err.Error(), "haproxy -c") {
		t.Fatalf("Apply with an invalid config = %v, want a validation error", err)
	}
	if now, _ := os.ReadFile(r.cfg.ConfigFilePath); string(now) != string(good) {
		t.Error("the invalid config replaced the file")
	}
	if n := testutil.ToFloat64(r.g.m.ValidationFailures); n != 1 {
		t.Errorf("validation failures = %v", n)
	}
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); got != "a" {
		t.Errorf("HAProxy stopped serving: %q", got)
	}
}

func TestStaticBalanceReloadsRateLimited(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", Listen: []string{"balance static-rr"}}})
	r.cfg.ReloadMinInterval = confutil.Duration(time.Second)
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	r.apply(t, state("web", backend(a, "a")))
	before := r.reloads()
	r.apply(t, state("web", backend(a, "a"), backend(b, "b")))
	if n := r.reloads() - before; n != 1 {
		t.Fatalf("static-rr membership change: %v reloads, want 1", n)
	}
	// A second change within reload_min_interval is deferred, then applied.
	err := r.g.Apply(context.Background(), state("web", backend(b, "b")))
	var deferred *generators.DeferredError
	if !errors.As(err, &deferred) {
		t.Fatalf("second reload within the interval: %v, want generators.DeferredError", err)
	}
	time.Sleep(time.Until(deferred.At))
	r.apply(t, state("web", backend(b, "b")))
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 10); got["a"] != 0 {
		t.Errorf("a still served after the deferred reload: %v", got)
	}
}

func TestDynamicBalance(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  bool
	}{
		{nil, true},
		{[]string{"balance leastconn"}, true},
		{[]string{"balance static-rr"}, false},
		{[]string{"balance source"}, false},
		{[]string{"balance source", "hash-type consistent"}, true},
		{[]string{"balance uri", "hash-type map-based"}, false},
	} {
		if got := dynamicBalance(tc.lines); got != tc.want {
			t.Errorf("dynamicBalance(%q) = %v", tc.lines, got)
		}
	}
}

// Without the runtime API (do_socket: false), a membership change is a
// reload of the full config, as Airbnb's synapse does it.
func TestWithoutSocketEveryChangeReloads(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1"}})
	off := false
	r.cfg.DoSocket = &off
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	r.apply(t, state("web", backend(a, "a")))
	before := r.reloads()
	r.applyWhenDue(t, state("web", backend(a, "a"), backend(b, "b")))
	if n := r.reloads() - before; n != 1 {
		t.Errorf("%v reloads, want 1", n)
	}
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 20); got["b"] == 0 {
		t.Errorf("b not served after the reload: %v", got)
	}
}

// A removed server with a request in flight goes to maint at once and is
// deleted when the request ends, without another state change: the
// generator asks for the retry (generators.Retrier). A request that
// outlasts removal_grace is cut, and the server deleted.
func TestRemovalWaitsForConnectionsThenFinishes(t *testing.T) {
	port := testserver.FreePort(t)
	// Without http-reuse never, the idle server connection a finished
	// request leaves in HAProxy's pool also blocks `del server`, until
	// HAProxy's purge closes it: ~15 s on 2.6 (three pool-purge-delay
	// rounds, measured), retried the same way; not waited for here.
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http", "balance roundrobin", "http-reuse never"}}})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	servers := func() map[string]testserver.ServerState {
		t.Helper()
		got, err := testserver.TryHAProxyServers(r.cfg.SocketFilePath, "web")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// retryUntilGone applies the same state whenever the generator asks,
	// as synapse does, until the server is gone.
	retryUntilGone := func(st generators.State, name string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < limit {
			if _, ok := servers()[name]; !ok {
				return time.Since(start)
			}
			at := r.g.RetryAt()
			if at.IsZero() {
				t.Fatalf("%s still in HAProxy and the generator asks for no retry", name)
			}
			time.Sleep(time.Until(at))
			r.apply(t, st)
		}
		t.Fatalf("%s still in HAProxy after %v: %+v", name, limit, servers())
		return 0
	}

	for _, tc := range []struct {
		name      string
		sleep     time.Duration // the request in flight on b
		wantOK    bool          // it completes (within the grace) or is cut
		minRemove time.Duration
	}{
		{"RequestEndsWithinGrace", 600 * time.Millisecond, true, 300 * time.Millisecond},
		{"RequestOutlastsGrace", 5 * time.Second, false, 800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.apply(t, state("web", backend(b, "b")))
			done := make(chan error, 1)
			go func() {
				c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Get(url + "?sleep=" + tc.sleep.String())
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != "b" {
						err = fmt.Errorf("%d %q", resp.StatusCode, body)
					}
				}
				done <- err
			}()
			bName := backend(b, "b").ServerName()
			// The request reaches b: HAProxy counts it on the server.
			waitFor(t, func() bool { return r.scur(t, "web/"+bName) >= 1 }, "the request to be in flight on b")
			only := state("web", backend(a, "a"))
			r.apply(t, only)
			if s, ok := servers()[bName]; !ok || s.Admin&1 == 0 {
				t.Fatalf("b with a request in flight: %+v, want it kept in maint", s)
			}
			took := retryUntilGone(only, bName, 10*time.Second)
			t.Logf("b deleted %v after its removal", took)
			if took < tc.minRemove {
				t.Errorf("b deleted after %v, before its request could end", took)
			}
			err := <-done
			if tc.wantOK && err != nil {
				t.Errorf("the request in flight failed: %v", err)
			}
			if !tc.wantOK && err == nil {
				t.Error("a request longer than removal_grace was not cut")
			}
			if at := r.g.RetryAt(); !at.IsZero() {
				t.Errorf("removal done, yet a retry is asked for at %v", at)
			}
			if got := get(t, url); got != "a" {
				t.Errorf("after the removal: %q", got)
			}
		})
	}
}

// A synapse restarted while HAProxy kept running (and the registry is
// down) has only its cache: the generator leaves the servers as HAProxy
// has them, and the file it writes carries each of them once.
func TestRestartWithCacheKeepsRunningServers(t *testing.T) {
	port := testserver.FreePort(t)
	svc := &ServiceConfig{Port: port, BindAddress: "127.0.0.1"}
	r := newRig(t, map[string]*ServiceConfig{"web": svc})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	r.apply(t, state("web", backend(a, "a"), backend(b, "b"), backend(c, "c")))
	r.g.Flush()
	pid := r.pid(t)

	// A new generator, as a restarted synapse makes; its cache is older
	// than HAProxy's state (b was added after it was written).
	m := r.g.m
	r.use(t, New(r.cfg, map[string]*ServiceConfig{"web": svc}, nil, m))
	cached := state("web", backend(a, "a"), backend(c, "c"))
	cached.Services = cached.Services.With("web", generators.Service{Backends: cached.Services.Get("web").Backends, Cached: true})
	r.apply(t, cached)
	r.g.Flush()
	if n := testutil.ToFloat64(m.ValidationFailures); n != 0 {
		t.Errorf("%v rendered configs rejected by haproxy -c", n)
	}
	cfg, _ := os.ReadFile(r.cfg.ConfigFilePath)
	for _, be := range []*testserver.Backend{a, b, c} {
		name := backend(be, be.ID).ServerName()
		if n := strings.Count(string(cfg), "server "+name+" "); n != 1 {
			t.Errorf("server %s appears %d times in haproxy.cfg, want 1:\n%s", name, n, cfg)
		}
	}
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30); got["a"] == 0 || got["b"] == 0 || got["c"] == 0 {
		t.Errorf("HAProxy's servers changed on a cache-only restart: %v", got)
	}
	if p := r.pid(t); p != pid {
		t.Errorf("worker %d → %d: the restart reloaded HAProxy", pid, p)
	}
	// Once the watcher answers, its set is applied at runtime.
	r.apply(t, state("web", backend(a, "a"), backend(c, "c")))
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 20); got["b"] != 0 {
		t.Errorf("b still served after the registry answered without it: %v", got)
	}
}

// Without a master socket, reloads run reload_command and are confirmed by
// a new process answering the stats socket; a command that fails, or that
// loads nothing, is an error and the running HAProxy keeps serving.
func TestReloadCommand(t *testing.T) {
	webPort, apiPort := testserver.FreePort(t), testserver.FreePort(t)
	web := &ServiceConfig{Port: webPort, BindAddress: "127.0.0.1"}
	r := newRig(t, map[string]*ServiceConfig{"web": web})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	r.apply(t, state("web", backend(a, "a"))) // starts HAProxy (-W -S)

	api := &ServiceConfig{Port: apiPort, BindAddress: "127.0.0.1"}
	var p confutil.Problems
	api.Finalize("api", r.cfg, &p)
	both := state("web", backend(a, "a"))
	both.Services = both.Services.With("api", generators.Service{Backends: []generators.Backend{backend(a, "a")}})

	for _, tc := range []struct {
		name    string
		command string
		wantErr string
	}{
		{"Fails", "echo no permission >&2; exit 3", "no permission"},
		{"LoadsNothing", "true", "still served by PID"},
		{"MasterWorkerSignal", "kill -USR2 $(cat " + r.cfg.PIDFile + ")", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := *r.cfg
			cfg.MasterSocketPath, cfg.ReloadCommand, cfg.Manage = "", tc.command, false
			m := NewMetrics(nil)
			g := New(&cfg, map[string]*ServiceConfig{"web": web, "api": api}, nil, m)
			g.proc.confirmTimeout = 2 * time.Second
			err := g.Apply(context.Background(), both)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply = %v, want an error with %q", err, tc.wantErr)
				}
				if n := testutil.ToFloat64(m.ReloadFailures); n != 1 {
					t.Errorf("reload failures = %v, want 1", n)
				}
				if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", webPort)); got != "a" {
					t.Errorf("web after a failed reload: %q", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", apiPort)); got != "a" {
				t.Errorf("the new service after reload_command: %q", got)
			}
			// The file already had api (the failed reloads wrote it); the
			// mark of the last confirmed load tells it never ran.
			if n := testutil.ToFloat64(m.Reloads.WithLabelValues("structure")); n != 1 {
				t.Errorf("reloads = %v, want 1", n)
			}
		})
	}
}

// A managed HAProxy that dies (kill -9 of master and workers) is started
// again with the current state: by the watchdog when nothing changes, at
// once by the next Apply otherwise. Drained servers stay drained.
func TestManagedHAProxyRestarted(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1"}})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	drained := backend(b, "b")
	drained.State = registry.StateDrain
	st := state("web", backend(a, "a"), drained)
	r.apply(t, st)
	pid := r.pid(t)

	// Nothing changes: the watchdog notices.
	testserver.KillHAProxy(r.cfg.PIDFile)
	killed := time.Now()
	var got map[string]int
	// Back means the watchdog's restart is done, not merely that the new
	// master answers: killing it again while the restart still waits for
	// its sockets is another test (TestHAProxyDiesWhileStarting).
	r.restartDone(t, 1)
	t.Logf("HAProxy back %v after kill -9 (watchdog every %v)", time.Since(killed), watchdogEvery)
	if got = spread(t, url, 10); got["a"] != 10 {
		t.Errorf("after the restart: %v, want a only (b drained)", got)
	}
	if p := r.pid(t); p == pid {
		t.Error("worker PID unchanged: not restarted")
	}
	if n := testutil.ToFloat64(r.g.m.Restarts); n != 1 {
		t.Errorf("restarts = %v, want 1", n)
	}

	// Killed again, then a change: Apply starts it at once.
	testserver.KillHAProxy(r.cfg.PIDFile)
	r.apply(t, state("web", backend(a, "a"), drained, backend(c, "c")))
	if got = spread(t, url, 20); got["a"] == 0 || got["c"] == 0 || got["b"] != 0 {
		t.Errorf("after the second restart: %v", got)
	}
	if n := testutil.ToFloat64(r.g.m.Restarts); n != 2 {
		t.Errorf("restarts = %v, want 2", n)
	}
}

// The options read back from a rendered file are those the servers were
// added with, whatever their state: a restarted synapse must not replace
// (delete and add, cutting connections) a drained or maint server.
func TestServerOptionsRoundTrip(t *testing.T) {
	w := 3
	ready := generators.Backend{Instance: registry.Instance{Host: "10.0.0.1", Port: 80, Name: "a", Weight: &w, HAProxyServerOptions: "maxconn 10"}, State: registry.StateReady}
	drained, maint := ready, ready
	drained.Name, drained.State = "b", registry.StateDrain
	maint.Name, maint.State = "c", registry.StateMaint
	zero := 0
	zeroWeight := ready
	zeroWeight.Name, zeroWeight.Weight, zeroWeight.HAProxyServerOptions = "d", &zero, ""
	zeroDrained := zeroWeight
	zeroDrained.Name, zeroDrained.State = "e", registry.StateDrain
	svc := &ServiceConfig{Port: 8080, BindAddress: "127.0.0.1", ServerOptions: confutil.StringOrList{"check"}}
	cfg := &Config{ConfigFilePath: "/tmp/x.cfg"}
	var p confutil.Problems
	cfg.Finalize(&p)
	svc.Finalize("web", cfg, &p)
	g := New(cfg, map[string]*ServiceConfig{"web": svc}, nil, nil)
	st := state("web", ready, drained, maint, zeroWeight, zeroDrained)
	opts, _ := serverOptsOf(g.render(st, true))
	for _, b := range st.Services.Get("web").Backends {
		id := serverKey{"web", b.ServerName()}
		if want := optsIdentity(b, svc.ServerOptions.String()); opts[id] != want {
			t.Errorf("%s (%s): read back %q, added with %q", id, b.State, opts[id], want)
		}
	}
}

// A HAProxy that dies while it starts (killed, OOM) fails the start at
// once, not after the 10 s its sockets are waited for (which, in the
// watchdog's restart, held every Apply), and the next Apply starts it.
func TestHAProxyDiesWhileStarting(t *testing.T) {
	port := testserver.FreePort(t)
	r := newRig(t, map[string]*ServiceConfig{"web": {Port: port, BindAddress: "127.0.0.1"}})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	st := state("web", backend(a, "a"))
	r.g.proc.startedHook = func() { testserver.KillHAProxy(r.cfg.PIDFile) }
	start := time.Now()
	err := r.g.Apply(context.Background(), st)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "gone before answering") {
		t.Fatalf("Apply with HAProxy killed as it started = %v, want the start to fail", err)
	}
	if took > 3*time.Second {
		t.Errorf("the failed start took %v: it waited for a dead HAProxy", took)
	}
	r.g.proc.startedHook = nil
	r.apply(t, st)
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); got != "a" {
		t.Errorf("after the next Apply: %q", got)
	}
}
