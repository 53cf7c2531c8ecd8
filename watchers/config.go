package watchers

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
)

// Config is a service's `discovery` section (Airbnb's keys where they
// overlap): the keys every method shares, and the method's own keys in
// Settings, decoded into the config type the method registered.
type Config struct {
	Method string       `yaml:"method"`
	Decode DecodeConfig `yaml:"decode"`
	// LabelFilters keep only instances whose labels match.
	LabelFilters []LabelFilter `yaml:"label_filters"`

	DiscoveryJitter confutil.Ignored `yaml:"discovery_jitter"`

	// Settings are the method's own keys; nil until decoded or Finalized.
	Settings MethodConfig `yaml:"-"`

	// Warnings: what Finalize accepted but will not do as written.
	Warnings []string `yaml:"-"`

	// stray are keys of other methods that this one does not take;
	// unused are such keys that configs have long carried (lenientKeys).
	stray, unused []string
}

// commonKeys are the keys of Config itself, which every method shares.
var commonKeys = yamlKeys(reflect.TypeFor[Config]())

// aliases are Airbnb's names for a method.
var aliases = map[string]string{
	// Airbnb's base watcher: the default_servers alone.
	"base": "static",
}

// lenientKeys were keys of the one struct every method shared before
// methods registered their own: accepted under any method, so a config
// that loaded then loads now, with a warning that the key is not used. A
// key of a method outside this list is refused under another method
// ("only for method ...").
var lenientKeys = map[string]bool{
	"hosts": true, "host": true, "port": true, "path": true,
	"interval": true, "servers": true, "srv": true, "nameserver": true,
}

// UnmarshalYAML implements yaml.Unmarshaler: the shared keys go to
// Config, the method's to its registered config type, both decoded as
// strictly as the rest of the file.
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		// yaml.v3's words for it.
		v := ""
		if n.Kind == yaml.ScalarNode {
			v = " `" + n.Value + "`"
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s%s into %T", n.Line, n.ShortTag(), v, *c)}}
	}
	pairs := mergePairs(n)
	shared := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	own := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i].Value == "method" {
			shared.Content = append(shared.Content, pairs[i], pairs[i+1])
		}
	}
	type plain Config
	var errs []string
	var te *yaml.TypeError
	if err := shared.Decode((*plain)(c)); errors.As(err, &te) {
		errs = append(errs, te.Errors...)
	} else if err != nil {
		return err
	}
	shared.Content = shared.Content[:0]
	m, known := lookup(canonical(c.Method))
	for i := 0; i+1 < len(pairs); i += 2 {
		k := pairs[i]
		switch {
		case k.Value == "method":
		case commonKeys[k.Value]:
			shared.Content = append(shared.Content, k, pairs[i+1])
		case known && m.keys[k.Value]:
			own.Content = append(own.Content, k, pairs[i+1])
		case len(owners(k.Value)) > 0:
			// Another method's key: see lenientKeys.
			if lenientKeys[k.Value] {
				c.unused = append(c.unused, k.Value)
			} else {
				c.stray = append(c.stray, k.Value)
			}
		default:
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type %T", k.Line, k.Value, *c))
		}
	}
	checkKnown(shared, reflect.TypeFor[plain](), &errs)
	if err := shared.Decode((*plain)(c)); errors.As(err, &te) {
		errs = append(errs, te.Errors...)
	} else if err != nil {
		return err
	}
	if known {
		c.Settings = m.newConfig()
		checkKnown(own, reflect.TypeOf(c.Settings), &errs)
		if err := own.Decode(c.Settings); errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else if err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// mergePairs are the key/value pairs of mapping n with YAML merge keys
// (<<: *base) expanded as yaml.v3 does: a key written in n wins over a
// merged one, an earlier merged mapping over a later one.
func mergePairs(n *yaml.Node) []*yaml.Node {
	var out, merged []*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			for v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			var maps []*yaml.Node
			if v.Kind == yaml.SequenceNode {
				maps = v.Content
			} else {
				maps = []*yaml.Node{v}
			}
			for _, m := range maps {
				for m.Kind == yaml.AliasNode {
					m = m.Alias
				}
				if m.Kind == yaml.MappingNode {
					merged = append(merged, mergePairs(m)...)
				}
			}
			continue
		}
		seen[k.Value] = true
		out = append(out, k, v)
	}
	for i := 0; i+1 < len(merged); i += 2 {
		if !seen[merged[i].Value] {
			seen[merged[i].Value] = true
			out = append(out, merged[i], merged[i+1])
		}
	}
	return out
}

