package haproxy

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

// renderOnly makes a generator for one service, to render without HAProxy.
func renderOnly(t *testing.T, defaults []string, seed int64, svc *ServiceConfig) *Generator {
	t.Helper()
	cfg := &Config{Defaults: defaults, ConfigFilePath: "/x/haproxy.cfg", DoSocket: new(bool), DoReloads: new(bool), ServerOrderSeed: &seed}
	var p confutil.Problems
	cfg.Finalize(&p)
	svc.Finalize("web", cfg, &p)
	if err := p.Err(""); err != nil {
		t.Fatal(err)
	}
	return New(cfg, map[string]*ServiceConfig{"web": svc}, nil, nil)
}

func hostBackends(names ...string) []generators.Backend {
	var out []generators.Backend
	for i, n := range names {
		out = append(out, generators.Backend{Instance: registry.Instance{Name: n, Host: "10.0.0." + strconv.Itoa(i+1), Port: 8000}, State: registry.StateReady})
	}
	return out
}

// renderedServerLines renders st with g and returns its server lines, in order.
func renderedServerLines(g *Generator, st generators.State) []string {
	g.assignIDs(st)
	var out []string
	for _, l := range strings.Split(g.render(st, true), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "server ") {
			out = append(out, l)
		}
	}
	return out
}

// Every server line carries an id and, unless the backend is in mode
// tcp, a cookie (the server's name, or its SHA-1 with
// cookie_value_method hash), before the options, as Airbnb's synapse
// writes them.
func TestServerLineIDAndCookie(t *testing.T) {
	sum := sha1.Sum([]byte("a_10.0.0.1:8000"))
	hash := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name     string
		defaults []string
		svc      ServiceConfig
		want     string
	}{
		{"cookie is the name", []string{"mode http"}, ServiceConfig{BackendOrder: OrderAsc, ServerOptions: confutil.StringOrList{"check"}},
			"server a_10.0.0.1:8000 10.0.0.1:8000 id 1 cookie a_10.0.0.1:8000 check"},
		{"cookie hash", nil, ServiceConfig{BackendOrder: OrderAsc, CookieValueMethod: CookieHash},
			"server a_10.0.0.1:8000 10.0.0.1:8000 id 1 cookie " + hash},
		{"mode tcp in listen", nil, ServiceConfig{BackendOrder: OrderAsc, Listen: []string{"mode  tcp"}},
			"server a_10.0.0.1:8000 10.0.0.1:8000 id 1"},
		{"mode tcp in defaults", []string{"mode tcp"}, ServiceConfig{BackendOrder: OrderAsc},
			"server a_10.0.0.1:8000 10.0.0.1:8000 id 1"},
		{"mode http over the defaults' tcp", []string{"mode tcp"}, ServiceConfig{BackendOrder: OrderAsc, Backend: []string{"mode http"}},
			"server a_10.0.0.1:8000 10.0.0.1:8000 id 1 cookie a_10.0.0.1:8000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := renderOnly(t, tc.defaults, 1, &tc.svc)
			got := renderedServerLines(g, generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: hostBackends("a", "b")}})})
			if len(got) != 2 || got[0] != tc.want {
				t.Errorf("server lines %q, want the first %q", got, tc.want)
			}
		})
	}
}

