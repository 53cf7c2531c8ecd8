package synctl

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fleet is what synctl reads before it changes anything: the services (from
// the synapses' acks and the config file), their registered backends, the
// overrides and the acks.
type fleet struct {
	services  map[string]string              // name → path
	backends  map[string][]registry.Instance // by service
	overrides registry.OverrideSet
	acks      []registry.Ack
	catalogs  []registry.Catalog // outlive their synapse: one without an ack is dead
}

func readFleet(ctx context.Context, b fleetReader, c *common, now time.Time) (*fleet, error) {
	f := &fleet{services: map[string]string{}, backends: map[string][]registry.Instance{}}
	var err error
	if f.acks, err = b.Acks(ctx); err != nil {
		return nil, fmt.Errorf("registry unreachable: %w", err)
	}
	// The services come from the synapses' catalogs, which stay in the
	// registry, from their acks and from synctl's config (knownServices).
	f.catalogs, err = b.Catalogs(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry unreachable: %w", err)
	}
	// Acks live with their synapse's session: right after a registry
	// outage they may be missing for a moment while synapses re-create
	// them. With no catalog either, give them a few seconds before
	// concluding there are none.
	cataloged := slices.ContainsFunc(f.catalogs, func(cat registry.Catalog) bool { return len(cat.Services) > 0 })
	for deadline := time.Now().Add(2 * c.opTimeout); len(f.acks) == 0 && !cataloged && len(c.services) == 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if f.acks, err = b.Acks(ctx); err != nil {
			return nil, fmt.Errorf("registry unreachable: %w", err)
		}
	}
	f.services = f.knownServices(c.services)
	if f.overrides, err = b.Overrides(ctx); err != nil {
		return nil, fmt.Errorf("registry unreachable: %w", err)
	}
	for name, path := range f.services {
		set, err := readOnce(ctx, b, path, c.opTimeout)
		if err != nil {
			return nil, fmt.Errorf("service %s (%s): %w", name, path, err)
		}
		f.backends[name] = set
	}
	return f, nil
}

// readOnce returns the current set under path.
func readOnce(ctx context.Context, b registry.Discovery, path string, timeout time.Duration) ([]registry.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := make(chan []registry.Instance, 1)
	go b.Watch(ctx, path, registry.DecodeOptions{}, out)
	select {
	case set := <-out:
		return set, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from the registry within %v", timeout)
	}
}

