package synctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/fleettest"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// world is two synapse + HAProxy pairs sharing one registry, three backends
// on three "hosts" registered for service web.
type world struct {
	flag     []string // --zk X or --etcd Y
	reg      registry.Backend
	pairs    []*fleettest.Pair
	backends map[string]*testserver.Backend
	stopZK   func()
}

func newWorld(t *testing.T, method string) *world {
	w := &world{backends: map[string]*testserver.Backend{}}
	var hosts string
	var err error
	switch method {
	case "zookeeper":
		zks := testserver.StartZooKeeper(t)
		hosts = zks.Nodes[0].Addr
		w.flag = []string{"--zk", hosts}
		w.reg, err = zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
		w.stopZK = zks.Nodes[0].Kill
	case "etcd":
		srv := testserver.StartEtcd(t)
		hosts = srv.Endpoint
		w.flag = []string{"--etcd", hosts}
		w.reg, err = etcd.New(etcd.Config{Endpoints: []string{hosts}, Metrics: registry.NewMetrics(nil)})
		w.stopZK = srv.Stop
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.reg.Close() })
	for i, id := range []string{"a", "b", "c"} {
		host := "127.0.0.1" + string(rune('1'+i))
		b := testserver.StartBackend(t, id, host)
		w.backends[id] = b
		if _, err := w.reg.Register(context.Background(), "/services/web", registry.Instance{Host: host, Port: b.Port, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"synapse-1", "synapse-2"} {
		w.pairs = append(w.pairs, fleettest.StartPair(t, id, fleettest.Options{Method: method, Hosts: hosts, Services: []string{"web"}}))
	}
	for _, p := range w.pairs {
		p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 15*time.Second)
	}
	// Both synapses have acked and published their services (in their
	// catalogs; an ack names them only until its catalog is written).
	registrytest.Eventually(t, 10*time.Second, "two acks and two catalogs", func() bool {
		acks, err := w.reg.Acks(context.Background())
		if err != nil || len(acks) != 2 {
			return false
		}
		cats, err := w.reg.Catalogs(context.Background())
		return err == nil && len(cats) == 2 && cats[0].Services["web"] == "/services/web" && cats[1].Services["web"] == "/services/web"
	})
	return w
}

func (w *world) synctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now, By: "tester@test"}
	code := Main(context.Background(), append(args, w.flag...), env)
	return code, out.String(), errb.String()
}

// getOK sends one request through HAProxy and fails the test unless it is
// answered 200: a request that failed (HAProxy's 503 when no server takes
// it) must not pass for one that merely missed a drained server.
func getOK(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %.200q (%v)", url, resp.Status, body, err)
	}
}

func (w *world) overrides(t *testing.T) []registry.Override {
	set, err := w.reg.Overrides(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return set.Overrides
}

func TestDrainAndAddToLB(t *testing.T) {
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			w := newWorld(t, method)
			reloads := []float64{w.pairs[0].Reloads(), w.pairs[1].Reloads()}

			start := time.Now()
			code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "deploy 42", "--wait", "--timeout", "10s")
			if code != 0 {
				t.Fatalf("drain: exit %d\n%s%s", code, out, errs)
			}
			took := time.Since(start)
			// Not a terminal: no progress lines.
			if !strings.Contains(out, "applied by every live synapse (2)") || errs != "" {
				t.Errorf("drain --wait output:\n%s%s", out, errs)
			}
			// Both HAProxies already have b in drain when --wait returns.
			for _, p := range w.pairs {
				p.WaitServers(t, "web", map[string]int{"a": 0, "b": 8, "c": 0}, 100*time.Millisecond)
			}
			t.Logf("drain --wait took %v", took)
			served := w.backends["b"].Served.Load()
			for range 30 {
				for _, p := range w.pairs {
					getOK(t, p.URL("web"))
				}
			}
			if n := w.backends["b"].Served.Load() - served; n != 0 {
				t.Errorf("drained b served %d new requests", n)
			}

			code, out, errs = w.synctl(t, "add-to-lb", "127.0.0.12", "--wait")
			if code != 0 {
				t.Fatalf("add-to-lb: exit %d\n%s%s", code, out, errs)
			}
			for _, p := range w.pairs {
				p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 100*time.Millisecond)
			}
			served = w.backends["b"].Served.Load()
			for range 30 {
				getOK(t, w.pairs[0].URL("web"))
			}
			if w.backends["b"].Served.Load() == served {
				t.Error("b got no traffic back after add-to-lb")
			}
			for i, p := range w.pairs {
				if n := p.Reloads() - reloads[i]; n != 0 {
					t.Errorf("%s reloaded %v times", p.ID, n)
				}
			}

			// The audit trail has both, newest last.
			code, out, _ = w.synctl(t, "history", "--output", "json")
			var hist []registry.HistoryEntry
			if code != 0 || json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 2 || hist[0].Action != "drain" || hist[0].Reason != "deploy 42" || hist[1].Action != "add-to-lb" || hist[0].By != "tester@test" {
				t.Errorf("history: %d %s", code, out)
			}
		})
	}
}

