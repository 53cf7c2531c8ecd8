package synapse

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/syncstack/syncstack/generators/fileoutput"
	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/multi"
)

// DefaultAdminListen is where synapse serves /status and /metrics.
const DefaultAdminListen = "127.0.0.1:9293"

// Config is synapse's configuration: YAML, or Airbnb's synapse.conf.json.
type Config struct {
	Services       map[string]*ServiceConfig `yaml:"services"`
	ServiceConfDir string                    `yaml:"service_conf_dir"`
	HAProxy        *haproxy.Config           `yaml:"haproxy"`
	FileOutput     *fileoutput.Config        `yaml:"file_output"`
	// Overrides says where synctl's overrides live; synapse applies them
	// and acks each revision it applied.
	Overrides *OverridesConfig `yaml:"overrides"`
	// ID names this synapse in its acks. Default: the host name.
	ID string `yaml:"id"`
	// StateFilePath caches the last backends, so a synapse started while
	// the registry is down serves what it last knew. Airbnb's
	// haproxy.state_file_path is read too.
	StateFilePath string `yaml:"state_file_path"`
	// Debounce delays an apply to merge more changes (default 0: a lone
	// change is applied at once; changes arriving during an apply are
	// merged anyway).
	Debounce confutil.Duration `yaml:"debounce"`
	// EtcdSecurity: TLS and authentication for every etcd cluster this
	// synapse watches or writes acks to.
	EtcdSecurity etcd.Security `yaml:"etcd_security"`
	// EtcdProbeInterval is how often synapse asks each etcd member it
	// watches through for watch progress, to leave a stalled one
	// (etcd.Config.ProbeInterval; default 300ms): a load on the cluster
	// to weigh at thousands of hosts (SCALING.md).
	EtcdProbeInterval confutil.Duration `yaml:"etcd_probe_interval"`
	// ZKAuthFile holds this process's ZooKeeper digest credentials
	// (user:password, mode 0600 or 0640); unset, $SYNCSTACK_ZK_AUTH_FILE.
	ZKAuthFile string `yaml:"zk_auth_file"`
	Admin      struct {
		Listen string `yaml:"listen"`
		// Pprof serves /debug/pprof/ on the admin listener (default off:
		// profiles and goroutine dumps are for whoever is debugging).
		Pprof bool `yaml:"pprof"`
	} `yaml:"admin"`
	// GuardConfig: panic_threshold and panic_window (config_guard.go).
	GuardConfig `yaml:",inline"`

	Statsd confutil.Ignored `yaml:"statsd"`

	Warnings []string `yaml:"-"`
	File     string   `yaml:"-"`
	problems confutil.Problems
}

// OverridesConfig locates the fleet-wide overrides.
type OverridesConfig struct {
	Method string   `yaml:"method"` // zookeeper or etcd
	Hosts  []string `yaml:"hosts"`
	Root   string   `yaml:"root"` // default /syncstack
}

// ServiceConfig is one service.
type ServiceConfig struct {
	Discovery      watchers.Config       `yaml:"discovery"`
	HAProxy        haproxy.ServiceConfig `yaml:"haproxy"`
	DefaultServers []registry.Instance   `yaml:"default_servers"`
	// KeepDefaultServers keeps default_servers next to discovered ones.
	KeepDefaultServers bool `yaml:"keep_default_servers"`
	// UsePreviousBackends (default true) keeps the last backends when
	// discovery returns none: an empty read never empties a backend.
	UsePreviousBackends *bool `yaml:"use_previous_backends"`

	// DiscoveryMulti adds child watchers to discovery (the "primary"),
	// combined by a resolver (union or sequential): Airbnb's multi
	// watcher, for moving a fleet from one registry to another.
	DiscoveryMulti *multi.Config `yaml:"discovery_multi"`
	// LeaderElection (Airbnb's): only the backend registered first (the
	// lowest registry.Instance.Seq) is in HAProxy; when it goes, the next
	// one takes its place at runtime. Overrides still apply to it: a
	// drained leader stays the leader, drained (nothing else takes the
	// traffic). Only for zookeeper and etcd discovery (and discovery_multi
	// made of them, on one cluster with the union resolver): the other
	// methods give no registration order, and picking by name would send
	// traffic to a backend that is not the leader. The panic threshold
	// does not apply (holding a lost leader would put it next to the new
	// one).
	LeaderElection bool `yaml:"leader_election"`
	// ServiceGuard: this service's panic_threshold (config_guard.go).
	ServiceGuard `yaml:",inline"`
}

// UsePrevious reports use_previous_backends with its default.
func (s *ServiceConfig) UsePrevious() bool {
	return s.UsePreviousBackends == nil || *s.UsePreviousBackends
}

