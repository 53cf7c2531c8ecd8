package haproxy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// dynamicBalance reports whether a backend's balance algorithm takes
// servers added at runtime: roundrobin, leastconn, first, random, and
// hashing with hash-type consistent. Static ones (static-rr, map-based
// hashing) need a reload for every membership change.
func dynamicBalance(lines ...[]string) bool {
	algo, consistent := "roundrobin", false
	for _, ls := range lines {
		for _, l := range ls {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "balance" {
				algo = f[1]
			}
			if len(f) >= 2 && f[0] == "hash-type" {
				consistent = f[1] == "consistent"
			}
		}
	}
	switch algo {
	case "roundrobin", "leastconn", "first", "random":
		return true
	case "static-rr":
		return false
	}
	return consistent
}

// fullSyncEvery is how often a sync reads every backend.
const fullSyncEvery = 30 * time.Second

// dynamicOptions reports whether servers with these options can be added
// at runtime: cookie and resolvers do not apply to dynamic servers on 2.6.
func dynamicOptions(opts string) bool {
	return !hasToken(opts, "cookie") && !hasToken(opts, "resolvers")
}

// runtimeSyncer makes HAProxy's servers match the desired state through
// the runtime API: it reads what HAProxy runs (`show servers state`),
// diffs it against the state into typed commands, sends them in one
// pipelined batch, and quarantines the servers HAProxy refuses. What it
// cannot do at runtime it returns as a reloadNeed.
//
// Its state belongs to the apply path (the Generator's apply lock); the
// quarantines and the resolver it shares with render have locks of their
// own.
type runtimeSyncer struct {
	cfg      *Config
	services map[string]*ServiceConfig
	names    []string // of services, sorted
	log      *slog.Logger
	m        *Metrics
	client   RuntimeClient
	ids      *serverIDs
	res      *resolver
	q        *quarantines
	// unknown says a service's servers are to be left as they are.
	unknown func(generators.Service) bool

	removing map[serverKey]time.Time // servers being removed, since
	applied  map[serverKey]string    // options each server has; nil: unknown
	// cookiePending: a server was added at runtime to a backend that
	// persists by cookie; HAProxy 2.6 takes no cookie on `add server`, so
	// a reload (reason cookie) gives it the cookie of its config line.
	cookiePending bool
	synced        map[string]generators.Service // what each service was last synced to
	lastFullSync  time.Time
}

// forgetSynced makes the next sync read every backend (an address
// changed, a new worker).
func (s *runtimeSyncer) forgetSynced() { s.synced = nil }

// forget is what a HAProxy found gone leaves: a new one has the servers
// of the file and nothing being removed. Quarantines stay: a new HAProxy
// refuses the same.
func (s *runtimeSyncer) forget() {
	s.synced = nil
	clear(s.removing)
	s.cookiePending = false
	s.applied = nil
}

// reloaded is what a confirmed reload leaves: the new worker has every
// cookie of the file; every backend is checked again.
func (s *runtimeSyncer) reloaded() {
	s.cookiePending = false
	s.synced = nil
}

// sync makes every service backend match st through the runtime API in
// one pipelined batch. It returns a reason when something cannot be done
// at runtime and needs a reload. A server HAProxy refuses is quarantined,
// not an error: the others converge.
func (s *runtimeSyncer) sync(ctx context.Context, st generators.State) (reloadNeed, error) {
	now := time.Now()
	names := s.changed(st, now)
	if len(names) == 0 {
		return reloadNeed{}, nil
	}
	running, need, err := s.read(ctx, names)
	if err != nil || need.needed() {
		return need, err
	}
	b := newBatch()
	anyQ := s.q.any()
	for _, name := range names {
		be := s.services[name].BackendName
		if need := s.planService(b, name, st.Services.Get(name), running[be], anyQ, now); need.needed() {
			s.synced = nil
			return need, nil
		}
	}
	if err := s.send(ctx, b); err != nil {
		s.synced = nil
		return reloadNeed{}, err
	}
	s.settle(b)
	if s.synced == nil {
		s.synced = map[string]generators.Service{}
	}
	for _, name := range names {
		s.synced[name] = st.Services.Get(name)
	}
	return reloadNeed{}, nil
}

