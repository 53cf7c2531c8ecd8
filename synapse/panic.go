package synapse

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// The panic threshold (Envoy's panic threshold and Eureka's
// self-preservation are the models): whoever writes to the registry, one
// update never takes more than a configured share of a service's serving
// backends out of HAProxy. The removals beyond the threshold are held (the
// held backends stay in HAProxy as they last served) until the registry
// recovers (they come back, or enough others do that the share falls under
// the threshold) or an operator confirms the removal (synctl confirm).
// HAProxy's own health checks are untouched: a held backend that is really
// dead is still marked down by them.

// guardMember is one backend of a service's reference set: the backends
// serving recently, with the form in which each last served.
type guardMember struct {
	backend generators.Backend
	first   time.Time // when this synapse first saw it serving
	gone    time.Time // when it stopped serving (zero: serving)
}

// serviceGuard is the panic state of one service. The reference set holds
// every backend serving now, and those that stopped serving within the
// window: removals that arrive in several updates count together. While the
// service is in panic, nothing ages out of it.
type serviceGuard struct {
	members map[string]*guardMember // by server name
	panic   bool
	since   time.Time // when the panic began
	held    []string  // server names held now, sorted
	missing int       // backends of the reference set out of the desired state
	// lastIn/lastOut: the desired backends last guarded and the result,
	// so an unchanged service costs nothing.
	lastIn, lastOut []generators.Backend
	lastConfirmed   bool
}

// serving reports whether HAProxy sends new requests to b.
func serving(b generators.Backend) bool {
	return b.State == registry.StateReady && (b.Weight == nil || *b.Weight > 0)
}

// guardInput is what one evaluation of a service's guard depends on.
type guardInput struct {
	desired   []generators.Backend // in registration order (desired.go)
	threshold float64              // share in [0,1]; 0 disables
	window    time.Duration
	confirmed bool // an operator's confirmation is active for the service
	now       time.Time
}

// guardResult is the evaluation's outcome.
type guardResult struct {
	backends []generators.Backend // what HAProxy gets, in registration order
	held     []string             // server names held back, sorted
	entered  bool                 // the panic began with this evaluation
}

// apply evaluates the guard for one desired set of backends. It is pure
// apart from g's own state, and the same input gives the same output.
func (g *serviceGuard) apply(in guardInput) guardResult {
	if in.threshold <= 0 {
		// Off: every removal is accepted at once, so the reference set
		// would only ever be a copy of the serving backends, kept for
		// nothing (10,000 backends: 2 MB).
		g.members, g.panic, g.since, g.held, g.missing = nil, false, time.Time{}, nil, 0
		return guardResult{backends: in.desired}
	}
	if g.members == nil {
		g.members = map[string]*guardMember{}
	}
	seen := make(map[string]bool, len(in.desired))
	for _, b := range in.desired {
		if !serving(b) {
			continue
		}
		name := b.ServerName()
		seen[name] = true
		if m := g.members[name]; m != nil {
			m.backend, m.gone = b, time.Time{}
		} else {
			g.members[name] = &guardMember{backend: b, first: in.now}
		}
	}
	for name, m := range g.members {
		if !seen[name] && m.gone.IsZero() {
			m.gone = in.now
		}
	}
	// Accept the removals (forget the backends out) when the guard is off
	// or an operator confirmed them; otherwise age out those removed
	// longer than the window ago, unless in panic (a held backend must not
	// drop out of the reference just because the panic lasted).
	for name, m := range g.members {
		if m.gone.IsZero() {
			continue
		}
		if in.threshold <= 0 || in.confirmed || (!g.panic && in.now.Sub(m.gone) >= in.window) {
			delete(g.members, name)
		}
	}
	var missing []*guardMember
	for _, m := range g.members {
		if !m.gone.IsZero() {
			missing = append(missing, m)
		}
	}
	g.missing = len(missing)
	total := len(g.members)
	// More than the threshold's share out at once: hold the excess.
	if total == 0 || float64(len(missing)) <= in.threshold*float64(total)+1e-9 {
		g.panic, g.held, g.since = false, nil, time.Time{}
		return guardResult{backends: in.desired}
	}
	allowed := int(math.Floor(in.threshold*float64(total) + 1e-9))
	hold := len(missing) - allowed
	// Keep the longest-serving ones (the likeliest to be real), then by
	// name so every synapse holds the same ones.
	slices.SortFunc(missing, func(a, b *guardMember) int {
		if c := a.first.Compare(b.first); c != 0 {
			return c
		}
		return strings.Compare(a.backend.ServerName(), b.backend.ServerName())
	})
	res := guardResult{entered: !g.panic}
	if !g.panic {
		g.panic, g.since = true, in.now
	}
	keep := map[string]generators.Backend{}
	for _, m := range missing[:hold] {
		keep[m.backend.ServerName()] = m.backend
		res.held = append(res.held, m.backend.ServerName())
	}
	slices.Sort(res.held)
	out := make([]generators.Backend, 0, len(in.desired)+hold)
	for _, b := range in.desired {
		name := b.ServerName()
		if k, ok := keep[name]; ok {
			// Still registered but drained, in maint or at weight 0: it
			// serves as it last did.
			out = append(out, k)
			delete(keep, name)
			continue
		}
		out = append(out, b)
	}
	for _, k := range keep { // deregistered: back as it last served
		out = append(out, k)
	}
	sortBackendsByRegistration(out)
	res.backends = out
	g.held = res.held
	return res
}

