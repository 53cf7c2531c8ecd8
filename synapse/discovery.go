package synapse

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
	"github.com/syncstack/syncstack/watchers"
	// Every built-in discovery method, registered for the config to name.
	_ "github.com/syncstack/syncstack/watchers/all"
	"github.com/syncstack/syncstack/watchers/multi"
)

// The watchers of the services and the registry clients they share.

// client returns the shared registry client of a cluster.
func (s *Synapse) client(method string, hosts []string, root string) (registry.Backend, error) {
	sorted := slices.Clone(hosts)
	sort.Strings(sorted)
	key := method + ":" + strings.Join(sorted, ",") + ":" + root
	if c, ok := s.clients[key]; ok {
		return c, nil
	}
	var c registry.Backend
	var err error
	switch method {
	case "zookeeper":
		c, err = zookeeper.New(zookeeper.Config{Servers: hosts, Root: root, AuthFile: s.cfg.ZKAuthFile, Logger: s.log, Metrics: s.rm})
	case "etcd":
		ecfg := etcd.Config{Endpoints: hosts, Root: root, ProbeInterval: s.cfg.EtcdProbeInterval.D(), Logger: s.log, Metrics: s.rm}
		if err := s.cfg.EtcdSecurity.Apply(&ecfg); err != nil {
			return nil, fmt.Errorf("etcd_security: %w", err)
		}
		c, err = etcd.New(ecfg)
	default:
		err = fmt.Errorf("method %q", method)
	}
	if err != nil {
		return nil, err
	}
	s.clients[key] = c
	return c, nil
}

// watcher builds a service's watcher from its discovery section through
// the method registered for it (package watchers/all), or, with
// discovery_multi, its children combined.
func (s *Synapse) watcher(name string, svc *ServiceConfig) (watchers.Watcher, error) {
	deps := watchers.Deps{
		Service:      name,
		PortOverride: svc.HAProxy.ServerPortOverride,
		Log:          s.log,
		Metrics:      s.rm,
		Registry: func(method string, hosts []string) (registry.Discovery, error) {
			// The overrides' root rides along, so the client that
			// watches a cluster also serves its overrides and acks.
			root := ""
			if s.cfg.Overrides != nil {
				root = s.cfg.Overrides.Root
			}
			return s.client(method, hosts, root)
		},
	}
	build := func(d *watchers.Config) (watchers.Watcher, error) {
		w, err := d.NewWatcher(deps)
		if err != nil {
			return nil, fmt.Errorf("services.%s.discovery: %w", name, err)
		}
		return w, nil
	}
	if svc.DiscoveryMulti != nil {
		// discovery_multi: discovery is the primary child, each child
		// keeps its own last set, the resolver combines them.
		return multi.New(svc.DiscoveryMulti, &svc.Discovery, func(_ string, d *watchers.Config) (watchers.Watcher, error) {
			return build(d)
		})
	}
	return build(&svc.Discovery)
}