// changed lists the services to read and diff: those whose backends
// changed since the last sync, and those with removals pending or
// quarantines due. A change costs the same with ten backends or ten
// thousand.
func (s *runtimeSyncer) changed(st generators.State, now time.Time) []string {
	if now.Sub(s.lastFullSync) > fullSyncEvery {
		// Now and then check every backend, in case something else
		// changed HAProxy (an operator on the socket, synctl --local).
		s.synced, s.lastFullSync = nil, now
	}
	var names []string
	for _, name := range s.names {
		svc := st.Services.Get(name)
		if s.unknown(svc) {
			continue // nothing known yet: leave its servers as they are
		}
		be := s.services[name].BackendName
		if prev, ok := s.synced[name]; ok && prev.Equal(svc) && !s.removalsPending(be) && !s.q.due(be, now) && !s.q.takeResync(name) {
			continue
		}
		names = append(names, name)
	}
	return names
}

// read asks HAProxy for the servers of the services' backends (backend →
// server → state). A backend HAProxy does not have needs a reload.
func (s *runtimeSyncer) read(ctx context.Context, names []string) (map[string]map[string]serverState, reloadNeed, error) {
	show := make([]string, len(names))
	for i, name := range names {
		show[i] = "show servers state " + s.services[name].BackendName
	}
	replies, err := s.client.Run(ctx, show...)
	if err != nil {
		return nil, reloadNeed{}, err
	}
	running := map[string]map[string]serverState{}
	for i, r := range replies {
		if backendMissing(r) {
			// The running HAProxy loaded an older config than the file
			// (a reload that failed before this synapse started, say).
			return nil, reloadNeed{ReloadBackendMissing, "backend " + s.services[names[i]].BackendName + " missing from the running HAProxy"}, nil
		}
		st, err := parseServersState(r)
		if err != nil {
			return nil, reloadNeed{}, fmt.Errorf("%s: %w", show[i], err)
		}
		for be, servers := range st {
			running[be] = servers
		}
	}
	return running, reloadNeed{}, nil
}

// servicePlan is one service's diff in the making.
type servicePlan struct {
	name    string // the service
	be      string // its backend
	svc     *ServiceConfig
	opts    string                 // the service's server options
	dynamic bool                   // membership can change at runtime
	cur     map[string]serverState // the servers HAProxy runs
	want    map[string]bool        // servers HAProxy is to keep
	desired map[string]bool        // servers of the state, quarantined or not
}

// planService adds to b the commands that make the backend of service
// name match svc; cur is what HAProxy runs (a backend without servers is
// not listed).
func (s *runtimeSyncer) planService(b *batch, name string, svc generators.Service, cur map[string]serverState, anyQ bool, now time.Time) reloadNeed {
	cfg := s.services[name]
	p := &servicePlan{name: name, be: cfg.BackendName, svc: cfg, opts: cfg.ServerOptions.String(), cur: cur,
		want: map[string]bool{}, desired: map[string]bool{}}
	p.dynamic = dynamicBalance(s.cfg.Defaults, cfg.Listen, cfg.Backend) && dynamicOptions(p.opts)
	// Ids of the servers HAProxy runs are what the file must say.
	s.ids.assign(p.be, svc.Backends, cur, now)
	b.cookie[name] = cookiePersistence(s.cfg.Defaults, cfg) && !tcpMode(s.cfg.Defaults, cfg)
	// Without quarantines (the usual case) a server costs no quarantine
	// lookups and no signature: this loop runs over every server of every
	// changed service.
	for _, bk := range svc.Backends {
		if need := s.planServer(b, p, bk, anyQ, now); need.needed() {
			return need
		}
	}
	s.forgetFinishedRemovals(p)
	s.q.forgetGone(name, p.be, p.desired, cur)
	return s.planRemovals(b, p, now)
}

