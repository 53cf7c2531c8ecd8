package haproxy

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/syncstack/syncstack/generators"
)

// drainSuffix ends the server line of a drained server.
const drainSuffix = " weight 0 # drained"

const header = "# Written by syncstack synapse. Edits are overwritten: change synapse's config instead.\n"

// render writes the whole haproxy.cfg for st: global, defaults, extra
// sections, then a frontend and backend (or a listen) per service with every
// current server, so a reload reproduces the runtime state. With servers
// false it writes the skeleton: the same without server lines, which is what
// decides whether a change needs a reload.
func (g *Generator) render(st generators.State, servers bool) string {
	return g.renderWith(st, servers, nil)
}

// renderFile renders the full file, with the quarantined lines of trial
// (due for another haproxy -c) in.
func (g *Generator) renderFile(st generators.State, trial map[serverKey]bool) string {
	return g.renderWith(st, true, trial)
}

func (g *Generator) renderWith(st generators.State, servers bool, trial map[serverKey]bool) string {
	var b strings.Builder
	if servers {
		// The size of the last full render, and some: at 10k servers
		// the file is ~1 MB, and growing the buffer by doubling made
		// twice that in copies, live together while it grew.
		if n := g.renderSize.Load(); n > 0 {
			b.Grow(int(n + n/16))
		}
		defer func() { g.renderSize.Store(int64(b.Len())) }()
	}
	b.WriteString(header)
	b.WriteString("global\n")
	for _, l := range g.cfg.Global {
		line(&b, l)
	}
	if g.cfg.SocketFilePath != "" && !mentions(g.cfg.Global, "stats socket", g.cfg.SocketFilePath) {
		line(&b, "stats socket "+g.cfg.SocketFilePath+" mode 600 level admin expose-fd listeners")
	}
	if g.cfg.ServerStateFile != "" {
		line(&b, "server-state-file "+g.cfg.ServerStateFile)
	}
	b.WriteString("\ndefaults\n")
	for _, l := range g.cfg.Defaults {
		line(&b, l)
	}
	if g.cfg.ServerStateFile != "" {
		line(&b, "load-server-state-from-file global")
	}
	names := make([]string, 0, len(g.cfg.ExtraSections))
	for n := range g.cfg.ExtraSections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		head, bind := sectionHeader(n)
		b.WriteString("\n" + head + "\n")
		line(&b, bind)
		for _, l := range g.cfg.ExtraSections[n] {
			line(&b, l)
		}
	}
	for _, name := range g.serviceNames() {
		svc := g.services[name]
		var backends []generators.Backend
		var verbatim []string
		if servers {
			// A service whose servers are left as they are is written as
			// the file had it; its cached backends (a subset, often) would
			// repeat those lines.
			if g.unknown(st.Services.Get(name)) {
				verbatim = g.boot.servers[svc.BackendName]
			} else {
				backends = st.Services.Get(name).Backends
			}
		}
		g.renderService(&b, name, svc, backends, verbatim, trial)
	}
	g.renderSharedFrontend(&b)
	return b.String()
}

