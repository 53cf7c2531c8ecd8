package etcd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

var (
	inst       = registrytest.Inst
	startWatch = registrytest.StartWatch
	hasLen     = registrytest.HasLen
	has        = registrytest.Has
)

// helperEnv makes the test binary a registering client that runs until
// killed: the test kills it with SIGKILL, so nothing is cleaned up.
const helperEnv = "SYNCSTACK_ETCD_REGISTER_HELPER"

func TestMain(m *testing.M) {
	if endpoint := os.Getenv(helperEnv); endpoint != "" {
		c, err := New(Config{Endpoints: []string{endpoint}, LeaseTTL: 2 * time.Second, Metrics: registry.NewMetrics(nil)})
		if err == nil {
			_, err = c.Register(context.Background(), "/svc", registry.Instance{Host: "10.0.0.9", Port: 80, Name: "killed"})
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("registered")
		select {}
	}
	os.Exit(m.Run())
}

func newClient(t *testing.T, endpoint string, tweak ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{Endpoints: []string{endpoint}, LeaseTTL: 2 * time.Second, Metrics: registry.NewMetrics(nil), Root: "/syncstack-test"}
	for _, f := range tweak {
		f(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	srv := testserver.StartEtcd(t)
	admin := newClient(t, srv.Endpoint)
	registrytest.Run(t, registrytest.Harness{
		New: func(t *testing.T) registry.Backend { return newClient(t, srv.Endpoint) },
		Plant: func(t *testing.T, dir, name string, data []byte) {
			if _, err := admin.cli.Put(context.Background(), dir+"/"+name, string(data)); err != nil {
				t.Fatal(err)
			}
		},
		Raw: func(t *testing.T, key string) []byte {
			resp, err := admin.cli.Get(context.Background(), key)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("get %s: %v %v", key, resp, err)
			}
			return resp.Kvs[0].Value
		},
		Skipped: func(b registry.Backend, dir string) float64 {
			return testutil.ToFloat64(b.(*Client).m.RecordsSkipped.WithLabelValues(backendName, dir))
		},
	})
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "endpoints"},
		{Config{Endpoints: []string{"nohostport"}}, "endpoints[0]"},
		{Config{Endpoints: []string{"127.0.0.1:2379"}, LeaseTTL: time.Millisecond}, "lease_ttl"},
		{Config{Endpoints: []string{"127.0.0.1:2379"}, Root: "rel/path"}, "root"},
		{Config{Endpoints: []string{"127.0.0.1:2379"}, ProbeInterval: 50 * time.Millisecond}, "probe_interval"},
		{Config{Endpoints: []string{"127.0.0.1:2379"}, ProbeInterval: time.Minute}, "probe_interval"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// A registering process killed with SIGKILL never deletes its key: the lease
// does, within its TTL.
func TestKilledClientKeyGoneWithinTTL(t *testing.T) {
	srv := testserver.StartEtcd(t)
	w := startWatch(t, newClient(t, srv.Endpoint), "/svc")
	w.WaitFor(t, 5*time.Second, "empty", hasLen(0))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+srv.Endpoint)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "registered" {
		t.Fatalf("helper said %q", line)
	}
	w.WaitFor(t, 5*time.Second, "the helper's instance", has("killed"))
	cmd.Process.Kill()
	killed := time.Now()
	w.WaitFor(t, 10*time.Second, "the killed client's key gone", hasLen(0))
	if d := time.Since(killed); d > 2*time.Second+time.Second {
		t.Errorf("key gone %v after the kill, want within the 2s TTL (+1s)", d)
	}
}

// A lease lost while the client was cut off is re-granted and the key put
// back as soon as the client reaches etcd again.
func TestLeaseLossReregisters(t *testing.T) {
	srv := testserver.StartEtcd(t)
	proxy := testserver.StartProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	reg := newClient(t, "http://"+proxy.Addr, func(cfg *Config) { cfg.DialTimeout = time.Second })
	watch := newClient(t, srv.Endpoint)
	w := startWatch(t, watch, "/svc")
	if _, err := watch.Register(context.Background(), "/svc", inst("10.0.0.2", 80, "other")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(context.Background(), "/svc", inst("10.0.0.1", 80, "mine")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 5*time.Second, "both", hasLen(2))

	proxy.Cut()
	w.WaitFor(t, 10*time.Second, "the expired key gone", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Name == "other" })
	proxy.Restore()
	restored := time.Now()
	w.WaitFor(t, 15*time.Second, "mine back", has("mine"))
	t.Logf("re-registered %v after the partition healed", time.Since(restored))
	registrytest.Eventually(t, time.Second, "reregistrations counted", func() bool {
		return testutil.ToFloat64(reg.m.Reregistrations.WithLabelValues(backendName)) >= 1
	})
	registrytest.Eventually(t, time.Second, "lease losses = 1", func() bool {
		return testutil.ToFloat64(reg.m.SessionLosses.WithLabelValues(backendName)) == 1
	})
	w.KeptAfterSeen(t, "other")

	// A key deleted by hand is put back too.
	mine := 0
	resp, _ := watch.cli.Get(context.Background(), "/svc/mine", clientv3.WithPrefix())
	for _, kv := range resp.Kvs {
		watch.cli.Delete(context.Background(), string(kv.Key))
		mine++
	}
	if mine != 1 {
		t.Fatalf("%d keys for mine, want 1", mine)
	}
	w.WaitFor(t, 5*time.Second, "mine deleted", hasLen(1))
	w.WaitFor(t, 5*time.Second, "mine put back", has("mine"))
}

// A watcher cut off while the history it needs is compacted lists again and
// ends with the right set; it never sends a smaller set while cut off.
func TestCompactionUnderWatcher(t *testing.T) {
	srv := testserver.StartEtcd(t)
	proxy := testserver.StartProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	watch := newClient(t, "http://"+proxy.Addr, func(cfg *Config) { cfg.DialTimeout = time.Second })
	admin := newClient(t, srv.Endpoint)
	ctx := context.Background()
	regs := map[string]registry.Registration{}
	for i := range 3 {
		name := fmt.Sprintf("n%d", i)
		r, err := admin.Register(ctx, "/svc", inst("10.0.0.1", 8000+i, name))
		if err != nil {
			t.Fatal(err)
		}
		regs[name] = r
	}
	w := startWatch(t, watch, "/svc")
	w.WaitFor(t, 5*time.Second, "3", hasLen(3))

	proxy.Cut()
	if err := regs["n0"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Register(ctx, "/svc", inst("10.0.0.1", 8100, "late")); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // unrelated churn, then compact it all away
		admin.cli.Put(ctx, "/other/k", fmt.Sprint(i))
	}
	resp, err := admin.cli.Get(ctx, "/other/k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	w.Quiet(t, time.Second, "while cut off")
	proxy.Restore()
	got := w.WaitFor(t, 15*time.Second, "the set after compaction", func(s []registry.Instance) bool {
		return len(s) == 3 && has("late")(s) && !has("n0")(s)
	})
	t.Logf("recovered set %v", got)
	for _, s := range w.Sets {
		if len(s) < 3 {
			t.Errorf("a set shrank below 3: %v", w.Sets)
		}
	}
}

// etcd down: Watch keeps its set and sends nothing; back up, it reconciles.
func TestServerRestartKeepsSet(t *testing.T) {
	srv := testserver.StartEtcd(t)
	admin := newClient(t, srv.Endpoint)
	ctx := context.Background()
	for i := range 2 {
		if _, err := admin.Register(ctx, "/svc", inst("10.0.0.1", 8000+i, fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	watch := newClient(t, srv.Endpoint)
	w := startWatch(t, watch, "/svc")
	w.WaitFor(t, 5*time.Second, "2", hasLen(2))
	srv.Stop()
	w.Quiet(t, 1500*time.Millisecond, "while etcd was down")
	srv.Start()
	if _, err := admin.Register(ctx, "/svc", inst("10.0.0.1", 8100, "after")); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 15*time.Second, "3 after the restart", hasLen(3))
}

// The whole cluster down for longer than the lease TTL: etcd keeps leases
// while it has no leader and extends them when it is back, so the client
// resumes the same lease and the key never leaves the registry (no delete,
// no re-put, nothing for watchers to see).
func TestClusterOutageKeepsLease(t *testing.T) {
	srv := testserver.StartEtcd(t)
	reg := newClient(t, srv.Endpoint, func(cfg *Config) { cfg.DialTimeout = time.Second })
	ctx := context.Background()
	if _, err := reg.Register(ctx, "/svc", inst("10.0.0.1", 80, "mine")); err != nil {
		t.Fatal(err)
	}
	lease, _ := reg.leaseNow()
	admin := newClient(t, srv.Endpoint)
	before, err := admin.cli.Get(ctx, "/svc/", clientv3.WithPrefix())
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("before the outage: %v %v", before, err)
	}

	srv.Stop()
	time.Sleep(5 * time.Second) // 2.5 TTLs
	srv.Start()

	// Watch everything that happened to the key since before the outage.
	// A watch that ends (compacted, cancelled by the server) has seen
	// nothing and proves nothing: it fails the test, as a change does.
	events := watchSince(t, admin.cli, "/svc/", before.Header.Revision+1)
	registrytest.Eventually(t, 10*time.Second, "the same lease kept alive", func() bool {
		resp, err := admin.cli.TimeToLive(ctx, lease)
		return err == nil && resp.TTL > 0 && !errors.Is(err, rpctypes.ErrLeaseNotFound)
	})
	// Two TTLs on (an observation window, not a wait for something):
	// still alive, still the same key.
	time.Sleep(4 * time.Second)
	for _, e := range events.stop() {
		t.Errorf("after the outage: %s", e)
	}
	if now, _ := reg.leaseNow(); now != lease {
		t.Errorf("lease %x replaced by %x", lease, now)
	}
	if n := testutil.ToFloat64(reg.m.SessionLosses.WithLabelValues(backendName)); n != 0 {
		t.Errorf("%v lease losses counted", n)
	}
	if n := testutil.ToFloat64(reg.m.Reregistrations.WithLabelValues(backendName)); n != 0 {
		t.Errorf("%v re-registrations", n)
	}
}

// A cluster that requires TLS with client certificates and etcd's own
// authentication: the client with the right CA, certificate and password
// registers and watches; any of them wrong or missing fails with a clear
// error.
func TestSecurity(t *testing.T) {
	pki := testserver.NewPKI(t)
	srv := testserver.StartEtcdTLS(t, pki)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	os.WriteFile(pwFile, []byte("s3cret\n"), 0o600)
	wrongPW := filepath.Join(dir, "wrong")
	os.WriteFile(wrongPW, []byte("guess\n"), 0o600)
	exposedPW := filepath.Join(dir, "exposed")
	os.WriteFile(exposedPW, []byte("s3cret\n"), 0o644)
	os.Chmod(exposedPW, 0o644) // whatever the umask
	exposedKey := filepath.Join(dir, "exposed-key.pem")
	if key, err := os.ReadFile(pki.ClientKey); err == nil {
		os.WriteFile(exposedKey, key, 0o644)
		os.Chmod(exposedKey, 0o644)
	}
	full := Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, Username: "nerve", PasswordFile: pwFile}

	// Users and roles, then authentication on.
	var admin Config
	if err := (Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}).Apply(&admin); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, TLS: admin.TLS, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	enableAuth(t, cli, "nerve", "s3cret")

	connect := func(t *testing.T, s Security, endpoint string) (*Client, error) {
		cfg := Config{Endpoints: []string{endpoint}, Metrics: registry.NewMetrics(nil), DialTimeout: time.Second, OpTimeout: 2 * time.Second}
		if err := s.Apply(&cfg); err != nil {
			return nil, err
		}
		c, err := New(cfg)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return c, nil
	}
	t.Run("Allowed", func(t *testing.T) {
		c, err := connect(t, full, srv.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Register(ctx, "/svc", inst("10.0.0.1", 80, "a")); err != nil {
			t.Fatalf("Register: %v", err)
		}
		w := startWatch(t, c, "/svc")
		w.WaitFor(t, 5*time.Second, "the registration, watched over TLS", hasLen(1))
	})
	// etcd's client logs in as it connects: a client made while etcd is
	// down connects, and registers, once it is back.
	t.Run("StartsWhileEtcdDown", func(t *testing.T) {
		srv.Stop()
		c, err := connect(t, full, srv.Endpoint)
		if err != nil {
			srv.Start()
			t.Fatalf("New with etcd down: %v", err)
		}
		done := make(chan error, 1)
		go func() {
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, err := c.Register(rctx, "/svc", inst("10.0.0.2", 80, "late"))
			done <- err
		}()
		time.Sleep(1500 * time.Millisecond)
		srv.Start()
		if err := <-done; err != nil {
			t.Fatalf("Register once etcd is back: %v", err)
		}
	})
	for _, tc := range []struct {
		name     string
		sec      Security
		endpoint string
		wantErr  string
	}{
		{"NoClientCertificate", Security{CAFile: pki.CA, Username: "nerve", PasswordFile: pwFile}, srv.Endpoint, "certificate required"},
		{"NoClientCertificateNoLogin", Security{CAFile: pki.CA}, srv.Endpoint, "certificate required"},
		{"UnknownCA", Security{CAFile: pki.OtherCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, Username: "nerve", PasswordFile: pwFile}, srv.Endpoint, "unknown authority"},
		{"WrongPassword", Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, Username: "nerve", PasswordFile: wrongPW}, srv.Endpoint, "authentication failed"},
		{"PlainHTTPEndpoint", full, strings.Replace(srv.Endpoint, "https://", "http://", 1), "plain http while TLS is in use"},
		{"MissingCAFile", Security{CAFile: filepath.Join(dir, "nope.pem")}, srv.Endpoint, "ca_file"},
		{"CertWithoutKey", Security{CAFile: pki.CA, CertFile: pki.ClientCert}, srv.Endpoint, "cert_file and key_file"},
		{"UserWithoutPassword", Security{CAFile: pki.CA, Username: "nerve"}, srv.Endpoint, "username and password_file"},
		{"NotACA", Security{CAFile: pwFile}, srv.Endpoint, "no PEM certificate"},
		// A credential others can read is somebody else's too: refused,
		// naming the file, before it is used.
		{"PasswordFileReadableByOthers", Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, Username: "nerve", PasswordFile: exposedPW}, srv.Endpoint, "password_file: credential file readable or writable by others: " + exposedPW},
		{"KeyFileReadableByOthers", Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: exposedKey}, srv.Endpoint, "key_file: credential file readable or writable by others: " + exposedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := connect(t, tc.sec, tc.endpoint)
			if err == nil {
				_, err = c.Register(ctx, "/svc", inst("10.0.0.9", 80, "x"))
			}
			if err == nil {
				t.Fatal("registered")
			}
			t.Logf("error: %v", err)
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not say %q", err, tc.wantErr)
			}
		})
	}
}