// planServer adds the commands for one server of the state.
func (s *runtimeSyncer) planServer(b *batch, p *servicePlan, bk generators.Backend, anyQ bool, now time.Time) reloadNeed {
	sname := bk.ServerName()
	p.desired[sname] = true
	key := serverKey{p.be, sname}
	addr, aerr := s.res.addrOf(bk.Host)
	ident := optsIdentity(bk, p.opts)
	if anyQ {
		if kind, held := s.q.held(key, sig(bk, addr, ident), now); held {
			// Quarantined with this very record: skipped. A server
			// HAProxy has and only refused a change keeps its place.
			p.want[sname] = kind == qRefused
			return reloadNeed{}
		}
	}
	if aerr != nil {
		s.q.put(qRejected, p.name, key, sig(bk, addr, ident), aerr.Error())
		return reloadNeed{} // out of HAProxy (removed if it is there)
	}
	p.want[sname] = true
	ncmds := len(b.cmds)
	r, exists := p.cur[sname]
	switch {
	case exists && s.appliedOpts(key, ident):
		// Back before its removal finished, or its options were
		// restored while it drained for a replacement.
		delete(s.removing, key)
		b.cmds = append(b.cmds, settings(key, r, bk, addr, p.opts)...)
	case !p.dynamic:
		return reloadNeed{ReloadStaticBalance, "backend " + p.be + " membership"}
	case exists:
		// Its options changed, which only a new server can carry (and it
		// has the same name): the old one takes no new requests, and goes
		// once its connections end or the grace passes; the new one is
		// added right after.
		b.cmds = append(b.cmds, s.retire(key, r, now)...)
		b.then[key] = addCmds(key, joinAddr(addr, bk.Port), addParams(s.ids, p.svc, bk, p.opts), bk.State)
	default:
		delete(s.removing, key) // gone by other means (a reload, an operator)
		b.cmds = append(b.cmds, addCmds(key, joinAddr(addr, bk.Port), addParams(s.ids, p.svc, bk, p.opts), bk.State)...)
	}
	// Recorded when it got commands (their replies decide), or when it
	// may be quarantined (a success releases it).
	if anyQ || len(b.cmds) > ncmds {
		b.attempted[key] = attempt{service: p.name, sig: sig(bk, addr, ident), ident: ident}
	}
	return reloadNeed{}
}

// settings are the commands that change a running server's address,
// weight and state to bk's: runtime settings of the server, never a reason
// to replace it.
func settings(key serverKey, r serverState, bk generators.Backend, addr, opts string) []command {
	var c []command
	if r.Addr != addr || r.Port != bk.Port {
		c = append(c, command{opSetAddr, key, fmt.Sprintf("%s port %d", addr, bk.Port)})
	}
	if w := weightOf(serverParams(bk, opts)); r.Weight != w {
		c = append(c, command{opSetWeight, key, strconv.Itoa(w)})
	}
	if r.forced() != string(bk.State) {
		c = append(c, command{opSetState, key, string(bk.State)})
	}
	return c
}

// forgetFinishedRemovals forgets removals of the backend HAProxy finished
// by other means (a reload, an operator), or they would keep asking for
// retries.
func (s *runtimeSyncer) forgetFinishedRemovals(p *servicePlan) {
	for key := range s.removing {
		if key.backend != p.be || p.want[key.server] {
			continue
		}
		if _, still := p.cur[key.server]; !still {
			delete(s.removing, key)
		}
	}
}

// planRemovals retires the servers HAProxy runs that the state does not
// want.
func (s *runtimeSyncer) planRemovals(b *batch, p *servicePlan, now time.Time) reloadNeed {
	for sname, r := range p.cur {
		if p.want[sname] {
			continue
		}
		if !p.dynamic {
			return reloadNeed{ReloadStaticBalance, "backend " + p.be + " membership"}
		}
		key := serverKey{p.be, sname}
		if _, held := s.q.held(key, removedSig, now); held {
			// HAProxy refused to delete it: tried again at its
			// quarantine's retry, not every removalPoll.
			delete(s.removing, key)
			continue
		}
		b.attempted[key] = attempt{service: p.name, sig: removedSig}
		b.cmds = append(b.cmds, s.retire(key, r, now)...)
	}
	return reloadNeed{}
}

