package multi

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/registrywatch"
)

// world is one service registered in ZooKeeper (the primary) and in etcd
// (the child a fleet migrates to).
type world struct {
	zks  *testserver.ZKEnsemble
	zk   *zookeeper.Client
	etcd *etcd.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	zks := testserver.StartZooKeeper(t)
	srv := testserver.StartEtcd(t)
	zk, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zk.Close() })
	ec, err := etcd.New(etcd.Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	return &world{zks: zks, zk: zk, etcd: ec}
}

func register(t *testing.T, b registry.Backend, name string, port int) registry.Registration {
	t.Helper()
	r, err := b.Register(context.Background(), "/services/web", registry.Instance{Host: "10.0.0.1", Port: port, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run starts w and returns a function that waits for a set with exactly
// the names want (sorted).
func run(t *testing.T, w *Watcher) func(want ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []registry.Instance)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	var last []string
	return func(want ...string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for !slices.Equal(last, want) {
			select {
			case set := <-out:
				last = nil
				for _, in := range set {
					last = append(last, in.Name)
				}
				slices.Sort(last)
			case <-deadline:
				t.Fatalf("set %v, want %v", last, want)
			}
		}
	}
}

func (wd *world) watcher(method string) *Watcher {
	return &Watcher{Method: method, Children: []Child{
		{Primary, &registrywatch.Watcher{Client: wd.zk, Path: "/services/web"}},
		{"etcd", &registrywatch.Watcher{Client: wd.etcd, Path: "/services/web"}},
	}}
}

// union: every backend of either registry; with ZooKeeper down, the
// backends it last gave stay (its last-known-good) while etcd's changes
// still arrive.
func TestUnionZooKeeperAndEtcd(t *testing.T) {
	wd := newWorld(t)
	register(t, wd.zk, "a", 8001)
	register(t, wd.etcd, "b", 8002)
	want := run(t, wd.watcher(Union))
	want("a", "b")
	// The same instance in both (a host registered twice during the
	// migration) is one backend.
	register(t, wd.etcd, "a", 8001)
	want("a", "b")
	wd.zks.Nodes[0].Kill()
	register(t, wd.etcd, "c", 8003)
	want("a", "b", "c")
}

// sequential: the first child, in order, with backends; an empty primary
// hands over to the next, and takes over again when it has backends.
func TestSequentialZooKeeperThenEtcd(t *testing.T) {
	wd := newWorld(t)
	ra := register(t, wd.zk, "a", 8001)
	register(t, wd.etcd, "b", 8002)
	want := run(t, wd.watcher(Sequential))
	want("a")
	if err := ra.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	want("b")
	register(t, wd.zk, "c", 8003)
	want("c")
}

// Airbnb's example config (fallback, a secondary child) and the checks of
// sequential_order.
func TestConfig(t *testing.T) {
	zk := func() *watchers.Config {
		return &watchers.Config{Method: "zookeeper", Settings: &registrywatch.ZooKeeperConfig{Hosts: []string{"localhost:2181"}, Path: "/services/s"}}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // problems; none: valid
	}{
		{"fallback", Config{Resolver: ResolverConfig{Method: Fallback}, Watchers: map[string]*watchers.Config{"secondary": zk()}}, nil},
		{"union", Config{Resolver: ResolverConfig{Method: Union}, Watchers: map[string]*watchers.Config{"etcd": zk()}}, nil},
		{"order", Config{Resolver: ResolverConfig{Method: Sequential, SequentialOrder: []string{"etcd", "primary"}}, Watchers: map[string]*watchers.Config{"etcd": zk()}}, nil},
		{"order lacks one", Config{Resolver: ResolverConfig{Method: Sequential, SequentialOrder: []string{"etcd"}}, Watchers: map[string]*watchers.Config{"etcd": zk()}}, []string{`lacks watcher "primary"`}},
		{"unknown resolver", Config{Resolver: ResolverConfig{Method: "s3_toggle"}, Watchers: map[string]*watchers.Config{"etcd": zk()}}, []string{"s3_toggle"}},
		{"primary named", Config{Resolver: ResolverConfig{Method: Union}, Watchers: map[string]*watchers.Config{"primary": zk()}}, []string{"service's own discovery"}},
		{"bad child", Config{Resolver: ResolverConfig{Method: Union}, Watchers: map[string]*watchers.Config{"x": {Method: "consul"}}}, []string{"watchers.x.method"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p confutil.Problems
			tc.cfg.Finalize("discovery_multi", 0, &p)
			err := p.Err("")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v lacks %q", err, w)
				}
			}
		})
	}
}