func TestDrainForExpires(t *testing.T) {
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			w := newWorld(t, method)
			if code, out, errs := w.synctl(t, "drain", "127.0.0.11", "--for", "2s"); code != 0 {
				t.Fatalf("drain --for: %d %s%s", code, out, errs)
			}
			w.pairs[0].WaitServers(t, "web", map[string]int{"a": 8, "b": 0, "c": 0}, 2*time.Second)
			// Nobody undrains it: it heals by itself.
			for _, p := range w.pairs {
				p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 5*time.Second)
			}
			code, out, _ := w.synctl(t, "status")
			if code != 0 || !strings.Contains(out, "synapse-1") || strings.Contains(out, "drain") {
				t.Errorf("status after expiry:\n%s", out)
			}
			var rep statusReport
			if code, out, _ = w.synctl(t, "status", "--output", "json"); code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Overrides) != 0 {
				t.Errorf("status --output json lists an expired override:\n%s", out)
			}
			// The next change cleans it up and writes the expiry to history.
			if code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--for", "1h"); code != 0 {
				t.Fatalf("drain: %d %s%s", code, out, errs)
			}
			var hist []registry.HistoryEntry
			code, out, _ = w.synctl(t, "history", "--output", "json")
			if code != 0 || json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 3 || hist[1].Action != "expired" || hist[1].Targets[0] != "127.0.0.11" {
				t.Errorf("history after an expiry:\n%s", out)
			}
		})
	}
}

