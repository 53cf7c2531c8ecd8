package synctl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/fleettest"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

func runSynctl(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now, By: "tester@test"}
	code := Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func credFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A fleet on ZooKeeper with one identity per role, set up by synctl
// setup-zk: a nerve registers, a real synapse (HAProxy and all) watches
// and acks, the operator drains with --wait; the wrong identity or none is
// refused with an error naming it, never the password.
func TestZKIdentitiesEndToEnd(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	addr := zks.Nodes[0].Addr
	opFile := credFile(t, "operator", "operator:op-pw-1")
	nerveFile := credFile(t, "nerve", "nerve:nerve-pw-2")
	synFile := credFile(t, "synapse", "synapse:syn-pw-3")

	if code, out, errs := runSynctl("setup-zk", "--zk", addr, "--zk-auth-file", opFile, "--services", "/services",
		"--nerve-auth-file", nerveFile, "--synapse-auth-file", synFile); code != 0 {
		t.Fatalf("setup-zk: exit %d\n%s%s", code, out, errs)
	}
	// The synapse (in this process) takes its identity from the
	// environment, as a deployment would.
	t.Setenv(zookeeper.AuthFileEnv, synFile)
	nerve, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil), AuthFile: nerveFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nerve.Close() })
	for i, id := range []string{"a", "b", "c"} {
		host := "127.0.0.1" + string(rune('1'+i))
		b := testserver.StartBackend(t, id, host)
		if _, err := nerve.Register(context.Background(), "/services/web", registry.Instance{Host: host, Port: b.Port, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	p := fleettest.StartPair(t, "synapse-1", fleettest.Options{Method: "zookeeper", Hosts: addr, Services: []string{"web"}})
	p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 15*time.Second)
	registrytest.Eventually(t, 10*time.Second, "the synapse's ack", func() bool {
		acks, err := nerve.Acks(context.Background())
		return err == nil && len(acks) == 1
	})

	code, out, errs := runSynctl("drain", "127.0.0.12", "--reason", "deploy", "--wait", "--timeout", "10s", "--zk", addr, "--zk-auth-file", opFile)
	if code != 0 || !strings.Contains(out, "applied by every live synapse (1)") {
		t.Fatalf("drain as the operator: exit %d\n%s%s", code, out, errs)
	}
	p.WaitServers(t, "web", map[string]int{"a": 0, "b": 8, "c": 0}, 5*time.Second)

	// Wrong identities, through synctl: refused, named, no secret shown.
	for _, tc := range []struct{ name, file, identity, secret string }{
		{"nerve", nerveFile, "digest:nerve", "nerve-pw-2"},
		{"synapse (from the environment)", "", "digest:synapse", "syn-pw-3"},
		{"wrong password", credFile(t, "guess", "operator:guess"), "digest:operator", "guess"},
	} {
		args := []string{"drain", "127.0.0.13", "--reason", "x", "--force", "--zk", addr}
		if tc.file != "" {
			args = append(args, "--zk-auth-file", tc.file)
		}
		code, out, errs := runSynctl(args...)
		if code != ExitFailed || !strings.Contains(errs, tc.identity) || strings.Contains(out+errs, tc.secret) {
			t.Errorf("drain as %s: exit %d, want %d naming %s without the password\n%s%s", tc.name, code, ExitFailed, tc.identity, out, errs)
		}
	}
	// An attacker with no credentials cannot plant an override, an ack,
	// or a record, and reads stay open.
	conn, _, err := zk.Connect(zks.Servers(), 4*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	for _, path := range []string{"/syncstack/overrides/127.0.0.11", "/syncstack/acks/ghost", "/services/web/evil"} {
		if _, err := conn.Create(path, []byte(`{}`), 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("unauthenticated create %s: err = %v, want %v", path, err, zk.ErrNoAuth)
		}
	}
	if names, _, err := conn.Children("/services/web"); err != nil || len(names) != 3 {
		t.Errorf("unauthenticated read: %v, %v", names, err)
	}
	// A credential file others can read is refused before use.
	exposed := credFile(t, "exposed", "operator:op-pw-1")
	os.Chmod(exposed, 0o644)
	if code, _, errs := runSynctl("history", "--zk", addr, "--zk-auth-file", exposed); code != ExitUsage || !strings.Contains(errs, exposed) || strings.Contains(errs, "op-pw-1") {
		t.Errorf("exposed credential file: exit %d: %s", code, errs)
	}
}

// synctl setup-etcd-roles creates the three roles and gives them to
// existing users (the full refusal matrix is registry/etcd's TestRoles).
func TestSetupEtcdRoles(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx := context.Background()
	if _, err := cli.UserAdd(ctx, "nerve1", "pw"); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runSynctl("setup-etcd-roles", "--etcd", srv.Endpoint, "--services", "/services", "--nerve-user", "nerve1")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	u, err := cli.UserGet(ctx, "nerve1")
	if err != nil || len(u.Roles) != 1 || u.Roles[0] != etcd.RoleNerve {
		t.Fatalf("nerve1's roles = %+v, %v", u, err)
	}
	r, err := cli.RoleGet(ctx, etcd.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	writable := map[string]bool{}
	for _, p := range r.Perm {
		if p.PermType == clientv3.PermReadWrite {
			writable[string(p.Key)] = true
		}
	}
	if !writable["/syncstack/overrides/"] || !writable["/syncstack/history/"] || writable["/syncstack/acks/"] || writable["/services/"] {
		t.Fatalf("operator may write %v", writable)
	}
	if code, _, _ := runSynctl("setup-etcd-roles", "--etcd", srv.Endpoint); code != ExitUsage {
		t.Fatalf("without --services: exit %d, want %d", code, ExitUsage)
	}
}