func canonical(method string) string {
	if m, ok := aliases[method]; ok {
		return m
	}
	return method
}

// DecodeConfig selects the record format.
type DecodeConfig struct {
	// Method is nerve (default) or serverset.
	Method       string `yaml:"method"`
	EndpointName string `yaml:"endpoint_name"`
}

// LabelFilter keeps instances whose label matches.
type LabelFilter struct {
	Label     string `yaml:"label"`
	Value     string `yaml:"value"`
	Condition string `yaml:"condition"` // equals (default), not-equals
}

// Options are the registry decode options the config selects.
func (c *Config) Options() registry.DecodeOptions {
	return registry.DecodeOptions{Endpoint: c.Decode.EndpointName}
}

// Finalize validates the section; problems are reported under key.
// portOverride is the service's server_port_override (0: none).
func (c *Config) Finalize(key string, portOverride int, p *confutil.Problems) {
	if c.DiscoveryJitter.Set() {
		c.Warnings = append(c.Warnings, key+".discovery_jitter: not implemented; watches are event-driven and reads are spread by the registry clients' backoff")
	}
	c.Method = canonical(c.Method)
	m, known := lookup(c.Method)
	switch {
	case c.Method == "":
		p.Addf(key+".method", "missing (one of %s)", strings.Join(Methods(), ", "))
	case !known:
		p.Addf(key+".method", "%q is not supported (supported: %s)", c.Method, strings.Join(Methods(), ", "))
	}
	for _, k := range c.stray {
		p.Addf(key+"."+k, "only for method %s", strings.Join(owners(k), ", "))
	}
	for _, k := range c.unused {
		if !known {
			break // the method's own error says enough
		}
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s.%s: not used by method %s (only by %s): ignored", key, k, c.Method, strings.Join(owners(k), ", ")))
	}
	switch c.Decode.Method {
	case "", "nerve", "serverset":
	default:
		p.Addf(key+".decode.method", "%q is not nerve or serverset", c.Decode.Method)
	}
	for i, f := range c.LabelFilters {
		if f.Label == "" {
			p.Addf(fmt.Sprintf("%s.label_filters[%d].label", key, i), "missing")
		}
		switch f.Condition {
		case "", "equals", "not-equals":
		default:
			p.Addf(fmt.Sprintf("%s.label_filters[%d].condition", key, i), "%q is not equals or not-equals", f.Condition)
		}
	}
	if !known {
		return
	}
	if c.Settings == nil {
		// A Config built in code, not decoded: the method's defaults.
		c.Settings = m.newConfig()
	}
	c.Settings.Finalize(&Check{Key: key, PortOverride: portOverride, problems: p, warnings: &c.Warnings})
}

// NewWatcher builds the method's watcher; d.Decode is set from the
// section. Call it after Finalize.
func (c *Config) NewWatcher(d Deps) (Watcher, error) {
	if c.Settings == nil {
		return nil, fmt.Errorf("method %q is not registered (registered: %s)", c.Method, strings.Join(Methods(), ", "))
	}
	d.Decode = c.Options()
	return c.Settings.NewWatcher(d)
}

// RegistryPather is the config of a method that watches the path nerve
// registers under in a registry cluster (zookeeper, etcd).
type RegistryPather interface {
	RegistryPath() (hosts []string, path string)
}

// RegistryPath reports the cluster and path of a registry method (ok
// false for the others): synapse lists, for synctl, the services it
// watches in the registry that holds the overrides.
func (c *Config) RegistryPath() (method string, hosts []string, path string, ok bool) {
	r, ok := c.Settings.(RegistryPather)
	if !ok {
		return c.Method, nil, "", false
	}
	hosts, path = r.RegistryPath()
	return c.Method, hosts, path, true
}

// Keep reports whether inst passes every label filter.
func (c *Config) Keep(inst registry.Instance) bool {
	for _, f := range c.LabelFilters {
		v, ok := inst.Labels[f.Label]
		match := ok && v == f.Value
		if f.Condition == "not-equals" {
			match = !match
		}
		if !match {
			return false
		}
	}
	return true
}
