package synapse

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
)

// rec is a registered record: name n on 10.0.0.<i>:80, registration
// order seq (0: unknown).
func rec(name string, i int, seq int64) registry.Instance {
	return registry.Instance{Name: name, Host: fmt.Sprintf("10.0.0.%d", i), Port: 80, Seq: seq}
}

// desc describes backends as "name" or "name:state" (state when not ready),
// in order.
func desc(bs []generators.Backend) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		s := b.Name
		if b.State != registry.StateReady {
			s += ":" + string(b.State)
		}
		if b.Weight != nil {
			s += fmt.Sprintf("@%d", *b.Weight)
		}
		out = append(out, s)
	}
	return out
}

func TestBuildService(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := func(n int) *int { return &n }
	drainB := registry.Override{Target: "b", State: registry.StateDrain, At: at}
	maintA := registry.Override{Target: "10.0.0.1", State: registry.StateMaint, At: at}
	weightC := registry.Override{Target: "c", State: registry.StateReady, Weight: w(3), At: at}
	tests := []struct {
		name          string
		svc           ServiceConfig
		set           []registry.Instance
		known, heard  bool
		active        []registry.Override
		recordWeights bool
		want          []string
		unknown       bool
		cached        bool
	}{
		{name: "registration order, not name order",
			set: []registry.Instance{rec("a", 1, 30), rec("c", 3, 10), rec("b", 2, 20)}, known: true, heard: true,
			want: []string{"c", "b", "a"}},
		{name: "unknown order (0) after known, then by name",
			set: []registry.Instance{rec("z", 9, 0), rec("y", 8, 0), rec("b", 2, 7), rec("a", 1, 5)}, known: true, heard: true,
			want: []string{"a", "b", "y", "z"}},
		{name: "no order at all: by name, as before",
			set: []registry.Instance{rec("c", 3, 0), rec("a", 1, 0), rec("b", 2, 0)}, known: true, heard: true,
			want: []string{"a", "b", "c"}},
		{name: "equal order: by name",
			set: []registry.Instance{rec("b", 2, 4), rec("a", 1, 4)}, known: true, heard: true,
			want: []string{"a", "b"}},
		{name: "a server registered twice: the earliest record stays",
			set: []registry.Instance{{Name: "a", Host: "10.0.0.1", Port: 80, Seq: 9, Weight: w(9)}, {Name: "a", Host: "10.0.0.1", Port: 80, Seq: 2, Weight: w(2)}}, known: true, heard: true, recordWeights: true,
			want: []string{"a@2"}},
		{name: "leader_election: only the earliest registered",
			svc: ServiceConfig{LeaderElection: true},
			set: []registry.Instance{rec("a", 1, 30), rec("c", 3, 10), rec("b", 2, 20)}, known: true, heard: true,
			want: []string{"c"}},
		{name: "leader_election: the leader is drained, not replaced",
			svc: ServiceConfig{LeaderElection: true},
			set: []registry.Instance{rec("a", 1, 3), rec("b", 2, 1)}, known: true, heard: true, active: []registry.Override{drainB},
			want: []string{"b:drain"}},
		{name: "leader_election: a follower's override changes nothing",
			svc: ServiceConfig{LeaderElection: true},
			set: []registry.Instance{rec("a", 1, 3), rec("b", 2, 1)}, known: true, heard: true, active: []registry.Override{maintA},
			want: []string{"b"}},
		{name: "leader_election: known order beats a default server",
			svc: ServiceConfig{LeaderElection: true, KeepDefaultServers: true, DefaultServers: []registry.Instance{rec("a", 1, 0)}},
			set: []registry.Instance{rec("b", 2, 40)}, known: true, heard: true,
			want: []string{"b"}},
		{name: "leader_election: nothing registered, the first default server by name",
			svc:   ServiceConfig{LeaderElection: true, DefaultServers: []registry.Instance{rec("d2", 2, 0), rec("d1", 1, 0)}},
			known: true, heard: true,
			want: []string{"d1"}},
		{name: "empty set: default servers",
			svc:   ServiceConfig{DefaultServers: []registry.Instance{rec("d2", 2, 0), rec("d1", 1, 0)}},
			known: true, heard: true,
			want: []string{"d1", "d2"}},
		{name: "keep_default_servers: after the registered ones",
			svc: ServiceConfig{KeepDefaultServers: true, DefaultServers: []registry.Instance{rec("a", 1, 0)}},
			set: []registry.Instance{rec("b", 2, 5)}, known: true, heard: true,
			want: []string{"b", "a"}},
		{name: "overrides: maint beats drain, the newest weight",
			set: []registry.Instance{rec("a", 1, 1), rec("b", 2, 2), rec("c", 3, 3)}, known: true, heard: true,
			active: []registry.Override{drainB, maintA, weightC, {Target: "10.0.0.1", State: registry.StateDrain, At: at}, {Target: "c", State: registry.StateReady, Weight: w(1), At: at.Add(-time.Second)}},
			want:   []string{"a:maint", "b:drain", "c@3"}},
		{name: "an override for another service",
			set: []registry.Instance{rec("a", 1, 1)}, known: true, heard: true,
			active: []registry.Override{{Target: "a", State: registry.StateMaint, Services: []string{"api"}, At: at}},
			want:   []string{"a"}},
		{name: "use_nerve_weights off: the record's weight is dropped",
			set:   []registry.Instance{{Name: "a", Host: "10.0.0.1", Port: 80, Weight: w(5)}},
			known: true, heard: true, recordWeights: false,
			want: []string{"a"}},
		{name: "use_nerve_weights on: kept",
			set:   []registry.Instance{{Name: "a", Host: "10.0.0.1", Port: 80, Weight: w(5)}},
			known: true, heard: true, recordWeights: true,
			want: []string{"a@5"}},
		{name: "not heard from and no cache: unknown",
			want: []string{}, unknown: true},
		{name: "not heard from, no cache, default servers: known",
			svc:  ServiceConfig{DefaultServers: []registry.Instance{rec("d", 1, 0)}},
			want: []string{"d"}},
		{name: "from the cache only: cached",
			set: []registry.Instance{rec("a", 1, 1)}, known: true,
			want: []string{"a"}, cached: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := slices.Clone(tc.set)
			got := buildService("web", &tc.svc, tc.set, tc.known, tc.heard, tc.active, tc.recordWeights)
			if d := desc(got.Backends); !slices.Equal(d, tc.want) {
				t.Errorf("backends %v, want %v", d, tc.want)
			}
			if got.Unknown != tc.unknown || got.Cached != tc.cached {
				t.Errorf("unknown %v cached %v, want %v %v", got.Unknown, got.Cached, tc.unknown, tc.cached)
			}
			if !slices.EqualFunc(tc.set, input, func(a, b registry.Instance) bool { return a.Equal(b) && a.Seq == b.Seq }) {
				t.Error("the watcher's set was modified")
			}
		})
	}
}

