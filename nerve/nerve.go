// Package nerve is the health-checking registration agent: it checks the
// service instances of one host and keeps the healthy ones registered in
// ZooKeeper or etcd, in the record Airbnb's nerve writes.
package nerve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// Registry is what nerve needs of a registry client: it only registers,
// and closes the client when no service uses it any more (ending the
// session or lease takes whatever could not be removed with it).
type Registry interface {
	registry.Registrar
	Close() error
}

// BackendFactory makes the registry client for a service's registry.
type BackendFactory func(svc *ServiceConfig) (Registry, error)

// Agent runs every configured service.
type Agent struct {
	log        *slog.Logger
	m          *Metrics
	newBackend BackendFactory

	ctx context.Context // the agent's life, from Run

	mu       sync.Mutex
	cfg      *Config
	services map[string]*service
	backends map[string]Registry // by ServiceConfig.RegistryKey
}

// Options tune an Agent; zero values are fine.
type Options struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// RegistryMetrics go to the backends (default registry.DefaultMetrics()).
	RegistryMetrics *registry.Metrics
	// NewBackend overrides how registry clients are made.
	NewBackend BackendFactory
}

// New validates nothing more than Load did and prepares the agent.
func New(cfg *Config, opts Options) *Agent {
	a := &Agent{log: opts.Logger, m: opts.Metrics, newBackend: opts.NewBackend, cfg: cfg,
		services: map[string]*service{}, backends: map[string]Registry{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.m == nil {
		a.m = NewMetrics(nil)
	}
	if a.newBackend == nil {
		a.newBackend = DefaultBackends(cfg, a.log, opts.RegistryMetrics)
	}
	return a
}

// DefaultBackends makes real ZooKeeper and etcd clients.
func DefaultBackends(cfg *Config, log *slog.Logger, m *registry.Metrics) BackendFactory {
	return func(svc *ServiceConfig) (Registry, error) {
		switch svc.ReporterType {
		case "zookeeper":
			return zookeeper.New(zookeeper.Config{Servers: svc.ZKHosts, SessionTimeout: cfg.ZKSessionTimeout.D(), OpTimeout: cfg.RegistryTimeout.D(), AuthFile: cfg.ZKAuthFile, Logger: log, Metrics: m})
		case "etcd":
			ecfg := etcd.Config{Endpoints: svc.EtcdEndpoints, LeaseTTL: cfg.EtcdLeaseTTL.D(), OpTimeout: cfg.RegistryTimeout.D(), Logger: log, Metrics: m}
			if err := cfg.EtcdSecurity.Apply(&ecfg); err != nil {
				return nil, fmt.Errorf("etcd_security: %w", err)
			}
			return etcd.New(ecfg)
		}
		return nil, fmt.Errorf("reporter_type %q", svc.ReporterType)
	}
}

// Run starts every service and blocks until ctx ends; then it deregisters
// every service and closes the registry clients.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.ctx = ctx
	err := a.apply(a.cfg)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	<-ctx.Done()
	return a.Shutdown(context.Background())
}

// Reload applies a new config: new services start, removed ones are
// deregistered, changed ones re-register. Maintenance and weights set
// through the admin API stay with services that remain.
func (a *Agent) Reload(cfg *Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx == nil {
		return errors.New("nerve: not running")
	}
	a.cfg = cfg
	return a.apply(cfg)
}

// apply brings the running services in line with cfg; a.mu is held.
func (a *Agent) apply(cfg *Config) error {
	var errs []error
	for name, s := range a.services {
		next, ok := cfg.Services[name]
		if ok && reflect.DeepEqual(next, s.cfg) {
			continue
		}
		a.log.Info("stopping service", "service", name, "reason", map[bool]string{true: "changed", false: "removed"}[ok])
		// A changed service hands an unconfirmed removal to the service
		// that replaces it, which finishes it before it registers: no
		// need to hold the reload (and the admin API) for long.
		wait := 10 * time.Second
		if ok {
			wait = 2 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		leaving, err := s.stop(ctx)
		cancel()
		if err != nil && !ok {
			errs = append(errs, fmt.Errorf("service %s: deregister: %w (still retried while the registry client lives)", name, err))
		}
		delete(a.services, name)
		if ok { // keep what an operator set on the service, and what it has still to remove
			a.services[name] = &service{maint: s.maint, weight: s.weight, reg: leaving, leaving: leaving != nil}
		}
	}
	names := make([]string, 0, len(cfg.Services))
	for name := range cfg.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		prev, exists := a.services[name]
		if exists && prev.cfg != nil {
			continue
		}
		svcCfg := cfg.Services[name]
		b, err := a.backendFor(svcCfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", name, err))
			delete(a.services, name)
			continue
		}
		s, err := newService(name, svcCfg, b, a.log, a.m, cfg.RegistryTimeout.D())
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", name, err))
			delete(a.services, name)
			continue
		}
		if exists {
			s.maint, s.weight = prev.maint, prev.weight
			s.reg, s.leaving = prev.reg, prev.leaving
			a.m.Maintenance.WithLabelValues(name).Set(b2f(s.maint != nil))
		}
		a.services[name] = s
		s.start(a.ctx)
		a.log.Info("service started", "service", name, "path", svcCfg.RegistryPath(), "registry", svcCfg.RegistryKey(),
			"interval", svcCfg.CheckInterval.D(), "rise", svcCfg.Rise, "fall", svcCfg.Fall)
	}
	a.closeUnusedBackends()
	return errors.Join(errs...)
}