// renderService writes one service; verbatim server lines (those of a
// service nothing is known of yet, as the file had them) follow the
// rendered ones.
func (g *Generator) renderService(b *strings.Builder, name string, svc *ServiceConfig, backends []generators.Backend, verbatim []string, trial map[serverKey]bool) {
	bind := ""
	if svc.Port > 0 {
		bind = "bind " + bindAddr(svc.BindAddress, svc.Port)
		if svc.BindOptions != "" {
			bind += " " + svc.BindOptions
		}
	}
	serverOpts := svc.ServerOptions.String()
	if len(svc.Frontend) == 0 && len(svc.Backend) == 0 && svc.Port > 0 && svc.BackendName == name {
		b.WriteString("\nlisten " + name + "\n")
		line(b, bind)
		for _, l := range svc.Listen {
			line(b, l)
		}
		// The options every server gets, so a change of them changes the
		// skeleton (and takes a reload).
		line(b, "# server options: "+serverOpts)
		g.renderServers(b, svc, backends, serverOpts, trial)
		for _, l := range verbatim {
			line(b, l)
		}
		return
	}
	if svc.Port > 0 {
		b.WriteString("\nfrontend " + name + "\n")
		line(b, bind)
		// The section's own lines, then the listen ones, as Airbnb's
		// synapse writes them: where a directive is repeated the last one
		// wins, so the order is behaviour.
		for _, l := range svc.Frontend {
			line(b, l)
		}
		for _, l := range svc.Listen {
			line(b, l)
		}
		line(b, "default_backend "+svc.BackendName)
	}
	b.WriteString("\nbackend " + svc.BackendName + "\n")
	for _, l := range svc.Backend {
		line(b, l)
	}
	for _, l := range svc.Listen {
		line(b, l)
	}
	line(b, "# server options: "+serverOpts)
	g.renderServers(b, svc, backends, serverOpts, trial)
	for _, l := range verbatim {
		line(b, l)
	}
}

func (g *Generator) renderServers(b *strings.Builder, svc *ServiceConfig, backends []generators.Backend, serverOpts string, trial map[serverKey]bool) {
	be := svc.BackendName
	anyRejected := g.runtime.q.any()
	cookies := !tcpMode(g.cfg.Defaults, svc)
	for _, bk := range orderBackends(svc, g.seed(), backends) {
		addr, err := g.res.addrOf(bk.Host)
		if err != nil {
			continue // a host name that does not resolve: quarantined
		}
		if anyRejected && g.runtime.q.rejected(serverKey{be, bk.ServerName()}, sig(bk, addr, optsIdentity(bk, serverOpts)), trial) {
			continue // HAProxy refused it: left out, or haproxy -c fails for all
		}
		l := "server " + bk.ServerName() + " " + joinAddr(addr, bk.Port) + lineParams(g.ids, svc, bk, serverOpts, cookies)
		switch {
		case bk.State == "maint":
			l += " disabled"
		case bk.State == "drain":
			// A config cannot say "drain"; a zero weight does the same for
			// a HAProxy that starts from this file (no new requests). A
			// reload carries the real drain and weight in the server state
			// file, and the runtime sync sets both after a fresh start.
			// The comment tells serverOptsOf this weight is not an option.
			l += drainSuffix
		}
		line(b, l)
	}
}

// lineParams is what follows the address on the server line of bk (and
// in its `add server`): its `id` (the one its record asks for, unless
// another record has it: see serverIDs.claim), its `cookie` (unless the
// backend is in mode tcp), then serverParams, in the order of Airbnb's
// synapse.
func lineParams(ids *serverIDs, svc *ServiceConfig, bk generators.Backend, serverOpts string, cookie bool) string {
	var s strings.Builder
	name := bk.ServerName()
	if id := ids.get(svc.BackendName, name); id > 0 {
		s.WriteString(" id " + strconv.Itoa(id))
	}
	if cookie {
		s.WriteString(" cookie " + cookieValue(svc, name))
	}
	s.WriteString(serverParams(bk, serverOpts))
	return s.String()
}

// addParams is what follows the address in `add server`: the line's
// parameters without the cookie, which HAProxy 2.6 refuses on a dynamic
// server (see cookieReload).
func addParams(ids *serverIDs, svc *ServiceConfig, bk generators.Backend, serverOpts string) string {
	return lineParams(ids, svc, bk, serverOpts, false)
}

// seed is the seed of the default server order.
func (g *Generator) seed() int64 {
	if g.cfg.ServerOrderSeed != nil {
		return *g.cfg.ServerOrderSeed
	}
	return 0
}

// optsIdentity is what a server is added with and cannot change at
// runtime: the service's options and the record's, without any weight
// (the weight is a runtime setting: a server whose weight changes keeps
// its place, its id and its connections), id or cookie (both follow from
// its name, and a running server is never replaced for them: a reload
// brings them).
func optsIdentity(be generators.Backend, serverOpts string) string {
	opts := serverOpts
	if be.HAProxyServerOptions != "" {
		opts += " " + be.HAProxyServerOptions
	}
	return identity(strings.Fields(opts))
}

