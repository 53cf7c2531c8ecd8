package haproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// idRecord is a record named name on 10.0.1.N:80 asking for id (its
// haproxy_server_options say `id N`; 0: none), registered at seq.
func idRecord(name string, host, id int, seq int64) generators.Backend {
	opts := ""
	if id != 0 {
		opts = fmt.Sprintf("maxconn 100 id %d", id)
	}
	return generators.Backend{Instance: registry.Instance{Name: name, Host: fmt.Sprintf("10.0.1.%d", host), Port: 80,
		HAProxyServerOptions: opts, Seq: seq}, State: registry.StateReady}
}

// A record's id wins over the allocated one, within 1..max_server_id; two
// records asking for one id: the server that has it keeps it, else the
// older record; the other gets an id of its own, and each refusal is
// counted once.
func TestRecordIDs(t *testing.T) {
	a, b, c := idRecord("a", 1, 0, 1), idRecord("b", 2, 0, 2), idRecord("c", 3, 0, 3)
	with := func(bk generators.Backend, id int) generators.Backend {
		return idRecord(bk.Name, int(bk.Seq), id, bk.Seq)
	}
	for _, tc := range []struct {
		name    string
		steps   [][]generators.Backend // applied in turn; the last is checked
		running map[string]int         // server → id HAProxy runs it with
		want    map[string]int         // server name → id
		refused map[string]float64     // reason → refusals counted
	}{
		{"allocated", [][]generators.Backend{{a, b}}, nil, map[string]int{"a": 1, "b": 2}, nil},
		{"record id wins", [][]generators.Backend{{with(a, 7), b}}, nil, map[string]int{"a": 7, "b": 1}, nil},
		{"record id takes an allocated one", [][]generators.Backend{{a, b}, {a, with(b, 1)}}, nil, map[string]int{"a": 2, "b": 1}, nil},
		{"older record keeps it", [][]generators.Backend{{with(b, 7), with(a, 7)}}, nil, map[string]int{"a": 7, "b": 1}, map[string]float64{idTaken: 1}},
		{"holder keeps it though younger", [][]generators.Backend{{with(b, 7)}, {with(a, 7), with(b, 7)}}, nil, map[string]int{"a": 1, "b": 7}, map[string]float64{idTaken: 1}},
		{"running holder keeps it", [][]generators.Backend{{with(a, 7), with(c, 7)}}, map[string]int{"c": 7}, map[string]int{"a": 1, "c": 7}, map[string]float64{idTaken: 1}},
		{"running server keeps its id against a record", [][]generators.Backend{{with(a, 7), c}}, map[string]int{"c": 7}, map[string]int{"a": 1, "c": 7}, map[string]float64{idTaken: 1}},
		{"a record takes the id of a server that left", [][]generators.Backend{{with(c, 7)}, {with(a, 7)}}, nil, map[string]int{"a": 7}, nil},
		{"refusal counted once", [][]generators.Backend{{with(a, 7), with(b, 7)}, {with(a, 7), with(b, 7)}, {with(a, 7), with(b, 7)}}, nil,
			map[string]int{"a": 7, "b": 1}, map[string]float64{idTaken: 1}},
		{"out of range", [][]generators.Backend{{with(a, 11), b}}, nil, map[string]int{"a": 1, "b": 2}, map[string]float64{idOutOfRange: 1}},
		{"loser gets it once the holder leaves", [][]generators.Backend{{with(a, 7), with(b, 7)}, {with(b, 7)}}, nil, map[string]int{"b": 7}, map[string]float64{idTaken: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(nil)
			ids := newServerIDs(10, nil, m)
			now := time.Now()
			var last []generators.Backend
			for _, step := range tc.steps {
				var running map[string]serverState
				if tc.running != nil {
					running = map[string]serverState{}
					for _, bk := range step {
						if id, ok := tc.running[bk.Name]; ok {
							running[bk.ServerName()] = serverState{ID: id}
						}
					}
				}
				ids.assign("be", step, running, now)
				last = step
			}
			got := map[string]int{}
			seen := map[int]string{}
			for _, bk := range last {
				n := ids.get("be", bk.ServerName())
				got[bk.Name] = n
				if other, dup := seen[n]; dup {
					t.Errorf("%s and %s both have id %d", other, bk.Name, n)
				}
				seen[n] = bk.Name
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("ids %v, want %v", got, tc.want)
			}
			for _, why := range []string{idTaken, idOutOfRange} {
				if n := testutil.ToFloat64(m.ServerIDsRefused.WithLabelValues(why)); n != tc.refused[why] {
					t.Errorf("refused %s: %v, want %v", why, n, tc.refused[why])
				}
			}
		})
	}
}

