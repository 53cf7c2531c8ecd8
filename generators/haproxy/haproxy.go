// Package haproxy is synapse's HAProxy generator. Membership, weight and
// drain changes go through the runtime API (no reload); the rendered
// haproxy.cfg always carries every current server, is validated with
// `haproxy -c` and written atomically; only structural changes reload,
// through the master CLI of a master-worker HAProxy, rate-limited and
// confirmed by the worker PID.
//
// The Generator composes three pieces, each with its own state:
//   - process (process.go, reload.go): finds or starts HAProxy, reloads
//     it, and watches a managed one;
//   - configFile (configfile.go): validates and writes haproxy.cfg, now or
//     in the background; render.go renders it;
//   - runtimeSyncer (sync.go, commands.go): diffs the state against what
//     HAProxy runs into typed commands sent in one batch, and quarantines
//     (quarantine.go) the servers HAProxy refuses.
//
// Apply decides between them: a changed skeleton is a reload, anything
// else goes through the runtime API.
package haproxy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncstack/syncstack/generators"
)

// Generator keeps one HAProxy in step with the desired state.
type Generator struct {
	cfg      *Config
	services map[string]*ServiceConfig
	names    []string // of services, sorted; see serviceNames
	log      *slog.Logger
	m        *Metrics
	rt       RuntimeClient

	proc    *process
	file    *configFile
	runtime *runtimeSyncer
	res     *resolver // host names of backends (read by render and the runtime sync)
	// ids gives every server its `id` (read by render from the background
	// writer: it has its own lock).
	ids *serverIDs
	// renderSize is the length of the last full render: the next one's
	// buffer is made that size at once (render.go).
	renderSize atomic.Int64

	// mu is the apply lock: Apply, the watchdog's restart and RetryAt
	// take it; the state of proc and runtime, and the fields below, are
	// the apply path's.
	mu   sync.Mutex
	last *generators.State // the state of the latest Apply
	boot bootFile
	skel string // the skeleton of this config (computed once)
	// idsFor: the state each service's ids were last assigned for.
	idsFor    map[string]generators.Service
	closeOnce sync.Once
}

// bootFile is the config file as the generator found it, before its first
// write: the config the running HAProxy most likely loaded.
type bootFile struct {
	read    bool
	skel    string              // its skeleton (all of it without the runtime API)
	servers map[string][]string // backend → its server lines
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
	log = log.With("generator", "haproxy")
	rt := RuntimeClient{Socket: cfg.SocketFilePath, Timeout: 10 * time.Second}
	g := &Generator{
		cfg: cfg, services: svcs, names: names, log: log, m: m, rt: rt,
		proc:   newProcess(cfg, log, m, rt),
		file:   newConfigFile(cfg, log, m),
		res:    newResolver(log, m),
		ids:    newServerIDs(cfg.MaxServerID, log, m),
		idsFor: map[string]generators.Service{},
	}
	g.runtime = &runtimeSyncer{
		cfg: cfg, services: svcs, names: names, log: log, m: m, client: rt,
		ids: g.ids, res: g.res, q: newQuarantines(log, m), unknown: g.unknown,
		removing: map[serverKey]time.Time{},
	}
	g.proc.onGone = g.restartIfGone
	g.file.writeState = g.writeFile
	return g
}

// Name implements generators.Generator.
func (g *Generator) Name() string { return "haproxy" }

// serviceNames lists the services in order; the set is fixed for a
// generator's life, so New sorts it once (at 1000 services, sorting on
// every apply was 9 % of synapse's CPU under churn).
func (g *Generator) serviceNames() []string { return g.names }

// unknown reports whether the generator must leave svc's servers as they
// are: nothing is known of it, or only the cache knows it and HAProxy kept
// running (its state is newer than any cache).
func (g *Generator) unknown(svc generators.Service) bool {
	return svc.Unknown || (svc.Cached && !g.proc.started)
}

