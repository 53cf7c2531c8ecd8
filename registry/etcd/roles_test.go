package etcd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// TestRoles sets up the role layout on an etcd with TLS and authentication
// on: each identity does its job, and the server refuses every write of
// the issue 11 attack list by the wrong identity.
func TestRoles(t *testing.T) {
	pki := testserver.NewPKI(t)
	srv := testserver.StartEtcdTLS(t, pki)
	ctx := context.Background()
	tlsOnly := Security{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	var base Config
	if err := tlsOnly.Apply(&base); err != nil {
		t.Fatal(err)
	}
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, TLS: base.TLS, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })

	layout := RoleLayout{ServicePrefixes: []string{"/services"}}
	if err := SetupRoles(ctx, admin, layout); err != nil {
		t.Fatal(err)
	}
	if err := SetupRoles(ctx, admin, layout); err != nil { // again: idempotent
		t.Fatalf("second SetupRoles: %v", err)
	}
	users := map[string]string{"nerve": RoleNerve, "synapse": RoleSynapse, "operator": RoleOperator}
	dir := t.TempDir()
	sec := map[string]Security{}
	for user, role := range users {
		pw := user + "-pw"
		steps := []func() error{
			func() error { _, err := admin.UserAdd(ctx, user, pw); return err },
			func() error { _, err := admin.UserGrantRole(ctx, user, role); return err },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		f := filepath.Join(dir, user)
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := tlsOnly
		s.Username, s.PasswordFile = user, f
		sec[user] = s
	}
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	connect := func(user string) *Client {
		t.Helper()
		cfg := Config{Endpoints: []string{srv.Endpoint}, Metrics: registry.NewMetrics(nil), DialTimeout: 2 * time.Second, OpTimeout: 5 * time.Second}
		if err := sec[user].Apply(&cfg); err != nil {
			t.Fatal(err)
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	nrv, syn, op := connect("nerve"), connect("synapse"), connect("operator")

	// Each identity does its job.
	svc := "/services/web"
	reg, err := nrv.Register(ctx, svc, inst("10.0.0.1", 80, "web1"))
	if err != nil {
		t.Fatalf("nerve registers: %v", err)
	}
	w := startWatch(t, syn, svc)
	w.WaitFor(t, 10*time.Second, "synapse sees web1", has("web1"))
	rev, err := op.PutOverride(ctx, registry.Override{Target: "web1", State: registry.StateDrain, By: "test", At: time.Now()})
	if err != nil {
		t.Fatalf("operator drains: %v", err)
	}
	if err := op.AppendHistory(ctx, registry.HistoryEntry{At: time.Now(), By: "test", Action: "drain", Targets: []string{"web1"}, Revision: rev}); err != nil {
		t.Fatalf("operator history: %v", err)
	}
	if _, err := op.DeleteOverride(ctx, "web1"); err != nil {
		t.Fatalf("operator undrains: %v", err)
	}
	if set, err := syn.Overrides(ctx); err != nil || set.Revision < rev {
		t.Fatalf("synapse reads overrides: %+v, %v", set, err)
	}
	if err := syn.PutAck(ctx, registry.Ack{ID: "syn1", Revision: rev, At: time.Now()}); err != nil {
		t.Fatalf("synapse acks: %v", err)
	}
	if _, err := syn.PutCatalog(ctx, registry.Catalog{ID: "syn1", At: time.Now(), Services: map[string]string{"web": svc}}); err != nil {
		t.Fatalf("synapse catalog: %v", err)
	}
	registrytest.Eventually(t, 10*time.Second, "the operator reads the ack", func() bool {
		acks, err := op.Acks(ctx)
		return err == nil && len(acks) == 1
	})

	// The attacks, each by every identity but the owner.
	raw := func(user string) *clientv3.Client {
		t.Helper()
		var cfg Config
		if err := sec[user].Apply(&cfg); err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, TLS: cfg.TLS, Username: cfg.Username, Password: cfg.Password, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	put := func(key, val string) func(*clientv3.Client) error {
		return func(c *clientv3.Client) error { _, err := c.Put(ctx, key, val); return err }
	}
	del := func(key string) func(*clientv3.Client) error {
		return func(c *clientv3.Client) error { _, err := c.Delete(ctx, key); return err }
	}
	attacks := []struct {
		owner, name string
		do          func(*clientv3.Client) error
	}{
		{"operator", "write an override", put("/syncstack/overrides/web1", `{"target":"web1","state":"maint","at":"2026-01-01T00:00:00Z"}`)},
		{"operator", "write history", put("/syncstack/history/1", `{}`)},
		{"nerve", "rewrite a record (and detach it from its lease)", put(reg.Key(), `{"host":"6.6.6.6","port":80}`)},
		{"nerve", "delete a record", del(reg.Key())},
		{"nerve", "add a record", put(svc+"/evil", `{"host":"6.6.6.6","port":80}`)},
		{"synapse", "plant an ack", put("/syncstack/acks/ghost", `{"id":"ghost","revision":99999}`)},
		{"synapse", "write a catalog", put("/syncstack/catalog/ghost", `{}`)},
	}
	for user := range users {
		cli := raw(user)
		for _, a := range attacks {
			if a.owner == user {
				continue
			}
			if err := a.do(cli); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Errorf("%s: %s: err = %v, want %v", user, a.name, err, rpctypes.ErrPermissionDenied)
			}
		}
	}
	// Through the tools too: the error names the refusal.
	if _, err := nrv.PutOverride(ctx, registry.Override{Target: "web2", State: registry.StateMaint, At: time.Now()}); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("nerve writes an override: err = %v, want permission denied", err)
	}
	if err := op.PutAck(ctx, registry.Ack{ID: "opack", Revision: rev, At: time.Now()}); err == nil {
		t.Errorf("operator plants an ack: no error")
	}
	if _, err := syn.Register(ctx, svc, inst("6.6.6.6", 80, "evil")); err == nil {
		t.Errorf("synapse registers: no error")
	}
	// Nothing of it reached the watcher.
	resp, err := raw("synapse").Get(ctx, reg.Key())
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("the record after the attacks: %+v, %v; want it on the nerve's lease", resp, err)
	}
}

func TestRoleLayoutPermissions(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    RoleLayout
		ok   bool
	}{
		{"default root", RoleLayout{ServicePrefixes: []string{"/services"}}, true},
		{"trailing slash", RoleLayout{Root: "/fleet", ServicePrefixes: []string{"/services/"}}, true},
		{"no services", RoleLayout{}, false},
		{"relative service", RoleLayout{ServicePrefixes: []string{"services"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perms, err := tc.l.Permissions()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				return
			}
			for role, ps := range perms {
				for _, p := range ps {
					if p.Writable && p.Key == "/services/" && role != RoleNerve {
						t.Errorf("%s may write the services", role)
					}
				}
			}
		})
	}
}