// backend_order: asc and desc by server name, no_shuffle as given, and by
// default a shuffle that depends on server_order_seed only: the same seed
// gives the same order (across restarts), a server joining does not move
// the others, and another seed (another host) gives another order.
func TestBackendOrder(t *testing.T) {
	names := []string{"c", "a", "e", "b", "d", "g", "f", "h"}
	order := func(backendOrder string, seed int64, names ...string) []string {
		g := renderOnly(t, nil, seed, &ServiceConfig{BackendOrder: backendOrder})
		var out []string
		for _, l := range renderedServerLines(g, generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: hostBackends(names...)}})}) {
			out = append(out, strings.SplitN(strings.Fields(l)[1], "_", 2)[0])
		}
		return out
	}
	if got := order(OrderAsc, 1, names...); !slices.Equal(got, []string{"a", "b", "c", "d", "e", "f", "g", "h"}) {
		t.Errorf("asc: %v", got)
	}
	if got := order(OrderDesc, 1, names...); !slices.Equal(got, []string{"h", "g", "f", "e", "d", "c", "b", "a"}) {
		t.Errorf("desc: %v", got)
	}
	if got := order(OrderNoShuffle, 1, names...); !slices.Equal(got, names) {
		t.Errorf("no_shuffle: %v", got)
	}
	one, again := order(OrderShuffle, 42, names...), order(OrderShuffle, 42, names...)
	if !slices.Equal(one, again) {
		t.Errorf("same seed, two orders: %v and %v", one, again)
	}
	sorted := slices.Sorted(slices.Values(one))
	if slices.Equal(one, sorted) {
		t.Errorf("shuffle left the servers sorted: %v", one)
	}
	differs := false
	for seed := int64(43); seed < 53 && !differs; seed++ {
		differs = !slices.Equal(order(OrderShuffle, seed, names...), one)
	}
	if !differs {
		t.Error("ten other seeds all gave the order of seed 42")
	}
	withI := order(OrderShuffle, 42, append(slices.Clone(names), "i")...)
	if got := slices.DeleteFunc(withI, func(s string) bool { return s == "i" }); !slices.Equal(got, one) {
		t.Errorf("a new server moved the others: %v, was %v", got, one)
	}
}

// Ids: the lowest free one for a new server; a server that left keeps its
// id reserved (it gets it back); out of ids (max_server_id), no id.
func TestServerIDAssignment(t *testing.T) {
	ids := newServerIDs(3, nil, nil)
	now := time.Now()
	get := func(names ...string) []int {
		var out []int
		for _, bk := range hostBackends(names...) {
			out = append(out, ids.get("be", bk.ServerName()))
		}
		return out
	}
	ids.assign("be", hostBackends("a", "b"), nil, now)
	if got := get("a", "b"); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("ids %v", got)
	}
	// b leaves, c comes (hostBackends numbers hosts by position: keep a
	// and b in place so their names stay the same).
	bs := hostBackends("a", "b", "c")
	ids.assign("be", []generators.Backend{bs[0], bs[2]}, nil, now)
	if got := ids.get("be", bs[2].ServerName()); got != 3 {
		t.Errorf("c got id %d, want 3 (2 stays b's)", got)
	}
	ids.assign("be", bs, nil, now)
	if got := get("a", "b", "c"); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("b came back: ids %v, want 1 2 3", got)
	}
	d := generators.Backend{Instance: registry.Instance{Name: "d", Host: "10.0.0.9", Port: 1}}
	ids.assign("be", append(bs, d), nil, now)
	if got := ids.get("be", d.ServerName()); got != 0 {
		t.Errorf("past max_server_id: id %d, want none", got)
	}
	// A day later, b's id is free again.
	ids.assign("be", []generators.Backend{bs[0], bs[2], d}, nil, now.Add(idKeep+time.Hour))
	if got := ids.get("be", d.ServerName()); got != 2 {
		t.Errorf("after b's id expired d got %d, want 2", got)
	}
	// What the running HAProxy has wins.
	ids.assign("be", []generators.Backend{bs[0]}, map[string]serverState{bs[0].ServerName(): {ID: 7}}, now)
	if got := ids.get("be", bs[0].ServerName()); got != 7 {
		t.Errorf("running id 7, map says %d", got)
	}
}

var idRE = regexp.MustCompile(`(?m)^\s*server (\S+) \S+ id (\d+)`)