// Apply implements generators.Generator.
func (g *Generator) Apply(ctx context.Context, st generators.State) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = &st
	err := g.apply(ctx, st)
	if err != nil && g.proc.attached && g.cfg.Manage && g.proc.gone(ctx) {
		return g.restart(ctx, st, err)
	}
	return err
}

// restartIfGone is the watchdog's: it starts the managed HAProxy again
// from the latest state when it is still gone.
func (g *Generator) restartIfGone(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc.attached && g.last != nil && g.proc.gone(ctx) {
		if err := g.restart(ctx, *g.last, errors.New("no answer on its sockets")); err != nil {
			g.log.Error("haproxy restart failed; trying again", "err", err, "in", watchdogEvery)
		}
	}
}

// restart starts the managed HAProxy again, from st, after it was found
// gone (killed, crashed, OOM); g.mu is held.
func (g *Generator) restart(ctx context.Context, st generators.State, why error) error {
	g.log.Error("haproxy is not running; starting it again", "err", why)
	g.m.Restarts.Inc()
	g.proc.forget()
	g.runtime.forget()
	return g.apply(ctx, st)
}

// Close stops the watchdog and waits for a background config write in
// flight (it must not write into a directory its owner removes next);
// HAProxy keeps running.
func (g *Generator) Close() error {
	g.closeOnce.Do(func() {
		g.proc.stopWatchdog()
		g.res.wg.Wait()
		g.file.wait()
	})
	return nil
}

// Flush waits for background config writes (and host name refreshes) to
// finish.
func (g *Generator) Flush() {
	g.res.wg.Wait()
	g.file.wait()
}

// RetryAt implements generators.Retrier: while removed servers wait for
// their connections to end, Apply is wanted every removalPoll, and when
// the first grace runs out (its sessions are then shut down); and when a
// quarantine is due.
func (g *Generator) RetryAt() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runtime.retryAt(g.runtime.q.nextRetry())
}

// Quarantined implements generators.Quarantiner.
func (g *Generator) Quarantined() []generators.Quarantined { return g.runtime.q.list() }

// WorkerPID is the PID of the current HAProxy worker (master-worker mode).
func (g *Generator) WorkerPID(ctx context.Context) (int, error) { return g.proc.workerPID(ctx) }

