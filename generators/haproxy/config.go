package haproxy

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
)

// Config is synapse's `haproxy` section (Airbnb's keys where they overlap).
type Config struct {
	Global        []string            `yaml:"global"`
	Defaults      []string            `yaml:"defaults"`
	ExtraSections map[string][]string `yaml:"extra_sections"`
	// ConfigFilePath is the haproxy.cfg synapse writes.
	ConfigFilePath string `yaml:"config_file_path"`
	// SocketFilePath is the stats socket with admin level; synapse adds
	// the `stats socket` line to global when global lacks it.
	SocketFilePath string `yaml:"socket_file_path"`
	// MasterSocketPath is the master CLI of a master-worker HAProxy
	// (-W -S path): reloads go through it and are confirmed.
	MasterSocketPath string `yaml:"master_socket_path"`
	// ReloadCommand reloads other setups (run by /bin/sh -c).
	ReloadCommand string `yaml:"reload_command"`
	// ServerStateFile carries server state (drain, maint, weight) across
	// reloads. Default: config_file_path + ".state"; "off" disables.
	ServerStateFile string `yaml:"server_state_file"`
	// BindAddress is the default bind address of service frontends.
	BindAddress string `yaml:"bind_address"`
	DoWrites    *bool  `yaml:"do_writes"`
	DoReloads   *bool  `yaml:"do_reloads"`
	DoSocket    *bool  `yaml:"do_socket"`
	// Manage starts HAProxy (master-worker, daemon) when it is not running.
	Manage bool `yaml:"manage"`
	// Binary is the haproxy executable. Default "haproxy".
	Binary string `yaml:"binary"`
	// PIDFile is written by a HAProxy that synapse starts.
	PIDFile string `yaml:"pid_file"`
	// ReloadMinInterval spaces reloads; changes that need one meanwhile
	// are merged into the next. Default 2s.
	ReloadMinInterval confutil.Duration `yaml:"reload_min_interval"`
	// ConfigWriteInterval spaces the writes of haproxy.cfg that follow
	// runtime changes (each one is validated with haproxy -c). Default 1s.
	ConfigWriteInterval confutil.Duration `yaml:"config_write_interval"`
	// RemovalGrace is how long a removed server may keep its connections
	// (in maint, taking no new ones) before they are shut down. Default 30s.
	RemovalGrace confutil.Duration `yaml:"removal_grace"`

	// UseNerveWeights writes a record's weight into HAProxy (Airbnb's
	// use_nerve_weights). Default: off for an Airbnb-format config
	// (AirbnbFormat: synapse.conf.json), as in Airbnb's synapse; on for
	// syncstack's YAML. Weights set by synctl overrides apply either way.
	UseNerveWeights *bool `yaml:"use_nerve_weights"`
	// ServerOrderSeed seeds the default server order of every backend
	// (backend_order unset): each host spreads load differently, and keeps
	// its order across restarts. Default: derived from the host name.
	ServerOrderSeed *int64 `yaml:"server_order_seed"`
	// MaxServerID bounds the `id` given to each server (default 65535).
	MaxServerID int `yaml:"max_server_id"`
	// SharedFrontend is the head of one frontend ("shared-frontend") that
	// services share: its bind and common lines; each service adds its
	// own (its shared_frontend: ACLs on the Host header and use_backend).
	SharedFrontend []string `yaml:"shared_frontend"`
	// AirbnbFormat says the config came in Airbnb's format (JSON): set by
	// the loader before Finalize, it picks Airbnb's defaults.
	AirbnbFormat bool `yaml:"-"`

	// Accepted for Airbnb compatibility, not implemented.
	DoChecks                confutil.Ignored `yaml:"do_checks"`
	CheckCommand            confutil.Ignored `yaml:"check_command"`
	CandidateConfigFilePath confutil.Ignored `yaml:"candidate_config_file_path"`
	StateFilePath           string           `yaml:"state_file_path"` // synapse's state cache (read by synapse)
	StateFileTTL            confutil.Ignored `yaml:"state_file_ttl"`
	RestartInterval         confutil.Ignored `yaml:"restart_interval"`
	RestartJitter           confutil.Ignored `yaml:"restart_jitter"`

	// Warnings lists accepted keys that do nothing here.
	Warnings []string `yaml:"-"`
}

