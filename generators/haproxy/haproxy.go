// Package haproxy is synapse's HAProxy generator. Membership, weight and
// drain changes go through the runtime API (no reload); the rendered
// haproxy.cfg always carries every current server, is validated with
// `haproxy -c` and written atomically; only structural changes reload,
// through the master CLI of a master-worker HAProxy, rate-limited and
// confirmed by the worker PID.
package haproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/atomicfile"
)

// Generator keeps one HAProxy in step with the desired state.
type Generator struct {
	cfg      *Config
	services map[string]*ServiceConfig
	names    []string // of services, sorted; see serviceNames
	log      *slog.Logger
	m        *Metrics
	rt       RuntimeClient
	// confirmTimeout bounds the wait for a new worker after a reload.
	confirmTimeout time.Duration

	mu          sync.Mutex
	attached    bool
	started     bool      // this generator started HAProxy (it was not running)
	runningSkel string    // skeleton of the config the running HAProxy loaded
	lastReload  time.Time // zero: none yet
	removing    map[string]time.Time
	lastWritten string
	last        *generators.State // the state of the latest Apply

	stop        chan struct{} // ends the watchdog
	watchOnce   sync.Once
	watchWG     sync.WaitGroup
	closeOnce   sync.Once
	bootSkel    string // skeleton of the file on disk before the first write
	bootRead    bool
	applied     map[string]string   // backend/server → options it has
	bootServers map[string][]string // backend → server lines of the file at start

	// ids gives every server its `id` (read by render without g.mu).
	ids *serverIDs
	// idsFor: the state each service's ids were last assigned for.
	idsFor map[string]generators.Service
	// cookiePending: a server was added at runtime to a backend that
	// persists by cookie; HAProxy 2.6 takes no cookie on `add server`, so
	// a reload (reason cookie) gives it the cookie of its config line.
	cookiePending bool

	skel         string                        // the skeleton of this config
	synced       map[string]generators.Service // what each service was last synced to
	lastFullSync time.Time

	// Quarantined servers (guarded by qmu: the background writer reads
	// them without g.mu).
	qmu         sync.Mutex
	quarantined map[string]*quarantine // by backend/server
	resync      map[string]bool        // services whose qInvalid quarantines changed

	// Resolved host names of backends (guarded by rmu, read by render).
	rmu          sync.Mutex
	addrs        map[string]*resolved
	lookup       lookupFunc
	refreshing   bool // a background refresh runs
	addrsChanged bool // it found a new address: the next sync reads all
	resolveWG    sync.WaitGroup
	// The host names of each service's backends (with g.mu), and the
	// service they were found in.
	hostsOf   map[string][]string
	hostsSeen map[string]generators.Service

	fileMu              sync.Mutex        // serializes writes of the config file
	pending             *generators.State // newest state for the background writer
	writerBusy          bool
	writerWG            sync.WaitGroup
	lastBackgroundWrite time.Time
}