// build rebuilds only the dirty services; the others keep the very slice
// they had (which is what makes a change O(its service)).
func TestBuildDirty(t *testing.T) {
	services := map[string]*ServiceConfig{"web": {}, "api": {}}
	in := buildInput{services: services, recordWeights: true, known: map[string]bool{"web": true, "api": true}, heard: map[string]bool{"web": true, "api": true},
		sets: map[string][]registry.Instance{"web": {rec("a", 1, 1)}, "api": {rec("b", 2, 2)}}}
	first, rebuilt := build(in, nil, allDirty())
	slices.Sort(rebuilt)
	if !slices.Equal(rebuilt, []string{"api", "web"}) {
		t.Fatalf("first build rebuilt %v", rebuilt)
	}
	in.sets = map[string][]registry.Instance{"web": {rec("a", 1, 1), rec("c", 3, 3)}, "api": {rec("x", 9, 9)}}
	var d dirtySet
	d.add("web")
	second, rebuilt := build(in, &first, d)
	if !slices.Equal(rebuilt, []string{"web"}) {
		t.Errorf("rebuilt %v, want [web]", rebuilt)
	}
	if got := desc(second.Services.Get("web").Backends); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("web %v", got)
	}
	if !sameSlice(second.Services.Get("api").Backends, first.Services.Get("api").Backends) {
		t.Error("api was built again although not dirty")
	}
	// A service new to prev (a config reload) is built even when not dirty.
	in.services = map[string]*ServiceConfig{"web": {}, "api": {}, "new": {}}
	in.sets["new"] = []registry.Instance{rec("n", 5, 1)}
	in.known["new"], in.heard["new"] = true, true
	third, rebuilt := build(in, &second, dirtySet{})
	if !slices.Equal(rebuilt, []string{"new"}) || len(third.Services.Get("new").Backends) != 1 {
		t.Errorf("rebuilt %v, new %v", rebuilt, third.Services.Get("new"))
	}
}