// ServiceConfig is a service's `haproxy` section.
type ServiceConfig struct {
	// Port of the service's frontend; 0 renders a backend only.
	Port        int    `yaml:"port"`
	BindAddress string `yaml:"bind_address"`
	BindOptions string `yaml:"bind_options"`
	// ServerOptions go on every server line (Airbnb allows a string or a list).
	ServerOptions confutil.StringOrList `yaml:"server_options"`
	Frontend      []string              `yaml:"frontend"`
	Backend       []string              `yaml:"backend"`
	// Listen lines go into a `listen` section, or into both the frontend
	// and the backend when those have lines of their own.
	Listen      []string `yaml:"listen"`
	BackendName string   `yaml:"backend_name"`
	Disabled    bool     `yaml:"disabled"`

	// ServerPortOverride is the port of discovered servers when discovery
	// finds only names (dns).
	ServerPortOverride int `yaml:"server_port_override"`
	// SharedFrontend lines go into haproxy.shared_frontend's frontend,
	// after its own: typically an ACL on the Host header and a
	// use_backend for it. Two services may not claim one host.
	SharedFrontend []string `yaml:"shared_frontend"`

	// BackendOrder orders the server lines of the backend: asc, desc
	// (by server name), no_shuffle (as the state lists them), or, unset,
	// a shuffle seeded by haproxy.server_order_seed.
	BackendOrder string `yaml:"backend_order"`
	// CookieValueMethod is the `cookie` value of each server: its name
	// (default, "name"), or "hash": the SHA-1 of its name, in hex.
	CookieValueMethod string `yaml:"cookie_value_method"`
}

// Backend orders (backend_order) and cookie value methods.
const (
	OrderShuffle   = "" // the default: seeded shuffle
	OrderAsc       = "asc"
	OrderDesc      = "desc"
	OrderNoShuffle = "no_shuffle"

	CookieName = "name"
	CookieHash = "hash"
)

// DefaultMaxServerID is Airbnb's max_server_id default.
const DefaultMaxServerID = 65535

// NerveWeights reports use_nerve_weights with its default for the format.
func (c *Config) NerveWeights() bool { return on(c.UseNerveWeights, !c.AirbnbFormat) }