// addCmds adds a server at runtime: dynamic servers start in maint with
// their checks off.
func addCmds(key serverKey, addr, params string, state registry.OverrideState) []command {
	c := []command{{opAdd, key, addr + params}}
	if state != registry.StateMaint {
		c = append(c, command{opSetState, key, string(state)})
	}
	if hasToken(params, "check") {
		c = append(c, command{opEnableHealth, key, ""})
	}
	if hasToken(params, "agent-check") {
		c = append(c, command{opEnableAgent, key, ""})
	}
	return c
}

// retire takes a server out without cutting a request: maint at once (no
// new requests), `del server` (refused while connections are attached,
// retried every removalPoll), and its sessions shut down only once
// removal_grace has passed since the first try.
func (s *runtimeSyncer) retire(key serverKey, r serverState, now time.Time) []command {
	first, seen := s.removing[key]
	if !seen {
		s.removing[key], first = now, now
	}
	var c []command
	// Only a forced maint lets `del server` go (HAProxy refuses to delete
	// a server whose only maint is `disabled` in the config, once set
	// ready), and keeps it out if a tracked server comes back.
	if r.forced() != "maint" {
		c = append(c, command{opSetState, key, "maint"})
	}
	if now.Sub(first) >= s.cfg.RemovalGrace.D() {
		c = append(c, command{opShutdown, key, ""})
	}
	return append(c, command{opDel, key, ""})
}

// removalPoll is how often a removed server that still has connections is
// tried again: `del server` succeeds once they end.
const removalPoll = time.Second

// retryAt is when removed servers waiting for their connections to end
// want the next sync: every removalPoll, and when the first grace runs out
// (its sessions are then shut down); q is the next quarantine retry.
func (s *runtimeSyncer) retryAt(q time.Time) time.Time {
	if len(s.removing) == 0 {
		return q
	}
	now := time.Now()
	at := now.Add(removalPoll)
	if !q.IsZero() && q.Before(at) {
		at = q
	}
	for _, first := range s.removing {
		// Past its grace, a server waits for HAProxy to close its idle
		// connections (half of them every pool-purge-delay): polled.
		if end := first.Add(s.cfg.RemovalGrace.D()); end.After(now) && end.Before(at) {
			at = end
		}
	}
	return at
}

func (s *runtimeSyncer) removalsPending(backend string) bool {
	for key := range s.removing {
		if key.backend == backend {
			return true
		}
	}
	return false
}

func hasToken(opts, tok string) bool {
	for _, f := range strings.Fields(opts) {
		if f == tok {
			return true
		}
	}
	return false
}

// appliedOpts reports whether a server has the options opts. The options
// each server was added with; a server whose options changed must be
// replaced. Servers HAProxy loaded from the config file were rendered with
// the options of their record, so an unknown server counts as matching
// until its options are known to differ.
func (s *runtimeSyncer) appliedOpts(key serverKey, opts string) bool {
	if s.applied == nil {
		return true
	}
	old, ok := s.applied[key]
	return !ok || old == opts
}

func (s *runtimeSyncer) setApplied(key serverKey, opts string) {
	if s.applied == nil {
		s.applied = map[serverKey]string{}
	}
	s.applied[key] = opts
}

// serverOptsOf reads backend/server → options from a config file's server
// lines, as render writes them, and the server lines of each backend.
func serverOptsOf(cfg string) (opts map[serverKey]string, lines map[string][]string) {
	out := map[serverKey]string{}
	lines = map[string][]string{}
	for _, sl := range serverLines(cfg) {
		f, section := sl.fields, sl.backend
		if len(f) < 3 {
			continue
		}
		params := f[3:]
		if i := slices.Index(params, "#"); i >= 0 {
			// "weight 0 # drained" is how render writes a drain.
			if strings.Join(params[i:], " ") == "# drained" && i >= 2 && params[i-2] == "weight" && params[i-1] == "0" {
				i -= 2
			}
			params = params[:i]
		}
		if n := len(params); n > 0 && params[n-1] == "disabled" {
			params = params[:n-1]
		}
		out[serverKey{section, f[1]}] = identity(params)
		lines[section] = append(lines[section], strings.Join(f, " "))
	}
	return out, lines
}
