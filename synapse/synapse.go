// Package synapse is the pipeline next to every HAProxy: watcher sets and
// overrides in, desired state out to the generators. A lone change is
// applied at once; changes that arrive while an apply runs are merged into
// the next one. An empty or failed read never empties a backend while
// use_previous_backends holds.
package synapse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/generators/fileoutput"
	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/backoff"
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

	clients   map[string]registry.Backend // by cluster
	overrides registry.Backend

	mu     sync.Mutex
	status Status

	guards    guards          // the panic threshold; the loop's own
	panicking map[string]bool // services in panic after the last apply

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
	s := &Synapse{cfg: cfg, log: opts.Logger, m: opts.Metrics, rm: opts.RegistryMetrics, clients: map[string]registry.Backend{}, cacheKick: make(chan struct{}, 1),
		guards: guards{cfg: cfg}, panicking: map[string]bool{}}
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
		s.overrides = c
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

	updates := make(chan update, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// Every watcher sends on its own channel; one goroutine receives from
	// all of them and tags each set with its service. (A forwarding
	// goroutine per service cost ~6 MB of stacks at 1000 services.)
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	var names []string
	for name, svc := range s.cfg.Services {
		w, err := s.watcher(name, svc)
		if err != nil {
			return err
		}
		ch := make(chan []registry.Instance)
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		names = append(names, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(ctx, ch); err != nil && ctx.Err() == nil {
				s.log.Error("watcher stopped", "service", name, "err", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			i, v, _ := reflect.Select(cases)
			if i == 0 {
				return
			}
			select {
			case updates <- update{names[i-1], v.Interface().([]registry.Instance), time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	overrideSets := make(chan registry.OverrideSet)
	if s.overrides != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.overrides.WatchOverrides(ctx, overrideSets); err != nil && ctx.Err() == nil {
				s.log.Error("override watch stopped", "err", err)
			}
		}()
	}
	acks := make(chan ackState, 1)
	if s.overrides != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.ackLoop(ctx, acks)
		}()
		go func() {
			defer wg.Done()
			s.publishCatalog(ctx)
		}()
	}
	return s.loop(ctx, updates, overrideSets, acks)
}

// cacheWriteInterval spaces state cache writes (each is an fsync). A
// synapse killed within it restarts from a cache that lacks the last
// changes; the first write after a quiet spell is immediate.
const cacheWriteInterval = 100 * time.Millisecond

// cacheLater hands a snapshot to the cache writer: written atomically in
// the background, never on the path of a change.
func (s *Synapse) cacheLater(sets map[string][]registry.Instance, ovr registry.OverrideSet, panics map[string][]registry.Instance) {
	if s.cfg.StateFilePath == "" {
		return
	}
	snap := make(map[string][]registry.Instance, len(sets))
	for k, v := range sets { // the loop replaces slices, never mutates them
		snap[k] = v
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	s.cachePending = &cache{Sets: snap, Overrides: ovr, Panic: panics}
	if s.cacheBusy {
		return
	}
	s.cacheBusy = true
	s.cacheWG.Add(1)
	go func() {
		defer s.cacheWG.Done()
		for {
			s.cacheMu.Lock()
			if wait := time.Until(s.cacheLast.Add(cacheWriteInterval)); wait > 0 {
				s.cacheMu.Unlock()
				select {
				case <-time.After(wait):
				case <-s.cacheKick: // shutting down: write now
				}
				s.cacheMu.Lock()
			}
			c := s.cachePending
			s.cachePending = nil
			if c == nil {
				s.cacheBusy = false
				s.cacheMu.Unlock()
				return
			}
			s.cacheLast = time.Now()
			s.cacheMu.Unlock()
			if err := saveCache(s.cfg.StateFilePath, *c); err != nil {
				s.log.Warn("state cache not written", "err", err)
			}
		}
	}()
}

// flushCache makes the cache writer write what it has now, and waits.
func (s *Synapse) flushCache() {
	select {
	case s.cacheKick <- struct{}{}:
	default:
	}
	s.cacheWG.Wait()
}

// ackState is what an ack says: the override revision applied, the
// servers set aside, and the removals held back.
type ackState struct {
	rev         int64
	quarantined []string
	held        []string
}

// ackHeld names the held removals for an ack ("service/server"), bounded.
func ackHeld(ps []PanicStatus) []string {
	var out []string
	for _, p := range ps {
		for _, h := range p.Held {
			if len(out) == registry.MaxAckQuarantined {
				return out
			}
			out = append(out, p.Service+"/"+h)
		}
	}
	return out
}

// ackQuarantined names the quarantined servers for an ack, bounded.
func ackQuarantined(qs []generators.Quarantined) []string {
	var out []string
	for _, q := range qs {
		if len(out) == registry.MaxAckQuarantined {
			break
		}
		line := q.Service + "/" + q.Server + ": " + q.Reason
		if len(line) > 500 {
			line = line[:500]
		}
		out = append(out, strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, line))
	}
	slices.Sort(out)
	return out
}

// ackLoop writes the latest ack state, one at a time.
func (s *Synapse) ackLoop(ctx context.Context, acks <-chan ackState) {
	services := s.ackServices() // fixed for this pipeline's config
	retry := backoff.New(250*time.Millisecond, 30*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-acks:
			retry.Reset()
			for ctx.Err() == nil {
				err := s.overrides.PutAck(ctx, registry.Ack{ID: s.cfg.ID, Revision: st.rev, At: time.Now().UTC(), Services: services, Quarantined: st.quarantined, Held: st.held})
				if err == nil {
					s.m.Acks.WithLabelValues("ok").Inc()
					break
				}
				s.m.Acks.WithLabelValues("error").Inc()
				wait := retry.Next()
				s.log.Warn("ack failed; retrying", "revision", st.rev, "err", err, "in", wait)
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				case st = <-acks: // a newer one supersedes it
				}
			}
		}
	}
}