// revisionWatch records what a watch of a prefix sees from a revision on.
type revisionWatch struct {
	mu      sync.Mutex
	seen    []string
	stopped atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchSince watches prefix from rev, and returns once the watch is
// established (the server answered its creation): every change from rev
// on is then seen, or the watch reports why it cannot see them.
func watchSince(t *testing.T, cli *clientv3.Client, prefix string, rev int64) *revisionWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &revisionWatch{cancel: cancel, done: make(chan struct{})}
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithCreatedNotify())
	created := make(chan error, 1)
	go func() {
		defer close(w.done)
		first := true
		for resp := range wch {
			w.mu.Lock()
			for _, ev := range resp.Events {
				w.seen = append(w.seen, fmt.Sprintf("the key changed: %s %s at revision %d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision))
			}
			// An error after stop is the cancellation stop asked for.
			if err := resp.Err(); err != nil && !w.stopped.Load() {
				w.seen = append(w.seen, fmt.Sprintf("the watch ended, blind from then on: %v (compact revision %d)", err, resp.CompactRevision))
			}
			w.mu.Unlock()
			if first {
				first = false
				created <- resp.Err()
			}
		}
		if first {
			created <- errors.New("watch channel closed before the watch was created")
		}
	}()
	t.Cleanup(func() { w.stop() })
	select {
	case err := <-created:
		if err != nil {
			t.Fatalf("watch %s from revision %d: %v", prefix, rev, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("watch %s from revision %d: not created within 10s", prefix, rev)
	}
	return w
}

// stop ends the watch and returns what it saw, errors included.
func (w *revisionWatch) stop() []string {
	w.stopped.Store(true)
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// enableAuth turns etcd's authentication on through cli: user root
// (password rootpw), and user with password in a role that may read and
// write every key.
func enableAuth(t *testing.T, cli *clientv3.Client, user, password string) {
	t.Helper()
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "syncstack"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "syncstack", "/", clientv3.GetPrefixRangeEnd("/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, "syncstack"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}