// fileIDs reads server → id from a config file.
func fileIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range idRE.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// Ids stay with their servers through runtime changes (given to `add
// server`), a reload, and a restart of synapse (read back from the file),
// and HAProxy runs with the ids the file says, with no reload.
func TestServerIDsStable(t *testing.T) {
	port := testserver.FreePort(t)
	svc := &ServiceConfig{Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http"}}
	r := newRig(t, map[string]*ServiceConfig{"web": svc})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	r.apply(t, state("web", backend(a, "a"), backend(b, "b")))
	reloads := r.reloads()
	r.apply(t, state("web", backend(a, "a"))) // b leaves (its id stays reserved)
	waitFor(t, func() bool {
		r.apply(t, state("web", backend(a, "a")))
		return len(testserver.HAProxyServers(t, r.cfg.SocketFilePath, "web")) == 1
	}, "b to be deleted")
	// c comes: HAProxy left alone would give it 2, the lowest free id.
	r.apply(t, state("web", backend(a, "a"), backend(c, "c")))
	r.g.Flush()
	want := fileIDs(t, r.cfg.ConfigFilePath)
	if len(want) != 2 || want[backend(a, "a").ServerName()] != 1 || want[backend(c, "c").ServerName()] != 3 {
		t.Fatalf("ids in the file %v, want a 1, c 3 (2 stays b's)", want)
	}
	running := func() map[string]int {
		out := map[string]int{}
		rs, err := r.g.rt.Run(context.Background(), "show servers state web")
		if err != nil {
			t.Fatal(err)
		}
		st, _ := parseServersState(rs[0])
		for name, s := range st["web"] {
			out[name] = s.ID
		}
		return out
	}
	waitFor(t, func() bool { got := running(); return len(got) == 2 && fmt.Sprint(got) == fmt.Sprint(want) }, "HAProxy's ids to be the file's")
	if n := r.reloads() - reloads; n != 0 {
		t.Errorf("%v reloads for membership with ids, want 0", n)
	}
	// A restarted synapse: a new generator on the same file.
	r.g.Close()
	r.use(t, New(r.cfg, map[string]*ServiceConfig{"web": svc}, nil, NewMetrics(nil)))
	r.apply(t, state("web", backend(a, "a"), backend(c, "c"), backend(b, "b")))
	r.g.Flush()
	got := fileIDs(t, r.cfg.ConfigFilePath)
	if got[backend(a, "a").ServerName()] != 1 || got[backend(c, "c").ServerName()] != 3 {
		t.Errorf("ids after a restart %v, want a 1, c 3", got)
	}
	waitFor(t, func() bool { return fmt.Sprint(running()) == fmt.Sprint(got) }, "HAProxy's ids to be the file's after a restart")
}

// waitFor polls cond until it holds, failing after 5 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// applyUntilDone applies st until no reload is deferred any more.
func (r *rig) applyUntilDone(t *testing.T, st generators.State) {
	t.Helper()
	for range 20 {
		err := r.g.Apply(context.Background(), st)
		var d *generators.DeferredError
		if !errors.As(err, &d) {
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			return
		}
		time.Sleep(time.Until(d.At))
	}
	t.Fatal("reload deferred 20 times")
}

// sticky sends a request with the persistence cookie (none: ""), and
// returns who answered and the cookie HAProxy set (if any).
func sticky(t *testing.T, url, cookie string) (who, set string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if cookie != "" {
		req.Header.Set("Cookie", "SERVERID="+cookie)
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == "SERVERID" {
			set = ck.Value
		}
	}
	return string(body), set
}

// A backend with `cookie SERVERID insert`: sessions stick to their server
// through membership, weight and drain changes, made live. A server added
// at runtime serves at once and gets its cookie at one reload (reason
// cookie: HAProxy 2.6 refuses cookie on `add server`); removals, weights
// and drains take none.
func TestCookieStickySessionsSurviveMembership(t *testing.T) {
	port := testserver.FreePort(t)
	svc := &ServiceConfig{Port: port, BindAddress: "127.0.0.1", Listen: []string{"mode http", "balance roundrobin", "cookie SERVERID insert indirect nocache"}}
	r := newRig(t, map[string]*ServiceConfig{"web": svc})
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	c := testserver.StartBackend(t, "c", "127.0.0.13")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	ba, bb, bc := backend(a, "a"), backend(b, "b"), backend(c, "c")
	r.applyUntilDone(t, state("web", ba, bb))

	// Pin a session to a.
	var cookieA string
	for range 10 {
		if who, set := sticky(t, url, ""); who == "a" {
			cookieA = set
			break
		}
	}
	if cookieA != ba.ServerName() {
		t.Fatalf("a's cookie %q, want its name %q", cookieA, ba.ServerName())
	}
	stuck := func(when string) {
		t.Helper()
		for range 10 {
			if who, _ := sticky(t, url, cookieA); who != "a" {
				t.Fatalf("%s: a session pinned to a went to %s", when, who)
			}
		}
	}
	stuck("at start")
	reloads := r.reloads()
	cookieReloads := testutil.ToFloat64(r.g.m.Reloads.WithLabelValues("cookie"))

	// c joins: live at once, then its cookie at one reload.
	r.applyUntilDone(t, state("web", ba, bb, bc))
	stuck("after c joined")
	if n := testutil.ToFloat64(r.g.m.Reloads.WithLabelValues("cookie")) - cookieReloads; n != 1 {
		t.Errorf("%v cookie reloads for a server added, want 1", n)
	}
	if who, _ := sticky(t, url, bc.ServerName()); who != "c" {
		t.Errorf("c's cookie reached %s", who)
	}
	reloads = r.reloads()

	// b leaves, a's weight changes, c drains: all live.
	w := 5
	ba.Weight = &w
	bc.State = registry.StateDrain
	r.applyUntilDone(t, state("web", ba, bc))
	stuck("after b left, a's weight changed and c drained")
	r.applyUntilDone(t, state("web", ba, bc)) // and nothing is pending
	if n := r.reloads() - reloads; n != 0 {
		t.Errorf("%v reloads for a removal, a weight and a drain, want 0", n)
	}
}

// A backend's own lines come before the listen lines (and a frontend's
// before them too), as Airbnb's synapse writes them: with a directive in
// both, the listen one is the last, and wins.
func TestSectionLinesBeforeListen(t *testing.T) {
	g := renderOnly(t, nil, 1, &ServiceConfig{Port: 3000, Frontend: []string{"timeout client 1s"}, Backend: []string{"timeout server 1s"},
		Listen: []string{"timeout client 2s", "timeout server 2s"}})
	out := g.render(generators.State{}, true)
	fe, be, _ := strings.Cut(out[strings.Index(out, "\nfrontend web"):], "\nbackend web")
	for _, c := range []struct{ section, own, listen string }{{fe, "timeout client 1s", "timeout client 2s"}, {be, "timeout server 1s", "timeout server 2s"}} {
		own, listen := strings.Index(c.section, c.own), strings.Index(c.section, c.listen)
		if own < 0 || listen < own {
			t.Errorf("%q does not come before %q:\n%s", c.own, c.listen, c.section)
		}
	}
}

// shared_frontend: one bind for several services, each routed by its
// Host-header ACL and use_backend lines, as Airbnb renders it; two
// services claiming one host are refused.
func TestSharedFrontend(t *testing.T) {
	port := testserver.FreePort(t)
	svcs := map[string]*ServiceConfig{
		"a": {Listen: []string{"mode http"}, SharedFrontend: []string{"acl is_a hdr_dom(host) -i a.lb", "use_backend a if is_a"}},
		"b": {Listen: []string{"mode http"}, SharedFrontend: []string{"acl is_b hdr_dom(host) -i b.lb", "use_backend b if is_b"}},
	}
	testserver.CheckHAProxy(t)
	r := newRigWith(t, svcs, func(c *Config) { c.SharedFrontend = []string{"bind 127.0.0.1:" + strconv.Itoa(port), "mode http"} })
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	b := testserver.StartBackend(t, "b", "127.0.0.12")
	r.apply(t, generators.State{Services: generators.ServicesOf(map[string]generators.Service{
		"a": {Backends: []generators.Backend{backend(a, "a")}}, "b": {Backends: []generators.Backend{backend(b, "b")}}})})
	for host, want := range map[string]string{"a.lb": "a", "b.lb": "b", "A.LB:80": "a"} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("Host %s reached %q, want %q", host, body, want)
		}
	}

	var p confutil.Problems
	svcs["c"] = &ServiceConfig{SharedFrontend: []string{"acl is_c hdr(host) -i B.lb", "use_backend c if is_c"}}
	CheckSharedFrontend(r.cfg, svcs, []string{"a", "b", "c"}, &p)
	if err := p.Err(""); err == nil || !strings.Contains(err.Error(), `services.c.haproxy.shared_frontend: host "b.lb" is also claimed by service b`) {
		t.Errorf("two services claiming b.lb: %v", err)
	}
}
