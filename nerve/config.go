package nerve

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/secretfile"
	"github.com/syncstack/syncstack/nerve/checks"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// Defaults, documented in nerve/README.md.
const (
	DefaultCheckInterval = time.Second
	DefaultRise          = 2
	DefaultFall          = 2
	DefaultAdminListen   = "127.0.0.1:9292"
)

// Config is nerve's configuration: YAML, or Airbnb's nerve.conf.json.
type Config struct {
	InstanceID     string                    `yaml:"instance_id"`
	ServiceConfDir string                    `yaml:"service_conf_dir"`
	Services       map[string]*ServiceConfig `yaml:"services"`
	Admin          AdminConfig               `yaml:"admin"`
	// DrainDelay is how long nerve waits after deregistering everything on
	// SIGTERM before it exits.
	DrainDelay confutil.Duration `yaml:"drain_delay"`
	// ZKSessionTimeout and EtcdLeaseTTL set how long a registration
	// outlives a nerve that died without deregistering (default 10s).
	ZKSessionTimeout confutil.Duration `yaml:"zk_session_timeout"`
	EtcdLeaseTTL     confutil.Duration `yaml:"etcd_lease_ttl"`
	// RegistryTimeout bounds one registry write; a write that fails is
	// retried with backoff (default 5s).
	RegistryTimeout confutil.Duration `yaml:"registry_timeout"`
	// EtcdSecurity: TLS and authentication for every etcd cluster this
	// nerve registers in.
	EtcdSecurity etcd.Security `yaml:"etcd_security"`
	// ZKAuthFile holds this process's ZooKeeper digest credentials
	// (user:password, mode 0600 or 0640); unset, $SYNCSTACK_ZK_AUTH_FILE.
	ZKAuthFile string `yaml:"zk_auth_file"`

	// Accepted for Airbnb compatibility, not implemented (a warning says so).
	MaxRepeatedReportFailures confutil.Ignored `yaml:"max_repeated_report_failures"`
	Statsd                    confutil.Ignored `yaml:"statsd"`

	// Warnings lists accepted keys that do nothing here.
	Warnings []string `yaml:"-"`
	// File is where the config was loaded from.
	File string `yaml:"-"`

	problems confutil.Problems // found while loading, reported by Finalize
}

// AdminConfig configures the local admin HTTP API.
type AdminConfig struct {
	// Listen is host:port; "off" disables the API. Default 127.0.0.1:9292.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token every request but /healthz must
	// carry (Authorization: Bearer …). Required when Listen is not a
	// loopback address: whoever reaches the API can take this host out of
	// every load balancer.
	TokenFile string `yaml:"token_file"`
	// Pprof serves /debug/pprof/ (off by default).
	Pprof bool `yaml:"pprof"`

	token string // read from TokenFile
}

// ServiceConfig is one service instance on this host.
type ServiceConfig struct {
	Host                 string            `yaml:"host"`
	Port                 int               `yaml:"port"`
	Weight               *int              `yaml:"weight"`
	Labels               map[string]string `yaml:"labels"`
	HAProxyServerOptions string            `yaml:"haproxy_server_options"`
	// InstanceID overrides the top-level instance_id for this service.
	InstanceID    string            `yaml:"instance_id"`
	CheckInterval confutil.Duration `yaml:"check_interval"`
	// Rise and Fall count whole check rounds. Unset, they are the largest
	// rise/fall of the service's checks (Airbnb writes them per check),
	// else 2 and 2.
	Rise   int             `yaml:"rise"`
	Fall   int             `yaml:"fall"`
	Checks []checks.Config `yaml:"checks"`
	// ReporterType is zookeeper or etcd; unset, it follows from which
	// registry keys are present.
	ReporterType  string   `yaml:"reporter_type"`
	ZKHosts       []string `yaml:"zk_hosts"`
	ZKPath        string   `yaml:"zk_path"`
	EtcdEndpoints []string `yaml:"etcd_endpoints"`
	EtcdHost      string   `yaml:"etcd_host"`
	EtcdPort      int      `yaml:"etcd_port"`
	EtcdPath      string   `yaml:"etcd_path"`

	UsePathEncoding confutil.Ignored `yaml:"use_path_encoding"`
}

