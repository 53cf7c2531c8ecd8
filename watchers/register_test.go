package watchers_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
	_ "github.com/syncstack/syncstack/watchers/all"
	"github.com/syncstack/syncstack/watchers/registrywatch"
	"github.com/syncstack/syncstack/watchers/static"
)

// greeting is a method defined outside package watchers, the way a new one
// is added.
type greeting struct {
	Greeting string `yaml:"greeting"`
	Hosts    []string
}

func (g *greeting) Finalize(c *watchers.Check) {
	if g.Greeting == "" {
		c.Problem("greeting", "missing")
	}
	if g.Greeting == "hi" {
		c.Warn("greeting", "too short")
	}
}

func (g *greeting) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	return &static.Watcher{Servers: []registry.Instance{{Host: "10.0.0.1", Port: d.PortOverride, Name: d.Service + "-" + g.Greeting}}}, nil
}

func init() {
	watchers.Register("test-greeting", func() watchers.MethodConfig { return &greeting{} })
}

func TestRegisterPanics(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		config func() watchers.MethodConfig
		want   string
	}{
		{"duplicate built-in", "static", func() watchers.MethodConfig { return &greeting{} }, `"static" registered twice`},
		{"duplicate added", "test-greeting", func() watchers.MethodConfig { return &greeting{} }, "registered twice"},
		{"no name", "", func() watchers.MethodConfig { return &greeting{} }, "empty method name"},
		{"no config", "x", nil, "nil config"},
		{"not a struct pointer", "x", func() watchers.MethodConfig { return notStruct(nil) }, "pointer to a struct"},
		{"a shared key", "x", func() watchers.MethodConfig { return &sharedKey{} }, `key "decode" is one every method shares`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if s, _ := r.(string); !strings.Contains(s, tc.want) {
					t.Errorf("panic %v, want one with %q", r, tc.want)
				}
			}()
			watchers.Register(tc.method, tc.config)
		})
	}
	if slices.Contains(watchers.Methods(), "x") {
		t.Error("a refused registration is listed")
	}
}

type notStruct map[string]string

func (notStruct) Finalize(*watchers.Check)                           {}
func (notStruct) NewWatcher(watchers.Deps) (watchers.Watcher, error) { return nil, nil }

type sharedKey struct {
	greeting
	Decode string `yaml:"decode"`
}

// load decodes a discovery section strictly, as synapse's config is, and
// finalizes it.
func load(t *testing.T, yml string, portOverride int) (*watchers.Config, error) {
	t.Helper()
	var doc struct {
		Discovery watchers.Config `yaml:"discovery"`
	}
	if err := confutil.Decode([]byte("discovery: "+yml+"\n"), &doc); err != nil {
		return nil, err
	}
	var p confutil.Problems
	doc.Discovery.Finalize("d", portOverride, &p)
	return &doc.Discovery, p.Err("")
}

