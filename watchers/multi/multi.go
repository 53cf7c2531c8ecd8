// Package multi is Airbnb's discovery_multi: several child watchers of one
// service (ZooKeeper and etcd while a fleet moves from one to the other,
// say) combined by a resolver into one set. Each child keeps its own last
// set: a child that fails sends nothing, so what it last found stands, and
// a child that has never answered counts for nothing.
package multi

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
)

// Resolver methods.
const (
	// Union: every backend any child found.
	Union = "union"
	// Sequential: the set of the first child, in sequential_order, that
	// has a non-empty one.
	Sequential = "sequential"
	// Fallback is the name of sequential in Airbnb's example
	// (config/discovery-multi.conf.json): primary first, then the others.
	Fallback = "fallback"
)

// Primary is the name of the service's own `discovery` among the children,
// as Airbnb's MultiWatcher names it.
const Primary = "primary"

// Config is a service's `discovery_multi` section.
type Config struct {
	Resolver ResolverConfig `yaml:"resolver"`
	// Watchers are the children besides the service's own discovery
	// (which is "primary"), by name.
	Watchers map[string]*watchers.Config `yaml:"watchers"`
	// Method is "multi" in Airbnb's merged form; accepted, nothing else.
	Method string `yaml:"method"`
}

// ResolverConfig selects the resolver.
type ResolverConfig struct {
	Method string `yaml:"method"`
	// SequentialOrder lists every child, primary included, in the order
	// sequential tries them. Default: primary, then the others by name.
	SequentialOrder []string `yaml:"sequential_order"`
	// S3 toggle keys (Airbnb's s3_toggle resolver): refused with the
	// method, present so the error names the method.
	S3URL           confutil.Ignored `yaml:"s3_url"`
	S3PollingPeriod confutil.Ignored `yaml:"s3_polling_period"`
}

// Finalize validates the section; primary is the service's discovery
// (finalized by the caller). Problems go to p under key.
func (c *Config) Finalize(key string, portOverride int, p *confutil.Problems) {
	if c.Method != "" && c.Method != "multi" {
		p.Addf(key+".method", "%q: only multi", c.Method)
	}
	if _, dup := c.Watchers[Primary]; dup {
		p.Addf(key+".watchers."+Primary, "is the service's own discovery: name this child otherwise")
	}
	if len(c.Watchers) == 0 {
		p.Addf(key+".watchers", "missing: the child watchers besides discovery")
	}
	for _, name := range c.names() {
		w := c.Watchers[name]
		if w == nil {
			p.Addf(key+".watchers."+name, "empty")
			continue
		}
		w.Finalize(key+".watchers."+name, portOverride, p)
	}
	switch c.Resolver.Method {
	case Union:
	case Sequential, Fallback:
		all := append([]string{Primary}, c.names()...)
		if len(c.Resolver.SequentialOrder) == 0 {
			c.Resolver.SequentialOrder = all
		}
		for _, n := range c.Resolver.SequentialOrder {
			if !slices.Contains(all, n) {
				p.Addf(key+".resolver.sequential_order", "%q is not a watcher (%v)", n, all)
			}
		}
		for _, n := range all {
			if !slices.Contains(c.Resolver.SequentialOrder, n) {
				p.Addf(key+".resolver.sequential_order", "lacks watcher %q", n)
			}
		}
	case "":
		p.Addf(key+".resolver.method", "missing (union or sequential)")
	default:
		p.Addf(key+".resolver.method", "%q is not supported (union, sequential; fallback is sequential)", c.Resolver.Method)
	}
}

// names are the child names besides primary, sorted.
func (c *Config) names() []string {
	out := make([]string, 0, len(c.Watchers))
	for n := range c.Watchers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Child is one named child watcher.
type Child struct {
	Name    string
	Watcher watchers.Watcher
}

// Watcher combines its children's sets.
type Watcher struct {
	// Children, primary first (the order sequential follows is Order).
	Children []Child
	// Method is Union or Sequential (Fallback is taken as Sequential).
	Method string
	// Order names the children in the order sequential tries them
	// (default: the order of Children).
	Order []string
}

// New builds the watcher for cfg: build makes each child from its
// discovery section (primary is the service's own).
func New(cfg *Config, primary *watchers.Config, build func(name string, d *watchers.Config) (watchers.Watcher, error)) (*Watcher, error) {
	w := &Watcher{Method: cfg.Resolver.Method, Order: cfg.Resolver.SequentialOrder}
	for _, name := range append([]string{Primary}, cfg.names()...) {
		d := primary
		if name != Primary {
			d = cfg.Watchers[name]
		}
		child, err := build(name, d)
		if err != nil {
			return nil, fmt.Errorf("discovery_multi.watchers.%s: %w", name, err)
		}
		w.Children = append(w.Children, Child{Name: name, Watcher: child})
	}
	return w, nil
}

type childSet struct {
	i   int
	set []registry.Instance
}

// Run implements watchers.Watcher: it starts every child and sends the
// resolved set once a child has answered, then after every change of it.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan childSet)
	errs := make(chan error, len(w.Children))
	for i, c := range w.Children {
		ch := make(chan []registry.Instance)
		go func() {
			errs <- c.Watcher.Run(ctx, ch)
		}()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case set := <-ch:
					select {
					case updates <- childSet{i, set}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	sets := make([][]registry.Instance, len(w.Children))
	heard := make([]bool, len(w.Children))
	var sent []registry.Instance
	first := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-errs:
			// A child that stops (a bad plugin, say) keeps its last set;
			// the others go on.
		case u := <-updates:
			sets[u.i], heard[u.i] = u.set, true
			set := w.resolve(sets, heard)
			if !first && registry.EqualSets(set, sent) {
				continue
			}
			select {
			case out <- set:
				first, sent = false, set
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// resolve combines the children's last sets.
func (w *Watcher) resolve(sets [][]registry.Instance, heard []bool) []registry.Instance {
	if w.Method == Union {
		var all []registry.Instance
		for i, s := range sets {
			if heard[i] {
				all = append(all, s...)
			}
		}
		return registry.Dedupe(all)
	}
	order := w.Order
	if len(order) == 0 {
		for _, c := range w.Children {
			order = append(order, c.Name)
		}
	}
	for _, name := range order {
		for i, c := range w.Children {
			if c.Name == name && heard[i] && len(sets[i]) > 0 {
				return slices.Clone(sets[i])
			}
		}
	}
	return []registry.Instance{}
}