// Load reads and validates a synapse config; errors name the file and key.
func Load(path string) (*Config, error) {
	cfg := &Config{}
	if err := confutil.DecodeFile(path, cfg); err != nil {
		return nil, err
	}
	cfg.File = path
	if cfg.Services == nil {
		cfg.Services = map[string]*ServiceConfig{}
	}
	if cfg.ServiceConfDir != "" {
		note, err := confutil.LoadServiceDir(path, cfg.ServiceConfDir, cfg.Services, &cfg.problems)
		if err != nil {
			return nil, err
		}
		if note != "" {
			cfg.Warnings = append(cfg.Warnings, note)
		}
	}
	if cfg.HAProxy != nil && strings.EqualFold(filepath.Ext(path), ".json") {
		// Airbnb's format: Airbnb's defaults (use_nerve_weights off).
		cfg.HAProxy.AirbnbFormat = true
	}
	if err := cfg.Finalize(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// RecordWeights reports whether the weight of a registry record reaches
// HAProxy (haproxy.use_nerve_weights, default off for an Airbnb-format
// config, on for syncstack's YAML). Without it a record's weight is
// dropped before the overrides apply: synctl's weights apply either way.
func (cfg *Config) RecordWeights() bool {
	return cfg.HAProxy == nil || cfg.HAProxy.NerveWeights()
}

// Finalize fills defaults and validates.
func (cfg *Config) Finalize() error {
	p := cfg.problems
	if cfg.Statsd.Set() {
		cfg.Warnings = append(cfg.Warnings, "statsd: not implemented; synapse exports Prometheus metrics on the admin listener (/metrics)")
	}
	if cfg.HAProxy == nil && cfg.FileOutput == nil {
		p.Addf("haproxy", "missing (and no file_output): synapse would have nothing to drive")
	}
	if cfg.HAProxy != nil {
		cfg.HAProxy.Finalize(&p)
		cfg.Warnings = append(cfg.Warnings, cfg.HAProxy.Warnings...)
		if cfg.StateFilePath == "" {
			cfg.StateFilePath = cfg.HAProxy.StateFilePath
		}
	}
	if err := cfg.EtcdSecurity.Apply(&etcd.Config{}); err != nil {
		p.Addf("etcd_security", "%v", err)
	}
	if err := etcd.CheckProbeInterval(cfg.EtcdProbeInterval.D()); err != nil {
		p.Addf("etcd_probe_interval", "%v", err)
	}
	if cfg.ZKAuthFile != "" {
		if _, err := zookeeper.LoadAuth(cfg.ZKAuthFile); err != nil {
			p.Addf("zk_auth_file", "%v", err)
		}
	}
	if cfg.StateFilePath != "" && !filepath.IsAbs(cfg.StateFilePath) {
		p.Addf("state_file_path", "%q must be absolute", cfg.StateFilePath)
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = strings.NewReplacer(" ", "_", "/", "_").Replace(host)
	}
	if err := registry.ValidateName(cfg.ID); err != nil {
		p.Addf("id", "%v", err)
	}
	if cfg.Admin.Listen == "" {
		cfg.Admin.Listen = DefaultAdminListen
	}
	if o := cfg.Overrides; o != nil {
		switch o.Method {
		case "zookeeper", "etcd":
		default:
			p.Addf("overrides.method", "%q is not zookeeper or etcd", o.Method)
		}
		if len(o.Hosts) == 0 {
			p.Addf("overrides.hosts", "missing")
		}
		if o.Root == "" {
			o.Root = "/syncstack"
		}
	}
	if len(cfg.Services) == 0 {
		p.Addf("services", "no services configured")
	}
	names := make([]string, 0, len(cfg.Services))
	for n := range cfg.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	backends := map[string]string{}
	for _, name := range names {
		key := "services." + name
		svc := cfg.Services[name]
		if svc == nil {
			p.Addf(key, "empty service")
			continue
		}
		if err := registry.ValidateName(name); err != nil {
			p.Addf(key, "service name: %v", err)
		}
		svc.Discovery.Finalize(key+".discovery", svc.HAProxy.ServerPortOverride, &p)
		cfg.Warnings = append(cfg.Warnings, svc.Discovery.Warnings...)
		if m := svc.DiscoveryMulti; m != nil {
			m.Finalize(key+".discovery_multi", svc.HAProxy.ServerPortOverride, &p)
			for _, w := range m.Watchers {
				if w != nil {
					cfg.Warnings = append(cfg.Warnings, w.Warnings...)
				}
			}
		}
		if svc.LeaderElection {
			if m := orderlessMethod(svc); m != "" {
				p.Addf(key+".leader_election", "needs the registration order, which only zookeeper and etcd discovery give (%s gives none)", m)
			} else if m := svc.DiscoveryMulti; m != nil && m.Resolver.Method == multi.Union && !oneCluster(svc) {
				p.Addf(key+".leader_election", "with the union resolver every watcher must be on the same registry cluster: registration orders of two clusters do not compare (use the sequential resolver)")
			}
		}
		for i, d := range svc.DefaultServers {
			if err := d.Validate(); err != nil {
				p.Addf(fmt.Sprintf("%s.default_servers[%d]", key, i), "%v", err)
			}
		}
		if cfg.HAProxy != nil {
			svc.HAProxy.Finalize(name, cfg.HAProxy, &p)
			if other, dup := backends[svc.HAProxy.BackendName]; dup && !svc.HAProxy.Disabled {
				p.Addf(key+".haproxy.backend_name", "%q is also the backend of service %s", svc.HAProxy.BackendName, other)
			}
			backends[svc.HAProxy.BackendName] = name
		}
	}
	if cfg.HAProxy != nil {
		checkBinds(cfg.Services, names, &p)
		hs := map[string]*haproxy.ServiceConfig{}
		for name, svc := range cfg.Services {
			if svc != nil {
				hs[name] = &svc.HAProxy
			}
		}
		cfg.Warnings = append(cfg.Warnings, haproxy.CheckSharedFrontend(cfg.HAProxy, hs, names, &p)...)
	}
	cfg.finalizeGuards(&p)
	return p.Err(cfg.File)
}

// orderlessMethod returns the first discovery method of the service (its
// discovery, then its discovery_multi children by name) that gives no
// registration order; "" when every one does.
func orderlessMethod(svc *ServiceConfig) string {
	ds := []*watchers.Config{&svc.Discovery}
	if m := svc.DiscoveryMulti; m != nil {
		names := make([]string, 0, len(m.Watchers))
		for name := range m.Watchers {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if w := m.Watchers[name]; w != nil {
				ds = append(ds, w)
			}
		}
	}
	for _, d := range ds {
		switch d.Method {
		case "zookeeper", "etcd":
		default:
			return fmt.Sprintf("%q", d.Method)
		}
	}
	return ""
}

// oneCluster reports whether the service's discovery and every
// discovery_multi child watch the same registry cluster (method and hosts).
func oneCluster(svc *ServiceConfig) bool {
	cluster := func(d *watchers.Config) string {
		method, hosts, _, _ := d.RegistryPath()
		return method + " " + strings.Join(sortedCopy(hosts), ",")
	}
	first := cluster(&svc.Discovery)
	for _, w := range svc.DiscoveryMulti.Watchers {
		if w != nil && cluster(w) != first {
			return false
		}
	}
	return true
}

// checkBinds refuses two enabled services whose frontends listen on the same
// port at overlapping addresses: HAProxy binds both (SO_REUSEPORT) and the
// kernel splits the connections between two unrelated services. A wildcard
// (0.0.0.0, ::, *) overlaps every address of its port, and localhost is
// 127.0.0.1 and ::1. names is the sorted service names, so the error is the
// same every time.
func checkBinds(services map[string]*ServiceConfig, names []string, p *confutil.Problems) {
	type bind struct {
		service string
		addr    string // as configured, for the message
		ends    bindAddrs
	}
	byPort := map[int][]bind{}
	for _, name := range names {
		svc := services[name]
		if svc == nil || svc.HAProxy.Disabled || svc.HAProxy.Port <= 0 {
			continue
		}
		h := svc.HAProxy
		b := bind{service: name, addr: h.BindAddress, ends: bindAddrsOf(h.BindAddress)}
		for _, other := range byPort[h.Port] {
			if b.ends.overlaps(other.ends) {
				p.Addf("services."+name+".haproxy.port", "%s:%d is also the frontend of service %s (%s:%d): HAProxy would split the connections between the two",
					b.addr, h.Port, other.service, other.addr, h.Port)
				break
			}
		}
		byPort[h.Port] = append(byPort[h.Port], b)
	}
}

// bindAddrs is what a bind_address listens on: every address, or a set of
// addresses (IPs in canonical form, other host names lower-cased).
type bindAddrs struct {
	any   bool
	addrs []string
}

func bindAddrsOf(s string) bindAddrs {
	s = strings.ToLower(strings.TrimSuffix(strings.Trim(s, "[]"), "."))
	switch s {
	case "", "*", "0.0.0.0", "::", "::ffff:0.0.0.0":
		return bindAddrs{any: true}
	case "localhost":
		return bindAddrs{addrs: []string{"127.0.0.1", "::1"}}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return bindAddrs{addrs: []string{a.Unmap().String()}}
	}
	return bindAddrs{addrs: []string{s}}
}

func (b bindAddrs) overlaps(o bindAddrs) bool {
	if b.any || o.any {
		return true
	}
	for _, a := range b.addrs {
		if slices.Contains(o.addrs, a) {
			return true
		}
	}
	return false
}

// HAProxyServices returns every service's haproxy section.
func (cfg *Config) HAProxyServices() map[string]*haproxy.ServiceConfig {
	out := map[string]*haproxy.ServiceConfig{}
	for name, svc := range cfg.Services {
		out[name] = &svc.HAProxy
	}
	return out
}