// The keys of a discovery section: each method's own, the shared ones,
// and the errors naming the key or the line, as before methods registered.
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yml     string
		port    int      // server_port_override
		errs    []string // substrings of the error; none: valid
		warns   []string // substrings of the warnings
		inspect func(t *testing.T, c *watchers.Config)
	}{
		{name: "zookeeper", yml: "{method: zookeeper, hosts: [zk1:2181], path: /services/web, label_filters: [{label: az, value: a}]}",
			inspect: func(t *testing.T, c *watchers.Config) {
				m, hosts, path, ok := c.RegistryPath()
				if m != "zookeeper" || !slices.Equal(hosts, []string{"zk1:2181"}) || path != "/services/web" || !ok {
					t.Errorf("RegistryPath() = %v %v %v %v", m, hosts, path, ok)
				}
				if !c.Keep(registry.Instance{Labels: map[string]string{"az": "a"}}) || c.Keep(registry.Instance{}) {
					t.Error("label filter")
				}
			}},
		{name: "zookeeper without hosts", yml: "{method: zookeeper, path: services}", errs: []string{"d.hosts: missing", `d.path: "services" must be an absolute path`}},
		{name: "Airbnb's etcd host and port", yml: "{method: etcd, host: 10.0.0.1, path: /s}",
			inspect: func(t *testing.T, c *watchers.Config) {
				if _, hosts, _, _ := c.RegistryPath(); !slices.Equal(hosts, []string{"10.0.0.1:2379"}) {
					t.Errorf("hosts %v", hosts)
				}
			}},
		{name: "unknown key, with its line", yml: "{method: zookeeper, hosts: [a], path: /s, bogus: 1}", errs: []string{"line 1: field bogus not found in type watchers.Config"}},
		{name: "typo in a shared key's value", yml: "{method: file, path: /x, label_filters: [{label: az, valeu: a}]}", errs: []string{"field valeu not found in type watchers.LabelFilter"}},
		{name: "wrong type in a method's key", yml: "{method: zookeeper, hosts: 3, path: /s}", errs: []string{"cannot unmarshal !!int `3` into []string"}},
		{name: "not a mapping", yml: "[1]", errs: []string{"cannot unmarshal !!seq into watchers.Config"}},
		{name: "another method's long-shared key: warned, not silent", yml: "{method: zookeeper, hosts: [a], path: /s, servers: [x], interval: 3s}",
			warns: []string{"d.servers: not used by method zookeeper (only by dns, static): ignored", "d.interval: not used by method zookeeper"}},
		{name: "plugin keys under another method", yml: "{method: zookeeper, hosts: [a], path: /s, plugin: /bin/x}", errs: []string{"d.plugin: only for method plugin"}},
		{name: "keys the methods shared before stay accepted, warned", yml: "{method: zookeeper, hosts: [a], path: /s, interval: 5s, nameserver: x}", warns: []string{"d.interval: not used by method zookeeper", "d.nameserver: not used by method zookeeper (only by dns): ignored"}},
		{name: "no method lists the registered", yml: "{hosts: [a]}", errs: []string{"d.method: missing (one of dns, etcd, file, plugin, static, test-greeting, zookeeper)"}},
		{name: "unknown method lists the registered", yml: "{method: consul, hosts: [a]}", errs: []string{`d.method: "consul" is not supported (supported: dns, etcd, file, plugin, static, test-greeting, zookeeper)`}},
		{name: "Airbnb's base is static", yml: "{method: base}", inspect: func(t *testing.T, c *watchers.Config) {
			if c.Method != "static" {
				t.Errorf("method %q", c.Method)
			}
		}},
		{name: "dns name without a port: warned", yml: "{method: dns, servers: [0.www.example.com]}", warns: []string{"d.servers[0]: no port", "0.www.example.com"}},
		{name: "dns name with server_port_override", yml: "{method: dns, servers: [0.www.example.com]}", port: 80},
		{name: "dns without names", yml: "{method: dns}", errs: []string{"d.servers: missing"}},
		{name: "static server without a port: refused", yml: "{method: static, servers: [{host: 10.0.0.1}]}", errs: []string{"d.servers[0].port: missing"}},
		{name: "file without a path", yml: "{method: file}", errs: []string{"d.path: missing"}},
		{name: "plugin without one", yml: "{method: plugin, config: {a: b}}", errs: []string{"d: plugin: missing"}},
		{name: "decode method", yml: "{method: file, path: /x, decode: {method: thrift}}", errs: []string{`d.decode.method: "thrift"`}},
		{name: "discovery_jitter: warned", yml: "{method: file, path: /x, discovery_jitter: 3}", warns: []string{"d.discovery_jitter: not implemented"}},
		{name: "an added method's keys", yml: "{method: test-greeting, greeting: hi}", warns: []string{"d.greeting: too short"}},
		{name: "an added method's problems", yml: "{method: test-greeting}", errs: []string{"d.greeting: missing"}},
		{name: "an added method's keys elsewhere", yml: "{method: file, path: /x, greeting: hi}", errs: []string{"d.greeting: only for method test-greeting"}},
		{name: "a key with no tag is lower-cased", yml: "{method: test-greeting, greeting: hello, hosts: [a]}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.yml, tc.port)
			if len(tc.errs) == 0 && err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.errs {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want %q", err, w)
				}
			}
			if c == nil {
				return
			}
			for _, w := range tc.warns {
				if !strings.Contains(strings.Join(c.Warnings, "\n"), w) {
					t.Errorf("warnings %q, want %q", c.Warnings, w)
				}
			}
			if len(tc.warns) == 0 && len(c.Warnings) > 0 {
				t.Errorf("warnings %q", c.Warnings)
			}
			if tc.inspect != nil {
				tc.inspect(t, c)
			}
		})
	}
}

// NewWatcher hands the method its dependencies: a registry method gets
// its client from Deps.Registry (shared per cluster by the caller).
func TestNewWatcher(t *testing.T) {
	c, err := load(t, "{method: test-greeting, greeting: hello}", 8080)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.NewWatcher(watchers.Deps{Service: "web", PortOverride: 8080})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan []registry.Instance, 1)
	go w.Run(ctx, out)
	if s := <-out; len(s) != 1 || s[0].Name != "web-hello" || s[0].Port != 8080 {
		t.Errorf("sent %v", s)
	}

	c, err = load(t, "{method: etcd, hosts: [e1:2379], path: /services/web, decode: {method: serverset, endpoint_name: http}}", 0)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	w, err = c.NewWatcher(watchers.Deps{Registry: func(method string, hosts []string) (registry.Discovery, error) {
		asked = append([]string{method}, hosts...)
		return nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rw, ok := w.(*registrywatch.Watcher)
	if !ok || rw.Path != "/services/web" || rw.Opts.Endpoint != "http" || !slices.Equal(asked, []string{"etcd", "e1:2379"}) {
		t.Errorf("watcher %#v, registry asked for %v", w, asked)
	}
}

// YAML merge keys work in a discovery section as in the rest of the file:
// a key written beside the merge wins.
func TestMergeKey(t *testing.T) {
	var doc struct {
		A watchers.Config `yaml:"a"`
		B watchers.Config `yaml:"b"`
	}
	yml := "a: &zk {method: zookeeper, hosts: [zk1], path: /x}\nb:\n  <<: *zk\n  path: /y\n"
	if err := confutil.Decode([]byte(yml), &doc); err != nil {
		t.Fatal(err)
	}
	var p confutil.Problems
	doc.B.Finalize("b", 0, &p)
	if _, hosts, path, _ := doc.B.RegistryPath(); p.Err("") != nil || !slices.Equal(hosts, []string{"zk1"}) || path != "/y" {
		t.Errorf("b: hosts %v, path %q, %v", hosts, path, p.Err(""))
	}
}