// Load reads the config file and every file of service_conf_dir (one
// service each, named by the file), fills defaults and validates. Every
// error names the file and the key.
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
	if err := cfg.Finalize(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Finalize fills defaults and validates; the error lists every problem with
// its key path.
func (cfg *Config) Finalize() error {
	p := cfg.problems
	if cfg.Statsd.Set() {
		cfg.Warnings = append(cfg.Warnings, "statsd: not implemented; nerve exports Prometheus metrics on the admin listener (/metrics)")
	}
	if cfg.MaxRepeatedReportFailures.Set() {
		cfg.Warnings = append(cfg.Warnings, "max_repeated_report_failures: not implemented; nerve never exits on registry errors, it retries with backoff")
	}
	if cfg.RegistryTimeout == 0 {
		cfg.RegistryTimeout = confutil.Duration(5 * time.Second)
	}
	if cfg.Admin.Listen == "" {
		cfg.Admin.Listen = DefaultAdminListen
	}
	if err := cfg.EtcdSecurity.Apply(&etcd.Config{}); err != nil {
		p.Addf("etcd_security", "%v", err)
	}
	if cfg.ZKAuthFile != "" {
		if _, err := zookeeper.LoadAuth(cfg.ZKAuthFile); err != nil {
			p.Addf("zk_auth_file", "%v", err)
		}
	}
	if cfg.Admin.Listen != "off" {
		if host, _, err := splitHostPort(cfg.Admin.Listen); err == nil && cfg.Admin.TokenFile == "" && !loopback(host) {
			p.Addf("admin.token_file", "required when admin.listen (%s) is not a loopback address", cfg.Admin.Listen)
		}
		if cfg.Admin.TokenFile != "" {
			b, err := secretfile.Read(cfg.Admin.TokenFile)
			switch tok := strings.TrimSpace(string(b)); {
			case err != nil:
				p.Addf("admin.token_file", "%v", err)
			case tok == "":
				p.Addf("admin.token_file", "%s is empty", cfg.Admin.TokenFile)
			default:
				cfg.Admin.token = tok
			}
		}
		if _, port, err := splitHostPort(cfg.Admin.Listen); err != nil || port == 0 {
			p.Addf("admin.listen", "%q is not host:port (or off)", cfg.Admin.Listen)
		}
	}
	if cfg.InstanceID != "" {
		if err := registry.ValidateName(cfg.InstanceID); err != nil {
			p.Addf("instance_id", "%v", err)
		}
	}
	if len(cfg.Services) == 0 {
		p.Addf("services", "no services configured")
	}
	names := make([]string, 0, len(cfg.Services))
	for name := range cfg.Services {
		names = append(names, name)
	}
	sort.Strings(names)
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
		svc.finalize(cfg, name, key, &p)
	}
	return p.Err(cfg.File)
}

