package haproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
)

// Host-name backends (nerve records and serversets carry them) are
// resolved here, by synapse, and HAProxy is given the address: a server
// keeps its name (name_host:port) and is added, changed and removed at
// runtime like any other, with no reload. HAProxy's own resolution does
// not fit: a `resolvers` section does not apply to servers added at
// runtime on 2.6 (every membership change would reload), and libc
// resolution at load time would make every address change a reload.
// The lookup is the system's (Go's resolver reads /etc/hosts and
// resolv.conf, as libc does), redone every dnsRefresh; a changed address
// is a `set server addr`. A name that never resolved quarantines its
// server; one that stops resolving keeps its last address (HAProxy's
// `init-addr last`), as a DNS outage must not empty backends.
const (
	dnsRefresh = 30 * time.Second
	dnsTimeout = 2 * time.Second
)

// resolved is the last lookup of one host name.
type resolved struct {
	addr netip.Addr // the last address found; invalid: never resolved
	err  error      // of the last lookup
	at   time.Time
}

// ErrUnresolved says a backend's host name has no address (yet).
type ErrUnresolved struct {
	Host string
	Err  error
}

func (e *ErrUnresolved) Error() string {
	return fmt.Sprintf("host name %q does not resolve: %v", e.Host, e.Err)
}

func (e *ErrUnresolved) Unwrap() error { return e.Err }

// lookupFunc looks a host name up; tests replace it.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func systemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// addrOf is the address HAProxy gets for host: host itself when it is an
// IP, else its resolved address.
func (g *Generator) addrOf(host string) (string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.String(), nil
	}
	g.rmu.Lock()
	defer g.rmu.Unlock()
	r, ok := g.addrs[host]
	switch {
	case !ok:
		return "", &ErrUnresolved{Host: host, Err: fmt.Errorf("not looked up yet")}
	case !r.addr.IsValid():
		return "", &ErrUnresolved{Host: host, Err: r.err}
	}
	return r.addr.String(), nil
}

// resolveHosts looks up the host names of st that are new or due for a
// refresh, concurrently, and reports whether any address changed (the
// runtime sync must then look at every backend).
func (g *Generator) resolveHosts(ctx context.Context, st generators.State) (changed bool) {
	now := time.Now()
	// The host names of each service are found again only when its
	// backends changed: an apply stays O(changed services), as the
	// runtime sync is.
	for _, name := range g.serviceNames() {
		svc := st.Services[name]
		if g.unknown(svc) {
			continue // its servers are left as they are
		}
		if prev, ok := g.hostsSeen[name]; ok && prev.Equal(svc) {
			continue
		}
		var hosts []string
		for _, b := range svc.Backends {
			if !isIP(b.Host) && !slices.Contains(hosts, b.Host) {
				hosts = append(hosts, b.Host)
			}
		}
		g.hostsOf[name], g.hostsSeen[name] = hosts, svc
	}
	hosts := map[string]bool{}
	for _, hs := range g.hostsOf {
		for _, h := range hs {
			hosts[h] = true
		}
	}
	var first, stale []string
	g.rmu.Lock()
	for h := range hosts {
		r, ok := g.addrs[h]
		switch {
		case !ok:
			first = append(first, h)
		case now.Sub(r.at) >= dnsRefresh && !g.refreshing:
			stale = append(stale, h)
		}
	}
	for h := range g.addrs {
		if !hosts[h] {
			delete(g.addrs, h)
		}
	}
	changed, g.addrsChanged = g.addrsChanged, false
	g.refreshing = g.refreshing || len(stale) > 0
	g.rmu.Unlock()
	// A new name is looked up now: its server needs an address. Known
	// names are refreshed in the background, so a slow name server never
	// holds up the changes of every service; a new address is applied by
	// the next apply (the periodic resync at the latest).
	if len(first) > 0 && g.lookupAll(ctx, first) {
		changed = true
	}
	if len(stale) > 0 {
		g.resolveWG.Add(1)
		go func() {
			defer g.resolveWG.Done()
			ch := g.lookupAll(context.Background(), stale)
			g.rmu.Lock()
			g.refreshing = false
			g.addrsChanged = g.addrsChanged || ch
			g.rmu.Unlock()
		}()
	}
	return changed
}

// lookupAll looks hosts up concurrently and records the results; it
// reports whether an address changed (or a name resolved for the first
// time).
func (g *Generator) lookupAll(ctx context.Context, hosts []string) (changed bool) {
	type result struct {
		host  string
		addrs []netip.Addr
		err   error
	}
	results := make([]result, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, dnsTimeout)
			defer cancel()
			addrs, err := g.lookup(lctx, h)
			if err == nil && len(addrs) == 0 {
				err = fmt.Errorf("no address")
			}
			results[i] = result{h, addrs, err}
		}()
	}
	wg.Wait()
	now := time.Now()
	g.rmu.Lock()
	defer g.rmu.Unlock()
	for _, res := range results {
		old := g.addrs[res.host]
		if old == nil {
			old = &resolved{}
		}
		next := &resolved{addr: old.addr, err: res.err, at: now}
		switch {
		case res.err != nil:
			g.m.Resolutions.WithLabelValues("error").Inc()
			if old.addr.IsValid() {
				g.log.Warn("host name lookup failed; keeping its last address", "host", res.host, "addr", old.addr, "err", res.err)
			}
		case pick(res.addrs) != old.addr:
			next.addr, changed = pick(res.addrs), true
			if old.addr.IsValid() {
				g.m.Resolutions.WithLabelValues("changed").Inc()
				g.log.Info("host name has a new address", "host", res.host, "from", old.addr, "to", next.addr)
			} else {
				g.m.Resolutions.WithLabelValues("ok").Inc()
			}
		default:
			g.m.Resolutions.WithLabelValues("ok").Inc()
		}
		g.addrs[res.host] = next
	}
	return changed
}

// pick chooses one address, as HAProxy's libc resolution would take the
// first: the first IPv4 one if any (IPv4 first is the usual libc order for
// names with both, such as localhost), else the first.
func pick(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	return addrs[0]
}
