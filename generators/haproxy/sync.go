package haproxy

import (
	"context"
	"fmt"
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

// unknown reports whether the generator must leave svc's servers as they
// are: nothing is known of it, or only the cache knows it and HAProxy kept
// running (its state is newer than any cache).
func (g *Generator) unknown(svc generators.Service) bool {
	return svc.Unknown || (svc.Cached && !g.started)
}

// fullSyncEvery is how often a sync reads every backend.
const fullSyncEvery = 30 * time.Second

// dynamicOptions reports whether servers with these options can be added
// at runtime: cookie and resolvers do not apply to dynamic servers on 2.6.
func dynamicOptions(opts string) bool {
	return !hasToken(opts, "cookie") && !hasToken(opts, "resolvers")
}

// runtimeSync reads `show servers state`, and makes every service backend
// match st through the runtime API in one pipelined batch. It returns a
// reason when something cannot be done at runtime and needs a reload. A
// server HAProxy refuses is quarantined, not an error: the others converge.
func (g *Generator) runtimeSync(ctx context.Context, st generators.State) (reload reloadNeed, err error) {
	now := time.Now()
	// Only the services whose backends changed since the last sync (and
	// those with removals pending or quarantines due) are read and
	// diffed: a change costs the same with ten backends or ten thousand.
	if now.Sub(g.lastFullSync) > fullSyncEvery {
		// Now and then check every backend, in case something else
		// changed HAProxy (an operator on the socket, synctl --local).
		g.synced, g.lastFullSync = nil, now
	}
	var names []string
	for _, name := range g.serviceNames() {
		svc := st.Services[name]
		if g.unknown(svc) {
			continue // nothing known yet: leave its servers as they are
		}
		be := g.services[name].BackendName
		if prev, ok := g.synced[name]; ok && prev.Equal(svc) && !g.removalsPending(be) && !g.quarantineDue(be, now) && !g.takeResync(name) {
			continue
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return reloadNeed{}, nil
	}
	show := make([]string, len(names))
	for i, name := range names {
		show[i] = "show servers state " + g.services[name].BackendName
	}
	replies, err := g.rt.Run(ctx, show...)
	if err != nil {
		return reloadNeed{}, err
	}
	running := map[string]map[string]serverState{}
	for i, r := range replies {
		if strings.HasPrefix(strings.TrimSpace(r), "Can't find backend") {
			// The running HAProxy loaded an older config than the file
			// (a reload that failed before this synapse started, say).
			return reloadNeed{ReloadBackendMissing, "backend " + g.services[names[i]].BackendName + " missing from the running HAProxy"}, nil
		}
		st, err := parseServersState(r)
		if err != nil {
			return reloadNeed{}, fmt.Errorf("%s: %w", show[i], err)
		}
		for be, servers := range st {
			running[be] = servers
		}
	}
	defer func() {
		if err != nil || reload.needed() {
			g.synced = nil
			return
		}
		if g.synced == nil {
			g.synced = map[string]generators.Service{}
		}
		for _, name := range names {
			g.synced[name] = st.Services[name]
		}
	}()
	b := batch{attempted: map[string]attempt{}, then: map[string][]command{}, cookie: map[string]bool{}}
	// Without quarantines (the usual case) a server costs no quarantine
	// lookups and no signature: this loop runs over every server of every
	// changed service.
	anyQ := g.anyQuarantined()
	for _, name := range names {
		svc := g.services[name]
		be := svc.BackendName
		// A backend without servers is not listed; a backend missing from
		// the running config changed the skeleton and was reloaded already.
		cur := running[be]
		serverOpts := svc.ServerOptions.String()
		dynamic := dynamicBalance(g.cfg.Defaults, svc.Listen, svc.Backend) && dynamicOptions(serverOpts)
		// Ids of the servers HAProxy runs are what the file must say.
		g.ids.assign(be, st.Services[name].Backends, cur, now)
		b.cookie[name] = cookiePersistence(g.cfg.Defaults, svc) && !tcpMode(g.cfg.Defaults, svc)
		want := map[string]bool{}    // servers HAProxy is to keep
		desired := map[string]bool{} // servers of the state, quarantined or not
		for _, bk := range st.Services[name].Backends {
			sname := bk.ServerName()
			desired[sname] = true
			id := be + "/" + sname
			addr, aerr := g.addrOf(bk.Host)
			ident := optsIdentity(bk, serverOpts)
			if anyQ {
				if kind, held := g.held(id, sig(bk, addr, ident), now); held {
					// Quarantined with this very record: skipped. A server
					// HAProxy has and only refused a change keeps its place.
					want[sname] = kind == qRefused
					continue
				}
			}
			if aerr != nil {
				g.quarantineServer(qRejected, name, id, sig(bk, addr, ident), aerr.Error())
				continue // out of HAProxy (removed below if it is there)
			}
			want[sname] = true
			ncmds := len(b.cmds)
			r, exists := cur[sname]
			switch {
			case exists && g.appliedOpts(id, ident):
				// Back before its removal finished, or its options were
				// restored while it drained for a replacement.
				delete(g.removing, id)
				// Weight, state and address are runtime settings of the
				// server: never a reason to replace it.
				if r.Addr != addr || r.Port != bk.Port {
					b.cmds = append(b.cmds, command{opSetAddr, id, fmt.Sprintf("%s port %d", addr, bk.Port)})
				}
				if w := weightOf(serverParams(bk, serverOpts)); r.Weight != w {
					b.cmds = append(b.cmds, command{opSetWeight, id, strconv.Itoa(w)})
				}
				if r.forced() != string(bk.State) {
					b.cmds = append(b.cmds, command{opSetState, id, string(bk.State)})
				}
			case !dynamic:
				return reloadNeed{ReloadStaticBalance, "backend " + be + " membership"}, nil
			case exists:
				// Its options changed, which only a new server can carry
				// (and it has the same name): the old one takes no new
				// requests, and goes once its connections end or the
				// grace passes; the new one is added right after.
				b.cmds = append(b.cmds, g.retire(id, r, now)...)
				b.then[id] = addCmds(id, joinAddr(addr, bk.Port), g.addParams(svc, bk, serverOpts), bk.State)
			default:
				delete(g.removing, id) // gone by other means (a reload, an operator)
				b.cmds = append(b.cmds, addCmds(id, joinAddr(addr, bk.Port), g.addParams(svc, bk, serverOpts), bk.State)...)
			}
			// Recorded when it got commands (their replies decide), or
			// when it may be quarantined (a success releases it).
			if anyQ || len(b.cmds) > ncmds {
				b.attempted[id] = attempt{service: name, sig: sig(bk, addr, ident), ident: ident}
			}
		}
		// Forget removals HAProxy finished by other means (a reload, an
		// operator), or they would keep asking for retries.
		for id := range g.removing {
			if sname, ok := strings.CutPrefix(id, be+"/"); ok && !want[sname] {
				if _, still := cur[sname]; !still {
					delete(g.removing, id)
				}
			}
		}
		g.forgetGone(name, be, desired, cur)
		for sname, r := range cur {
			if want[sname] {
				continue
			}
			if !dynamic {
				return reloadNeed{ReloadStaticBalance, "backend " + be + " membership"}, nil
			}
			id := be + "/" + sname
			if _, held := g.held(id, removedSig, now); held {
				// HAProxy refused to delete it: tried again at its
				// quarantine's retry, not every removalPoll.
				delete(g.removing, id)
				continue
			}
			b.attempted[id] = attempt{service: name, sig: removedSig}
			b.cmds = append(b.cmds, g.retire(id, r, now)...)
		}
	}
	if err := g.runBatch(ctx, &b, b.cmds); err != nil {
		return reloadNeed{}, err
	}
	// Replacements whose old server is gone: the new one now.
	var then []command
	for _, id := range b.deleted {
		then = append(then, b.then[id]...)
	}
	if err := g.runBatch(ctx, &b, then); err != nil {
		return reloadNeed{}, err
	}
	for id, a := range b.attempted {
		if f, failed := b.failed[id]; failed {
			g.quarantineServer(f.kind, a.service, id, a.sig, fmt.Sprintf("%q: %s", f.cmd.String(), f.reply))
		} else {
			g.release(id)
		}
	}
	return reloadNeed{}, nil
}

// removedSig is the signature of a server being removed.
const removedSig = "\x00removed"

// attempt is a server the sync asks HAProxy to change.
type attempt struct {
	service, sig, ident string
}

// failure is a server's first refused command.
type failure struct {
	kind  quarantineKind
	cmd   command
	reply string
}

// batch is one sync's commands and what became of them.
type batch struct {
	cmds      []command
	attempted map[string]attempt
	then      map[string][]command // to send once the server of that id is deleted
	deleted   []string             // ids deleted by this sync
	failed    map[string]failure
	// cookie: services whose backend persists by cookie; a server added
	// to one at runtime has no cookie until a reload (cookieReload).
	cookie map[string]bool
}

// runBatch sends cmds in one pipelined round trip and records each reply.
func (g *Generator) runBatch(ctx context.Context, b *batch, cmds []command) error {
	if len(cmds) == 0 {
		return nil
	}
	start := time.Now()
	replies, err := g.rt.Run(ctx, strs(cmds)...)
	if err != nil {
		return err
	}
	g.m.RuntimeBatchSeconds.Observe(time.Since(start).Seconds())
	nfailed := 0
	for i, c := range cmds {
		op := c.kind.label()
		switch c.judge(replies[i]) {
		case replyOK:
			g.m.RuntimeOps.WithLabelValues(op, "ok").Inc()
			switch c.kind {
			case opDel:
				delete(g.removing, c.id)
				g.forgetApplied(c.id)
				b.deleted = append(b.deleted, c.id)
			case opAdd:
				g.setApplied(c.id, b.attempted[c.id].ident)
				if b.cookie[b.attempted[c.id].service] {
					g.cookiePending = true
				}
			}
		case replyBusy:
			// A removed server with connections stays in maint until
			// they end or the grace runs out: not an error.
			g.m.RuntimeOps.WithLabelValues(op, "pending").Inc()
			g.log.Debug("removed server still has connections; retrying", "server", c.id)
		default:
			g.m.RuntimeOps.WithLabelValues(op, "error").Inc()
			nfailed++
			if b.failed == nil {
				b.failed = map[string]failure{}
			}
			if _, seen := b.failed[c.id]; !seen { // the first refusal is the reason
				kind := qRefused
				switch c.kind {
				case opAdd:
					kind = qRejected
				case opDel, opShutdown:
					kind = qStuck
				}
				b.failed[c.id] = failure{kind, c, replies[i]}
			}
		}
	}
	g.log.Debug("runtime changes applied", "commands", len(cmds), "failed", nfailed, "took", time.Since(start))
	return nil
}

// addCmds adds a server at runtime: dynamic servers start in maint with
// their checks off.
func addCmds(id, addr, params string, state registry.OverrideState) []command {
	c := []command{{opAdd, id, addr + params}}
	if state != registry.StateMaint {
		c = append(c, command{opSetState, id, string(state)})
	}
	if hasToken(params, "check") {
		c = append(c, command{opEnableHealth, id, ""})
	}
	if hasToken(params, "agent-check") {
		c = append(c, command{opEnableAgent, id, ""})
	}
	return c
}

// retire takes a server out without cutting a request: maint at once (no
// new requests), `del server` (refused while connections are attached,
// retried every removalPoll), and its sessions shut down only once
// removal_grace has passed since the first try.
func (g *Generator) retire(id string, r serverState, now time.Time) []command {
	first, seen := g.removing[id]
	if !seen {
		g.removing[id], first = now, now
	}
	var c []command
	// Only a forced maint lets `del server` go (HAProxy refuses to delete
	// a server whose only maint is `disabled` in the config, once set
	// ready), and keeps it out if a tracked server comes back.
	if r.forced() != "maint" {
		c = append(c, command{opSetState, id, "maint"})
	}
	if now.Sub(first) >= g.cfg.RemovalGrace.D() {
		c = append(c, command{opShutdown, id, ""})
	}
	return append(c, command{opDel, id, ""})
}

// removalPoll is how often a removed server that still has connections is
// tried again: `del server` succeeds once they end.
const removalPoll = time.Second

// RetryAt implements generators.Retrier: while removed servers wait for
// their connections to end, Apply is wanted every removalPoll, and when the
// first grace runs out (its sessions are then shut down).
func (g *Generator) RetryAt() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.nextQuarantineRetry()
	if len(g.removing) == 0 {
		return q
	}
	now := time.Now()
	at := now.Add(removalPoll)
	if !q.IsZero() && q.Before(at) {
		at = q
	}
	for _, first := range g.removing {
		// Past its grace, a server waits for HAProxy to close its idle
		// connections (half of them every pool-purge-delay): polled.
		if end := first.Add(g.cfg.RemovalGrace.D()); end.After(now) && end.Before(at) {
			at = end
		}
	}
	return at
}

func (g *Generator) removalsPending(backend string) bool {
	for id := range g.removing {
		if strings.HasPrefix(id, backend+"/") {
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

// The options each server was added with; a server whose options changed
// must be replaced. Servers HAProxy loaded from the config file were
// rendered with the options of their record, so an unknown server counts
// as matching until its options are known to differ.
func (g *Generator) appliedOpts(id, opts string) bool {
	if g.applied == nil {
		return true
	}
	old, ok := g.applied[id]
	return !ok || old == opts
}

func (g *Generator) setApplied(id, opts string) {
	if g.applied == nil {
		g.applied = map[string]string{}
	}
	g.applied[id] = opts
}

func (g *Generator) forgetApplied(id string) { delete(g.applied, id) }

// serverOptsOf reads backend/server → options from a config file's server
// lines, as render writes them, and the server lines of each backend.
func serverOptsOf(cfg string) (opts map[string]string, lines map[string][]string) {
	out := map[string]string{}
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
		out[section+"/"+f[1]] = identity(params)
		lines[section] = append(lines[section], strings.Join(f, " "))
	}
	return out, lines
}