// backendState is one backend as the fleet will have it.
type backendState struct {
	Service string `json:"service"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	Name    string `json:"name,omitempty"`
	State   string `json:"state"` // ready, drain, maint
	Weight  *int   `json:"weight,omitempty"`
	// Serving is whether HAProxy sends the backend new requests: ready and
	// not at weight 0 (a weight of 0 takes a server out as surely as a drain).
	Serving bool    `json:"serving"`
	Reason  string  `json:"reason,omitempty"`
	Expires *string `json:"expires_at,omitempty"`
	// HeldBy is the key of the override that holds the backend out (its
	// state, or a weight of 0), and By who wrote it.
	HeldBy string `json:"held_by,omitempty"`
	By     string `json:"by,omitempty"`
}

// knownServices maps every service synctl knows of to its path, from the
// least to the most authoritative source, a later one winning where two
// name a service at different paths:
//   - the catalogs of synapses that no longer ack (dead: they may name a
//     path their services have since left),
//   - the catalogs of live synapses: a synapse's ack leaves its services
//     to its catalog once that is written, and it checks the catalog is
//     still the one it wrote,
//   - the live acks that name their services themselves (a synapse
//     before its catalog is written, or one that does not leave them),
//   - synctl's own config.
func (f *fleet) knownServices(config map[string]string) map[string]string {
	live := f.live()
	out := map[string]string{}
	for _, fromLive := range []bool{false, true} {
		for _, cat := range f.catalogs {
			if live[cat.ID] == fromLive {
				maps.Copy(out, cat.Services)
			}
		}
	}
	for _, a := range f.acks {
		maps.Copy(out, a.Services)
	}
	maps.Copy(out, config)
	return out
}

// live is the set of synapses that ack.
func (f *fleet) live() map[string]bool {
	live := make(map[string]bool, len(f.acks))
	for _, a := range f.acks {
		live[a.ID] = true
	}
	return live
}

// unknown lists the live synapses whose services synctl cannot see: the
// ack leaves them to the catalog and there is no catalog under its id
// (deleted by hand, say, until the synapse's next check writes it again).
// A change that takes backends out is refused without --force while there
// are any: the safety limits cannot cover services synctl does not know.
// (An ack from a synapse before catalogs held the services names them, or
// has no "services" key when it serves none: never unknown.)
func (f *fleet) unknown() []string {
	cataloged := map[string]bool{}
	for _, c := range f.catalogs {
		cataloged[c.ID] = true
	}
	var out []string
	for _, a := range f.acks {
		if a.ServicesInCatalog && !cataloged[a.ID] {
			out = append(out, a.ID)
		}
	}
	return out
}

// dead lists the synapses whose catalog is left but that no longer ack.
func (f *fleet) dead() []string {
	live := f.live()
	var out []string
	for _, c := range f.catalogs {
		if !live[c.ID] {
			out = append(out, c.ID)
		}
	}
	sort.Strings(out)
	return out
}

// stateOf applies the active overrides to one backend as synapse does.
func stateOf(service string, in registry.Instance, ovr []registry.Override, now time.Time) backendState {
	st := backendState{Service: service, Host: in.Host, Port: in.Port, Name: in.Name, State: "ready", Weight: in.Weight}
	rank := map[registry.OverrideState]int{registry.StateReady: 0, registry.StateDrain: 1, registry.StateMaint: 2}
	cur := registry.StateReady
	var weightAt time.Time
	for _, o := range ovr {
		if !o.Active(now) || !o.Matches(service, in) {
			continue
		}
		if rank[o.State] > rank[cur] {
			cur = o.State
			held(&st, o)
		}
		if o.Weight != nil && !o.At.Before(weightAt) {
			w := *o.Weight
			st.Weight, weightAt = &w, o.At
			if w == 0 && cur == registry.StateReady {
				held(&st, o)
			}
		}
	}
	st.State = string(cur)
	st.Serving = cur == registry.StateReady && (st.Weight == nil || *st.Weight > 0)
	return st
}

// held records o as the override holding st out.
func held(st *backendState, o registry.Override) {
	st.Reason, st.HeldBy, st.By, st.Expires = o.Reason, o.Key(), o.By, nil
	if o.ExpiresAt != nil {
		e := o.ExpiresAt.Format(time.RFC3339)
		st.Expires = &e
	}
}

// capacity is one service before and after a change.
type capacity struct {
	Service     string   `json:"service"`
	Total       int      `json:"total"`
	ReadyBefore int      `json:"ready_before"`
	ReadyAfter  int      `json:"ready_after"`
	Changed     []string `json:"changed"` // backends whose state changes
}

// plan computes what the overrides after would change in the services of
// scope (all when empty), against before.
func (f *fleet) plan(before, after []registry.Override, scope []string, now time.Time) []capacity {
	var out []capacity
	for _, name := range sortedKeys(f.backends) {
		if len(scope) > 0 && !slices.Contains(scope, name) {
			continue
		}
		c := capacity{Service: name, Total: len(f.backends[name])}
		for _, in := range f.backends[name] {
			b, a := stateOf(name, in, before, now), stateOf(name, in, after, now)
			if b.Serving {
				c.ReadyBefore++
			}
			if a.Serving {
				c.ReadyAfter++
			}
			if b.State != a.State || !sameWeight(b.Weight, a.Weight) {
				c.Changed = append(c.Changed, fmt.Sprintf("%s %s:%d %s→%s%s", in.Name, in.Host, in.Port, b.State, a.State, weightChange(b.Weight, a.Weight)))
			}
		}
		out = append(out, c)
	}
	return out
}

func sameWeight(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func weightChange(a, b *int) string {
	if sameWeight(a, b) {
		return ""
	}
	f := func(p *int) string {
		if p == nil {
			return "default"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf(" weight %s→%s", f(a), f(b))
}

// matching returns the services (within scope) that have a backend whose
// host or name is target.
func (f *fleet) matching(target string, scope []string) []string {
	var out []string
	for _, name := range sortedKeys(f.backends) {
		if len(scope) > 0 && !slices.Contains(scope, name) {
			continue
		}
		for _, in := range f.backends[name] {
			if in.Host == target || in.Name == target {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

func (f *fleet) checkScope(scope []string) error {
	for _, s := range scope {
		if _, ok := f.services[s]; !ok {
			return fmt.Errorf("unknown service %q (known: %s)", s, strings.Join(sortedKeys(f.services), ", "))
		}
	}
	return nil
}

func printPlan(w io.Writer, caps []capacity) {
	for _, c := range caps {
		if len(c.Changed) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %s: %d → %d of %d backends ready\n", c.Service, c.ReadyBefore, c.ReadyAfter, c.Total)
		for _, ch := range c.Changed {
			fmt.Fprintf(w, "    %s\n", strings.TrimSpace(ch))
		}
	}
}