// New makes a generator for cfg and the services' haproxy sections (both
// finalized).
func New(cfg *Config, services map[string]*ServiceConfig, log *slog.Logger, m *Metrics) *Generator {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	svcs := map[string]*ServiceConfig{}
	names := []string{}
	for name, s := range services {
		if !s.Disabled {
			svcs[name] = s
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return &Generator{
		cfg: cfg, services: svcs, names: names, log: log.With("generator", "haproxy"), m: m,
		rt:             RuntimeClient{Socket: cfg.SocketFilePath, Timeout: 10 * time.Second},
		removing:       map[string]time.Time{},
		ids:            newServerIDs(cfg.MaxServerID),
		idsFor:         map[string]generators.Service{},
		quarantined:    map[string]*quarantine{},
		resync:         map[string]bool{},
		addrs:          map[string]*resolved{},
		lookup:         systemLookup,
		hostsOf:        map[string][]string{},
		hostsSeen:      map[string]generators.Service{},
		stop:           make(chan struct{}),
		confirmTimeout: 15 * time.Second,
	}
}

// Name implements generators.Generator.
func (g *Generator) Name() string { return "haproxy" }

// serviceNames lists the services in order; the set is fixed for a
// generator's life, so New sorts it once (at 1000 services, sorting on
// every apply was 9 % of synapse's CPU under churn).
func (g *Generator) serviceNames() []string { return g.names }

// Apply implements generators.Generator.
func (g *Generator) Apply(ctx context.Context, st generators.State) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = &st
	err := g.apply(ctx, st)
	if err != nil && g.attached && g.cfg.Manage && g.gone(ctx) {
		return g.restart(ctx, st, err)
	}
	return err
}

// gone reports whether the managed HAProxy is not running: no answer on
// its sockets twice, half a second apart (a master re-executing for a
// reload refuses connections for tens of milliseconds), and its master
// process, when the PID file names one, gone too.
func (g *Generator) gone(ctx context.Context) bool {
	if g.running(ctx) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(500 * time.Millisecond):
	}
	if g.running(ctx) {
		return false
	}
	if g.cfg.PIDFile != "" {
		if b, err := os.ReadFile(g.cfg.PIDFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && processAlive(pid) {
				g.log.Warn("haproxy does not answer on its sockets but its master process lives; not starting another", "pid", pid)
				return false
			}
		}
	}
	return true
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// restart starts the managed HAProxy again, from st, after it was found
// gone (killed, crashed, OOM); g.mu is held.
func (g *Generator) restart(ctx context.Context, st generators.State, why error) error {
	g.log.Error("haproxy is not running; starting it again", "err", why)
	g.m.Restarts.Inc()
	g.attached, g.runningSkel, g.synced, g.lastReload = false, "", nil, time.Time{}
	clear(g.removing) // quarantines stay: the new HAProxy refuses the same
	g.cookiePending = false
	g.applied = nil // the new HAProxy has the servers of the file
	return g.apply(ctx, st)
}

// watchdogEvery is how often a managed HAProxy is checked between changes.
const watchdogEvery = 2 * time.Second

// watchdog starts the managed HAProxy again when it is gone while nothing
// changes (a change finds out by itself). It ends with Close.
func (g *Generator) watchdog() {
	defer g.watchWG.Done()
	tick := time.NewTicker(watchdogEvery)
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if !g.running(ctx) {
			g.mu.Lock()
			if g.attached && g.last != nil && g.gone(ctx) {
				if err := g.restart(ctx, *g.last, errors.New("no answer on its sockets")); err != nil {
					g.log.Error("haproxy restart failed; trying again", "err", err, "in", watchdogEvery)
				}
			}
			g.mu.Unlock()
		}
		cancel()
	}
}

func (g *Generator) startWatchdog() {
	g.watchOnce.Do(func() {
		g.watchWG.Add(1)
		go g.watchdog()
	})
}

// Close stops the watchdog and waits for a background config write in
// flight (it must not write into a directory its owner removes next);
// HAProxy keeps running.
func (g *Generator) Close() error {
	g.closeOnce.Do(func() {
		close(g.stop)
		g.watchWG.Wait()
		g.resolveWG.Wait()
		g.writerWG.Wait()
	})
	return nil
}

