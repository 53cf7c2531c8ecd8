// Package watchers follow where a service's backends are: one subpackage
// per mechanism (zookeeper, etcd, file, dns, static), all behind Watcher.
// A watcher knows nothing of HAProxy.
package watchers

import (
	"context"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
)

// Watcher sends the full set of a service's backends, then the full set
// again after every change, until ctx ends. It never closes out. A failed
// read sends nothing: the last set stands.
type Watcher interface {
	Run(ctx context.Context, out chan<- []registry.Instance) error
}

// Methods lists the discovery methods.
var Methods = []string{"zookeeper", "etcd", "file", "dns", "static", "plugin"}

// Config is a service's `discovery` section (Airbnb's keys where they
// overlap).
type Config struct {
	Method string `yaml:"method"`
	// Hosts: ZooKeeper servers, or etcd endpoints.
	Hosts []string `yaml:"hosts"`
	// Host and Port: Airbnb's single etcd endpoint.
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// Path: the ZooKeeper path or etcd prefix nerve registers under, or
	// the file to read (file).
	Path   string       `yaml:"path"`
	Decode DecodeConfig `yaml:"decode"`
	// Interval: how often a file is checked (default 1s) or DNS is
	// resolved again (default 30s).
	Interval confutil.Duration `yaml:"interval"`
	// Servers: the static servers, or the names DNS resolves (a name
	// alone takes its port from the service's server_port_override).
	Servers []Server `yaml:"servers"`
	// SRV names resolved to targets (dns).
	SRV []string `yaml:"srv"`
	// Nameserver (host:port) instead of the system resolver (dns).
	Nameserver string `yaml:"nameserver"`
	// LabelFilters keep only instances whose labels match.
	LabelFilters []LabelFilter `yaml:"label_filters"`
	// Plugin: an out-of-process watcher (see package plugin), asked for
	// the set every interval (default 10s).
	Plugin plugin.Config `yaml:",inline"`

	DiscoveryJitter confutil.Ignored `yaml:"discovery_jitter"`

	// Warnings: what Finalize accepted but will not do as written.
	Warnings []string `yaml:"-"`
}

// Server is an instance record, or just a host name (Airbnb's dns watcher
// takes a list of names).
type Server struct{ registry.Instance }

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Server) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Host = n.Value
		return nil
	}
	type plain registry.Instance
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	s.Instance = registry.Instance(p)
	return nil
}

// Instances returns the servers' records; portOverride fills a missing port.
func (c *Config) Instances(portOverride int) []registry.Instance {
	out := make([]registry.Instance, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.Clone()
		if out[i].Port == 0 {
			out[i].Port = portOverride
		}
	}
	return out
}

// DecodeConfig selects the record format.
type DecodeConfig struct {
	// Method is nerve (default) or serverset.
	Method       string `yaml:"method"`
	EndpointName string `yaml:"endpoint_name"`
}

// LabelFilter keeps instances whose label matches.
type LabelFilter struct {
	Label     string `yaml:"label"`
	Value     string `yaml:"value"`
	Condition string `yaml:"condition"` // equals (default), not-equals
}

// Options are the registry decode options the config selects.
func (c *Config) Options() registry.DecodeOptions {
	return registry.DecodeOptions{Endpoint: c.Decode.EndpointName}
}

// Finalize validates the section; problems are reported under key.
// portOverride is the service's server_port_override (0: none).
func (c *Config) Finalize(key string, portOverride int, p *confutil.Problems) {
	if c.DiscoveryJitter.Set() {
		c.Warnings = append(c.Warnings, key+".discovery_jitter: not implemented; watches are event-driven and reads are spread by the registry clients' backoff")
	}
	if c.Method == "base" {
		// Airbnb's base watcher: the default_servers alone.
		c.Method = "static"
	}
	switch c.Method {
	case "zookeeper":
		if len(c.Hosts) == 0 {
			p.Addf(key+".hosts", "missing: the ZooKeeper servers")
		}
		if !strings.HasPrefix(c.Path, "/") {
			p.Addf(key+".path", "%q must be an absolute path", c.Path)
		}
	case "etcd":
		if c.Host != "" {
			c.Hosts = append(c.Hosts, etcd.HostEndpoint(c.Host, c.Port))
		}
		if len(c.Hosts) == 0 {
			p.Addf(key+".hosts", "missing: the etcd endpoints (or host and port)")
		}
		if !strings.HasPrefix(c.Path, "/") {
			p.Addf(key+".path", "%q must be an absolute path", c.Path)
		}
	case "file":
		if c.Path == "" {
			p.Addf(key+".path", "missing: the file of instances")
		}
	case "dns":
		if len(c.Servers) == 0 && len(c.SRV) == 0 {
			p.Addf(key+".servers", "missing: names to resolve (servers, or srv)")
		}
		if c.Nameserver != "" && !strings.Contains(c.Nameserver, ":") {
			c.Nameserver += ":53"
		}
	case "static":
	case "plugin":
		if err := c.Plugin.Validate(); err != nil {
			p.Addf(key, "%v", err)
		}
	case "":
		p.Addf(key+".method", "missing (one of %s)", strings.Join(Methods, ", "))
	default:
		p.Addf(key+".method", "%q is not supported (supported: %s)", c.Method, strings.Join(Methods, ", "))
	}
	if c.Method != "plugin" && (c.Plugin.Path != "" || len(c.Plugin.Args) > 0 || c.Plugin.SHA256 != "" || len(c.Plugin.Config) > 0) {
		p.Addf(key, "plugin, plugin_args, plugin_sha256, config: only for method plugin")
	}
	switch c.Decode.Method {
	case "", "nerve", "serverset":
	default:
		p.Addf(key+".decode.method", "%q is not nerve or serverset", c.Decode.Method)
	}
	for i, f := range c.LabelFilters {
		if f.Label == "" {
			p.Addf(fmt.Sprintf("%s.label_filters[%d].label", key, i), "missing")
		}
		switch f.Condition {
		case "", "equals", "not-equals":
		default:
			p.Addf(fmt.Sprintf("%s.label_filters[%d].condition", key, i), "%q is not equals or not-equals", f.Condition)
		}
	}
	for i, s := range c.Instances(portOverride) {
		k := fmt.Sprintf("%s.servers[%d]", key, i)
		if s.Port == 0 {
			if c.Method == "dns" {
				// Airbnb's own examples list bare names without a port
				// or server_port_override; its synapse then writes
				// servers HAProxy refuses. Accepted, and said.
				c.Warnings = append(c.Warnings, k+": no port (and no haproxy.server_port_override): the addresses of "+s.Host+" are not used until one is set")
				continue
			}
			p.Addf(k+".port", "missing (or set haproxy.server_port_override)")
			continue
		}
		if err := s.Validate(); err != nil {
			p.Addf(k, "%v", err)
		}
	}
}

// Keep reports whether inst passes every label filter.
func (c *Config) Keep(inst registry.Instance) bool {
	for _, f := range c.LabelFilters {
		v, ok := inst.Labels[f.Label]
		match := ok && v == f.Value
		if f.Condition == "not-equals" {
			match = !match
		}
		if !match {
			return false
		}
	}
	return true
}
