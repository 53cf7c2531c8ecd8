// Package synapse is the pipeline next to every HAProxy: watcher sets and
// overrides in, desired state out to the generators. A lone change is
// applied at once; changes that arrive while an apply runs are merged into
// the next one. An empty or failed read never empties a backend while
// use_previous_backends holds.
package synapse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/generators/fileoutput"
	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/version"
	"github.com/syncstack/syncstack/registry"
)

// Options tune a Synapse; zero values are fine.
type Options struct {
	Logger          *slog.Logger
	Metrics         *Metrics
	HAProxyMetrics  *haproxy.Metrics
	RegistryMetrics *registry.Metrics
}

// Synapse runs the pipeline for one config.
type Synapse struct {
	cfg  *Config
	log  *slog.Logger
	m    *Metrics
	rm   *registry.Metrics
	gens []generators.Generator

	clients map[string]registry.Backend // by cluster
	// The overrides' registry, in the roles synapse uses it in (all nil
	// without one): the overrides in, acks and the catalog out.
	overrides registry.OverrideReader
	acks      registry.AckWriter
	catalog   registry.CatalogWriter
	// catalogCurrent: this synapse's catalog is in the registry as it
	// wrote it, so its acks leave the services to it (keepCatalog).
	catalogCurrent atomic.Bool
	catalogCheck   time.Duration // how often keepCatalog checks it; tests shorten it

	mu     sync.Mutex
	status Status

	cacheMu      sync.Mutex
	cachePending *cache
	cacheBusy    bool
	cacheLast    time.Time
	cacheWG      sync.WaitGroup
	cacheKick    chan struct{}
}

// Status is what GET /status reports.
type Status struct {
	ID               string              `json:"id"`
	Build            version.Info        `json:"build"`
	State            generators.State    `json:"state"`
	OverrideRevision int64               `json:"override_revision"`
	Overrides        []registry.Override `json:"overrides"`
	LastApply        time.Time           `json:"last_apply"`
	LastError        string              `json:"last_error,omitempty"`
	Watched          map[string]bool     `json:"watched"` // service → heard from its watcher
	// Quarantined lists the servers a generator set aside (HAProxy
	// refused them, or their host name does not resolve); every other
	// server keeps converging and acks keep flowing.
	Quarantined []generators.Quarantined `json:"quarantined"`
	// Panic lists the services whose removals the panic threshold holds
	// back, with the servers kept in HAProxy.
	Panic []PanicStatus                  `json:"panic"`
	Sets  map[string][]registry.Instance `json:"-"`
}

// New builds the generators and registry clients for cfg (finalized).
func New(cfg *Config, opts Options) (*Synapse, error) {
	s := &Synapse{cfg: cfg, log: opts.Logger, m: opts.Metrics, rm: opts.RegistryMetrics, clients: map[string]registry.Backend{}, cacheKick: make(chan struct{}, 1), catalogCheck: registry.CatalogCheck}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.m == nil {
		s.m = NewMetrics(nil)
	}
	if s.rm == nil {
		s.rm = registry.NewMetrics(nil)
	}
	if cfg.HAProxy != nil {
		s.gens = append(s.gens, haproxy.New(cfg.HAProxy, cfg.HAProxyServices(), s.log, opts.HAProxyMetrics))
	}
	if cfg.FileOutput != nil {
		g, err := fileoutput.New(*cfg.FileOutput)
		if err != nil {
			return nil, err
		}
		s.gens = append(s.gens, g)
	}
	if o := cfg.Overrides; o != nil {
		c, err := s.client(o.Method, o.Hosts, o.Root)
		if err != nil {
			return nil, fmt.Errorf("overrides: %w", err)
		}
		s.overrides, s.acks, s.catalog = c, c, c
	}
	return s, nil
}

// update is one watcher set, tagged.
type update struct {
	service string
	set     []registry.Instance
	at      time.Time
}

