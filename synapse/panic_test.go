package synapse

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// set builds a sorted desired set: "b3" is ready, "b3:drain", "b3:maint"
// or "b3:w0" (weight 0) is out.
func set(specs ...string) []generators.Backend {
	var out []generators.Backend
	for _, sp := range specs {
		var name, mod string
		fmt.Sscanf(sp, "%s", &name)
		if i := indexByte(sp, ':'); i >= 0 {
			name, mod = sp[:i], sp[i+1:]
		}
		var n int
		fmt.Sscanf(name, "b%d", &n)
		b := generators.Backend{Instance: registry.Instance{Host: fmt.Sprintf("10.0.0.%d", n), Port: 80, Name: name}, State: registry.StateReady}
		switch mod {
		case "drain":
			b.State = registry.StateDrain
		case "maint":
			b.State = registry.StateMaint
		case "w0":
			w := 0
			b.Weight = &w
		}
		out = append(out, b)
	}
	generators.SortBackends(out)
	return out
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func servingNames(bs []generators.Backend) []string {
	var out []string
	for _, b := range bs {
		if serving(b) {
			out = append(out, b.Name)
		}
	}
	return out
}

func ten() []string {
	var s []string
	for i := range 10 {
		s = append(s, fmt.Sprintf("b%d", i))
	}
	return s
}

// The guard, step by step: each step is one evaluation, dt after the last.
func TestPanicGuard(t *testing.T) {
	type step struct {
		dt        time.Duration
		desired   []string
		threshold float64 // share; default 0.5
		confirmed bool
		serving   int  // backends serving in the result
		held      int  // how many held
		panic     bool // in panic afterwards
		entered   bool
	}
	all := ten()
	tests := []struct {
		name  string
		steps []step
	}{
		{"80% deregistered at once: held down to 50%, longest-serving kept", []step{
			{desired: all, serving: 10},
			{desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
		}},
		{"exactly the threshold is allowed", []step{
			{desired: all, serving: 10},
			{desired: all[5:], serving: 5},
		}},
		{"disabled (0): everything goes", []step{
			{desired: all, serving: 10, threshold: -1},
			{desired: all[8:], serving: 2, threshold: -1},
		}},
		{"a burst split over updates counts together within the window", []step{
			{desired: all, serving: 10},
			{desired: all[4:], serving: 6},
			{dt: time.Second, desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
		}},
		{"removals spread beyond the window are each accepted", []step{
			{desired: all, serving: 10},
			{desired: all[4:], serving: 6},
			{dt: time.Minute, desired: all[7:], serving: 3},
		}},
		{"recovery lifts the panic: the records come back", []step{
			{desired: all, serving: 10},
			{desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
			{dt: time.Second, desired: all, serving: 10},
		}},
		{"recovery under the threshold lifts it: the still-missing leave", []step{
			{desired: all, serving: 10},
			{desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
			{dt: time.Second, desired: all[4:], serving: 6},
		}},
		{"a panic does not age out", []step{
			{desired: all, serving: 10},
			{desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
			{dt: time.Hour, desired: all[8:], serving: 5, held: 3, panic: true},
		}},
		{"an operator confirmation lets the rest go, then the guard resumes", []step{
			{desired: all, serving: 10},
			{desired: all[8:], serving: 5, held: 3, panic: true, entered: true},
			{desired: all[8:], confirmed: true, serving: 2},
			{desired: all[8:], serving: 2},
			{desired: append(slices.Clone(all[8:]), "b10", "b11", "b12", "b13", "b14", "b15", "b16", "b17"), serving: 10},
			{desired: []string{"b16", "b17"}, serving: 5, held: 3, panic: true, entered: true},
		}},
		{"a mass drain by override is held like a deregistration", []step{
			{desired: all, serving: 10},
			{desired: []string{"b0:drain", "b1:maint", "b2:w0", "b3:drain", "b4:drain", "b5:drain", "b6:drain", "b7:drain", "b8", "b9"}, serving: 5, held: 3, panic: true, entered: true},
		}},
		{"a single backend drained: 100% out, held", []step{
			{desired: []string{"b1"}, serving: 1},
			{desired: []string{"b1:drain"}, serving: 1, held: 1, panic: true, entered: true},
		}},
		{"additions are never held back", []step{
			{desired: all[:2], serving: 2},
			{desired: all, serving: 10},
		}},
		{"threshold 90%: 8 of 10 is allowed", []step{
			{desired: all, serving: 10, threshold: 0.9},
			{desired: all[8:], serving: 2, threshold: 0.9},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g serviceGuard
			now := time.Unix(1_000_000, 0)
			for i, st := range tc.steps {
				now = now.Add(st.dt)
				th := 0.5
				switch {
				case st.threshold < 0:
					th = 0
				case st.threshold > 0:
					th = st.threshold
				}
				r := g.apply(guardInput{desired: set(st.desired...), threshold: th, window: DefaultPanicWindow, confirmed: st.confirmed, now: now})
				if got := len(servingNames(r.backends)); got != st.serving {
					t.Errorf("step %d: %d serving %v, want %d", i, got, servingNames(r.backends), st.serving)
				}
				if len(r.held) != st.held || g.panic != st.panic || r.entered != st.entered {
					t.Errorf("step %d: held %v panic %v entered %v, want %d %v %v", i, r.held, g.panic, r.entered, st.held, st.panic, st.entered)
				}
				if !slices.IsSortedFunc(r.backends, func(a, b generators.Backend) int {
					return cmpString(a.ServerName(), b.ServerName())
				}) {
					t.Errorf("step %d: result not sorted", i)
				}
				seen := map[string]bool{}
				for _, b := range r.backends {
					if seen[b.ServerName()] {
						t.Errorf("step %d: %s twice", i, b.ServerName())
					}
					seen[b.ServerName()] = true
				}
			}
		})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// The held ones are the longest-serving, then by name: every synapse that
// saw the same history holds the same servers.
func TestPanicGuardHoldsLongestServing(t *testing.T) {
	var g serviceGuard
	now := time.Unix(1_000_000, 0)
	g.apply(guardInput{desired: set("b5", "b6", "b7", "b8"), threshold: 0.5, window: time.Minute, now: now})
	now = now.Add(time.Hour) // b0..b3 join later; b5..b8 aged in long ago
	g.apply(guardInput{desired: set("b0", "b1", "b2", "b3", "b5", "b6", "b7", "b8"), threshold: 0.5, window: time.Minute, now: now})
	now = now.Add(time.Second)
	// All but b0 go: 7 of 8 out, 4 allowed: 3 held, the oldest: b5, b6, b7.
	r := g.apply(guardInput{desired: set("b0"), threshold: 0.5, window: time.Minute, now: now})
	want := []string{"b5_10.0.0.5:80", "b6_10.0.0.6:80", "b7_10.0.0.7:80"}
	if !slices.Equal(r.held, want) {
		t.Errorf("held %v, want %v", r.held, want)
	}
	// A held backend drained but still registered serves as it last did.
	r = g.apply(guardInput{desired: set("b0", "b5:drain"), threshold: 0.5, window: time.Minute, now: now})
	for _, b := range r.backends {
		if b.Name == "b5" && !serving(b) {
			t.Errorf("held b5 left drained: %+v", b)
		}
	}
}

// guards.apply: unknown services are left alone, a confirmation covers
// only its services, and an unchanged service is not evaluated again.
func TestGuardsApply(t *testing.T) {
	cfg := &Config{Services: map[string]*ServiceConfig{"web": {}, "api": {}, "new": {}}}
	gs := guards{cfg: cfg}
	now := time.Unix(1_000_000, 0)
	state := func(web, api []string) *generators.State {
		return &generators.State{Services: generators.ServicesOf(map[string]generators.Service{
			"web": {Backends: set(web...)}, "api": {Backends: set(api...)}, "new": {Unknown: true},
		})}
	}
	gs.apply(state(ten(), ten()), nil, now)
	st := state(ten()[8:], ten()[8:])
	exp := now.Add(time.Minute)
	confirm := registry.Override{Target: "api", State: registry.StateConfirm, Services: []string{"api"}, At: now, ExpiresAt: &exp}
	entered, status := gs.apply(st, []registry.Override{confirm}, now)
	if !slices.Equal(entered, []string{"web"}) || len(status) != 1 || status[0].Service != "web" || len(status[0].Held) != 3 || status[0].Reference != 10 || status[0].Missing != 8 {
		t.Fatalf("entered %v status %+v", entered, status)
	}
	if n := len(st.Services.Get("web").Backends); n != 5 {
		t.Errorf("web: %d backends, want 5", n)
	}
	if n := len(st.Services.Get("api").Backends); n != 2 {
		t.Errorf("api (confirmed): %d backends, want 2", n)
	}
	if !st.Services.Get("new").Unknown || gs.services["new"] != nil {
		t.Errorf("unknown service guarded")
	}
	// The same slice again: the cached result, no new entry.
	again := &generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: gs.services["web"].lastIn}})}
	entered, status = gs.apply(again, nil, now.Add(time.Hour))
	if len(entered) != 0 || len(status) != 1 || len(again.Services.Get("web").Backends) != 5 {
		t.Errorf("unchanged service: entered %v status %+v", entered, status)
	}
	if _, ok := gs.services["api"]; ok {
		t.Error("a service gone from the state keeps its guard")
	}
}

func TestThresholdConfig(t *testing.T) {
	ten, zero := 10.0, 0.0
	cfg := &Config{GuardConfig: GuardConfig{PanicThreshold: &ten}, Services: map[string]*ServiceConfig{
		"a": {}, "b": {ServiceGuard: ServiceGuard{PanicThreshold: &zero}},
	}}
	if got := cfg.Threshold("a"); got != 0.1 {
		t.Errorf("a: %v", got)
	}
	if got := cfg.Threshold("b"); got != 0 {
		t.Errorf("b: %v", got)
	}
	if got := (&Config{}).Threshold("x"); got != 0.5 {
		t.Errorf("default: %v", got)
	}
	if got := (&Config{}).Window(); got != DefaultPanicWindow {
		t.Errorf("window: %v", got)
	}
}

// With the threshold off (0) the guard passes the desired backends through
// and keeps no reference set: with every removal accepted at once it would
// only be a copy of the serving backends (10,000 backends: 2 MB). A panic
// restored from the state cache ends at the first evaluation, as before.
func TestGuardOffKeepsNoReference(t *testing.T) {
	g := &serviceGuard{}
	now := time.Unix(1_000_000, 0)
	desired := set(ten()...)
	r := g.apply(guardInput{desired: desired, threshold: 0, window: time.Minute, now: now})
	if !sameSlice(r.backends, desired) || r.entered || len(r.held) != 0 {
		t.Fatalf("threshold 0: %+v", r)
	}
	if len(g.members) != 0 {
		t.Errorf("threshold 0: a reference set of %d backends kept", len(g.members))
	}
	r = g.apply(guardInput{desired: desired[:1], threshold: 0, window: time.Minute, now: now.Add(time.Second)})
	if len(r.backends) != 1 || g.panic {
		t.Errorf("threshold 0: 9 of 10 removed, %d backends, panic %v", len(r.backends), g.panic)
	}

	gs := guards{cfg: &Config{GuardConfig: GuardConfig{PanicThreshold: new(0.0)}, Services: map[string]*ServiceConfig{"web": {}}}}
	gs.restore("web", []registry.Instance{{Name: "gone", Host: "10.0.0.99", Port: 80}}, now)
	st := &generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: desired}})}
	entered, status := gs.apply(st, nil, now)
	if len(entered) != 0 || len(status) != 0 || len(st.Services.Get("web").Backends) != 10 || gs.services["web"].panic {
		t.Errorf("restored panic with threshold 0: entered %v status %+v, %d backends", entered, status, len(st.Services.Get("web").Backends))
	}
}
