// Package dns watches backends through DNS: A/AAAA names (one backend per
// address) and SRV names (one per target and address), resolved again every
// interval. A failed lookup keeps the last answer for that name.
package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/poll"
)

func init() {
	watchers.Register("dns", func() watchers.MethodConfig { return &Config{} })
}

// DefaultInterval is how often names are resolved when no interval is set.
const DefaultInterval = 30 * time.Second

// Config is method dns's keys.
type Config struct {
	// Servers are the names to resolve (a name alone takes its port from
	// the service's server_port_override).
	Servers []watchers.Server `yaml:"servers"`
	// SRV names resolved to targets.
	SRV []string `yaml:"srv"`
	// Nameserver (host:port) instead of the system resolver.
	Nameserver string `yaml:"nameserver"`
	// Interval: how often names are resolved again (default 30s).
	Interval confutil.Duration `yaml:"interval"`
}

// Finalize implements watchers.MethodConfig. A name without a port is
// warned about, not refused: Airbnb's own examples list bare names without
// a port or server_port_override (its synapse then writes servers HAProxy
// refuses).
func (c *Config) Finalize(ch *watchers.Check) {
	if len(c.Servers) == 0 && len(c.SRV) == 0 {
		ch.Problem("servers", "missing: names to resolve (servers, or srv)")
	}
	if c.Nameserver != "" && !strings.Contains(c.Nameserver, ":") {
		c.Nameserver += ":53"
	}
	watchers.CheckServers(ch, c.Servers, true)
}

// NewWatcher implements watchers.MethodConfig.
func (c *Config) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	w := &Watcher{Servers: watchers.Instances(c.Servers, d.PortOverride), SRV: c.SRV, Interval: c.Interval.D(), Log: d.Log}
	if c.Nameserver != "" {
		w.Resolver = NewResolver(c.Nameserver)
	}
	return w, nil
}

// Watcher resolves Servers (host names, each with a port) and SRV names.
type Watcher struct {
	Servers  []registry.Instance
	SRV      []string
	Interval time.Duration
	// Resolver defaults to net.DefaultResolver.
	Resolver *net.Resolver
	Log      *slog.Logger
}

// NewResolver returns a resolver that asks nameserver (host:port) only.
func NewResolver(nameserver string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, nameserver)
	}}
}

// lookupTimeout bounds one lookup: a resolver that hangs fails the lookup
// instead of the watcher.
const lookupTimeout = 5 * time.Second

// errAllFailed: no name resolved, so nothing new is known.
var errAllFailed = errors.New("every lookup failed")

// Run implements watchers.Watcher.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	res := w.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	last := map[string][]registry.Instance{} // by name: the last good answer
	read := func(ctx context.Context) ([]registry.Instance, error) {
		ok := 0
		for _, s := range w.Servers {
			addrs, err := lookup(ctx, res, s.Host)
			if err != nil {
				log.Warn("dns watcher: lookup failed; keeping the last answer", "name", s.Host, "err", err)
				continue
			}
			ok++
			var got []registry.Instance
			for _, a := range addrs {
				in := s.Clone()
				in.Host = a
				if in.Name == "" {
					in.Name = strings.TrimSuffix(s.Host, ".")
				}
				got = append(got, in)
			}
			last["A "+s.Host] = got
		}
		for _, name := range w.SRV {
			lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
			_, srvs, err := res.LookupSRV(lctx, "", "", name)
			cancel()
			if err != nil {
				log.Warn("dns watcher: SRV lookup failed; keeping the last answer", "name", name, "err", err)
				continue
			}
			ok++
			var got []registry.Instance
			for _, srv := range srvs {
				addrs, err := lookup(ctx, res, srv.Target)
				if err != nil {
					continue
				}
				for _, a := range addrs {
					weight := min(int(srv.Weight), registry.MaxWeight)
					got = append(got, registry.Instance{Host: a, Port: int(srv.Port), Name: strings.TrimSuffix(srv.Target, "."), Weight: &weight})
				}
			}
			last["SRV "+name] = got
		}
		if ok == 0 {
			return nil, errAllFailed
		}
		var set []registry.Instance
		for _, ins := range last {
			for _, in := range ins {
				if in.Validate() == nil {
					set = append(set, in)
				}
			}
		}
		return set, nil
	}
	return poll.Run(ctx, out, poll.Options{Interval: interval, Read: read, Log: log, Attrs: []any{"watcher", "dns"}})
}

func lookup(ctx context.Context, res *net.Resolver, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{host}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := res.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil {
			out = append(out, ip.String())
		}
	}
	return out, nil
}