// apply is Apply with g.mu held.
func (g *Generator) apply(ctx context.Context, st generators.State) error {
	g.readBoot()
	if g.res.resolveHosts(ctx, st, g.serviceNames(), g.unknown) {
		g.runtime.forgetSynced() // an address changed: look at every backend
	}
	g.assignIDs(st)
	skel := g.skeleton(st)
	writes := on(g.cfg.DoWrites, true)
	structural := !g.proc.attached || skel != g.proc.runningSkel
	// The file must be right before HAProxy (re)loads it; otherwise it is
	// written after the runtime changes, off the latency path.
	var errs []error
	invalid := false
	if writes && structural {
		if err := g.file.writeNow(ctx, st); err != nil {
			errs = append(errs, err)
			invalid = true
		}
	}
	if !g.proc.attached {
		if err := g.proc.attach(ctx, g.boot.skel); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	if invalid {
		skel = g.proc.runningSkel // an invalid config is never loaded: no reload
	}
	why, err := g.reloadNeeded(ctx, st, skel)
	if err != nil {
		errs = append(errs, err)
	}
	if writes && !structural {
		if why.needed() {
			if err := g.file.writeNow(ctx, st); err != nil {
				return errors.Join(append(errs, err)...)
			}
		} else {
			g.file.writeLater(st)
		}
	}
	if why.needed() && on(g.cfg.DoReloads, true) {
		if err := g.reload(ctx, st, skel, why); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}

// readBoot reads the config file once, before the first write: the
// skeleton, servers and ids HAProxy most likely runs with.
func (g *Generator) readBoot() {
	if g.boot.read {
		return
	}
	content, _ := os.ReadFile(g.cfg.ConfigFilePath)
	g.boot.read = true
	g.boot.skel = skeletonOf(string(content))
	g.runtime.applied, g.boot.servers = serverOptsOf(string(content))
	g.ids.load(string(content), time.Now())
	if !on(g.cfg.DoSocket, true) {
		g.boot.skel = string(content)
	}
}

// skeleton is what decides whether st needs a reload: the config without
// its server lines, which depends on the config alone (computed once).
// Without the runtime API every change is structural: the whole file is
// what HAProxy must load (Airbnb's do_socket: false).
func (g *Generator) skeleton(st generators.State) string {
	if !on(g.cfg.DoSocket, true) {
		return g.render(st, true)
	}
	if g.skel == "" {
		g.skel = g.render(generators.State{}, false)
	}
	return g.skel
}

// reloadNeeded is why st needs a reload, if it does: a skeleton HAProxy
// does not run, what the runtime sync cannot do, or cookies of servers
// added at runtime.
func (g *Generator) reloadNeeded(ctx context.Context, st generators.State, skel string) (reloadNeed, error) {
	if skel != g.proc.runningSkel {
		return reloadNeed{reason: ReloadStructure}, nil
	}
	var why reloadNeed
	var err error
	if on(g.cfg.DoSocket, true) {
		why, err = g.runtime.sync(ctx, st)
	}
	if !why.needed() && g.runtime.cookiePending {
		why = reloadNeed{reason: ReloadCookie, detail: "servers added at runtime to a backend with cookie persistence"}
	}
	return why, err
}

// reload makes HAProxy load the file written for st (of skeleton skel),
// unless reload_min_interval holds it back, then fixes at runtime what
// the server state file could not carry.
func (g *Generator) reload(ctx context.Context, st generators.State, skel string, why reloadNeed) error {
	if wait := g.proc.reloadWait(time.Now()); wait > 0 {
		g.m.ReloadsDeferred.Inc()
		return &generators.DeferredError{At: time.Now().Add(wait), Reason: "haproxy reload (reload_min_interval)"}
	}
	if err := g.proc.reload(ctx, why); err != nil {
		return err
	}
	g.proc.loaded(skel)
	g.runtime.reloaded() // a new worker: check every backend
	// The new worker loaded the server state file; fix whatever it could
	// not carry (a drain set since, say).
	if on(g.cfg.DoSocket, true) {
		if _, err := g.runtime.sync(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// maxQuarantineRounds bounds the haproxy -c rounds of one write: HAProxy
// reports a few bad servers per round (parse errors, then address
// resolution), each round quarantines those it names.
const maxQuarantineRounds = 8

// writeFile renders the config for st, and has the config file validate
// and write it. A server line HAProxy rejects is quarantined and the
// config rendered again without it: one bad record never keeps every
// other change out of the file. Any other invalid config keeps the
// previous file. Called by the config file with its lock held.
func (g *Generator) writeFile(ctx context.Context, st generators.State) error {
	q := g.runtime.q
	trial := q.invalidDue(time.Now()) // rejected lines due for another try
	for round := 1; ; round++ {
		content := g.renderFile(st, trial)
		err := g.file.writeContent(ctx, content)
		if err == nil {
			q.releaseAll(trial) // what remains of the trial passed
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
			delete(trial, b.key)
			q.put(qInvalid, b.service, b.key, b.sig, b.reason)
		}
	}
}

// assignIDs gives an id to every server of the services whose backends
// changed since the last call (the runtime sync then corrects them from
// what the running HAProxy has).
func (g *Generator) assignIDs(st generators.State) {
	now := time.Now()
	for _, name := range g.serviceNames() {
		svc := st.Services.Get(name)
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

// Check renders the config for cfg and services with no backends into file
// and validates it with haproxy -c.
func Check(ctx context.Context, cfg *Config, services map[string]*ServiceConfig, file string) error {
	g := New(cfg, services, nil, nil)
	if err := os.WriteFile(file, []byte(g.render(generators.State{}, true)), configMode); err != nil {
		return err
	}
	return validate(ctx, cfg.Binary, file)
}
