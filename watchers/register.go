package watchers

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
)

// MethodConfig is one discovery method's own keys of a `discovery`
// section, as its package defines them (yaml tags; the keys every method
// shares, Config's, are not its business). Register makes it selectable.
type MethodConfig interface {
	// Finalize fills defaults and validates; it reports problems and
	// warnings through c, under the section's key.
	Finalize(c *Check)
	// NewWatcher builds the method's watcher once the config is valid.
	NewWatcher(d Deps) (Watcher, error)
}

// Deps is what a watcher may need from the process that runs it.
type Deps struct {
	// Service is the service's name.
	Service string
	// PortOverride is the service's haproxy.server_port_override (0: none).
	PortOverride int
	// Decode are the record decode options of the section (decode:).
	Decode registry.DecodeOptions
	Log    *slog.Logger
	// Metrics counts skipped records (label: the method).
	Metrics *registry.Metrics
	// Registry returns the client of a registry cluster (method zookeeper
	// or etcd, the cluster's hosts). The caller shares one client per
	// cluster among its services: one ZooKeeper session, one etcd
	// connection.
	Registry func(method string, hosts []string) (registry.Discovery, error)
}

// Check is what a method's Finalize reports to.
type Check struct {
	// Key is the section's key (services.web.discovery).
	Key string
	// PortOverride is the service's haproxy.server_port_override (0: none).
	PortOverride int
	problems     *confutil.Problems
	warnings     *[]string
}

func (c *Check) at(sub string) string {
	if sub == "" {
		return c.Key
	}
	return c.Key + "." + sub
}

// Problem reports a problem at the section's key sub ("" for the section).
func (c *Check) Problem(sub, format string, args ...any) {
	c.problems.Addf(c.at(sub), format, args...)
}

// Warn reports what Finalize accepts but will not do as written.
func (c *Check) Warn(sub, format string, args ...any) {
	*c.warnings = append(*c.warnings, c.at(sub)+": "+fmt.Sprintf(format, args...))
}

type method struct {
	name      string
	newConfig func() MethodConfig
	keys      map[string]bool // the yaml keys of its config type
}

var (
	mu      sync.RWMutex
	methods = map[string]method{}
)

// Register makes a discovery method selectable as `method: name`;
// newConfig returns its zero config (a pointer to a struct with yaml
// tags), into which the method's keys are decoded. Call it from the
// method package's init; a name registered twice panics, as does a
// config whose keys collide with the keys every method shares.
func Register(name string, newConfig func() MethodConfig) {
	if name == "" || newConfig == nil {
		panic("watchers.Register: empty method name or nil config")
	}
	cfg := newConfig()
	t := reflect.TypeOf(cfg)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("watchers.Register(%q): the config must be a pointer to a struct, not %T", name, cfg))
	}
	keys := yamlKeys(t.Elem())
	for k := range keys {
		if commonKeys[k] {
			panic(fmt.Sprintf("watchers.Register(%q): key %q is one every method shares", name, k))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := methods[name]; dup {
		panic(fmt.Sprintf("watchers.Register: method %q registered twice", name))
	}
	methods[name] = method{name: name, newConfig: newConfig, keys: keys}
}

// Methods lists the registered methods, sorted.
func Methods() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(methods))
	for n := range methods {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func lookup(name string) (method, bool) {
	mu.RLock()
	defer mu.RUnlock()
	m, ok := methods[name]
	return m, ok
}

// owners lists the registered methods whose config has key, sorted.
func owners(key string) []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for n, m := range methods {
		if m.keys[key] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