// identity joins fields (" a b", or "") without their "weight N", "id N"
// and "cookie V" pairs.
func identity(f []string) string {
	var s strings.Builder
	for i := 0; i < len(f); i++ {
		if (f[i] == "weight" || f[i] == "id" || f[i] == "cookie") && i+1 < len(f) {
			i++
			continue
		}
		s.WriteString(" " + f[i])
	}
	return s.String()
}

// stripWeight joins fields (" a b", or "") without their "weight N" pairs.
func stripWeight(f []string) string {
	var s strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] == "weight" && i+1 < len(f) {
			i++
			continue
		}
		s.WriteString(" " + f[i])
	}
	return s.String()
}

// stripID joins fields (" a b", or "") without their "id N" pairs.
func stripID(f []string) string {
	var s strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] == "id" && i+1 < len(f) {
			i++
			continue
		}
		s.WriteString(" " + f[i])
	}
	return s.String()
}

// serverParams is the service's options, the record's options, then the
// backend's weight (last: HAProxy takes the last weight of a line). With a
// weight of its own (the record's, under use_nerve_weights, or synctl's)
// the `weight` of the options is left out, as Airbnb's synapse does.
func serverParams(be generators.Backend, serverOpts string) string {
	var s strings.Builder
	if be.Weight != nil {
		serverOpts = strings.TrimSpace(stripWeight(strings.Fields(serverOpts)))
	}
	if serverOpts != "" {
		s.WriteString(" " + serverOpts)
	}
	if be.HAProxyServerOptions != "" {
		// Without its `id`: the line's id is lineParams's.
		s.WriteString(stripID(strings.Fields(be.HAProxyServerOptions)))
	}
	if be.Weight != nil {
		s.WriteString(" weight " + strconv.Itoa(*be.Weight))
	}
	return s.String()
}

// weightOf is the weight a server line's parameters give (HAProxy takes
// the last one), 1 (HAProxy's default) without one.
func weightOf(params string) int {
	w := 1
	f := strings.Fields(params)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "weight" {
			if n, err := strconv.Atoi(f[i+1]); err == nil {
				w = n
			}
		}
	}
	return w
}

// joinAddr is a server address as HAProxy reads it.
func joinAddr(addr string, port int) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		return "ipv6@" + addr + ":" + strconv.Itoa(port)
	}
	return addr + ":" + strconv.Itoa(port)
}

func bindAddr(addr string, port int) string {
	if a, err := netip.ParseAddr(strings.Trim(addr, "[]")); err == nil && a.Is6() {
		return "ipv6@" + a.String() + ":" + strconv.Itoa(port)
	}
	return addr + ":" + strconv.Itoa(port)
}

// sectionHeader turns the old `listen NAME ADDR` form (in Airbnb's example
// configs; refused by HAProxy 2.x) into `listen NAME` and a bind line.
func sectionHeader(h string) (head, bind string) {
	f := strings.Fields(h)
	if len(f) >= 3 && (f[0] == "listen" || f[0] == "frontend") {
		return f[0] + " " + f[1], "bind " + strings.Join(f[2:], " ")
	}
	return h, ""
}

func line(b *strings.Builder, l string) {
	if l == "" {
		return
	}
	b.WriteString("    ")
	b.WriteString(l)
	b.WriteByte('\n')
}

// mentions reports whether any line starts with prefix and contains s.
func mentions(lines []string, prefix, s string) bool {
	for _, l := range lines {
		f := strings.Join(strings.Fields(l), " ")
		if strings.HasPrefix(f, prefix) && strings.Contains(f, s) {
			return true
		}
	}
	return false
}

// skeletonOf strips the server lines of a rendered (or on-disk) config.
func skeletonOf(cfg string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(cfg, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "server ") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}
