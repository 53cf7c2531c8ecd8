package synapse

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/dns"
	"github.com/syncstack/syncstack/watchers/file"
	"github.com/syncstack/syncstack/watchers/multi"
	pluginwatch "github.com/syncstack/syncstack/watchers/plugin"
	"github.com/syncstack/syncstack/watchers/registrywatch"
	"github.com/syncstack/syncstack/watchers/static"
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
		ecfg := etcd.Config{Endpoints: hosts, Root: root, Logger: s.log, Metrics: s.rm}
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

func (s *Synapse) watcher(name string, svc *ServiceConfig) (watchers.Watcher, error) {
	if svc.DiscoveryMulti != nil {
		// discovery_multi: discovery is the primary child, each child
		// keeps its own last set, the resolver combines them.
		return multi.New(svc.DiscoveryMulti, &svc.Discovery, func(_ string, d *watchers.Config) (watchers.Watcher, error) {
			return s.discoveryWatcher(name, svc, d)
		})
	}
	return s.discoveryWatcher(name, svc, &svc.Discovery)
}

func (s *Synapse) discoveryWatcher(name string, svc *ServiceConfig, d *watchers.Config) (watchers.Watcher, error) {
	switch d.Method {
	case "zookeeper", "etcd":
		root := ""
		if s.cfg.Overrides != nil {
			root = s.cfg.Overrides.Root
		}
		c, err := s.client(d.Method, d.Hosts, root)
		if err != nil {
			return nil, fmt.Errorf("services.%s.discovery: %w", name, err)
		}
		return &registrywatch.Watcher{Client: c, Path: d.Path, Opts: d.Options()}, nil
	case "file":
		return &file.Watcher{Path: d.Path, Interval: d.Interval.D(), Opts: d.Options(), Log: s.log, Metrics: s.rm}, nil
	case "dns":
		w := &dns.Watcher{Servers: d.Instances(svc.HAProxy.ServerPortOverride), SRV: d.SRV, Interval: d.Interval.D(), Log: s.log}
		if d.Nameserver != "" {
			w.Resolver = dns.NewResolver(d.Nameserver)
		}
		return w, nil
	case "static":
		return &static.Watcher{Servers: d.Instances(svc.HAProxy.ServerPortOverride)}, nil
	case "plugin":
		c, err := plugin.NewClient(d.Plugin, s.log)
		if err != nil {
			return nil, fmt.Errorf("services.%s.discovery: %w", name, err)
		}
		return &pluginwatch.Watcher{Client: c, Service: name, Config: d.Plugin.Config, Interval: d.Interval.D(), Log: s.log, Metrics: s.rm}, nil
	}
	return nil, fmt.Errorf("services.%s.discovery.method %q", name, d.Method)
}