func TestSafetyDryRunAndErrors(t *testing.T) {
	w := newWorld(t, "zookeeper")
	// Two of three out is over the 50% limit.
	code, out, errs := w.synctl(t, "drain", "127.0.0.11,127.0.0.12")
	if code != 1 || !strings.Contains(errs, "refused") || !strings.Contains(errs, "--max-drained") {
		t.Errorf("drain of 2/3: exit %d\n%s%s", code, out, errs)
	}
	if o := w.overrides(t); len(o) != 0 {
		t.Fatalf("a refused drain wrote %+v", o)
	}
	// --dry-run prints the plan and writes nothing.
	code, out, errs = w.synctl(t, "drain", "127.0.0.11", "--dry-run")
	if code != 0 || !strings.Contains(out, "web: 3 → 2 of 3 backends ready") || !strings.Contains(out, "nothing written") {
		t.Errorf("dry run: exit %d\n%s%s", code, out, errs)
	}
	if o := w.overrides(t); len(o) != 0 {
		t.Fatalf("--dry-run wrote %+v", o)
	}
	// --force passes the limit.
	if code, out, errs = w.synctl(t, "drain", "127.0.0.11,127.0.0.12", "--force"); code != 0 {
		t.Errorf("drain --force: exit %d\n%s%s", code, out, errs)
	}
	// A last backend is protected by --min-up.
	if code, _, errs = w.synctl(t, "maint", "127.0.0.13", "--max-drained", "100"); code != 1 || !strings.Contains(errs, "--min-up") {
		t.Errorf("maint of the last ready backend: exit %d %s", code, errs)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"drain", "10.9.9.9"}, 1, `unknown host "10.9.9.9"`},
		{[]string{"drain", "127.0.0.11", "--service", "nope"}, 1, `unknown service "nope"`},
		{[]string{"drain", "127.0.0.11", "--for", "soon"}, 2, "want a duration such as 30m or 2h"},
		{[]string{"weight", "127.0.0.11", "-1"}, 2, "want 0..256"},
		{[]string{"drain", "bad host!"}, 2, "not a host name"},
		{[]string{"drain"}, 2, "want exactly one"},
		{[]string{"weight", "127.0.0.11", "999"}, 2, "want 0..256"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"drain", "127.0.0.11", "--reason", "a\nb"}, 2, "--reason"},
	} {
		code, out, errs := w.synctl(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("synctl %v: exit %d, want %d and %q\n%s%s", tc.args, code, tc.code, tc.want, out, errs)
		}
		// An error is the error and where to read more, not fifty lines of flags.
		if n := strings.Count(out+errs, "\n"); code == 2 && n > 3 {
			t.Errorf("synctl %v printed %d lines for a usage error:\n%s%s", tc.args, n, out, errs)
		}
	}
	before := len(w.overrides(t))
	// An unreachable registry: exit 1, nothing written anywhere.
	var out2, err2 bytes.Buffer
	env := Env{Stdout: &out2, Stderr: &err2, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
	for _, reg := range [][]string{{"--zk", "127.0.0.1:1"}, {"--etcd", "http://127.0.0.1:1"}} {
		err2.Reset()
		if code := Main(context.Background(), append([]string{"drain", "127.0.0.11", "--registry-timeout", "300ms"}, reg...), env); code != 1 || !strings.Contains(err2.String(), "registry unreachable") {
			t.Errorf("unreachable registry %v: exit %d %s", reg, code, err2.String())
		}
	}
	if len(w.overrides(t)) != before {
		t.Error("something was written")
	}
	// Weight: live, and separate from the drain records.
	if code, out, errs = w.synctl(t, "weight", "127.0.0.13", "5", "--wait"); code != 0 {
		t.Fatalf("weight: %d %s%s", code, out, errs)
	}
	registrytest.Eventually(t, 2*time.Second, "weight 5 on c", func() bool {
		for name, s := range testserver.HAProxyServers(t, w.pairs[1].Stats, "web") {
			if strings.HasPrefix(name, "c_") {
				return s.Weight == 5
			}
		}
		return false
	})
	if len(w.overrides(t)) != 2+1 {
		t.Errorf("overrides after weight: %+v", w.overrides(t))
	}
}

// Plan B: with the registry down, --local drains on the local HAProxy.
func TestLocalWithRegistryDown(t *testing.T) {
	w := newWorld(t, "zookeeper")
	w.stopZK()
	p := w.pairs[0]
	code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--local", "--socket", p.Stats)
	if code != 0 || !strings.Contains(out, "to drain on the local HAProxy") {
		t.Fatalf("--local drain: %d %s%s", code, out, errs)
	}
	p.WaitServers(t, "web", map[string]int{"a": 0, "b": 8, "c": 0}, 100*time.Millisecond)
	if code, _, errs = w.synctl(t, "add-to-lb", "127.0.0.12", "--local", "--socket", p.Stats); code != 0 {
		t.Fatalf("--local add-to-lb: %d %s", code, errs)
	}
	p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 100*time.Millisecond)
	if code, _, errs = w.synctl(t, "drain", "10.9.9.9", "--local", "--socket", p.Stats); code != 1 || !strings.Contains(errs, "unknown host") {
		t.Errorf("--local unknown host: %d %s", code, errs)
	}
	missing := filepath.Join(t.TempDir(), "no.sock")
	if code, _, errs = w.synctl(t, "drain", "127.0.0.12", "--local", "--socket", missing); code != 1 || !strings.Contains(errs, missing) {
		t.Errorf("--local with no HAProxy at the socket: %d %s", code, errs)
	}
	// A dry run changes nothing.
	if code, out, errs = w.synctl(t, "drain", "127.0.0.12", "--local", "--dry-run", "--socket", p.Stats); code != 0 || !strings.Contains(out, "would set") {
		t.Errorf("--local --dry-run: %d %s%s", code, out, errs)
	}
	p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 100*time.Millisecond)
}

