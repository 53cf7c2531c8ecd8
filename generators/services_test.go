package generators

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/syncstack/syncstack/registry"
)

func svcOf(hosts ...string) Service {
	var bs []Backend
	for i, h := range hosts {
		bs = append(bs, Backend{Instance: registry.Instance{Host: h, Port: 8000 + i}, State: registry.StateReady})
	}
	return Service{Backends: bs}
}

func manyServices(n int) map[string]Service {
	m := make(map[string]Service, n)
	for i := range n {
		m[fmt.Sprintf("svc%04d", i)] = svcOf(fmt.Sprintf("10.0.%d.%d", i/250, i%250))
	}
	return m
}

// The operations against a plain map, including the edge cases (empty,
// delete of a missing name, set over an existing one).
func TestServicesActLikeAMap(t *testing.T) {
	type op struct {
		del  bool
		name string
		svc  Service
	}
	for _, tc := range []struct {
		name  string
		start map[string]Service
		ops   []op
	}{
		{"empty", nil, nil},
		{"set into empty", nil, []op{{name: "web", svc: svcOf("a")}}},
		{"delete missing", map[string]Service{"web": svcOf("a")}, []op{{del: true, name: "api"}}},
		{"delete only", map[string]Service{"web": svcOf("a")}, []op{{del: true, name: "web"}}},
		{"overwrite", map[string]Service{"web": svcOf("a")}, []op{{name: "web", svc: svcOf("b", "c")}}},
		{"set then delete", nil, []op{{name: "web", svc: svcOf("a")}, {del: true, name: "web"}}},
		{"many", manyServices(1000), []op{{name: "svc0007", svc: svcOf("z")}, {del: true, name: "svc0999"}, {name: "new", svc: Service{Unknown: true}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := maps.Clone(tc.start)
			if want == nil {
				want = map[string]Service{}
			}
			before := ServicesOf(tc.start)
			e := before.Edit()
			for _, o := range tc.ops {
				if o.del {
					delete(want, o.name)
					e.Delete(o.name)
				} else {
					want[o.name] = o.svc
					e.Set(o.name, o.svc)
				}
			}
			after := e.Done()
			check := func(what string, s Services, want map[string]Service) {
				t.Helper()
				if s.Len() != len(want) {
					t.Errorf("%s: Len %d, want %d", what, s.Len(), len(want))
				}
				got := s.Map()
				if len(got) != len(want) {
					t.Errorf("%s: All yields %d services, want %d", what, len(got), len(want))
				}
				for name, w := range want {
					g, ok := s.Lookup(name)
					if !ok || !g.Equal(w) || !got[name].Equal(w) {
						t.Errorf("%s: %s = %+v (%v), want %+v", what, name, g, ok, w)
					}
				}
				if !s.Equal(ServicesOf(want)) || !ServicesOf(want).Equal(s) {
					t.Errorf("%s: not Equal to a Services made from the same map", what)
				}
			}
			check("after", after, want)
			// The Services edited from is as it was.
			start := tc.start
			if start == nil {
				start = map[string]Service{}
			}
			check("before", before, start)
			if changed := len(tc.ops) > 0 && !maps.EqualFunc(start, want, Service.Equal); changed && before.Equal(after) {
				t.Error("the edited Services is Equal to the one it was edited from")
			}
		})
	}
}

func TestServicesEqual(t *testing.T) {
	base := ServicesOf(manyServices(100))
	for _, tc := range []struct {
		name string
		a, b Services
		want bool
	}{
		{"zero values", Services{}, Services{}, true},
		{"zero and empty", Services{}, ServicesOf(map[string]Service{}), true},
		{"empty after delete", Services{}, ServicesOf(map[string]Service{"web": {}}).Without("web"), true},
		{"itself", base, base, true},
		{"unchanged edit", base, base.Edit().Done(), true},
		{"same value set again", base, base.With("svc0001", base.Get("svc0001")), true},
		{"one service changed", base, base.With("svc0001", svcOf("x")), false},
		{"one service added", base, base.With("extra", Service{}), false},
		{"one removed, another added", base.Without("svc0002"), base.Without("svc0003"), false},
		{"unknown differs", base, base.With("svc0004", Service{Backends: base.Get("svc0004").Backends, Unknown: true}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Equal(tc.b); got != tc.want {
				t.Errorf("a.Equal(b) = %v, want %v", got, tc.want)
			}
			if got := tc.b.Equal(tc.a); got != tc.want {
				t.Errorf("b.Equal(a) = %v, want %v", got, tc.want)
			}
		})
	}
}

// The status and the state cache show services as a JSON object, as when
// State held a map.
func TestServicesJSON(t *testing.T) {
	st := State{Services: ServicesOf(map[string]Service{"web": svcOf("a"), "api": {Unknown: true}})}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var asMap struct {
		Services map[string]Service `json:"services"`
	}
	if err := json.Unmarshal(data, &asMap); err != nil || len(asMap.Services) != 2 || !asMap.Services["api"].Unknown {
		t.Fatalf("%s read as a map: %+v, %v", data, asMap, err)
	}
	var back State
	if err := json.Unmarshal(data, &back); err != nil || !back.Equal(st) {
		t.Errorf("round trip: %+v, %v", back.Services.Map(), err)
	}
}

// A change copies the part its service is in, not the whole: at 1000
// services an edit of one allocates a few KB, where a new map of every
// service was ~100 KB.
func TestServicesChangeCostsItsPart(t *testing.T) {
	base := ServicesOf(manyServices(1000))
	next := svcOf("z")
	var sink Services
	bytes := testing.Benchmark(func(b *testing.B) {
		for range b.N {
			sink = base.With("svc0500", next)
		}
	}).AllocedBytesPerOp()
	if !sink.Get("svc0500").Equal(next) {
		t.Fatal("With did not set the service")
	}
	t.Logf("changing 1 of 1000 services: %d bytes", bytes)
	if bytes > 8<<10 {
		t.Errorf("changing 1 of 1000 services allocated %d bytes, want ≤ 8 KB", bytes)
	}
}

// An old Services is read while new ones are made from it (the background
// config writer and the status keep states the loop goes on from): -race
// finds any write to a part both hold.
func TestServicesReadWhileEdited(t *testing.T) {
	base := ServicesOf(manyServices(200))
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			n := 0
			for range base.All() {
				n++
			}
			if n != 200 {
				t.Errorf("the old Services yields %d services, want 200", n)
			}
		}
	})
	cur := base
	for i := range 500 {
		cur = cur.With(fmt.Sprintf("svc%04d", i%200), svcOf("new"))
	}
	wg.Wait()
	if !base.Get("svc0000").Equal(svcOf("10.0.0.0")) {
		t.Error("the old Services changed")
	}
}
