// Package dns watches backends through DNS: A/AAAA names (one backend per
// address) and SRV names (one per target and address), resolved again every
// interval. A failed lookup keeps the last answer for that name.
package dns

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

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

// Run implements watchers.Watcher.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	interval := w.Interval
	if interval <= 0 {
		interval = 30 * time.Second
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
	var sent []registry.Instance
	first := true
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
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
			_, srvs, err := res.LookupSRV(ctx, "", "", name)
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
					weight := int(srv.Weight)
					in := registry.Instance{Host: a, Port: int(srv.Port), Name: strings.TrimSuffix(srv.Target, "."), Weight: &weight}
					if *in.Weight > registry.MaxWeight {
						*in.Weight = registry.MaxWeight
					}
					got = append(got, in)
				}
			}
			last["SRV "+name] = got
		}
		var set []registry.Instance
		for _, ins := range last {
			for _, in := range ins {
				if in.Validate() == nil {
					set = append(set, in)
				}
			}
		}
		set = registry.Dedupe(set)
		if ok > 0 && (first || !registry.EqualSets(set, sent)) {
			select {
			case out <- set:
				first, sent = false, set
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func lookup(ctx context.Context, res *net.Resolver, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{host}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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