// Run runs the pipeline until ctx ends, then closes the registry clients.
// HAProxy keeps running with the last state.
func (s *Synapse) Run(ctx context.Context) error {
	defer func() {
		for _, c := range s.clients {
			c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	updates, err := s.watch(ctx, &wg)
	if err != nil {
		return err
	}
	overrideSets := make(chan registry.OverrideSet)
	if s.overrides != nil {
		wg.Go(func() {
			if err := s.overrides.WatchOverrides(ctx, overrideSets); err != nil && ctx.Err() == nil {
				s.log.Error("override watch stopped", "err", err)
			}
		})
	}
	acks := make(chan ackState, 1)
	catalogChanged := make(chan struct{}, 1)
	if s.acks != nil {
		wg.Go(func() { s.ackLoop(ctx, acks, catalogChanged) })
	}
	if s.catalog != nil {
		wg.Go(func() { s.keepCatalog(ctx, catalogChanged) })
	}
	return s.loop(ctx, updates, overrideSets, acks)
}

// fanInGroup is how many watchers' channels one fan-in goroutine selects
// over. A forwarding goroutine per service cost ~6 MB of stacks at 1000
// services; one reflect.Select over all of them cost O(services) per
// update (its case array is allocated and scanned on every call: at 1000
// services a fifth of synapse's allocations and ~9 % of its CPU, from the
// profiles). Groups of 64 keep both small: 16 goroutines at 1000 services.
const fanInGroup = 64

// watcherStopped logs a watcher that ended before synapse did.
//
//go:noinline
func (s *Synapse) watcherStopped(ctx context.Context, name string, err error) {
	if err != nil && ctx.Err() == nil {
		s.log.Error("watcher stopped", "service", name, "err", err)
	}
}

// watch starts every service's watcher (in wg, until ctx ends) and returns
// their sets, tagged with the service. Every watcher sends on its own
// channel; one goroutine per fanInGroup watchers receives from theirs.
func (s *Synapse) watch(ctx context.Context, wg *sync.WaitGroup) (<-chan update, error) {
	type watched struct {
		name string
		ch   chan []registry.Instance
	}
	var all []watched
	for name, svc := range s.cfg.Services {
		w, err := s.watcher(name, svc)
		if err != nil {
			return nil, err
		}
		ch := make(chan []registry.Instance)
		all = append(all, watched{name, ch})
		// The log call is in a function of its own: this frame stays on
		// the watcher's stack for its life, which the runtime can shrink
		// to 4 KB only while every frame on it is small (1000 services:
		// 4 MB).
		wg.Go(func() { s.watcherStopped(ctx, name, w.Run(ctx, ch)) })
	}
	updates := make(chan update, 16)
	for group := range slices.Chunk(all, fanInGroup) {
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
		for _, w := range group {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.ch)})
		}
		wg.Go(func() {
			for {
				i, v, _ := reflect.Select(cases)
				if i == 0 {
					return
				}
				select {
				case updates <- update{group[i-1].name, v.Interface().([]registry.Instance), time.Now()}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return updates, nil
}

// apply hands st to every generator, counts each result, and records the
// last error in the status.
func (s *Synapse) apply(ctx context.Context, st generators.State) error {
	var errs []error
	for _, g := range s.gens {
		err := g.Apply(ctx, st)
		var deferred *generators.DeferredError
		switch {
		case err == nil:
			s.m.Applies.WithLabelValues(g.Name(), "ok").Inc()
		case errors.As(err, &deferred):
			s.m.Applies.WithLabelValues(g.Name(), "deferred").Inc()
		default:
			s.m.Applies.WithLabelValues(g.Name(), "error").Inc()
			s.log.Error("apply failed; will retry", "generator", g.Name(), "err", err)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	s.setStatus(func(st *Status) {
		st.LastApply = time.Now()
		st.LastError = ""
		if err != nil {
			st.LastError = err.Error()
		}
	})
	return err
}

// quarantined lists the servers the generators set aside.
func (s *Synapse) quarantined() []generators.Quarantined {
	out := []generators.Quarantined{}
	for _, g := range s.gens {
		if q, ok := g.(generators.Quarantiner); ok {
			out = append(out, q.Quarantined()...)
		}
	}
	return out
}

// retryAt is the earliest time a generator wants Apply called again
// without a change; zero if none does.
func (s *Synapse) retryAt() time.Time {
	var at time.Time
	for _, g := range s.gens {
		if r, ok := g.(generators.Retrier); ok {
			if t := r.RetryAt(); !t.IsZero() && (at.IsZero() || t.Before(at)) {
				at = t
			}
		}
	}
	return at
}

func (s *Synapse) hasErr() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.LastError != ""
}

func (s *Synapse) setStatus(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.ID = s.cfg.ID
	f(&s.status)
}

// Status returns a copy of the current status.
func (s *Synapse) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.ID, st.Build = s.cfg.ID, version.Get()
	return st
}