func (svc *ServiceConfig) finalize(cfg *Config, name, key string, p *confutil.Problems) {
	if svc.UsePathEncoding.Set() {
		cfg.Warnings = append(cfg.Warnings, key+".use_path_encoding: not implemented; records are written as node data")
	}
	if svc.InstanceID == "" {
		svc.InstanceID = cfg.InstanceID
	}
	if svc.InstanceID == "" {
		p.Addf(key+".instance_id", "missing (set instance_id at the top or in the service)")
	}
	inst := svc.Instance()
	if err := inst.Validate(); err != nil {
		p.Addf(key, "%v", err)
	}
	if svc.CheckInterval == 0 {
		svc.CheckInterval = confutil.Duration(DefaultCheckInterval)
	}
	if svc.CheckInterval.D() < 10*time.Millisecond {
		p.Addf(key+".check_interval", "%v is under 10ms", svc.CheckInterval.D())
	}
	if len(svc.Checks) == 0 {
		p.Addf(key+".checks", "at least one check is required")
	}
	maxRise, maxFall := 0, 0
	for i := range svc.Checks {
		c := &svc.Checks[i]
		c.Service = name
		ckey := fmt.Sprintf("%s.checks[%d]", key, i)
		if err := c.Finalize(svc.Host, svc.Port, svc.CheckInterval.D()); err != nil {
			p.Addf(ckey, "%v", err)
		}
		maxRise, maxFall = max(maxRise, c.Rise), max(maxFall, c.Fall)
	}
	if svc.Rise == 0 {
		svc.Rise = cmpOr(maxRise, DefaultRise)
	}
	if svc.Fall == 0 {
		svc.Fall = cmpOr(maxFall, DefaultFall)
	}
	if svc.Rise < 1 || svc.Fall < 1 {
		p.Addf(key, "rise and fall must be at least 1")
	}

	usesZK := len(svc.ZKHosts) > 0 || svc.ZKPath != ""
	usesEtcd := len(svc.EtcdEndpoints) > 0 || svc.EtcdHost != "" || svc.EtcdPath != ""
	if svc.ReporterType == "" {
		switch {
		case usesZK && !usesEtcd:
			svc.ReporterType = "zookeeper"
		case usesEtcd && !usesZK:
			svc.ReporterType = "etcd"
		}
	}
	switch svc.ReporterType {
	case "zookeeper":
		if len(svc.ZKHosts) == 0 {
			p.Addf(key+".zk_hosts", "missing")
		}
		if !strings.HasPrefix(svc.ZKPath, "/") {
			p.Addf(key+".zk_path", "%q must be an absolute path", svc.ZKPath)
		}
	case "etcd":
		if svc.EtcdHost != "" {
			svc.EtcdEndpoints = append(svc.EtcdEndpoints, etcd.HostEndpoint(svc.EtcdHost, svc.EtcdPort))
		}
		if len(svc.EtcdEndpoints) == 0 {
			p.Addf(key+".etcd_endpoints", "missing (or etcd_host and etcd_port)")
		}
		if !strings.HasPrefix(svc.EtcdPath, "/") {
			p.Addf(key+".etcd_path", "%q must be an absolute path", svc.EtcdPath)
		}
	case "":
		p.Addf(key+".reporter_type", "missing: set zk_hosts and zk_path, or etcd_endpoints and etcd_path")
	default:
		p.Addf(key+".reporter_type", "%q is not zookeeper or etcd", svc.ReporterType)
	}
}

// Instance is the record this service registers.
func (svc *ServiceConfig) Instance() registry.Instance {
	return registry.Instance{
		Host: svc.Host, Port: svc.Port, Name: svc.InstanceID, Weight: svc.Weight,
		HAProxyServerOptions: svc.HAProxyServerOptions, Labels: svc.Labels,
	}
}

// RegistryPath is where the service registers.
func (svc *ServiceConfig) RegistryPath() string {
	if svc.ReporterType == "etcd" {
		return svc.EtcdPath
	}
	return svc.ZKPath
}

// RegistryKey identifies the registry cluster, so services that share one
// share a client (one ZooKeeper session, one etcd lease).
func (svc *ServiceConfig) RegistryKey() string {
	if svc.ReporterType == "etcd" {
		e := slices.Clone(svc.EtcdEndpoints)
		sort.Strings(e)
		return "etcd:" + strings.Join(e, ",")
	}
	h := slices.Clone(svc.ZKHosts)
	sort.Strings(h)
	return "zookeeper:" + strings.Join(h, ",")
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// loopback reports whether host (of host:port) is a loopback address.
func loopback(host string) bool {
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("no port")
	}
	port, err := strconv.Atoi(s[i+1:])
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port")
	}
	return s[:i], port, nil
}