// publishCatalog writes this synapse's persistent catalog of services once
// (retrying until it lands), so synctl finds their backends even while no
// synapse is connected.
func (s *Synapse) publishCatalog(ctx context.Context) {
	services := s.ackServices()
	if len(services) == 0 {
		return
	}
	retry := backoff.New(time.Second, time.Minute)
	for ctx.Err() == nil {
		err := s.overrides.PutCatalog(ctx, registry.Catalog{ID: s.cfg.ID, At: time.Now().UTC(), Services: services})
		if err == nil {
			return
		}
		wait := retry.Next()
		s.log.Warn("catalog not written; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// ackServices lists the services watched in the overrides' registry, with
// their paths, for synctl to find their backends.
func (s *Synapse) ackServices() map[string]string {
	o := s.cfg.Overrides
	out := map[string]string{}
	for name, svc := range s.cfg.Services {
		d := svc.Discovery
		if d.Method == o.Method && slices.Equal(sortedCopy(d.Hosts), sortedCopy(o.Hosts)) {
			out[name] = d.Path
		}
	}
	return out
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func (s *Synapse) loop(ctx context.Context, updates <-chan update, overrideSets <-chan registry.OverrideSet, acks chan ackState) error {
	sets := map[string][]registry.Instance{}
	heard := map[string]bool{} // services whose watcher has answered
	known := heard             // ... or that the cache knows
	var ovr registry.OverrideSet
	haveOverrides := s.overrides == nil
	if cache, err := loadCache(s.cfg.StateFilePath); err != nil {
		s.log.Warn("state cache unreadable; starting without it", "path", s.cfg.StateFilePath, "err", err)
	} else if cache != nil {
		known = map[string]bool{}
		for name, set := range cache.Sets {
			if _, ok := s.cfg.Services[name]; ok {
				sets[name], known[name] = set, true
			}
		}
		ovr = cache.Overrides
		for name, missing := range cache.Panic {
			if _, ok := s.cfg.Services[name]; ok && len(missing) > 0 {
				s.guards.restore(name, missing, time.Now())
			}
		}
		s.log.Info("state cache loaded: serving what synapse last knew until the registry answers", "services", len(sets), "at", cache.At)
	}
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	defer s.flushCache()
	defer func() {
		for _, g := range s.gens {
			if f, ok := g.(interface{ Flush() }); ok {
				f.Flush() // background config writes end with synapse
			}
			if c, ok := g.(io.Closer); ok {
				c.Close() // a watchdog ends; HAProxy keeps running
			}
		}
	}()
	var applied *generators.State
	var built *generators.State   // the last state built
	var dirtySvcs map[string]bool // services to build again; nil: all
	appliedRev := int64(-1)
	var ackedQ []string // the quarantined servers the last ack named
	var ackedH []string // the held removals the last ack named
	var panics []PanicStatus
	var pending []time.Time // receive times of updates not yet applied
	var retry <-chan time.Time
	var genRetry <-chan time.Time // a generator's unfinished work (generators.Retrier)
	var release <-chan time.Time  // hand memory back to the OS after a burst
	churn := 0                    // updates applied since the last release
	applyRetry := backoff.New(250*time.Millisecond, 10*time.Second)
	dirty := true
	for {
		// Apply when something changed (or a retry is due); the first
		// pass applies the cache at once.
		if dirty {
			now := time.Now()
			built0, nextExpiry := s.build(sets, known, heard, ovr, now, built, dirtySvcs)
			built, dirtySvcs = &built0, map[string]bool{}
			var desired generators.State
			desired, panics = s.guard(built0, ovr, now)
			if applied == nil || !desired.Equal(*applied) || retry == nil && s.hasErr() {
				err := s.apply(ctx, desired)
				var deferred *generators.DeferredError
				switch {
				case err == nil:
					applyRetry.Reset()
					retry = nil
				case errors.As(err, &deferred):
					retry = time.After(time.Until(deferred.At))
				default:
					retry = applyRetry.After()
				}
				st := desired
				applied = &st
				now := time.Now()
				for _, at := range pending {
					s.m.Convergence.Observe(now.Sub(at).Seconds())
				}
				if churn += len(pending); churn >= releaseAfterUpdates {
					release = time.After(releaseQuiet) // pushed back while the burst lasts
				}
				pending = pending[:0]
				s.cacheLater(sets, ovr, s.guards.snapshot())
				genRetry = nil
				if at := s.retryAt(); !at.IsZero() {
					genRetry = time.After(time.Until(at))
				}
			}
			quarantined := s.quarantined()
			ackQ := ackQuarantined(quarantined)
			ackH := ackHeld(panics)
			// Ack a newly applied revision, and a change in what is set
			// aside or held back (synctl status shows it per synapse).
			if haveOverrides && s.overrides != nil && !s.hasErr() && (ovr.Revision != appliedRev || !slices.Equal(ackQ, ackedQ) || !slices.Equal(ackH, ackedH)) {
				appliedRev, ackedQ, ackedH = ovr.Revision, ackQ, ackH
				s.m.OverrideRev.Set(float64(appliedRev))
				select {
				case <-acks:
				default:
				}
				acks <- ackState{rev: appliedRev, quarantined: ackQ, held: ackH}
			}
			s.setStatus(func(st *Status) {
				st.State, st.OverrideRevision, st.Overrides = *applied, ovr.Revision, ovr.Overrides
				st.Watched = maps(heard)
				st.Quarantined = quarantined
				st.Panic = panics
			})
			dirty = false
			if !nextExpiry.IsZero() && retry == nil {
				retry = time.After(time.Until(nextExpiry))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			s.merge(sets, heard, u)
			known[u.service] = true
			markDirty(&dirtySvcs, u.service)
			pending = append(pending, u.at)
		case o := <-overrideSets:
			s.markOverrides(&dirtySvcs, ovr, o, sets)
			ovr, haveOverrides = o, true
		case <-retry:
			retry = nil
			applied = nil   // force the apply
			dirtySvcs = nil // an override may have expired
		case <-release:
			// A burst (a mass re-registration, a deploy of everything)
			// leaves the heap's high-water mark mapped; the runtime gives
			// it back slowly. Give it back now that it is quiet: one GC,
			// off the loop.
			release, churn = nil, 0
			go debug.FreeOSMemory()
			continue
		case <-genRetry:
			genRetry = nil
			applied = nil // the same state again: the generator finishes its work
		case <-resync.C:
			applied = nil // generators check what nobody told them about
		}
		// Merge whatever else is already waiting: a burst becomes one apply.
		if d := s.cfg.Debounce.D(); d > 0 {
			time.Sleep(d)
		}
	drain:
		for {
			select {
			case u := <-updates:
				s.merge(sets, heard, u)
				known[u.service] = true
				markDirty(&dirtySvcs, u.service)
				pending = append(pending, u.at)
			case o := <-overrideSets:
				s.markOverrides(&dirtySvcs, ovr, o, sets)
				ovr, haveOverrides = o, true
			default:
				break drain
			}
		}
		dirty = true
	}
}

// A burst of at least releaseAfterUpdates updates, followed by releaseQuiet
// without one, returns the memory it used to the OS.
const (
	releaseAfterUpdates = 1000
	releaseQuiet        = 2 * time.Second
)

// markOverrides marks the services an override change can touch: those it
// names, or those with a backend whose host or name it targets.
func (s *Synapse) markOverrides(dirty *map[string]bool, old, cur registry.OverrideSet, sets map[string][]registry.Instance) {
	if *dirty == nil {
		return
	}
	seen := map[string]string{}
	for _, o := range old.Overrides {
		seen[o.Key()] = overrideSig(o)
	}
	var changed []registry.Override
	for _, o := range cur.Overrides {
		if sig, ok := seen[o.Key()]; !ok || sig != overrideSig(o) {
			changed = append(changed, o)
		}
		delete(seen, o.Key())
	}
	for _, o := range old.Overrides {
		if _, gone := seen[o.Key()]; gone {
			changed = append(changed, o)
		}
	}
	for _, o := range changed {
		for name, svc := range s.cfg.Services {
			if len(o.Services) > 0 && !slices.Contains(o.Services, name) {
				continue
			}
			for _, set := range [][]registry.Instance{sets[name], svc.DefaultServers} {
				for _, in := range set {
					if o.Target == in.Host || o.Target == in.Name {
						(*dirty)[name] = true
					}
				}
			}
		}
	}
}

func overrideSig(o registry.Override) string {
	data, _ := json.Marshal(o)
	return string(data)
}

// markDirty adds service to the set to build again (nil already means all).
func markDirty(dirty *map[string]bool, service string) {
	if *dirty != nil {
		(*dirty)[service] = true
	}
}

func maps(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// merge takes a watcher set, applying label filters and
// use_previous_backends.
func (s *Synapse) merge(sets map[string][]registry.Instance, heard map[string]bool, u update) {
	svc := s.cfg.Services[u.service]
	s.m.WatcherUpdates.WithLabelValues(u.service).Inc()
	set := make([]registry.Instance, 0, len(u.set))
	for _, in := range u.set {
		if svc.Discovery.Keep(in) {
			set = append(set, in)
		}
	}
	heard[u.service] = true
	if len(set) == 0 && len(sets[u.service]) > 0 && svc.UsePrevious() {
		s.m.KeptPrevious.WithLabelValues(u.service).Inc()
		s.log.Warn("discovery returned no backends; keeping the previous ones (use_previous_backends)", "service", u.service, "kept", len(sets[u.service]))
		return
	}
	sets[u.service] = set
}

// build turns the watcher sets and the overrides into the desired state,
// and returns when the next override expires (zero: none).
// Only services in dirty (all when dirty is nil) are built again; the others
// keep prev's backends, so a change costs O(its service), not O(fleet).
func (s *Synapse) build(sets map[string][]registry.Instance, known, heard map[string]bool, ovr registry.OverrideSet, now time.Time, prev *generators.State, dirty map[string]bool) (generators.State, time.Time) {
	st := generators.State{Services: make(map[string]generators.Service, len(s.cfg.Services))}
	var next time.Time
	var active []registry.Override
	for _, o := range ovr.Overrides {
		if o.Active(now) {
			active = append(active, o)
			if o.ExpiresAt != nil && (next.IsZero() || o.ExpiresAt.Before(next)) {
				next = *o.ExpiresAt
			}
		}
	}
	for name, svc := range s.cfg.Services {
		if prev != nil && dirty != nil && !dirty[name] {
			if old, ok := prev.Services[name]; ok {
				st.Services[name] = old
				continue
			}
		}
		set := sets[name]
		if len(set) == 0 {
			set = svc.DefaultServers
		} else if svc.KeepDefaultServers {
			set = append(slices.Clone(set), svc.DefaultServers...)
		}
		bs := make([]generators.Backend, 0, len(set))
		seen := map[string]bool{}
		for _, in := range set {
			b := generators.Backend{Instance: in.Clone(), State: registry.StateReady}
			if !s.cfg.RecordWeights() {
				// use_nerve_weights off (Airbnb's default for its JSON
				// format): only synctl's weights reach HAProxy.
				b.Weight = nil
			}
			if seen[b.ServerName()] {
				continue
			}
			seen[b.ServerName()] = true
			applyOverrides(&b, name, active)
			bs = append(bs, b)
		}
		generators.SortBackends(bs)
		// Until its watcher answers (or the cache tells), a service is
		// unknown: its servers are left as HAProxy has them.
		st.Services[name] = generators.Service{Backends: bs, Unknown: !known[name] && len(svc.DefaultServers) == 0,
			Cached: known[name] && !heard[name]}
		s.m.Backends.WithLabelValues(name).Set(float64(len(bs)))
	}
	return st, next
}

// guard applies the panic threshold to the built state: it returns the
// state to apply (built is not changed: the next build reuses its
// services) and the services in panic. Entering and leaving a panic is
// logged and counted.
func (s *Synapse) guard(built generators.State, ovr registry.OverrideSet, now time.Time) (generators.State, []PanicStatus) {
	st := generators.State{Services: make(map[string]generators.Service, len(built.Services))}
	for k, v := range built.Services {
		st.Services[k] = v
	}
	var active []registry.Override
	for _, o := range ovr.Overrides {
		if o.Active(now) {
			active = append(active, o)
		}
	}
	entered, panics := s.guards.apply(&st, active, now)
	for _, name := range entered {
		s.m.Panics.WithLabelValues(name).Inc()
	}
	inPanic := map[string]bool{}
	for _, p := range panics {
		inPanic[p.Service] = true
		s.m.Held.WithLabelValues(p.Service).Set(float64(len(p.Held)))
		if slices.Contains(entered, p.Service) {
			s.log.Warn("panic threshold: more of the service's backends would leave HAProxy at once than it allows; holding the rest until the registry recovers or an operator confirms (synctl confirm)",
				"service", p.Service, "threshold_percent", p.Threshold, "reference", p.Reference, "missing", p.Missing, "held", p.Held)
		}
	}
	confirmed := confirmedServices(active)
	for name := range s.panicking {
		if inPanic[name] {
			continue
		}
		s.m.Held.WithLabelValues(name).Set(0)
		how := "the registry recovered"
		if confirmed[name] {
			how = "an operator confirmed the removal"
		}
		s.log.Info("panic threshold lifted: "+how, "service", name)
	}
	s.panicking = inPanic
	return st, panics
}

// applyOverrides sets the backend's state (maint beats drain beats ready)
// and weight (the newest override with a weight) from the overrides that
// match it.
func applyOverrides(b *generators.Backend, service string, active []registry.Override) {
	rank := map[registry.OverrideState]int{registry.StateReady: 0, registry.StateDrain: 1, registry.StateMaint: 2}
	var weightAt time.Time
	for _, o := range active {
		if !o.Matches(service, b.Instance) {
			continue
		}
		if rank[o.State] > rank[b.State] {
			b.State = o.State
		}
		if o.Weight != nil && !o.At.Before(weightAt) {
			w := *o.Weight
			b.Weight, weightAt = &w, o.At
		}
	}
}

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
