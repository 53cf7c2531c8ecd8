package nerve

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// recoveryBound is how soon after the registry is reachable again a change
// made while it was not must be in it (the client's reconnect, about a
// second at most, and the retry after it).
const recoveryBound = 3 * time.Second

// A registry behind a partition proxy, for nerve, with a watcher and raw
// access that go around the proxy.
type testRegistry struct {
	kind  string
	proxy *testserver.Proxy
	// outage is how long a cut lasts: shorter than the ZooKeeper session
	// timeout (4s at most on the test server), so the session survives
	// it; longer than etcd's old 3s delete attempt, so a removal that was
	// tried once and dropped stays dropped.
	outage  time.Duration
	yaml    string // the service's registry keys
	watch   *registrytest.Watcher
	rewrite func(t *testing.T, key string, data []byte) // another writer, no session or lease
	delete  func(t *testing.T, key string)
	lease   func(t *testing.T, key string) int64 // etcd: the key's lease
}

func startRegistry(t *testing.T, kind string) *testRegistry {
	t.Helper()
	r := &testRegistry{kind: kind}
	switch kind {
	case "zookeeper":
		zks := testserver.StartZooKeeper(t)
		r.proxy = testserver.StartProxy(t, zks.Nodes[0].Addr)
		r.outage = 1500 * time.Millisecond
		r.yaml = "    zk_hosts: [" + r.proxy.Addr + "]\n    zk_path: /services/web/services\n"
		r.watch = watchZK(t, zks.Servers(), "/services/web/services")
		conn, _, err := zk.Connect(zks.Servers(), 4*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		r.rewrite = func(t *testing.T, key string, data []byte) {
			if _, err := conn.Set(key, data, -1); err != nil {
				t.Fatal(err)
			}
		}
		r.delete = func(t *testing.T, key string) {
			if err := conn.Delete(key, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				t.Fatal(err)
			}
		}
	case "etcd":
		srv := testserver.StartEtcd(t)
		r.proxy = testserver.StartProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
		r.outage = 4 * time.Second
		r.yaml = "    etcd_endpoints: [http://" + r.proxy.Addr + "]\n    etcd_path: /services/web\n"
		ec, err := etcd.New(etcd.Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ec.Close() })
		r.watch = registrytest.StartWatch(t, ec, "/services/web")
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		r.rewrite = func(t *testing.T, key string, data []byte) {
			if _, err := cli.Put(context.Background(), key, string(data)); err != nil {
				t.Fatal(err)
			}
		}
		r.delete = func(t *testing.T, key string) {
			if _, err := cli.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
		}
		r.lease = func(t *testing.T, key string) int64 {
			resp, err := cli.Get(context.Background(), key)
			if err != nil || len(resp.Kvs) != 1 {
				return -1
			}
			return resp.Kvs[0].Lease
		}
	}
	r.watch.WaitFor(t, 10*time.Second, "the empty first set", registrytest.HasLen(0))
	return r
}

const outageTemplate = `instance_id: host-1
zk_session_timeout: 4s
etcd_lease_ttl: 10s
registry_timeout: 1s
services:
  web:
    host: 127.0.0.1
    port: {{.Port}}
    check_interval: 100ms
    rise: 1
    fall: 2
    checks:
      - {type: http, uri: /health, timeout: 100ms}
{{.Registry}}`

var registryKinds = []string{"zookeeper", "etcd"}

// waitConfirmed waits until nerve has the registry's answer to its write
// (the watcher can see the record before that answer reaches nerve).
func waitConfirmed(t *testing.T, h *harness) {
	t.Helper()
	registrytest.Eventually(t, 5*time.Second, "registration confirmed", func() bool {
		s := h.status(t, "web")
		return s.Registered && s.Pending == ""
	})
}

