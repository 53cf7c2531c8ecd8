package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

var (
	operatorAuth = &Auth{User: "operator", Password: "op-secret-1"}
	nerveAuth    = &Auth{User: "nerve", Password: "nerve-secret-2"}
	synapseAuth  = &Auth{User: "synapse", Password: "synapse-secret-3"}
)

func withAuth(a *Auth) func(*Config) { return func(c *Config) { c.Auth = a } }

// rawConn is a bare go-zookeeper session, authenticated as a if a is not
// nil: what an attacker on the network has.
func rawConn(t *testing.T, servers []string, a *Auth) *zk.Conn {
	t.Helper()
	conn, ev, err := zk.Connect(servers, 4*time.Second, zk.WithLogInfo(false), zk.WithLogger(zkLogger{slog.Default()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	deadline := time.After(10 * time.Second)
	for conn.State() != zk.StateHasSession {
		select {
		case <-ev:
		case <-deadline:
			t.Fatal("raw connection: no session")
		}
	}
	if a != nil {
		if err := conn.AddAuth("digest", []byte(a.User+":"+a.Password)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// TestACLsRefuseWrongIdentities plays the attack list of issue 11 against
// a fleet set up with digest identities: every write by a missing or wrong
// identity is refused by the server (zk.ErrNoAuth), while nerve, synapse
// and the operator do their jobs and anyone can still read.
func TestACLsRefuseWrongIdentities(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	servers := zks.Servers()
	ctx := context.Background()

	op := newClient(t, servers, withAuth(operatorAuth))
	if err := op.SetupLayout(ctx, Layout{SynapseID: synapseAuth.DigestID(), NerveID: nerveAuth.DigestID(), ServicePaths: []string{"/services"}}); err != nil {
		t.Fatal(err)
	}
	nrv := newClient(t, servers, withAuth(nerveAuth))
	syn := newClient(t, servers, withAuth(synapseAuth))
	anon := newClient(t, servers)

	// The right identities work end to end.
	dir := "/services/web/instances"
	reg, err := nrv.Register(ctx, dir, inst("10.0.0.1", 8080, "web1"))
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, syn, dir)
	w.WaitFor(t, 10*time.Second, "web1 registered", has("web1"))
	readers := startWatch(t, anon, dir) // reads stay open
	readers.WaitFor(t, 10*time.Second, "web1 seen without credentials", has("web1"))

	rev, err := op.PutOverride(ctx, registry.Override{Target: "web1", State: registry.StateDrain, By: "test", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.AppendHistory(ctx, registry.HistoryEntry{At: time.Now(), By: "test", Action: "drain", Targets: []string{"web1"}, Revision: rev}); err != nil {
		t.Fatal(err)
	}
	if err := syn.PutAck(ctx, registry.Ack{ID: "syn1", Revision: rev, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := syn.PutCatalog(ctx, registry.Catalog{ID: "syn1", At: time.Now(), Services: map[string]string{"web": dir}}); err != nil {
		t.Fatal(err)
	}
	registrytest.Eventually(t, 10*time.Second, "ack visible to the operator", func() bool {
		acks, err := op.Acks(ctx)
		return err == nil && len(acks) == 1 && acks[0].ID == "syn1"
	})
	if set, err := anon.Overrides(ctx); err != nil || len(set.Overrides) != 1 {
		t.Fatalf("unauthenticated read of overrides = %+v, %v; want the drain", set, err)
	}

	// The attacks, by every identity that must not do them.
	node := reg.Key()
	override := op.OverridesDir() + "/web1"
	ack := op.AcksDir() + "/syn1"
	rec := []byte(`{"host":"6.6.6.6","port":80,"name":"web1"}`)
	ovr := []byte(`{"target":"web2","state":"maint","at":"2026-01-01T00:00:00Z"}`)
	fakeAck := []byte(`{"id":"ghost","revision":999999,"at":"2026-01-01T00:00:00Z"}`)
	type attack struct {
		name string
		do   func(c *zk.Conn) error
	}
	create := func(p string, data []byte) func(*zk.Conn) error {
		return func(c *zk.Conn) error { _, err := c.Create(p, data, 0, zk.WorldACL(zk.PermAll)); return err }
	}
	set := func(p string, data []byte) func(*zk.Conn) error {
		return func(c *zk.Conn) error { _, err := c.Set(p, data, -1); return err }
	}
	del := func(p string) func(*zk.Conn) error { return func(c *zk.Conn) error { return c.Delete(p, -1) } }
	attacks := map[string][]attack{
		"override": {
			{"write an override", create(op.OverridesDir()+"/web2", ovr)},
			{"rewrite an override", set(override, ovr)},
			{"delete an override", del(override)},
			{"write history", create(op.HistoryDir()+"/entry-", []byte(`{}`))},
		},
		"nerve": {
			{"rewrite a nerve record", set(node, rec)},
			{"delete a nerve record", del(node)},
			{"add a child under /services", create(dir+"/evil", rec)},
			{"add a service", create("/services/evil", nil)},
		},
		"synapse": {
			{"plant an ack", create(op.AcksDir()+"/ghost", fakeAck)},
			{"rewrite an ack", set(ack, fakeAck)},
			{"write a catalog", create(op.CatalogDir()+"/ghost", []byte(`{}`))},
		},
		"root": {
			{"take over the ACL of the root", func(c *zk.Conn) error {
				_, err := c.SetACL(op.cfg.Root, zk.WorldACL(zk.PermAll), -1)
				return err
			}},
		},
	}
	// Who may do which kind of write; everybody else is refused.
	allowed := map[string]string{"override": "operator", "root": "operator", "nerve": "nerve", "synapse": "synapse"}
	identities := map[string]*Auth{
		"anonymous":            nil,
		"operator":             operatorAuth,
		"nerve":                nerveAuth,
		"synapse":              synapseAuth,
		"wrong nerve password": {User: "nerve", Password: "guess"},
	}
	for who, a := range identities {
		conn := rawConn(t, servers, a)
		for kind, list := range attacks {
			if allowed[kind] == who {
				continue
			}
			for _, at := range list {
				if err := at.do(conn); !errors.Is(err, zk.ErrNoAuth) {
					t.Errorf("%s: %s: err = %v, want %v", who, at.name, err, zk.ErrNoAuth)
				}
			}
		}
	}
	// Nothing changed: the record, the override, the ack are intact.
	if data, _, err := anon.conn.Get(node); err != nil || strings.Contains(string(data), "6.6.6.6") {
		t.Fatalf("record = %s, %v; want the nerve's", data, err)
	}
	if acks, _ := op.Acks(ctx); len(acks) != 1 {
		t.Fatalf("acks = %+v, want only syn1", acks)
	}

	// The tools themselves, with no or the wrong identity, fail with an
	// error naming the identity and never the secret.
	wrong := newClient(t, servers, withAuth(&Auth{User: "nerve", Password: "not-the-password"}))
	_, err = wrong.PutOverride(ctx, registry.Override{Target: "web3", State: registry.StateMaint, At: time.Now()})
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("override by a nerve: err = %v, want an AuthError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "digest:nerve") || strings.Contains(msg, "not-the-password") {
		t.Fatalf("error %q must name digest:nerve and not the password", msg)
	}
	if _, err := anon.PutOverride(ctx, registry.Override{Target: "web3", State: registry.StateMaint, At: time.Now()}); !errors.As(err, &ae) || ae.Identity != "" {
		t.Fatalf("override without credentials: err = %v, want an AuthError for an unauthenticated client", err)
	}
	if _, err := wrong.Register(ctx, dir, inst("10.0.0.9", 80, "web9")); !errors.Is(err, zk.ErrNoAuth) || strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("registration with the wrong password: err = %v, want ErrNoAuth without the secret", err)
	}
	if err := op.PutAck(ctx, registry.Ack{ID: "opack", Revision: rev, At: time.Now()}); !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("ack by the operator: err = %v, want ErrNoAuth", err)
	}
}

// The credentials survive a new session: after expiry the nerve's
// registration comes back under its own identity (go-zookeeper re-sends
// the digest before any request of the new session).
func TestAuthSurvivesSessionExpiry(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	servers := zks.Servers()
	ctx := context.Background()
	op := newClient(t, servers, withAuth(operatorAuth))
	if err := op.SetupLayout(ctx, Layout{SynapseID: synapseAuth.DigestID(), NerveID: nerveAuth.DigestID(), ServicePaths: []string{"/services"}}); err != nil {
		t.Fatal(err)
	}
	proxy := testserver.StartProxy(t, zks.Nodes[0].Addr)
	nrv := newClient(t, []string{proxy.Addr}, withAuth(nerveAuth), func(cfg *Config) { cfg.SessionTimeout = time.Second })
	dir := "/services/api"
	if _, err := nrv.Register(ctx, dir, inst("10.0.0.2", 80, "api1")); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, op, dir)
	w.WaitFor(t, 10*time.Second, "api1 registered", has("api1"))
	proxy.Cut()
	w.WaitFor(t, 10*time.Second, "the expired node gone", hasLen(0))
	proxy.Restore()
	w.WaitFor(t, 20*time.Second, "api1 re-registered", has("api1"))
	children, _, err := op.conn.Children(dir)
	if err != nil || len(children) != 1 {
		t.Fatalf("children = %v, %v", children, err)
	}
	// The server shows the digest only to a client with the admin
	// permission: the nerve itself.
	acl, _, err := nrv.conn.GetACL(dir + "/" + children[0])
	if err != nil {
		t.Fatal(err)
	}
	want := zk.ACL{Perms: zk.PermAll, Scheme: "digest", ID: nerveAuth.DigestID()}
	if len(acl) != 2 || acl[0] != want || acl[1] != zk.WorldACL(zk.PermRead)[0] {
		t.Fatalf("ACL after a new session = %+v, want %+v and world read", acl, want)
	}
}

func TestLoadAuth(t *testing.T) {
	d := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		ok         bool
	}{
		{"good", "nerve:s3cret\n", 0o600, true},
		{"group-read", "nerve:s3cret", 0o640, true},
		{"world-readable", "nerve:s3cret\n", 0o644, false},
		{"no-colon", "nerve-s3cret\n", 0o600, false},
		{"empty-password", "nerve:\n", 0o600, false},
		{"two-lines", "nerve:a\nx:b\n", 0o600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := LoadAuth(write(tc.name, tc.body, tc.mode))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q shows the secret", err)
			}
			if a != nil {
				if a.User != "nerve" || a.Password != "s3cret" {
					t.Fatalf("auth = %s", a)
				}
				for _, s := range []string{a.String(), a.GoString()} {
					if strings.Contains(s, "s3cret") {
						t.Fatalf("%q shows the secret", s)
					}
				}
			}
		})
	}
	t.Setenv(AuthFileEnv, write("env", "synapse:pw\n", 0o600))
	cfg := Config{Servers: []string{"127.0.0.1:1"}}
	if err := cfg.finalize(); err != nil || cfg.Auth == nil || cfg.Auth.User != "synapse" {
		t.Fatalf("from %s: auth %v, err %v", AuthFileEnv, cfg.Auth, err)
	}
}

// With credentials (one identity for every client, as a single-role
// fleet), every behaviour of the conformance suite is unchanged.
func TestConformanceWithAuth(t *testing.T) {
	conformance(t, withAuth(&Auth{User: "fleet", Password: "fleet-secret"}))
}

// A fleet that ran without credentials has an open tree; setup takes it
// over (the nodes below the service paths too), so the old world-writable
// directories stop taking new children.
func TestSetupTakesOverAnOpenTree(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	servers := zks.Servers()
	ctx := context.Background()
	old := newClient(t, servers) // before credentials
	if _, err := old.PutOverride(ctx, registry.Override{Target: "web1", State: registry.StateDrain, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := old.ensurePath("/services/web/instances"); err != nil {
		t.Fatal(err)
	}
	op := newClient(t, servers, withAuth(operatorAuth))
	if err := op.SetupLayout(ctx, Layout{SynapseID: synapseAuth.DigestID(), NerveID: nerveAuth.DigestID(), ServicePaths: []string{"/services"}}); err != nil {
		t.Fatal(err)
	}
	anon := rawConn(t, servers, nil)
	for _, p := range []string{"/services/web/instances/evil", "/services/web/evil", op.OverridesDir() + "/evil", op.AcksDir() + "/evil"} {
		if _, err := anon.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("create %s after setup: err = %v, want %v", p, err, zk.ErrNoAuth)
		}
	}
	nrv := newClient(t, servers, withAuth(nerveAuth))
	if _, err := nrv.Register(ctx, "/services/web/instances", inst("10.0.0.1", 80, "web1")); err != nil {
		t.Fatalf("nerve registers in the taken-over tree: %v", err)
	}
	// Setup is idempotent.
	if err := op.SetupLayout(ctx, Layout{SynapseID: synapseAuth.DigestID(), NerveID: nerveAuth.DigestID(), ServicePaths: []string{"/services"}}); err != nil {
		t.Fatalf("second setup: %v", err)
	}
}

// A client with credentials closes promptly while no server ever answered
// (its AddAuth is still waiting for a connection).
func TestCloseWhileAuthPending(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	c, err := New(Config{Servers: []string{addr}, Auth: nerveAuth, Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on the pending authentication")
	}
}