// A change to one of 1000 services costs that service: the state shares
// the rest with the one before. A new map of every service per change
// (~130 KB at 1000) was 60 % of synapse's allocations in the benchmark,
// and the collections it caused most of its latency tail.
func TestBuildCostsTheChangeNotTheFleet(t *testing.T) {
	const n = 1000
	in := buildInput{services: map[string]*ServiceConfig{}, recordWeights: true, known: map[string]bool{}, heard: map[string]bool{}, sets: map[string][]registry.Instance{}}
	for i := range n {
		name := fmt.Sprintf("svc%04d", i)
		in.services[name], in.known[name], in.heard[name] = &ServiceConfig{}, true, true
		for k := range 10 {
			in.sets[name] = append(in.sets[name], rec(fmt.Sprintf("b%d", k), i*10+k, int64(k+1)))
		}
	}
	prev, _ := build(in, nil, allDirty())
	var d dirtySet
	d.add("svc0500")
	next, rebuilt := build(in, &prev, d)
	if len(rebuilt) != 1 || next.Services.Len() != n {
		t.Fatalf("rebuilt %v, %d services", rebuilt, next.Services.Len())
	}
	per := testing.Benchmark(func(b *testing.B) {
		for range b.N {
			prev, _ = build(in, &prev, d)
		}
	}).AllocedBytesPerOp()
	t.Logf("one dirty service of %d: %d bytes per build", n, per)
	if per > 16<<10 {
		t.Errorf("building after a change to 1 of %d services allocated %d bytes, want ≤ 16 KB (O(the change), not O(fleet))", n, per)
	}
}