// apply is Apply with g.mu held.
func (g *Generator) apply(ctx context.Context, st generators.State) error {
	var errs []error
	if !g.bootRead {
		content, _ := os.ReadFile(g.cfg.ConfigFilePath)
		g.bootSkel, g.bootRead = skeletonOf(string(content)), true
		g.applied, g.bootServers = serverOptsOf(string(content))
		g.ids.load(string(content), time.Now())
		if !on(g.cfg.DoSocket, true) {
			g.bootSkel = string(content)
		}
	}
	if g.resolveHosts(ctx, st) {
		g.synced = nil // an address changed: look at every backend
	}
	g.assignIDs(st)
	full := ""
	render := func() string {
		if full == "" {
			full = g.render(st, true)
		}
		return full
	}
	// The skeleton depends on the config alone: computed once. Without
	// the runtime API every change is structural: the whole file is what
	// HAProxy must load (Airbnb's do_socket: false).
	if g.skel == "" {
		g.skel = g.render(generators.State{}, false)
	}
	skel := g.skel
	if !on(g.cfg.DoSocket, true) {
		skel = render()
	}
	writes := on(g.cfg.DoWrites, true)
	structural := !g.attached || skel != g.runningSkel
	// The file must be right before HAProxy (re)loads it; otherwise it is
	// written after the runtime changes, off the latency path.
	invalid := false
	if writes && structural {
		if err := g.writeNow(ctx, st); err != nil {
			errs = append(errs, err)
			invalid = true
		}
	}
	if !g.attached {
		if err := g.attach(ctx); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	if invalid {
		skel = g.runningSkel // an invalid config is never loaded: no reload
	}

	var reloadWhy reloadNeed
	if skel != g.runningSkel {
		reloadWhy = reloadNeed{reason: ReloadStructure}
	}
	if !reloadWhy.needed() && on(g.cfg.DoSocket, true) {
		why, err := g.runtimeSync(ctx, st)
		if err != nil {
			errs = append(errs, err)
		}
		reloadWhy = why
	}
	if !reloadWhy.needed() && g.cookiePending {
		reloadWhy = reloadNeed{reason: ReloadCookie, detail: "servers added at runtime to a backend with cookie persistence"}
	}
	if writes && !structural {
		if reloadWhy.needed() {
			if err := g.writeNow(ctx, st); err != nil {
				return errors.Join(append(errs, err)...)
			}
		} else {
			g.writeLater(st)
		}
	}
	if reloadWhy.needed() && on(g.cfg.DoReloads, true) {
		if wait := time.Until(g.lastReload.Add(g.cfg.ReloadMinInterval.D())); !g.lastReload.IsZero() && wait > 0 {
			g.m.ReloadsDeferred.Inc()
			return errors.Join(append(errs, &generators.DeferredError{At: time.Now().Add(wait), Reason: "haproxy reload (reload_min_interval)"})...)
		}
		if err := g.reload(ctx, reloadWhy); err != nil {
			return errors.Join(append(errs, err)...)
		}
		g.runningSkel = skel
		g.cookiePending = false // the new worker has every cookie of the file
		g.markLoaded(skel)
		g.synced = nil // a new worker: check every backend
		// The new worker loaded the server state file; fix whatever it
		// could not carry (a drain set since, say).
		if on(g.cfg.DoSocket, true) {
			if _, err := g.runtimeSync(ctx, st); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// writeNow writes the file for st at once (waiting for a background write
// in flight, and dropping a pending one), so that a reload loads it.
func (g *Generator) writeNow(ctx context.Context, st generators.State) error {
	g.fileMu.Lock()
	defer g.fileMu.Unlock()
	g.pending = nil
	return g.write(ctx, st)
}

// writeLater hands the state to the background writer: the newest state
// wins, and rendering and validation (haproxy -c: tens of ms, a second at
// 10k servers) stay off the path of runtime changes. The writer writes at
// most once per config_write_interval; a reload never waits for it, as it
// writes the file itself first.
func (g *Generator) writeLater(st generators.State) {
	g.fileMu.Lock()
	defer g.fileMu.Unlock()
	g.pending = &st
	if g.writerBusy {
		return
	}
	g.writerBusy = true
	g.writerWG.Add(1)
	go func() {
		defer g.writerWG.Done()
		for {
			g.fileMu.Lock()
			if wait := time.Until(g.lastBackgroundWrite.Add(g.cfg.ConfigWriteInterval.D())); wait > 0 && g.pending != nil {
				g.fileMu.Unlock()
				time.Sleep(wait)
				g.fileMu.Lock()
			}
			st := g.pending
			g.pending = nil
			if st == nil {
				g.writerBusy = false
				g.fileMu.Unlock()
				return
			}
			err := g.write(context.Background(), *st)
			g.lastBackgroundWrite = time.Now()
			g.fileMu.Unlock()
			if err != nil {
				g.log.Error("background config write failed", "err", err)
			}
		}
	}()
}

// Flush waits for background config writes (and host name refreshes) to
// finish.
func (g *Generator) Flush() {
	g.resolveWG.Wait()
	g.writerWG.Wait()
}

// maxQuarantineRounds bounds the haproxy -c rounds of one write: HAProxy
// reports a few bad servers per round (parse errors, then address
// resolution), each round quarantines those it names.
const maxQuarantineRounds = 8

// write renders the config for st, validates it with `haproxy -c` and
// replaces the file atomically, only when the content changed. A server
// line HAProxy rejects is quarantined and the config rendered again
// without it: one bad record never keeps every other change out of the
// file. Any other invalid config keeps the previous file.
func (g *Generator) write(ctx context.Context, st generators.State) error {
	trial := g.invalidDue(time.Now()) // rejected lines due for another try
	for round := 1; ; round++ {
		content := g.renderFile(st, trial)
		err := g.writeContent(ctx, content)
		if err == nil {
			g.releaseInvalid(trial) // what remains of the trial passed
			return nil
		}
		var verr *ValidationError
		if !errors.As(err, &verr) || round == maxQuarantineRounds {
			return err
		}
		bad := g.serversAt(content, verr, st)
		if len(bad) == 0 {
			return err // not a server's fault: the operator's config
		}
		for _, b := range bad {
			delete(trial, b.id)
			g.quarantineServer(qInvalid, b.service, b.id, b.sig, b.reason)
		}
	}
}

// writeContent validates content and replaces the file with it.
func (g *Generator) writeContent(ctx context.Context, content string) error {
	path := g.cfg.ConfigFilePath
	if content == g.lastWritten {
		return nil
	}
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		g.lastWritten = content
		return nil
	}
	// The candidate is validated where it will live (relative paths in
	// the config resolve the same), then becomes the file.
	candidate := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".candidate")
	if err := atomicfile.Write(candidate, []byte(content), atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	defer os.Remove(candidate)
	if err := g.validate(ctx, candidate); err != nil {
		g.m.ValidationFailures.Inc()
		g.log.Error("rendered config rejected by haproxy -c; keeping the previous one", "err", err)
		return err
	}
	if err := atomicfile.Write(path, []byte(content), atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	g.lastWritten = content
	g.m.ConfigWrites.Inc()
	return nil
}

func (g *Generator) validate(ctx context.Context, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, g.cfg.Binary, "-c", "-f", file).CombinedOutput()
	if err != nil {
		return newValidationError(file, string(out), err)
	}
	return nil
}

// attach finds the running HAProxy, or starts one when managing it, and
// learns the skeleton of the config it runs.
func (g *Generator) attach(ctx context.Context) error {
	running := g.running(ctx)
	if !running && g.cfg.Manage {
		if err := g.start(ctx); err != nil {
			return err
		}
		g.started = true
		content, _ := os.ReadFile(g.cfg.ConfigFilePath)
		g.runningSkel = skeletonOf(string(content))
		if !on(g.cfg.DoSocket, true) {
			g.runningSkel = string(content)
		}
		g.markLoaded(g.runningSkel)
		g.attached = true
		g.startWatchdog()
		return nil
	}
	if !running && on(g.cfg.DoSocket, true) {
		return fmt.Errorf("haproxy: not running (no answer on %s); set haproxy.manage to start it", g.cfg.SocketFilePath)
	}
	if g.cfg.Manage {
		g.startWatchdog()
	}
	// We cannot ask HAProxy what config it loaded: assume the file on disk
	// as it was before this synapse wrote it, unless the mark of the last
	// confirmed load says that file never made it (a reload failed, then
	// synapse restarted): then reload once.
	g.runningSkel = g.bootSkel
	if mark, err := os.ReadFile(g.loadedMarkPath()); err == nil && strings.TrimSpace(string(mark)) != skelHash(g.bootSkel) {
		g.log.Warn("haproxy.cfg on disk was never confirmed loaded by HAProxy; it will be reloaded", "config", g.cfg.ConfigFilePath)
		g.runningSkel = ""
	}
	g.attached = true
	return nil
}

// loadedMarkPath holds the hash of the skeleton HAProxy last confirmed
// loading (a start, or a reload with a new worker).
// configMode is the mode of the files the generator writes: HAProxy's
// config names every backend, its addresses and options (sometimes
// credentials in `global`): owner and group only.
const configMode = 0o640

func (g *Generator) loadedMarkPath() string { return g.cfg.ConfigFilePath + ".loaded" }

func skelHash(skel string) string {
	h := sha256.Sum256([]byte(skel))
	return hex.EncodeToString(h[:])
}

func (g *Generator) markLoaded(skel string) {
	if !on(g.cfg.DoWrites, true) {
		return
	}
	if err := atomicfile.Write(g.loadedMarkPath(), []byte(skelHash(skel)+"\n"), atomicfile.Options{Mode: configMode}); err != nil {
		g.log.Warn("could not record the loaded config", "path", g.loadedMarkPath(), "err", err)
	}
}

// running reports whether HAProxy answers: the master CLI with a current
// worker, and the worker's stats socket.
func (g *Generator) running(ctx context.Context) bool {
	if g.cfg.MasterSocketPath != "" {
		if _, err := g.workerPID(ctx); err != nil {
			g.log.Debug("haproxy master not answering", "err", err)
			return false
		}
	}
	if g.rt.Socket == "" {
		return g.cfg.MasterSocketPath != ""
	}
	_, err := g.rt.Run(ctx, "show info")
	if err != nil {
		g.log.Debug("haproxy stats socket not answering", "err", err)
	}
	return err == nil
}

// start runs HAProxy in master-worker mode as a daemon, so it outlives
// synapse, and waits until its worker serves the stats socket.
func (g *Generator) start(ctx context.Context) error {
	// The master CLI can reload and stop HAProxy: owner only, as the stats socket.
	args := []string{"-W", "-S", g.cfg.MasterSocketPath + ",mode,600", "-f", g.cfg.ConfigFilePath, "-D"}
	if g.cfg.PIDFile != "" {
		args = append(args, "-p", g.cfg.PIDFile)
	}
	out, err := exec.CommandContext(ctx, g.cfg.Binary, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("haproxy: start %s %v: %v: %s", g.cfg.Binary, args, err, strings.TrimSpace(string(out)))
	}
	// The master re-executes itself after forking the worker and refuses
	// connections meanwhile: poll until both sockets answer.
	deadline := time.Now().Add(10 * time.Second)
	for !g.running(ctx) {
		if time.Now().After(deadline) {
			return errors.New("haproxy: started but not answering on its sockets after 10s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	g.log.Info("haproxy started", "config", g.cfg.ConfigFilePath, "master_socket", g.cfg.MasterSocketPath)
	return nil
}

// assignIDs gives an id to every server of the services whose backends
// changed since the last call (the runtime sync then corrects them from
// what the running HAProxy has).
func (g *Generator) assignIDs(st generators.State) {
	now := time.Now()
	for _, name := range g.serviceNames() {
		svc := st.Services[name]
		if g.unknown(svc) {
			continue
		}
		if prev, ok := g.idsFor[name]; ok && prev.Equal(svc) {
			continue
		}
		g.ids.assign(g.services[name].BackendName, svc.Backends, nil, now)
		g.idsFor[name] = svc
	}
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// Check renders the config for cfg and services with no backends into file
// and validates it with haproxy -c.
func Check(ctx context.Context, cfg *Config, services map[string]*ServiceConfig, file string) error {
	g := New(cfg, services, nil, nil)
	if err := os.WriteFile(file, []byte(g.render(generators.State{}, true)), configMode); err != nil {
		return err
	}
	return g.validate(ctx, file)
}
