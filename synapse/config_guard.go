package synapse

import (
	"math"
	"sort"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/secretfile"
)

// DefaultPanicThreshold is the share (in %) of a service's serving backends
// one update may take out of HAProxy before synapse holds the rest.
const DefaultPanicThreshold = 50.0

// DefaultPanicWindow is how long a removal counts towards the threshold: a
// mass removal the watcher delivers in several updates (one deletion at a
// time, say) is still one removal.
const DefaultPanicWindow = 30 * time.Second

// GuardConfig is the fleet-side guard against mass removal, at the top of
// the config (inlined).
type GuardConfig struct {
	// PanicThreshold (0..100 %, default 50; 0 disables): when one update
	// would take more than this share of a service's serving backends out
	// of HAProxy (deregistrations, drains, maints, weight 0), synapse
	// applies the removals only down to the threshold and holds the rest
	// until the registry recovers or an operator confirms (synctl
	// confirm). A service's own panic_threshold wins.
	PanicThreshold *float64 `yaml:"panic_threshold"`
	// PanicWindow: removals within it count together (default 30s).
	PanicWindow confutil.Duration `yaml:"panic_window"`
}

// ServiceGuard is a service's own panic threshold (inlined in its config).
type ServiceGuard struct {
	PanicThreshold *float64 `yaml:"panic_threshold"`
}

// Threshold is the service's panic threshold as a share in [0,1] (0: off).
// A leader_election service has none: it has one backend, and holding a
// lost leader would put it next to the new one.
func (cfg *Config) Threshold(service string) float64 {
	if svc := cfg.Services[service]; svc != nil && svc.LeaderElection {
		return 0
	}
	pct := DefaultPanicThreshold
	if cfg.PanicThreshold != nil {
		pct = *cfg.PanicThreshold
	}
	if svc := cfg.Services[service]; svc != nil && svc.PanicThreshold != nil {
		pct = *svc.PanicThreshold
	}
	return pct / 100
}

// Window is panic_window with its default.
func (cfg *Config) Window() time.Duration {
	if cfg.PanicWindow > 0 {
		return cfg.PanicWindow.D()
	}
	return DefaultPanicWindow
}

// finalizeGuards validates the panic thresholds, and refuses credential
// files others can read (a password or key anyone on the host can read is
// anyone's identity).
func (cfg *Config) finalizeGuards(p *confutil.Problems) {
	check := func(key string, v *float64) {
		if v != nil && (math.IsNaN(*v) || *v < 0 || *v > 100) {
			p.Addf(key, "%v is not a share in 0..100 (%%; 0 disables)", *v)
		}
	}
	check("panic_threshold", cfg.PanicThreshold)
	names := make([]string, 0, len(cfg.Services))
	for n := range cfg.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if svc := cfg.Services[n]; svc != nil {
			check("services."+n+".panic_threshold", svc.PanicThreshold)
		}
	}
	for _, f := range []struct{ key, path string }{
		{"etcd_security.password_file", cfg.EtcdSecurity.PasswordFile},
		{"etcd_security.key_file", cfg.EtcdSecurity.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if err := secretfile.Check(f.path); err != nil {
			p.Addf(f.key, "%v", err)
		}
	}
}
