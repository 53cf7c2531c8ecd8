package synapse

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
	"slices"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// A burst of at least releaseAfterUpdates updates, followed by releaseQuiet
// without one, returns the memory it used to the OS.
const (
	releaseAfterUpdates = 1000
	releaseQuiet        = 2 * time.Second
)

// resyncEvery is how often the generators are asked to check what nobody
// told them about (an operator on the socket, a HAProxy restarted).
const resyncEvery = 30 * time.Second

// loop is the pipeline: it converges whenever something changed, then
// waits for the next thing. A change that arrives while an apply runs is
// merged with whatever else is waiting into the next one.
func (s *Synapse) loop(ctx context.Context, updates <-chan update, overrideSets <-chan registry.OverrideSet, acks chan ackState) error {
	p := s.newPipeline(acks)
	resync := time.NewTicker(resyncEvery)
	defer resync.Stop()
	defer s.flushCache()
	defer s.closeGenerators()
	for {
		if p.changed {
			p.converge(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			p.update(u)
		case o := <-overrideSets:
			p.setOverrides(o)
		case <-p.retry:
			p.retryDue()
		case <-p.genRetry:
			p.genRetry, p.applied = nil, nil // the same state again: the generator finishes its work
		case <-resync.C:
			p.applied = nil // generators check what nobody told them about
		case <-p.release:
			p.releaseMemory()
			continue
		}
		p.drain(updates, overrideSets)
	}
}

// pipeline is the loop's state: what the watchers and the overrides said,
// what was built and applied, and what the last ack said.
type pipeline struct {
	s    *Synapse
	acks chan ackState // to the ack writer; holds the latest only

	sets          map[string][]registry.Instance // the watchers' sets, filtered
	heard         map[string]bool                // services whose watcher has answered
	watched       map[string]bool                // a copy of heard for the status; nil: heard changed since
	known         map[string]bool                // ... or that the cache knows
	ovr           registry.OverrideSet
	haveOverrides bool // the override set was read (or there are none to read)

	changed  bool              // converge at the next turn
	dirty    dirtySet          // services to build again
	built    *generators.State // the last state built (before the guard)
	applied  *generators.State // the last state applied; nil forces an apply
	guards   guards            // the panic threshold's state
	inPanic  map[string]bool   // services in panic after the last apply
	panics   []PanicStatus     // their status
	acked    ackState          // what the last ack said (rev -1: none yet)
	pending  []time.Time       // receive times of updates not yet applied
	churn    int               // updates applied since memory was last released
	backoff  *backoff.Backoff  // failed applies
	retry    <-chan time.Time  // an apply retry or an override expiry is due
	genRetry <-chan time.Time  // a generator's unfinished work (generators.Retrier)
	release  <-chan time.Time  // hand memory back to the OS after a burst
}

// newPipeline starts from the state cache, if there is one: HAProxy gets
// what synapse last knew until the registry answers.
func (s *Synapse) newPipeline(acks chan ackState) *pipeline {
	p := &pipeline{s: s, acks: acks, sets: map[string][]registry.Instance{}, heard: map[string]bool{},
		haveOverrides: s.overrides == nil, changed: true, dirty: allDirty(), guards: guards{cfg: s.cfg},
		inPanic: map[string]bool{}, acked: ackState{rev: -1}, backoff: backoff.New(250*time.Millisecond, 10*time.Second)}
	p.known = p.heard
	c, err := loadCache(s.cfg.StateFilePath)
	if err != nil {
		s.log.Warn("state cache unreadable; starting without it", "path", s.cfg.StateFilePath, "err", err)
		return p
	}
	if c == nil {
		return p
	}
	p.known = map[string]bool{}
	for name, set := range c.Sets {
		if _, ok := s.cfg.Services[name]; ok {
			p.sets[name], p.known[name] = set, true
		}
	}
	p.ovr = c.Overrides
	for name, missing := range c.Panic {
		if _, ok := s.cfg.Services[name]; ok && len(missing) > 0 {
			p.guards.restore(name, missing, time.Now())
		}
	}
	s.log.Info("state cache loaded: serving what synapse last knew until the registry answers", "services", len(p.sets), "at", c.At)
	return p
}

// closeGenerators ends the generators' background work; HAProxy keeps
// running with the last state.
func (s *Synapse) closeGenerators() {
	for _, g := range s.gens {
		if f, ok := g.(interface{ Flush() }); ok {
			f.Flush() // background config writes end with synapse
		}
		if c, ok := g.(io.Closer); ok {
			c.Close() // a watchdog ends; HAProxy keeps running
		}
	}
}

// update takes a watcher set (label filters, use_previous_backends).
func (p *pipeline) update(u update) {
	svc := p.s.cfg.Services[u.service]
	p.s.m.WatcherUpdates.WithLabelValues(u.service).Inc()
	set, kept := mergeSet(svc, p.sets[u.service], u.set)
	if kept {
		p.s.m.KeptPrevious.WithLabelValues(u.service).Inc()
		p.s.log.Warn("discovery returned no backends; keeping the previous ones (use_previous_backends)", "service", u.service, "kept", len(set))
	}
	p.sets[u.service] = set
	if !p.heard[u.service] {
		p.watched = nil
	}
	p.heard[u.service], p.known[u.service] = true, true
	p.dirty.add(u.service)
	p.pending = append(p.pending, u.at)
}

// setOverrides takes a new override set.
func (p *pipeline) setOverrides(o registry.OverrideSet) {
	if !p.dirty.all {
		p.dirty.add(overrideServices(p.s.cfg.Services, p.sets, p.ovr, o)...)
	}
	p.ovr, p.haveOverrides = o, true
}

// retryDue: a failed or deferred apply is due again, or an override
// expired (which may touch any service).
func (p *pipeline) retryDue() {
	p.retry, p.applied, p.dirty = nil, nil, allDirty()
}

// releaseMemory: a burst (a mass re-registration, a deploy of everything)
// leaves the heap's high-water mark mapped; the runtime gives it back
// slowly. Give it back now that it is quiet: one GC, off the loop.
func (p *pipeline) releaseMemory() {
	p.release, p.churn = nil, 0
	go debug.FreeOSMemory()
}

// drain merges whatever else is already waiting (after debounce, if set):
// a burst becomes one apply.
func (p *pipeline) drain(updates <-chan update, overrideSets <-chan registry.OverrideSet) {
	if d := p.s.cfg.Debounce.D(); d > 0 {
		time.Sleep(d)
	}
	for {
		select {
		case u := <-updates:
			p.update(u)
		case o := <-overrideSets:
			p.setOverrides(o)
		default:
			p.changed = true
			return
		}
	}
}

// converge builds the desired state, applies it if it differs from the
// applied one (or a retry is due), acks, and publishes the status.
func (p *pipeline) converge(ctx context.Context) {
	s := p.s
	now := time.Now()
	active, nextExpiry := activeOverrides(p.ovr, now)
	built, rebuilt := build(buildInput{services: s.cfg.Services, recordWeights: s.cfg.RecordWeights(), sets: p.sets, known: p.known, heard: p.heard, active: active}, p.built, p.dirty)
	p.built, p.dirty = &built, dirtySet{}
	for _, name := range rebuilt {
		s.m.Backends.WithLabelValues(name).Set(float64(len(built.Services.Get(name).Backends)))
	}
	desired := p.guard(built, active, now)
	if p.applied == nil || !desired.Equal(*p.applied) || p.retry == nil && s.hasErr() {
		p.apply(ctx, desired)
	}
	quarantined := s.quarantined()
	p.ack(ackState{rev: p.ovr.Revision, quarantined: ackQuarantined(quarantined), held: ackHeld(p.panics)})
	s.setStatus(func(st *Status) {
		st.State, st.OverrideRevision, st.Overrides = *p.applied, p.ovr.Revision, p.ovr.Overrides
		if p.watched == nil {
			// Copied when a service is first heard from, not per
			// change: the status keeps the copy it was given.
			p.watched = cloneMap(p.heard)
		}
		st.Watched = p.watched
		st.Quarantined = quarantined
		st.Panic = p.panics
	})
	p.changed = false
	if !nextExpiry.IsZero() && p.retry == nil {
		p.retry = time.After(time.Until(nextExpiry))
	}
}

// guard applies the panic threshold, counting and logging each service
// entering or leaving a panic.
func (p *pipeline) guard(built generators.State, active []registry.Override, now time.Time) generators.State {
	s := p.s
	desired, entered, panics := guardState(&p.guards, built, active, now)
	for _, name := range entered {
		s.m.Panics.WithLabelValues(name).Inc()
	}
	inPanic := map[string]bool{}
	for _, ps := range panics {
		inPanic[ps.Service] = true
		s.m.Held.WithLabelValues(ps.Service).Set(float64(len(ps.Held)))
		if slices.Contains(entered, ps.Service) {
			s.log.Warn("panic threshold: more of the service's backends would leave HAProxy at once than it allows; holding the rest until the registry recovers or an operator confirms (synctl confirm)",
				"service", ps.Service, "threshold_percent", ps.Threshold, "reference", ps.Reference, "missing", ps.Missing, "held", ps.Held)
		}
	}
	confirmed := confirmedServices(active)
	for name := range p.inPanic {
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
	p.inPanic, p.panics = inPanic, panics
	return desired
}

// apply hands desired to the generators and schedules what comes after:
// a retry (backoff, or when a deferred reload is due), the generators' own
// retry, the state cache, and the convergence observations.
func (p *pipeline) apply(ctx context.Context, desired generators.State) {
	s := p.s
	err := s.apply(ctx, desired)
	var deferred *generators.DeferredError
	switch {
	case err == nil:
		p.backoff.Reset()
		p.retry = nil
	case errors.As(err, &deferred):
		p.retry = time.After(time.Until(deferred.At))
	default:
		p.retry = p.backoff.After()
	}
	p.applied = &desired
	now := time.Now()
	for _, at := range p.pending {
		s.m.Convergence.Observe(now.Sub(at).Seconds())
	}
	if p.churn += len(p.pending); p.churn >= releaseAfterUpdates {
		p.release = time.After(releaseQuiet) // pushed back while the burst lasts
	}
	p.pending = p.pending[:0]
	s.cacheLater(p.sets, p.ovr, p.guards.snapshot())
	p.genRetry = nil
	if at := s.retryAt(); !at.IsZero() {
		p.genRetry = time.After(time.Until(at))
	}
}

// ack hands the ack writer a newly applied revision, or a change in what
// is set aside or held back (synctl status shows it per synapse), once
// the overrides were read and the last apply succeeded.
func (p *pipeline) ack(a ackState) {
	s := p.s
	if s.acks == nil || !p.haveOverrides || s.hasErr() || a.equal(p.acked) {
		return
	}
	p.acked = a
	s.m.OverrideRev.Set(float64(a.rev))
	select {
	case <-p.acks: // superseded
	default:
	}
	p.acks <- a
}

func cloneMap(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