// A service taken out (maintenance, or a check failing) while the registry
// is out of reach leaves it once the registry is back: nerve keeps what it
// wants apart from what the registry confirmed, and shows the removal as
// pending meanwhile. Put back and taken out again afterwards, it is one
// record, then none: an unconfirmed removal never leaves a second record.
func TestRemovalDuringOutageLandsAfterRecovery(t *testing.T) {
	for _, kind := range registryKinds {
		for _, cause := range []string{"maintenance", "check"} {
			t.Run(kind+"/"+cause, func(t *testing.T) {
				reg := startRegistry(t, kind)
				b := startBackend(t)
				h := startAgent(t, loadConfig(t, outageTemplate, map[string]any{"Port": b.port, "Registry": reg.yaml}))
				out := func() {
					if cause == "maintenance" {
						if err := h.agent.SetMaintenance("web", "kernel upgrade"); err != nil {
							t.Fatal(err)
						}
					} else {
						b.healthy.Store(false)
					}
				}
				in := func() {
					if cause == "maintenance" {
						if err := h.agent.ClearMaintenance("web"); err != nil {
							t.Fatal(err)
						}
					} else {
						b.healthy.Store(true)
					}
				}
				reg.watch.WaitFor(t, 10*time.Second, "registered", registrytest.HasLen(1))
				waitConfirmed(t, h)

				reg.proxy.Cut()
				cut := time.Now()
				out()
				registrytest.Eventually(t, 5*time.Second, "status: still registered, deregister pending", func() bool {
					s := h.status(t, "web")
					return s.Registered && s.Pending == "deregister" && s.PendingSince != nil &&
						testutil.ToFloat64(h.metrics.Pending.WithLabelValues("web", "deregister")) == 1
				})
				// The fault itself lasts a while (longer than nerve's 1s
				// registry_timeout, so nerve has waited for the removal and
				// not had it confirmed): that is the scenario.
				time.Sleep(time.Until(cut.Add(reg.outage)))
				if s := h.status(t, "web"); !s.Registered || s.Pending != "deregister" {
					t.Errorf("status at the end of the outage: registered %v, pending %q; want true, deregister", s.Registered, s.Pending)
				}
				reg.proxy.Restore()
				restored := time.Now()
				reg.watch.WaitFor(t, 15*time.Second, "removed after the registry came back", registrytest.HasLen(0))
				took := time.Since(restored)
				t.Logf("%s: removed %v after the partition healed", kind, took)
				if took > recoveryBound {
					t.Errorf("removed %v after the partition healed, want ≤ %v", took, recoveryBound)
				}
				registrytest.Eventually(t, 10*time.Second, "status: not registered, nothing pending", func() bool {
					s := h.status(t, "web")
					return !s.Registered && s.Pending == "" &&
						testutil.ToFloat64(h.metrics.Pending.WithLabelValues("web", "deregister")) == 0
				})

				in()
				reg.watch.WaitFor(t, 5*time.Second, "back in", registrytest.HasLen(1))
				reg.watch.Quiet(t, 500*time.Millisecond, "once back in (a second record?)")
				out()
				reg.watch.WaitFor(t, 5*time.Second, "out again: no record left", registrytest.HasLen(0))
			})
		}
	}
}

// Maintenance switched on and off again within an outage: the removal is
// confirmed first, then the service registers again: one record.
func TestMaintenanceOnAndOffDuringOutage(t *testing.T) {
	for _, kind := range registryKinds {
		t.Run(kind, func(t *testing.T) {
			reg := startRegistry(t, kind)
			b := startBackend(t)
			h := startAgent(t, loadConfig(t, outageTemplate, map[string]any{"Port": b.port, "Registry": reg.yaml}))
			reg.watch.WaitFor(t, 10*time.Second, "registered", registrytest.HasLen(1))
			waitConfirmed(t, h)
			reg.proxy.Cut()
			cut := time.Now()
			h.agent.SetMaintenance("web", "short")
			registrytest.Eventually(t, 5*time.Second, "deregister pending", func() bool { return h.status(t, "web").Pending == "deregister" })
			// Maintenance lasts half the outage: the removal has been asked
			// of the registry (within milliseconds) and cannot be confirmed.
			// (Switched off before nerve asked, there is nothing to undo.)
			time.Sleep(time.Until(cut.Add(reg.outage / 2)))
			h.agent.ClearMaintenance("web")
			time.Sleep(time.Until(cut.Add(reg.outage))) // the fault lasts
			if s := h.status(t, "web"); s.Pending != "deregister" {
				t.Errorf("maintenance off during the outage: pending %q, want the removal first", s.Pending)
			}
			reg.proxy.Restore()
			reg.watch.WaitFor(t, 15*time.Second, "registered again after the removal", registrytest.HasLen(1))
			registrytest.Eventually(t, 10*time.Second, "status registered, nothing pending", func() bool {
				s := h.status(t, "web")
				return s.Registered && s.Pending == ""
			})
			reg.watch.Quiet(t, 500*time.Millisecond, "once registered again (a second record?)")
			h.agent.SetMaintenance("web", "again")
			reg.watch.WaitFor(t, 5*time.Second, "no record left", registrytest.HasLen(0))
		})
	}
}