// A secured etcd: the flags, the environment or the config file give the
// CA, the client certificate and the password; without them synctl fails
// with the TLS problem named, and writes nothing.
func TestSecuredEtcd(t *testing.T) {
	pki := testserver.NewPKI(t)
	srv := testserver.StartEtcdTLS(t, pki)
	dir := t.TempDir()
	run := func(env map[string]string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		e := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }, Now: time.Now, By: "tester@test"}
		code := Main(context.Background(), args, e)
		return code, out.String(), errb.String()
	}
	flags := []string{"--etcd", srv.Endpoint, "--etcd-cacert", pki.CA, "--etcd-cert", pki.ClientCert, "--etcd-key", pki.ClientKey}
	// A drain of a host nobody registered is refused either way; what
	// matters is that synctl got as far as the registry's answer.
	if code, out, errs := run(nil, append([]string{"history"}, flags...)...); code != 0 {
		t.Fatalf("history with flags: %d %s%s", code, out, errs)
	}
	env := map[string]string{"SYNCTL_ETCD": srv.Endpoint, "SYNCTL_ETCD_CACERT": pki.CA, "SYNCTL_ETCD_CERT": pki.ClientCert, "SYNCTL_ETCD_KEY": pki.ClientKey}
	if code, out, errs := run(env, "history"); code != 0 {
		t.Fatalf("history with the environment: %d %s%s", code, out, errs)
	}
	cfgFile := filepath.Join(dir, "synctl.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("etcd: [%s]\netcd_security: {ca_file: %s, cert_file: %s, key_file: %s}\n", srv.Endpoint, pki.CA, pki.ClientCert, pki.ClientKey)), 0o644)
	if code, out, errs := run(nil, "history", "--config", cfgFile); code != 0 {
		t.Fatalf("history with --config: %d %s%s", code, out, errs)
	}
	code, _, errs := run(nil, "drain", "127.0.0.12", "--force", "--etcd", srv.Endpoint, "--etcd-cacert", pki.CA, "--registry-timeout", "2s")
	if code != 1 || !strings.Contains(errs, "certificate required") {
		t.Errorf("without a client certificate: exit %d, %s", code, errs)
	}
	code, _, errs = run(nil, "history", "--etcd", srv.Endpoint, "--etcd-cacert", filepath.Join(dir, "nope.pem"))
	if code != 2 || !strings.Contains(errs, "ca_file") {
		t.Errorf("a missing CA file: exit %d, %s", code, errs)
	}
}

// With every synapse gone (their acks with them), synctl still finds the
// services, from the catalogs the synapses left in the registry, and a
// drain is planned and written; the synapses apply it when they are back.
func TestCatalogWithoutSynapses(t *testing.T) {
	for _, method := range []string{"zookeeper", "etcd"} {
		t.Run(method, func(t *testing.T) {
			w := newWorld(t, method)
			registrytest.Eventually(t, 10*time.Second, "two catalogs", func() bool {
				cats, err := w.reg.Catalogs(context.Background())
				return err == nil && len(cats) == 2
			})
			for _, p := range w.pairs {
				p.Stop()
			}
			registrytest.Eventually(t, 10*time.Second, "the acks gone", func() bool {
				acks, err := w.reg.Acks(context.Background())
				return err == nil && len(acks) == 0
			})
			start := time.Now()
			code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "no synapse up")
			if code != 0 || !strings.Contains(out, "web") {
				t.Fatalf("drain with no synapse up: exit %d\n%s%s", code, out, errs)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("drain took %v: it waited for acks although catalogs named the services", d)
			}
			if o := w.overrides(t); len(o) != 1 || o[0].Target != "127.0.0.12" {
				t.Errorf("overrides = %+v", o)
			}
		})
	}
}

