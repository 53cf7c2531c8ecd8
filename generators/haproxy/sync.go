package haproxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
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
// reason when something cannot be done at runtime and needs a reload.
func (g *Generator) runtimeSync(ctx context.Context, st generators.State) (reload string, err error) {
	// Only the services whose backends changed since the last sync (and
	// those with removals pending) are read and diffed: a change costs the
	// same with ten backends or ten thousand.
	if time.Since(g.lastFullSync) > fullSyncEvery {
		// Now and then check every backend, in case something else
		// changed HAProxy (an operator on the socket, synctl --local).
		g.synced, g.lastFullSync = nil, time.Now()
	}
	var names []string
	for _, name := range g.serviceNames() {
		svc := st.Services[name]
		if g.unknown(svc) {
			continue // nothing known yet: leave its servers as they are
		}
		if prev, ok := g.synced[name]; ok && prev.Equal(svc) && !g.removalsPending(g.services[name].BackendName) {
			continue
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return "", nil
	}
	show := make([]string, len(names))
	for i, name := range names {
		show[i] = "show servers state " + g.services[name].BackendName
	}
	replies, err := g.rt.Run(ctx, show...)
	if err != nil {
		return "", err
	}
	running := map[string]map[string]serverState{}
	for i, r := range replies {
		if strings.HasPrefix(strings.TrimSpace(r), "Can't find backend") {
			// The running HAProxy loaded an older config than the file
			// (a reload that failed before this synapse started, say).
			return "backend " + g.services[names[i]].BackendName + " missing from the running HAProxy", nil
		}
		st, err := parseServersState(r)
		if err != nil {
			return "", fmt.Errorf("%s: %w", show[i], err)
		}
		for be, servers := range st {
			running[be] = servers
		}
	}
	defer func() {
		if err != nil || reload != "" {
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
	var cmds []string
	now := time.Now()
	for _, name := range names {
		svc := g.services[name]
		be := svc.BackendName
		// A backend without servers is not listed; a backend missing from
		// the running config changed the skeleton and was reloaded already.
		cur := running[be]
		serverOpts := svc.ServerOptions.String()
		dynamic := dynamicBalance(g.cfg.Defaults, svc.Listen, svc.Backend) && dynamicOptions(serverOpts)
		want := map[string]bool{}
		for _, b := range st.Services[name].Backends {
			sname := b.ServerName()
			want[sname] = true
			id := be + "/" + sname
			delete(g.removing, id) // back before its removal finished
			r, exists := cur[sname]
			opts := serverParams(b, serverOpts)
			if exists && g.appliedOpts(id, opts) {
				if r.Addr != b.Host || r.Port != b.Port {
					if !isIP(b.Host) {
						return "server " + id + " moved to a DNS name", nil
					}
					cmds = append(cmds, fmt.Sprintf("set server %s addr %s port %d", id, b.Host, b.Port))
				}
				w := 1
				if b.Weight != nil {
					w = *b.Weight
				}
				if r.Weight != w {
					cmds = append(cmds, fmt.Sprintf("set server %s weight %d", id, w))
				}
				if r.state() != string(b.State) {
					cmds = append(cmds, fmt.Sprintf("set server %s state %s", id, b.State))
				}
				continue
			}
			if !dynamic {
				return "backend " + be + " (static balance) membership", nil
			}
			if !isIP(b.Host) {
				return "server " + id + " has a DNS name", nil
			}
			if exists { // options changed: replace the server
				cmds = append(cmds, removeCmds(id, r)...)
			}
			cmds = append(cmds, "add server "+id+" "+serverAddr(b)+opts)
			g.setApplied(id, opts)
			if b.State != "maint" {
				cmds = append(cmds, fmt.Sprintf("set server %s state %s", id, b.State))
			}
			if hasToken(opts, "check") {
				cmds = append(cmds, "enable health "+id)
			}
			if hasToken(opts, "agent-check") {
				cmds = append(cmds, "enable agent "+id)
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
		for sname, r := range cur {
			if want[sname] {
				continue
			}
			if !dynamic {
				return "backend " + be + " (static balance) membership", nil
			}
			id := be + "/" + sname
			first, seen := g.removing[id]
			if !seen {
				g.removing[id], first = now, now
			}
			if r.state() != "maint" {
				cmds = append(cmds, "set server "+id+" state maint")
			}
			if now.Sub(first) >= g.cfg.RemovalGrace.D() {
				cmds = append(cmds, "shutdown sessions server "+id)
			}
			cmds = append(cmds, "del server "+id)
		}
	}
	if len(cmds) == 0 {
		return "", nil
	}
	start := time.Now()
	replies, err = g.rt.Run(ctx, cmds...)
	if err != nil {
		return "", err
	}
	g.m.RuntimeBatchSeconds.Observe(time.Since(start).Seconds())
	var failed []string
	for i, c := range cmds {
		op := strings.Join(strings.Fields(c)[:2], " ")
		if replyOK(c, replies[i]) {
			g.m.RuntimeOps.WithLabelValues(op, "ok").Inc()
			if strings.HasPrefix(c, "del server ") {
				id := strings.Fields(c)[2]
				delete(g.removing, id)
				g.forgetApplied(id)
			}
			continue
		}
		// A removed server with connections stays in maint until they
		// end or the grace runs out: not an error.
		if strings.HasPrefix(c, "del server ") && strings.Contains(replies[i], "connections attached") {
			g.m.RuntimeOps.WithLabelValues(op, "pending").Inc()
			g.log.Debug("removed server still has connections; retrying", "command", c)
			continue
		}
		g.m.RuntimeOps.WithLabelValues(op, "error").Inc()
		failed = append(failed, fmt.Sprintf("%q: %s", c, replies[i]))
		if strings.HasPrefix(c, "add server ") {
			g.forgetApplied(strings.Fields(c)[2])
		}
	}
	g.log.Debug("runtime changes applied", "commands", len(cmds), "failed", len(failed), "took", time.Since(start))
	if len(failed) > 0 {
		return "", fmt.Errorf("haproxy runtime API: %d of %d commands failed: %s", len(failed), len(cmds), strings.Join(failed, "; "))
	}
	return "", nil
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
	if len(g.removing) == 0 {
		return time.Time{}
	}
	now := time.Now()
	at := now.Add(removalPoll)
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

// removeCmds takes a server out at once (its options changed).
func removeCmds(id string, r serverState) []string {
	var c []string
	if r.state() != "maint" {
		c = append(c, "set server "+id+" state maint")
	}
	return append(c, "shutdown sessions server "+id, "del server "+id)
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
	section := ""
	for _, l := range strings.Split(cfg, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			section = ""
			if (f[0] == "backend" || f[0] == "listen") && len(f) > 1 {
				section = f[1]
			}
			continue
		}
		if f[0] != "server" || len(f) < 3 || section == "" {
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
		opts := ""
		if len(params) > 0 {
			opts = " " + strings.Join(params, " ")
		}
		out[section+"/"+f[1]] = opts
		lines[section] = append(lines[section], strings.Join(f, " "))
	}
	return out, lines
}