func on(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// Finalize fills defaults and validates; problems go to p with key paths.
func (c *Config) Finalize(p *confutil.Problems) {
	for key, set := range map[string]bool{"do_checks": c.DoChecks.Set(), "check_command": c.CheckCommand.Set(),
		"candidate_config_file_path": c.CandidateConfigFilePath.Set(), "state_file_ttl": c.StateFileTTL.Set(),
		"restart_interval": c.RestartInterval.Set(), "restart_jitter": c.RestartJitter.Set()} {
		if set {
			c.Warnings = append(c.Warnings, "haproxy."+key+": not implemented; synapse validates every config with `haproxy -c` and reloads only for structural changes")
		}
	}
	if c.Binary == "" {
		c.Binary = "haproxy"
	}
	if c.MaxServerID == 0 {
		c.MaxServerID = DefaultMaxServerID
	}
	if c.MaxServerID < 1 {
		p.Addf("haproxy.max_server_id", "%d must be positive", c.MaxServerID)
	}
	if c.ServerOrderSeed == nil {
		seed := hostSeed()
		c.ServerOrderSeed = &seed
	}
	if c.ReloadMinInterval == 0 {
		c.ReloadMinInterval = confutil.Duration(2 * time.Second)
	}
	if c.ConfigWriteInterval == 0 {
		c.ConfigWriteInterval = confutil.Duration(time.Second)
	}
	if c.RemovalGrace == 0 {
		c.RemovalGrace = confutil.Duration(30 * time.Second)
	}
	if c.BindAddress == "" {
		c.BindAddress = "localhost"
	}
	if on(c.DoWrites, true) && c.ConfigFilePath == "" {
		p.Addf("haproxy.config_file_path", "missing (needed while do_writes is on)")
	}
	if c.ServerStateFile == "" && c.ConfigFilePath != "" {
		c.ServerStateFile = c.ConfigFilePath + ".state"
	}
	if c.ServerStateFile == "off" {
		c.ServerStateFile = ""
	}
	if on(c.DoSocket, true) && c.SocketFilePath == "" {
		p.Addf("haproxy.socket_file_path", "missing (needed while do_socket is on: runtime changes go through it)")
	}
	if on(c.DoReloads, true) && c.MasterSocketPath == "" && c.ReloadCommand == "" {
		p.Addf("haproxy.master_socket_path", "missing: set it (HAProxy in master-worker mode, -W -S) or reload_command")
	}
	if c.Manage && c.MasterSocketPath == "" {
		p.Addf("haproxy.manage", "needs master_socket_path")
	}
	for i, l := range c.Global {
		checkLine(p, fmt.Sprintf("haproxy.global[%d]", i), l)
	}
	for i, l := range c.Defaults {
		checkLine(p, fmt.Sprintf("haproxy.defaults[%d]", i), l)
	}
	for i, l := range c.SharedFrontend {
		checkLine(p, fmt.Sprintf("haproxy.shared_frontend[%d]", i), l)
	}
	for name, lines := range c.ExtraSections {
		checkLine(p, "haproxy.extra_sections", name)
		for i, l := range lines {
			checkLine(p, fmt.Sprintf("haproxy.extra_sections[%q][%d]", name, i), l)
		}
	}
	for _, path := range []string{c.ConfigFilePath, c.SocketFilePath, c.MasterSocketPath, c.ServerStateFile, c.PIDFile} {
		if path != "" && !filepath.IsAbs(path) {
			p.Addf("haproxy", "path %q must be absolute", path)
		}
	}
}

// Finalize validates one service's section.
func (s *ServiceConfig) Finalize(name string, defaults *Config, p *confutil.Problems) {
	key := "services." + name + ".haproxy"
	if s.BackendName == "" {
		s.BackendName = name
	}
	if err := registry.ValidateName(s.BackendName); err != nil {
		p.Addf(key+".backend_name", "%v", err)
	}
	if s.BindAddress == "" {
		s.BindAddress = defaults.BindAddress
	}
	if s.Port < 0 || s.Port > 65535 {
		p.Addf(key+".port", "%d is outside 0..65535", s.Port)
	}
	if err := registry.ValidateHost(strings.Trim(s.BindAddress, "[]")); err != nil && s.BindAddress != "*" {
		p.Addf(key+".bind_address", "%v", err)
	}
	switch s.BackendOrder {
	case OrderShuffle, OrderAsc, OrderDesc, OrderNoShuffle:
	default:
		p.Addf(key+".backend_order", "%q is not asc, desc or no_shuffle (unset: a seeded shuffle)", s.BackendOrder)
	}
	switch s.CookieValueMethod {
	case "", CookieName, CookieHash:
	default:
		p.Addf(key+".cookie_value_method", "%q is not name or hash", s.CookieValueMethod)
	}
	checkLine(p, key+".bind_options", s.BindOptions)
	// The operator's own server options are checked by haproxy -c, not
	// by the allow-list that guards registry records.
	checkLine(p, key+".server_options", s.ServerOptions.String())
	for field, lines := range map[string][]string{"frontend": s.Frontend, "backend": s.Backend, "listen": s.Listen, "shared_frontend": s.SharedFrontend} {
		for i, l := range lines {
			checkLine(p, fmt.Sprintf("%s.%s[%d]", key, field, i), l)
		}
	}
}

// checkLine refuses a line that would start another line or section.
func checkLine(p *confutil.Problems, key, line string) {
	if strings.ContainsAny(line, "\n\r\x00") {
		p.Addf(key, "%q has a line break", line)
	}
}