// A weight of 0 takes a server out of traffic as surely as a drain: the
// safety limits, the plan and status treat it so.
func TestWeightZeroIsOut(t *testing.T) {
	w := newWorld(t, "zookeeper")
	// All three at weight 0 would leave web nothing: refused by --min-up,
	// and by --max-drained.
	code, out, errs := w.synctl(t, "weight", "127.0.0.11,127.0.0.12,127.0.0.13", "0")
	if code != 1 || !strings.Contains(errs, "refused") || !strings.Contains(errs, "--min-up") || !strings.Contains(errs, "--max-drained") {
		t.Errorf("weight 0 on every backend: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "web: 3 → 0 of 3 backends ready") {
		t.Errorf("refusal plan:\n%s", out)
	}
	if o := w.overrides(t); len(o) != 0 {
		t.Fatalf("a refused weight wrote %+v", o)
	}
	code, out, errs = w.synctl(t, "weight", "127.0.0.11", "0", "--dry-run")
	if code != 0 || !strings.Contains(out, "web: 3 → 2 of 3 backends ready") {
		t.Errorf("dry run of weight 0: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.synctl(t, "weight", "127.0.0.11", "0", "--wait", "--timeout", "10s"); code != 0 {
		t.Fatalf("weight 0 on one of three: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = w.synctl(t, "status", "--output", "json")
	var rep statusReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("status: %d %s", code, out)
	}
	for _, b := range rep.Services["web"] {
		if want := b.Host != "127.0.0.11"; b.Serving != want {
			t.Errorf("status: %s serving=%v, want %v", b.Host, b.Serving, want)
		}
	}
	if _, out, _ = w.synctl(t, "status"); !strings.Contains(out, "out (weight 0)") {
		t.Errorf("status text does not show the weight-0 backend as out:\n%s", out)
	}
	// The README's form: global flags before the command.
	var out2, err2 bytes.Buffer
	env := Env{Stdout: &out2, Stderr: &err2, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
	if code := Main(context.Background(), append(append([]string{}, w.flag...), "status", "web"), env); code != 0 || !strings.Contains(out2.String(), "out (weight 0)") {
		t.Errorf("synctl %s status web: exit %d\n%s%s", strings.Join(w.flag, " "), code, out2.String(), err2.String())
	}
	// With a out at weight 0, draining b leaves 1 of 3: over --max-drained.
	if code, _, errs = w.synctl(t, "drain", "127.0.0.12"); code != 1 || !strings.Contains(errs, "--max-drained") {
		t.Errorf("drain with a weight-0 backend already out: exit %d %s", code, errs)
	}
	// Restoring a weight is never refused, whatever the limits.
	if code, out, errs = w.synctl(t, "weight", "127.0.0.11", "5", "--min-up", "3"); code != 0 {
		t.Errorf("restoring a weight was refused: exit %d\n%s%s", code, out, errs)
	}
	// --output json: failures are JSON on stdout too, a refusal with its plan.
	code, out, _ = w.synctl(t, "drain", "127.0.0.12,127.0.0.13", "--output", "json")
	var je jsonError
	if code != 1 || json.Unmarshal([]byte(out), &je) != nil || je.Code != 1 || !strings.Contains(je.Error, "refused") || len(je.Plan) != 1 || je.Plan[0].ReadyAfter != 1 {
		t.Errorf("refused drain with --output json: exit %d, stdout %q", code, out)
	}
	code, out, _ = w.synctl(t, "drain", "10.9.9.9", "--output=json")
	if je = (jsonError{}); code != 1 || json.Unmarshal([]byte(out), &je) != nil || !strings.Contains(je.Error, "unknown host") {
		t.Errorf("unknown host with --output=json: exit %d, stdout %q", code, out)
	}
	// --for 0s would be a permanent drain: a usage error.
	if code, _, errs = w.synctl(t, "drain", "127.0.0.12", "--for", "0s"); code != 2 || !strings.Contains(errs, "positive duration") {
		t.Errorf("drain --for 0s: exit %d %s", code, errs)
	}
}

func TestGlobalFlagsBeforeTheCommand(t *testing.T) {
	tests := []struct {
		args     []string
		cmd      string
		rest     []string
		wantFail bool
	}{
		{[]string{"drain", "h", "--zk", "z:1"}, "drain", []string{"h", "--zk", "z:1"}, false},
		{[]string{"--zk", "z:1,z:2", "drain", "h", "--wait"}, "drain", []string{"--zk", "z:1,z:2", "h", "--wait"}, false},
		{[]string{"--zk=z:1", "--output", "json", "status"}, "status", []string{"--zk=z:1", "--output", "json"}, false},
		{[]string{"--service", "web", "drain", "h"}, "", nil, true}, // not a global flag
		{[]string{"--zk", "z:1"}, "", nil, true},                    // no command
	}
	for _, tt := range tests {
		cmd, rest, err := hoistCommand(tt.args)
		if (err != nil) != tt.wantFail || cmd != tt.cmd || strings.Join(rest, " ") != strings.Join(tt.rest, " ") {
			t.Errorf("hoistCommand(%q) = %q %q %v", tt.args, cmd, rest, err)
		}
	}
}

// An override targets backends, however it named them: add-to-lb by
// address clears a drain written by instance name too.
func TestAddToLBClearsEveryOverrideHoldingTheBackend(t *testing.T) {
	w := newWorld(t, "zookeeper")
	if code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "by address"); code != 0 {
		t.Fatalf("drain by address: %d %s%s", code, out, errs)
	}
	if code, out, errs := w.synctl(t, "drain", "b", "--reason", "by name", "--wait", "--timeout", "10s"); code != 0 {
		t.Fatalf("drain by name: %d %s%s", code, out, errs)
	}
	w.pairs[0].WaitServers(t, "web", map[string]int{"a": 0, "b": 8, "c": 0}, 5*time.Second)
	code, out, _ := w.synctl(t, "status", "--output", "json")
	var rep statusReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("status: %d %s", code, out)
	}
	for _, b := range rep.Services["web"] {
		if b.Name == "b" && (b.HeldBy == "" || b.By != "tester@test" || b.Reason == "") {
			t.Errorf("status does not say what holds b out: %+v", b)
		}
	}
	// A scoped add-to-lb cannot clear a drain on every service: it says
	// which override holds the host, and writes nothing.
	code, _, errs := w.synctl(t, "add-to-lb", "127.0.0.12", "--service", "web")
	if code != 1 || !strings.Contains(errs, "held out by override") {
		t.Errorf("scoped add-to-lb of an every-service drain: exit %d %s", code, errs)
	}
	code, out, errs = w.synctl(t, "add-to-lb", "127.0.0.12", "--wait", "--timeout", "10s")
	if code != 0 {
		t.Fatalf("add-to-lb: exit %d\n%s%s", code, out, errs)
	}
	if o := w.overrides(t); len(o) != 0 {
		t.Errorf("overrides left after add-to-lb: %+v", o)
	}
	for _, p := range w.pairs {
		p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 5*time.Second)
	}
}

// --wait waits for the live synapses only, and names the dead ones (their
// catalog is left, their ack is gone with their session).
func TestWaitNamesDeadSynapses(t *testing.T) {
	w := newWorld(t, "zookeeper")
	w.pairs[1].Stop()
	registrytest.Eventually(t, 10*time.Second, "synapse-2's ack gone", func() bool {
		acks, err := w.reg.Acks(context.Background())
		return err == nil && len(acks) == 1
	})
	code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--wait", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, "applied by every live synapse (1)") || !strings.Contains(out, "not waited for: synapse-2") {
		t.Errorf("drain --wait with a dead synapse: exit %d\n%s%s", code, out, errs)
	}
}