// Issue 13: a record's id reaches HAProxy: added at runtime with it (`add
// server ... id N`, no reload), written in the file, kept by a restarted
// generator; a second record asking for it gets an id of its own and still
// serves.
func TestRecordIDInHAProxy(t *testing.T) {
	port := testserver.FreePort(t)
	svc := &ServiceConfig{Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http"}}
	r := newRig(t, map[string]*ServiceConfig{"web": svc})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	r.apply(t, state("web", backend(a, "a")))
	pid, reloads := r.pid(t), r.reloads()

	withID := func(be *testserver.Backend, id int, seq int64) generators.Backend {
		bk := backend(be, be.ID)
		bk.HAProxyServerOptions, bk.Seq = fmt.Sprintf("id %d", id), seq
		return bk
	}
	bb, cc := withID(b, 42, 10), withID(c, 42, 11) // c is younger: b keeps 42
	st := state("web", backend(a, "a"), bb, cc)
	r.apply(t, st)
	ids := func() map[string]int {
		out := map[string]int{}
		rs, err := r.g.rt.Run(context.Background(), "show servers state web")
		if err != nil {
			t.Fatal(err)
		}
		st, err := parseServersState(rs[0])
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range st["web"] {
			out[name] = s.ID
		}
		return out
	}
	got := ids()
	if got[bb.ServerName()] != 42 {
		t.Errorf("HAProxy runs b with id %d, want its record's 42 (ids %v)", got[bb.ServerName()], got)
	}
	if n := got[cc.ServerName()]; n == 0 || n == 42 {
		t.Errorf("c (asking for b's 42) has id %d, want one of its own", n)
	}
	if n := testutil.ToFloat64(r.g.m.ServerIDsRefused.WithLabelValues(idTaken)); n != 1 {
		t.Errorf("refused ids counted %v, want 1", n)
	}
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30); got["b"] == 0 || got["c"] == 0 {
		t.Errorf("b and c must both serve: %v", got)
	}
	if p := r.pid(t); p != pid || r.reloads() != reloads {
		t.Errorf("worker %d → %d, %v reloads: adding servers with ids reloaded HAProxy", pid, p, r.reloads()-reloads)
	}
	r.g.Flush()
	if f := fileIDs(t, r.cfg.ConfigFilePath); f[bb.ServerName()] != 42 || f[cc.ServerName()] != got[cc.ServerName()] {
		t.Errorf("ids in the file %v, want HAProxy's %v", f, got)
	}
	// A restarted synapse: a new generator on the same file and HAProxy.
	r.g.Close()
	r.use(t, New(r.cfg, map[string]*ServiceConfig{"web": svc}, nil, NewMetrics(nil)))
	r.apply(t, st)
	r.g.Flush()
	if after := ids(); fmt.Sprint(after) != fmt.Sprint(got) {
		t.Errorf("ids after a restart of the generator %v, want %v", after, got)
	}
	if f := fileIDs(t, r.cfg.ConfigFilePath); f[bb.ServerName()] != 42 || f[cc.ServerName()] != got[cc.ServerName()] {
		t.Errorf("ids in the file after a restart %v, want %v", f, got)
	}
	if p := r.pid(t); p != pid {
		t.Errorf("worker %d → %d: a reload", pid, p)
	}
	// A record asking for the id a running server has (a's, allocated):
	// HAProxy would refuse to add it with that id; it gets its own and
	// serves, a keeps its id.
	d := testserver.StartBackend(t, "d", "127.0.0.14")
	aID := got[backend(a, "a").ServerName()]
	dd := withID(d, aID, 12)
	r.apply(t, state("web", backend(a, "a"), bb, cc, dd))
	now := ids()
	if now[backend(a, "a").ServerName()] != aID || now[dd.ServerName()] == 0 || now[dd.ServerName()] == aID {
		t.Errorf("d asking for a's running id %d: ids %v, want a to keep it and d to have its own", aID, now)
	}
	if q := r.g.Quarantined(); len(q) != 0 {
		t.Errorf("quarantined: %+v", q)
	}
	if got := spread(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 40); got["d"] == 0 {
		t.Errorf("d does not serve: %v", got)
	}
}
