package synapse

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// Desired-state building: pure functions from what the watchers and the
// overrides said (and the clock reading the caller passes) to the state the
// generators get. No receiver, no clock reads, no metrics or logs: the
// pipeline (loop.go) owns the state, counts and logs.

// dirtySet is the services to build again: some, or all of them.
type dirtySet struct {
	all      bool
	services map[string]bool
}

func allDirty() dirtySet { return dirtySet{all: true} }

// add marks services to build again.
func (d *dirtySet) add(services ...string) {
	if d.all {
		return
	}
	if d.services == nil {
		d.services = map[string]bool{}
	}
	for _, s := range services {
		d.services[s] = true
	}
}

func (d dirtySet) has(service string) bool { return d.all || d.services[service] }

// activeOverrides returns the overrides active at now, and when the first
// of them expires (zero: none does).
func activeOverrides(ovr registry.OverrideSet, now time.Time) (active []registry.Override, next time.Time) {
	for _, o := range ovr.Overrides {
		if o.Active(now) {
			active = append(active, o)
			if o.ExpiresAt != nil && (next.IsZero() || o.ExpiresAt.Before(next)) {
				next = *o.ExpiresAt
			}
		}
	}
	return active, next
}

// mergeSet is the service's set after a watcher sent got: the records its
// label filters keep, or prev when that is empty and use_previous_backends
// holds (kept reports it).
//
// The result may be got itself (when the filters keep every record): sets
// are shared, never written, by the watcher that sent it, the pipeline and
// the state cache (10,000 backends: a copy is 0.9 MB).
func mergeSet(svc *ServiceConfig, prev, got []registry.Instance) (set []registry.Instance, kept bool) {
	if got == nil {
		got = []registry.Instance{} // as before: an empty set, not none
	}
	set = got
	for i, in := range got {
		if svc.Discovery.Keep(in) {
			if len(set) < len(got) {
				set = append(set, in)
			}
			continue
		}
		if len(set) == len(got) { // the first one left out: copy from here
			set = append(make([]registry.Instance, 0, len(got)-1), got[:i]...)
		}
	}
	if len(set) == 0 && len(prev) > 0 && svc.UsePrevious() {
		return prev, true
	}
	return set, false
}

// buildInput is everything a desired state depends on.
type buildInput struct {
	services      map[string]*ServiceConfig
	recordWeights bool // use_nerve_weights (Config.RecordWeights)
	sets          map[string][]registry.Instance
	known         map[string]bool // heard from, or known from the cache
	heard         map[string]bool // heard from since start
	active        []registry.Override
}

// build returns the desired state of every configured service. Only the
// services in dirty are built again; the others are prev's, shared with it
// (generators.Services copies only the parts a change touches, and an
// unchanged service keeps the same backend slice), so a change costs
// O(its service), not O(fleet). rebuilt names the services built again.
// A pipeline's services are fixed, so prev (built by the same pipeline)
// has them all; when the counts differ (prev from another config), the
// services prev lacks are built and those no longer configured dropped.
func build(in buildInput, prev *generators.State, dirty dirtySet) (st generators.State, rebuilt []string) {
	one := func(name string, svc *ServiceConfig) generators.Service {
		rebuilt = append(rebuilt, name)
		return buildService(name, svc, in.sets[name], in.known[name], in.heard[name], in.active, in.recordWeights)
	}
	if prev == nil || dirty.all {
		e := generators.Services{}.Edit()
		for name, svc := range in.services {
			e.Set(name, one(name, svc))
		}
		return generators.State{Services: e.Done()}, rebuilt
	}
	e := prev.Services.Edit()
	if prev.Services.Len() == len(in.services) {
		for name := range dirty.services {
			if svc, ok := in.services[name]; ok {
				e.Set(name, one(name, svc))
			}
		}
		return generators.State{Services: e.Done()}, rebuilt
	}
	for name, svc := range in.services {
		if _, ok := prev.Services.Lookup(name); !ok || dirty.has(name) {
			e.Set(name, one(name, svc))
		}
	}
	for name := range prev.Services.All() {
		if _, ok := in.services[name]; !ok {
			e.Delete(name)
		}
	}
	return generators.State{Services: e.Done()}, rebuilt
}

