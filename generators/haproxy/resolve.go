package haproxy

import (
	"context"
	"fmt"
	"log/slog"
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

// resolver keeps the addresses of the backends' host names. Its lock
// guards the addresses (render reads them from the background writer);
// hostsOf and hostsSeen belong to the apply path.
type resolver struct {
	log    *slog.Logger
	m      *Metrics
	lookup lookupFunc

	mu         sync.Mutex
	addrs      map[string]*resolved
	refreshing bool // a background refresh runs
	changed    bool // it found a new address: the next sync reads all
	wg         sync.WaitGroup

	// The host names of each service's backends, and the service they
	// were found in (with the apply lock).
	hostsOf   map[string][]string
	hostsSeen map[string]generators.Service
}

func newResolver(log *slog.Logger, m *Metrics) *resolver {
	return &resolver{log: log, m: m, lookup: systemLookup, addrs: map[string]*resolved{},
		hostsOf: map[string][]string{}, hostsSeen: map[string]generators.Service{}}
}

// addrOf is the address HAProxy gets for host: host itself when it is an
// IP, else its resolved address.
func (res *resolver) addrOf(host string) (string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.String(), nil
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	r, ok := res.addrs[host]
	switch {
	case !ok:
		return "", &ErrUnresolved{Host: host, Err: fmt.Errorf("not looked up yet")}
	case !r.addr.IsValid():
		return "", &ErrUnresolved{Host: host, Err: r.err}
	}
	return r.addr.String(), nil
}

// resolveHosts looks up the host names of the services (names) of st that
// are new or due for a refresh, concurrently, and reports whether any
// address changed (the runtime sync must then look at every backend).
// Services skip says are left as they are.
func (res *resolver) resolveHosts(ctx context.Context, st generators.State, names []string, skip func(generators.Service) bool) (changed bool) {
	now := time.Now()
	// The host names of each service are found again only when its
	// backends changed: an apply stays O(changed services), as the
	// runtime sync is.
	for _, name := range names {
		svc := st.Services.Get(name)
		if skip(svc) {
			continue // its servers are left as they are
		}
		if prev, ok := res.hostsSeen[name]; ok && prev.Equal(svc) {
			continue
		}
		var hosts []string
		for _, b := range svc.Backends {
			if !isIP(b.Host) && !slices.Contains(hosts, b.Host) {
				hosts = append(hosts, b.Host)
			}
		}
		res.hostsOf[name], res.hostsSeen[name] = hosts, svc
	}
	hosts := map[string]bool{}
	for _, hs := range res.hostsOf {
		for _, h := range hs {
			hosts[h] = true
		}
	}
	var first, stale []string
	res.mu.Lock()
	for h := range hosts {
		r, ok := res.addrs[h]
		switch {
		case !ok:
			first = append(first, h)
		case now.Sub(r.at) >= dnsRefresh && !res.refreshing:
			stale = append(stale, h)
		}
	}
	for h := range res.addrs {
		if !hosts[h] {
			delete(res.addrs, h)
		}
	}
	changed, res.changed = res.changed, false
	res.refreshing = res.refreshing || len(stale) > 0
	res.mu.Unlock()
	// A new name is looked up now: its server needs an address. Known
	// names are refreshed in the background, so a slow name server never
	// holds up the changes of every service; a new address is applied by
	// the next apply (the periodic resync at the latest).
	if len(first) > 0 && res.lookupAll(ctx, first) {
		changed = true
	}
	if len(stale) > 0 {
		res.wg.Add(1)
		go func() {
			defer res.wg.Done()
			ch := res.lookupAll(context.Background(), stale)
			res.mu.Lock()
			res.refreshing = false
			res.changed = res.changed || ch
			res.mu.Unlock()
		}()
	}
	return changed
}

// lookupAll looks hosts up concurrently and records the results; it
// reports whether an address changed (or a name resolved for the first
// time).
func (res *resolver) lookupAll(ctx context.Context, hosts []string) (changed bool) {
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
			addrs, err := res.lookup(lctx, h)
			if err == nil && len(addrs) == 0 {
				err = fmt.Errorf("no address")
			}
			results[i] = result{h, addrs, err}
		}()
	}
	wg.Wait()
	now := time.Now()
	res.mu.Lock()
	defer res.mu.Unlock()
	for _, r := range results {
		old := res.addrs[r.host]
		if old == nil {
			old = &resolved{}
		}
		next := &resolved{addr: old.addr, err: r.err, at: now}
		switch {
		case r.err != nil:
			res.m.Resolutions.WithLabelValues("error").Inc()
			if old.addr.IsValid() {
				res.log.Warn("host name lookup failed; keeping its last address", "host", r.host, "addr", old.addr, "err", r.err)
			}
		case pick(r.addrs) != old.addr:
			next.addr, changed = pick(r.addrs), true
			if old.addr.IsValid() {
				res.m.Resolutions.WithLabelValues("changed").Inc()
				res.log.Info("host name has a new address", "host", r.host, "from", old.addr, "to", next.addr)
			} else {
				res.m.Resolutions.WithLabelValues("ok").Inc()
			}
		default:
			res.m.Resolutions.WithLabelValues("ok").Inc()
		}
		res.addrs[r.host] = next
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

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