func (a *Agent) backendFor(svc *ServiceConfig) (Registry, error) {
	key := svc.RegistryKey()
	if b, ok := a.backends[key]; ok {
		return b, nil
	}
	b, err := a.newBackend(svc)
	if err != nil {
		return nil, err
	}
	a.backends[key] = b
	return b, nil
}

func (a *Agent) closeUnusedBackends() {
	used := map[string]bool{}
	for _, s := range a.services {
		used[s.cfg.RegistryKey()] = true
	}
	for key, b := range a.backends {
		if !used[key] {
			b.Close()
			delete(a.backends, key)
		}
	}
}

// Shutdown deregisters every service at once, closes the registry clients,
// and returns; the caller waits for the drain delay.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		// A registry out of reach must not hold nerve's exit forever:
		// once the client is closed, the session or lease ends and takes
		// what could not be removed with it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.RegistryTimeout.D())
		defer cancel()
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(a.services))
	for name, s := range a.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.stop(ctx); err != nil {
				errs <- fmt.Errorf("service %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	a.services = map[string]*service{}
	for key, b := range a.backends {
		b.Close()
		delete(a.backends, key)
	}
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// Status reports every service, sorted by name.
func (a *Agent) Status() []ServiceStatus {
	a.mu.Lock()
	svcs := make([]*service, 0, len(a.services))
	for _, s := range a.services {
		svcs = append(svcs, s)
	}
	a.mu.Unlock()
	out := make([]ServiceStatus, len(svcs))
	for i, s := range svcs {
		out[i] = s.status()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ErrNoService is returned for a service that is not configured.
var ErrNoService = errors.New("no such service")

func (a *Agent) service(name string) (*service, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.services[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoService, name)
	}
	return s, nil
}

// SetMaintenance deregisters the service and holds it out until
// ClearMaintenance, whatever its checks say.
func (a *Agent) SetMaintenance(name, reason string) error {
	s, err := a.service(name)
	if err != nil {
		return err
	}
	if err := registry.ValidateText(reason, registry.MaxReasonLen); err != nil {
		return fmt.Errorf("reason: %w", err)
	}
	s.setMaintenance(&Maintenance{Reason: reason, Since: time.Now().UTC()})
	a.log.Info("maintenance on", "service", name, "reason", reason)
	return nil
}

// ClearMaintenance releases the service: it registers again once healthy.
func (a *Agent) ClearMaintenance(name string) error {
	s, err := a.service(name)
	if err != nil {
		return err
	}
	s.setMaintenance(nil)
	a.log.Info("maintenance off", "service", name)
	return nil
}

// SetWeight re-writes the service's record with weight w (nil: back to the
// config's weight).
func (a *Agent) SetWeight(name string, w *int) error {
	s, err := a.service(name)
	if err != nil {
		return err
	}
	if w != nil && (*w < 0 || *w > registry.MaxWeight) {
		return fmt.Errorf("weight: %d is outside 0..%d", *w, registry.MaxWeight)
	}
	s.setWeight(w)
	return nil
}