func TestMergeSet(t *testing.T) {
	off := false
	onlyBlue := watchers.Config{LabelFilters: []watchers.LabelFilter{{Label: "color", Value: "blue"}}}
	blue := registry.Instance{Name: "b", Host: "10.0.0.2", Port: 80, Labels: map[string]string{"color": "blue"}}
	red := registry.Instance{Name: "r", Host: "10.0.0.3", Port: 80, Labels: map[string]string{"color": "red"}}
	prev := []registry.Instance{rec("a", 1, 1)}
	tests := []struct {
		name     string
		svc      ServiceConfig
		prev     []registry.Instance
		got      []registry.Instance
		want     []string
		wantKept bool
	}{
		{"a set replaces the previous one", ServiceConfig{}, prev, []registry.Instance{rec("c", 3, 2)}, []string{"c"}, false},
		{"label filters", ServiceConfig{Discovery: onlyBlue}, nil, []registry.Instance{blue, red}, []string{"b"}, false},
		{"empty: the previous kept (use_previous_backends default)", ServiceConfig{}, prev, nil, []string{"a"}, true},
		{"filtered to empty: the previous kept", ServiceConfig{Discovery: onlyBlue}, prev, []registry.Instance{red}, []string{"a"}, true},
		{"empty with use_previous_backends off: empty", ServiceConfig{UsePreviousBackends: &off}, prev, nil, []string{}, false},
		{"empty, nothing before: empty", ServiceConfig{}, nil, nil, []string{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, kept := mergeSet(&tc.svc, tc.prev, tc.got)
			var names []string
			for _, in := range set {
				names = append(names, in.Name)
			}
			if !slices.Equal(names, tc.want) && !(len(names) == 0 && len(tc.want) == 0) {
				t.Errorf("set %v, want %v", names, tc.want)
			}
			if kept != tc.wantKept {
				t.Errorf("kept %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

func TestOverrideServices(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	services := map[string]*ServiceConfig{"web": {}, "api": {}, "db": {DefaultServers: []registry.Instance{rec("d", 7, 0)}}}
	sets := map[string][]registry.Instance{"web": {rec("a", 1, 1), rec("b", 2, 2)}, "api": {rec("a", 1, 1)}}
	drainA := registry.Override{Target: "a", State: registry.StateDrain, At: at}
	drainAweb := registry.Override{Target: "a", State: registry.StateDrain, Services: []string{"web"}, At: at}
	maintA := registry.Override{Target: "a", State: registry.StateMaint, At: at}
	byHost := registry.Override{Target: "10.0.0.2", State: registry.StateDrain, At: at}
	dflt := registry.Override{Target: "10.0.0.7", State: registry.StateDrain, At: at}
	nobody := registry.Override{Target: "zzz", State: registry.StateDrain, At: at}
	set := func(os ...registry.Override) registry.OverrideSet { return registry.OverrideSet{Overrides: os} }
	tests := []struct {
		name     string
		old, cur registry.OverrideSet
		want     []string
	}{
		{"nothing changed", set(drainA), set(drainA), []string{}},
		{"new: every service with the target", set(), set(drainA), []string{"api", "web"}},
		{"scoped to a service", set(), set(drainAweb), []string{"web"}},
		{"removed", set(drainA), set(), []string{"api", "web"}},
		{"changed state", set(drainA), set(maintA), []string{"api", "web"}},
		{"by host", set(), set(byHost), []string{"web"}},
		{"a default server", set(), set(dflt), []string{"db"}},
		{"a target nobody has", set(), set(nobody), []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := overrideServices(services, sets, tc.old, tc.cur); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestActiveOverrides(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	exp := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	ovr := registry.OverrideSet{Overrides: []registry.Override{
		{Target: "a", State: registry.StateDrain, At: now.Add(-time.Hour)},
		{Target: "b", State: registry.StateDrain, At: now.Add(-time.Hour), ExpiresAt: exp(-time.Second)}, // expired
		{Target: "c", State: registry.StateDrain, At: now.Add(-time.Hour), ExpiresAt: exp(time.Minute)},
		{Target: "d", State: registry.StateDrain, At: now.Add(-time.Hour), ExpiresAt: exp(time.Second)},
	}}
	active, next := activeOverrides(ovr, now)
	var targets []string
	for _, o := range active {
		targets = append(targets, o.Target)
	}
	if !slices.Equal(targets, []string{"a", "c", "d"}) {
		t.Errorf("active %v", targets)
	}
	if !next.Equal(now.Add(time.Second)) {
		t.Errorf("next expiry %v, want %v", next, now.Add(time.Second))
	}
	if _, next := activeOverrides(registry.OverrideSet{}, now); !next.IsZero() {
		t.Errorf("no overrides: next %v", next)
	}
}

// guardState leaves the built state alone (the next build reuses it) and
// holds removals beyond the threshold in the state it returns.
func TestGuardState(t *testing.T) {
	half := 50.0
	cfg := &Config{Services: map[string]*ServiceConfig{"web": {}}}
	cfg.PanicThreshold = &half
	gs := guards{cfg: cfg}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	four := []generators.Backend{}
	for i, n := range []string{"z", "y", "x", "w"} { // registered in that order
		four = append(four, generators.Backend{Instance: rec(n, i+1, int64(i+1)), State: registry.StateReady})
	}
	st := func(bs []generators.Backend) generators.State {
		return generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: bs}})}
	}
	if _, entered, panics := guardState(&gs, st(four), nil, now); len(entered) != 0 || len(panics) != 0 {
		t.Fatalf("all serving: entered %v panics %v", entered, panics)
	}
	built := st(four[3:]) // three of four gone at once: one is held
	got, entered, panics := guardState(&gs, built, nil, now.Add(time.Second))
	if !slices.Equal(entered, []string{"web"}) || len(panics) != 1 || len(panics[0].Held) != 1 {
		t.Fatalf("entered %v panics %+v", entered, panics)
	}
	// x is held (the longest serving, then by name), and listed in
	// registration order: before w.
	if d := desc(got.Services.Get("web").Backends); !slices.Equal(d, []string{"x", "w"}) {
		t.Errorf("guarded %v, want the held x, then w (registration order)", d)
	}
	if d := desc(built.Services.Get("web").Backends); !slices.Equal(d, []string{"w"}) {
		t.Errorf("the built state changed: %v", d)
	}
	// leader_election services have no threshold: the old leader is not
	// held next to the new one.
	cfg.Services["web"].LeaderElection = true
	gs = guards{cfg: cfg}
	guardState(&gs, st(four[:1]), nil, now)
	guardState(&gs, st(four[1:2]), nil, now.Add(time.Second))
	// Two leaders lost within the window: 2 of 3 out, which the 50 %
	// threshold would hold.
	if got, _, panics := guardState(&gs, st(four[2:3]), nil, now.Add(2*time.Second)); len(panics) != 0 || len(got.Services.Get("web").Backends) != 1 {
		t.Errorf("leader_election: panics %v, backends %v", panics, desc(got.Services.Get("web").Backends))
	}
}

// The state cache keeps each record's registration order (records do not
// carry it): a synapse started from it picks the same leader and keeps
// the same no_shuffle order.
func TestCacheKeepsRegistrationOrder(t *testing.T) {
	path := t.TempDir() + "/state.json"
	sets := map[string][]registry.Instance{"web": {rec("b", 2, 7), rec("a", 1, 9), rec("s", 3, 0)}}
	if err := saveCache(path, cache{Sets: sets, Seq: cacheSeq(sets)}); err != nil {
		t.Fatal(err)
	}
	c, err := loadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, in := range c.Sets["web"] {
		got = append(got, in.Seq)
	}
	if !slices.Equal(got, []int64{7, 9, 0}) {
		t.Errorf("Seq after the cache: %v, want [7 9 0]", got)
	}
	le := ServiceConfig{LeaderElection: true}
	if d := desc(buildService("web", &le, c.Sets["web"], true, false, nil, true).Backends); !slices.Equal(d, []string{"b"}) {
		t.Errorf("leader from the cache: %v, want b", d)
	}
}

// A watcher's set is shared, not copied, by the pipeline (mergeSet keeps
// it when its filters keep every record), the desired state's build and
// the state cache: none of them may write it. The watcher still holds it
// (to compare the next set with) in the order it sent: by ID. Building
// sorts in registration order, which must happen on the build's own copy.
func TestSharedSetsStayUnwritten(t *testing.T) {
	w := func(n int) *int { return &n }
	got := []registry.Instance{rec("a", 1, 30), rec("b", 2, 20), rec("c", 3, 10)} // by ID, as watchers send
	got[0].Weight = w(5)
	sent := make([]registry.Instance, len(got))
	for i, in := range got {
		sent[i] = in.Clone()
	}
	svc := &ServiceConfig{}
	set, _ := mergeSet(svc, nil, got)
	if &set[0] != &got[0] {
		t.Fatal("mergeSet copied a set its filters keep whole: a copy per stage is what sharing saves")
	}
	in := buildInput{services: map[string]*ServiceConfig{"web": svc}, known: map[string]bool{"web": true}, heard: map[string]bool{"web": true},
		sets: map[string][]registry.Instance{"web": set}, recordWeights: false,
		active: []registry.Override{{Target: "a", State: registry.StateReady, Weight: w(9), At: time.Unix(1, 0)}}}
	st, _ := build(in, nil, allDirty())
	if got := desc(st.Services.Get("web").Backends); !slices.Equal(got, []string{"c", "b", "a@9"}) {
		t.Fatalf("built %v, want registration order with the override's weight", got)
	}
	gs := guards{cfg: &Config{Services: in.services}}
	guardState(&gs, st, nil, time.Now())
	for i := range got {
		if !got[i].Equal(sent[i]) || got[i].Seq != sent[i].Seq {
			t.Errorf("the watcher's set changed at %d: %+v, sent %+v", i, got[i], sent[i])
		}
	}
	if got[0].Weight == nil || *got[0].Weight != 5 {
		t.Errorf("the watcher's record weight changed")
	}
}

// A filter that leaves a record out copies: the watcher's set keeps it.
func TestMergeSetFilteredCopies(t *testing.T) {
	onlyBlue := &ServiceConfig{Discovery: watchers.Config{LabelFilters: []watchers.LabelFilter{{Label: "color", Value: "blue"}}}}
	blue := func(n string, i int) registry.Instance {
		in := rec(n, i, int64(i))
		in.Labels = map[string]string{"color": "blue"}
		return in
	}
	red := rec("r", 9, 9)
	for _, got := range [][]registry.Instance{
		{red, blue("a", 1), blue("b", 2)},
		{blue("a", 1), red, blue("b", 2)},
		{blue("a", 1), blue("b", 2), red},
	} {
		before := slices.Clone(got)
		set, _ := mergeSet(onlyBlue, nil, got)
		var names []string
		for _, in := range set {
			names = append(names, in.Name)
		}
		if !slices.Equal(names, []string{"a", "b"}) {
			t.Errorf("%v: kept %v, want [a b]", desc(backendsOf(before)), names)
		}
		for i := range got {
			if !got[i].Equal(before[i]) {
				t.Errorf("%v: the watcher's set changed", desc(backendsOf(before)))
			}
		}
	}
}

func backendsOf(set []registry.Instance) []generators.Backend {
	out := make([]generators.Backend, len(set))
	for i, in := range set {
		out[i] = generators.Backend{Instance: in, State: registry.StateReady}
	}
	return out
}