// Somebody else rewrites nerve's record (another host; on etcd, without
// nerve's lease) or deletes it: nerve puts it back.
func TestRecordChangedByOthersIsPutBack(t *testing.T) {
	for _, kind := range registryKinds {
		t.Run(kind, func(t *testing.T) {
			reg := startRegistry(t, kind)
			b := startBackend(t)
			h := startAgent(t, loadConfig(t, outageTemplate, map[string]any{"Port": b.port, "Registry": reg.yaml}))
			reg.watch.WaitFor(t, 10*time.Second, "registered", registrytest.HasLen(1))
			var key string
			registrytest.Eventually(t, 5*time.Second, "status with the key", func() bool {
				key = h.status(t, "web").Key
				return key != ""
			})
			ours := func(s []registry.Instance) bool {
				return len(s) == 1 && s[0].Host == "127.0.0.1" && s[0].Port == b.port
			}

			evil, _ := registry.Instance{Host: "10.6.6.6", Port: b.port, Name: "host-1"}.Encode()
			reg.rewrite(t, key, evil)
			reg.watch.WaitFor(t, 5*time.Second, "the rewritten record", func(s []registry.Instance) bool { return len(s) == 1 && s[0].Host == "10.6.6.6" })
			start := time.Now()
			reg.watch.WaitFor(t, 2*time.Second, "ours written back", ours)
			t.Logf("%s: rewritten record put back after %v", kind, time.Since(start))

			reg.delete(t, key)
			start = time.Now()
			reg.watch.WaitFor(t, 2*time.Second, "ours back after a delete", func(s []registry.Instance) bool {
				return ours(s) && h.status(t, "web").Key != "" // (a new node on ZooKeeper)
			})
			t.Logf("%s: deleted record put back after %v", kind, time.Since(start))

			if reg.lease != nil {
				lease := reg.lease(t, key)
				mine, _ := registry.Instance{Host: "127.0.0.1", Port: b.port, Name: "host-1"}.Encode()
				reg.rewrite(t, key, mine) // the same record, without the lease
				registrytest.Eventually(t, 2*time.Second, "the record under nerve's lease again", func() bool {
					return reg.lease(t, key) == lease
				})
			}
			if s := h.status(t, "web"); !s.Registered || s.Pending != "" {
				t.Errorf("status after the repairs: %+v", s)
			}
		})
	}
}

// A reload that changes a service while the registry is out of reach: the
// old registration's removal goes to the new service, which finishes it
// before it registers, so the instance ends with one record, the new one.
func TestReloadDuringOutageLeavesOneRecord(t *testing.T) {
	for _, kind := range registryKinds {
		t.Run(kind, func(t *testing.T) {
			reg := startRegistry(t, kind)
			b := startBackend(t)
			h := startAgent(t, loadConfig(t, outageTemplate, map[string]any{"Port": b.port, "Registry": reg.yaml}))
			reg.watch.WaitFor(t, 10*time.Second, "registered", registrytest.HasLen(1))
			waitConfirmed(t, h)
			reg.proxy.Cut()
			cut := time.Now()
			next := loadConfig(t, outageTemplate+"    weight: 7\n", map[string]any{"Port": b.port, "Registry": reg.yaml})
			if err := h.agent.Reload(next); err != nil {
				t.Fatal(err)
			}
			if s := h.status(t, "web"); !s.Registered || s.Pending != "deregister" {
				t.Errorf("after the reload during the outage: registered %v, pending %q; want the old record's removal pending", s.Registered, s.Pending)
			}
			time.Sleep(time.Until(cut.Add(reg.outage))) // the fault lasts
			reg.proxy.Restore()
			reg.watch.WaitFor(t, 15*time.Second, "one record, with the new weight", func(s []registry.Instance) bool {
				return len(s) == 1 && s[0].Weight != nil && *s[0].Weight == 7
			})
			reg.watch.Quiet(t, 500*time.Millisecond, "after the new record (a second one?)")
			for _, s := range reg.watch.Sets {
				if len(s) > 1 {
					t.Errorf("two records at once: %v", s)
				}
			}
		})
	}
}