// buildService is one service's desired backends: the watcher's set (or
// default_servers), in registration order, one per server name (the
// earliest registered), only the leader with leader_election, with the
// overrides applied.
func buildService(name string, svc *ServiceConfig, set []registry.Instance, known, heard bool, active []registry.Override, recordWeights bool) generators.Service {
	if len(set) == 0 {
		set = svc.DefaultServers
	} else if svc.KeepDefaultServers {
		set = append(slices.Clone(set), svc.DefaultServers...)
	}
	// set is shared (mergeSet): sort the backends built from it, not set.
	all := make([]generators.Backend, len(set))
	for i, in := range set {
		all[i] = generators.Backend{Instance: in.Clone(), State: registry.StateReady}
		if !recordWeights {
			// use_nerve_weights off (Airbnb's default for its JSON
			// format): only synctl's weights reach HAProxy.
			all[i].Weight = nil
		}
	}
	sortBackendsByRegistration(all)
	bs := all[:0]
	seen := make(map[string]bool, len(set))
	for _, b := range all {
		name := b.ServerName()
		if seen[name] {
			continue
		}
		seen[name] = true
		bs = append(bs, b)
		if svc.LeaderElection {
			// The leader is the earliest registered whatever the
			// overrides say: a drained leader stays the leader, drained
			// (no other backend takes its place).
			break
		}
	}
	for i := range bs {
		applyOverrides(&bs[i], name, active)
	}
	// Until its watcher answers (or the cache tells), a service is
	// unknown: its servers are left as HAProxy has them.
	return generators.Service{Backends: bs, Unknown: !known && len(svc.DefaultServers) == 0, Cached: known && !heard}
}

// compareRegistration orders instances as they registered: those with a
// known order (Seq > 0) first, earliest first, then the others (static,
// file and dns records, default_servers); ties and unknowns by server name.
// It is backend_order no_shuffle's order and leader_election's choice.
func compareRegistration(a, b registry.Instance) int {
	switch {
	case a.Seq > 0 && b.Seq == 0:
		return -1
	case a.Seq == 0 && b.Seq > 0:
		return 1
	}
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	return strings.Compare(generators.Backend{Instance: a}.ServerName(), generators.Backend{Instance: b}.ServerName())
}

// sortBackendsByRegistration sorts backends in registration order.
func sortBackendsByRegistration(bs []generators.Backend) {
	slices.SortStableFunc(bs, func(a, b generators.Backend) int { return compareRegistration(a.Instance, b.Instance) })
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

// overrideServices returns the services an override change from old to cur
// can touch: those a changed override names, or those with a backend
// (registered or default) whose host or name it targets.
func overrideServices(services map[string]*ServiceConfig, sets map[string][]registry.Instance, old, cur registry.OverrideSet) []string {
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
	touched := map[string]bool{}
	for _, o := range changed {
		for name, svc := range services {
			if len(o.Services) > 0 && !slices.Contains(o.Services, name) {
				continue
			}
			for _, set := range [][]registry.Instance{sets[name], svc.DefaultServers} {
				for _, in := range set {
					if o.Target == in.Host || o.Target == in.Name {
						touched[name] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(touched))
	for name := range touched {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func overrideSig(o registry.Override) string {
	data, _ := json.Marshal(o)
	return string(data)
}

// guardState applies the panic threshold to the built state: it returns
// the state to apply (built is not changed: the next build reuses its
// services; without a service held the result shares built's map, which
// nobody writes once built), the services whose panic began now and the
// services in panic. gs is the guards' own state, carried from one call
// to the next.
func guardState(gs *guards, built generators.State, active []registry.Override, now time.Time) (st generators.State, entered []string, panics []PanicStatus) {
	st = built
	entered, panics = gs.apply(&st, active, now)
	return st, entered, panics
}