// PanicStatus is one service whose removals are held, as /status shows it.
type PanicStatus struct {
	Service string `json:"service"`
	// Threshold is the share (%) one update may take out.
	Threshold float64 `json:"threshold_percent"`
	// Reference is how many backends served (now or within the window);
	// Missing how many of them the registry (or an override) takes out.
	Reference int       `json:"reference"`
	Missing   int       `json:"missing"`
	Held      []string  `json:"held"` // server names kept in HAProxy
	Since     time.Time `json:"since"`
}

// guards is every service's guard, owned by the pipeline loop.
type guards struct {
	cfg      *Config
	services map[string]*serviceGuard
}

// confirmedServices returns the services an active operator confirmation
// covers.
func confirmedServices(active []registry.Override) map[string]bool {
	out := map[string]bool{}
	for _, o := range active {
		if o.State == registry.StateConfirm {
			for _, s := range o.Services {
				out[s] = true
			}
		}
	}
	return out
}

// apply guards every service of desired; it returns the services whose
// panic began now, and the panic status of every service in panic.
// desired's map is copied before its first change (copy on write), never
// written: a state in which no service is held (the usual case) costs no
// copy of every service per change, which at 1000 services was a fifth of
// synapse's allocations.
func (gs *guards) apply(desired *generators.State, active []registry.Override, now time.Time) (entered []string, status []PanicStatus) {
	if gs.services == nil {
		gs.services = map[string]*serviceGuard{}
	}
	confirmed := confirmedServices(active)
	for name := range gs.services {
		if _, ok := desired.Services.Lookup(name); !ok {
			delete(gs.services, name) // gone from the config
		}
	}
	var held *generators.ServicesEditor // the services held back: a new state
	for name, svc := range desired.Services.All() {
		if svc.Unknown {
			continue // HAProxy keeps what it has: nothing to guard yet
		}
		in := svc.Backends
		g := gs.services[name]
		if g == nil {
			g = &serviceGuard{}
			gs.services[name] = g
		}
		// The same slice as last time (the service was not built again)
		// and the same confirmation: the same result.
		if g.lastIn != nil && sameSlice(g.lastIn, svc.Backends) && g.lastConfirmed == confirmed[name] {
			svc.Backends = g.lastOut
		} else {
			r := g.apply(guardInput{desired: svc.Backends, threshold: gs.cfg.Threshold(name), window: gs.cfg.Window(), confirmed: confirmed[name], now: now})
			g.lastIn, g.lastOut, g.lastConfirmed = svc.Backends, r.backends, confirmed[name]
			svc.Backends = r.backends
			if r.entered {
				entered = append(entered, name)
			}
		}
		if !sameSlice(in, svc.Backends) {
			if held == nil {
				held = desired.Services.Edit()
			}
			held.Set(name, svc)
		}
		if g.panic {
			status = append(status, PanicStatus{Service: name, Threshold: gs.cfg.Threshold(name) * 100,
				Reference: len(g.members), Missing: g.missing, Held: slices.Clone(g.held), Since: g.since})
		}
	}
	if held != nil {
		desired.Services = held.Done()
	}
	slices.SortFunc(status, func(a, b PanicStatus) int { return strings.Compare(a.Service, b.Service) })
	slices.Sort(entered)
	return entered, status
}

// snapshot returns, for each service in panic, the backends its reference
// counts as out, for the state cache (nil: no service in panic).
func (gs *guards) snapshot() map[string][]registry.Instance {
	var out map[string][]registry.Instance
	for name, g := range gs.services {
		if !g.panic {
			continue
		}
		var missing []registry.Instance
		for _, m := range g.members {
			if !m.gone.IsZero() {
				missing = append(missing, m.backend.Instance)
			}
		}
		slices.SortFunc(missing, func(a, b registry.Instance) int {
			return strings.Compare(generators.Backend{Instance: a}.ServerName(), generators.Backend{Instance: b}.ServerName())
		})
		if out == nil {
			out = map[string][]registry.Instance{}
		}
		out[name] = missing
	}
	return out
}

// restore puts a service back in the panic the state cache recorded: the
// backends that were out count as out again (and serve as they last did
// while held), the ones the first set brings count as serving.
func (gs *guards) restore(name string, missing []registry.Instance, now time.Time) {
	if gs.services == nil {
		gs.services = map[string]*serviceGuard{}
	}
	g := &serviceGuard{members: map[string]*guardMember{}, panic: true, since: now}
	for _, in := range missing {
		b := generators.Backend{Instance: in, State: registry.StateReady}
		g.members[b.ServerName()] = &guardMember{backend: b, first: now, gone: now}
	}
	gs.services[name] = g
}

// sameSlice reports whether a and b are the same slice (not merely equal).
func sameSlice(a, b []generators.Backend) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