// A live synapse whose ack leaves its services to its catalog, with the
// catalog gone (deleted by hand), serves something synctl cannot see, so
// the safety limits cannot cover it: a drain is refused without --force,
// and status names the synapse.
func TestDrainRefusedWhileServicesUnknown(t *testing.T) {
	w := newWorld(t, "etcd")
	ctx := context.Background()
	// An override change makes both synapses ack again, now that their
	// catalogs are written: without the services.
	rev, err := w.reg.PutOverride(ctx, registry.Override{Target: "127.0.0.99", State: registry.StateDrain, Reason: "test", By: "t", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 10*time.Second, "two acks without services", func() bool {
		acks, err := w.reg.Acks(ctx)
		return err == nil && len(acks) == 2 && acks[0].Revision >= rev && acks[1].Revision >= rev && len(acks[0].Services)+len(acks[1].Services) == 0
	})
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{w.flag[1]}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Delete(ctx, "/syncstack/catalog/synapse-2"); err != nil {
		t.Fatal(err)
	}

	code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "test")
	if code != 1 || !strings.Contains(errs, "the services of synapses synapse-2 are unknown") || !strings.Contains(errs, "--force") {
		t.Errorf("drain while synapse-2's services are unknown: exit %d, want refused naming it\n%s%s", code, out, errs)
	}
	if o := w.overrides(t); len(o) != 1 {
		t.Errorf("a refused drain wrote overrides: %+v", o)
	}
	if code, out, errs := w.synctl(t, "weight", "127.0.0.12", "0", "--reason", "test"); code != 1 || !strings.Contains(errs, "synapse-2") {
		t.Errorf("weight 0 while synapse-2's services are unknown: exit %d, want refused naming it\n%s%s", code, out, errs)
	}
	if code, out, errs := w.synctl(t, "status"); code != 0 || !strings.Contains(out, "synapse-2 SERVICES UNKNOWN") || strings.Contains(out, "synapse-1 SERVICES UNKNOWN") {
		t.Errorf("status: exit %d, want synapse-2 (only) named as unknown\n%s%s", code, out, errs)
	}
	code, out, errs = w.synctl(t, "status", "--output", "json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("status --output json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	for _, syn := range rep.Synapses {
		if syn.ServicesUnknown != (syn.ID == "synapse-2") {
			t.Errorf("status JSON: %s services_unknown %v", syn.ID, syn.ServicesUnknown)
		}
	}
	// The fleet page says so in the synapse's state.
	port := testserver.FreePort(t)
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan int)
	go func() {
		env := Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
		served <- Main(ctx, append([]string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}, w.flag...), env)
	}()
	t.Cleanup(func() { cancel(); <-served })
	registrytest.Eventually(t, 10*time.Second, "the page naming synapse-2's services unknown", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), "<td>synapse-2</td><td>in sync, SERVICES UNKNOWN</td>") && strings.Contains(string(body), "<td>synapse-1</td><td>in sync</td>")
	})
	// Putting a backend back takes nothing out: never refused.
	if code, out, errs := w.synctl(t, "add-to-lb", "127.0.0.99", "--reason", "test"); code != 0 {
		t.Errorf("add-to-lb while synapse-2's services are unknown: exit %d\n%s%s", code, out, errs)
	}
	// --allow-unknown goes ahead, with the limits on what synctl sees.
	if code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "test", "--allow-unknown"); code != 0 || !strings.Contains(out, "services unknown: synapse-2") {
		t.Errorf("drain --allow-unknown: exit %d, want written, naming synapse-2\n%s%s", code, out, errs)
	}
	if code, out, errs := w.synctl(t, "drain", "127.0.0.11", "--reason", "test", "--allow-unknown"); code != 1 || !strings.Contains(errs, "--max-drained") || strings.Contains(errs, "are unknown") {
		t.Errorf("drain --allow-unknown past the limits: exit %d, want refused by the limits alone\n%s%s", code, out, errs)
	}
	if code, out, errs := w.synctl(t, "drain", "127.0.0.11", "--reason", "test", "--force"); code != 0 || !strings.Contains(out, "services unknown: synapse-2") {
		t.Errorf("drain --force: exit %d, want written, naming synapse-2\n%s%s", code, out, errs)
	}
}
