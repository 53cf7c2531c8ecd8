package synctl

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/secretfile"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/etcd"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// runSetupZK gives the registry's directories to their identities (see
// zookeeper.Layout). It runs as the operator (--zk-auth-file). The other
// identities are named by their digest ids, or by their credential files
// (read here only to compute the ids), so no password is ever typed on a
// command line.
func runSetupZK(ctx context.Context, env Env, args []string) error {
	var c common
	var services, nerveFile, synapseFile, nerveID, synapseID string
	fs := newFlagSet(env, "setup-zk", "setup-zk --zk HOSTS --zk-auth-file OPERATOR-FILE --services /services[,...] (--nerve-auth-file F | --nerve-digest ID) (--synapse-auth-file F | --synapse-digest ID)")
	c.register(fs)
	fs.StringVar(&services, "services", "", "the registration directories (or their parent, such as /services) the nerve identity owns, comma-separated")
	fs.StringVar(&nerveFile, "nerve-auth-file", "", "the nerves' credential file (user:password), to compute their digest id")
	fs.StringVar(&synapseFile, "synapse-auth-file", "", "the synapses' credential file (user:password), to compute their digest id")
	fs.StringVar(&nerveID, "nerve-digest", "", "the nerves' digest id, user:base64(sha1(user:password))")
	fs.StringVar(&synapseID, "synapse-digest", "", "the synapses' digest id")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	id := func(role, file, digest string) (string, error) {
		switch {
		case file != "" && digest != "":
			return "", usagef("give --%s-auth-file or --%s-digest, not both", role, role)
		case file != "":
			a, err := zookeeper.LoadAuth(file)
			if err != nil {
				return "", usagef("--%s-auth-file: %v", role, err)
			}
			return a.DigestID(), nil
		case digest == "":
			return "", usagef("--%s-auth-file or --%s-digest is required", role, role)
		case !strings.Contains(digest, ":"):
			return "", usagef("--%s-digest: want user:base64(sha1(user:password))", role)
		}
		return digest, nil
	}
	if nerveID, err = id("nerve", nerveFile, nerveID); err != nil {
		return err
	}
	if synapseID, err = id("synapse", synapseFile, synapseID); err != nil {
		return err
	}
	paths := splitList(services)
	if len(paths) == 0 {
		return usagef("--services is required (such as /services)")
	}
	b, err := c.connect(env)
	if err != nil {
		return err
	}
	defer b.Close()
	zc, ok := b.(*zookeeper.Client)
	if !ok {
		return usagef("setup-zk needs a ZooKeeper registry (--zk)")
	}
	if err := zc.SetupLayout(ctx, zookeeper.Layout{SynapseID: synapseID, NerveID: nerveID, ServicePaths: paths}); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "ZooKeeper ACLs set: overrides and history for the operator, acks and catalogs for %s, %s for %s; everyone may read\n",
		userOf(synapseID), strings.Join(paths, ", "), userOf(nerveID))
	return nil
}

func userOf(digestID string) string { u, _, _ := strings.Cut(digestID, ":"); return u }

// runSetupEtcdRoles creates the roles of etcd.RoleLayout, logged in as
// etcd's root user (--etcd-user root --etcd-password-file F), and gives
// them to existing users.
func runSetupEtcdRoles(ctx context.Context, env Env, args []string) error {
	var c common
	var services, nerveUser, synapseUser, operatorUser string
	fs := newFlagSet(env, "setup-etcd-roles", "setup-etcd-roles --etcd URLS --etcd-user root --etcd-password-file F --services /services[,...] [--nerve-user U] [--synapse-user U] [--operator-user U]")
	c.register(fs)
	fs.StringVar(&services, "services", "", "the registration prefixes (or their parent, such as /services) nerves write, comma-separated")
	fs.StringVar(&nerveUser, "nerve-user", "", "an existing etcd user to give the nerve role")
	fs.StringVar(&synapseUser, "synapse-user", "", "an existing etcd user to give the synapse role")
	fs.StringVar(&operatorUser, "operator-user", "", "an existing etcd user to give the operator role")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	var fc fileConfig
	if c.config != "" {
		if err := confutil.DecodeFile(c.config, &fc); err != nil {
			return usagef("%v", err)
		}
	}
	endpoints := splitList(cmp.Or(c.etcd, env.Getenv("SYNCTL_ETCD"), strings.Join(fc.Etcd, ",")))
	if len(endpoints) == 0 {
		return usagef("no etcd: give --etcd (or SYNCTL_ETCD, --config)")
	}
	root := cmp.Or(c.root, fc.Root, "/syncstack")
	layout := etcd.RoleLayout{Root: root, ServicePrefixes: splitList(services)}
	if _, err := layout.Permissions(); err != nil {
		return usagef("%v", err)
	}
	sec := c.security(env, fc.EtcdSecurity)
	for _, f := range []string{sec.PasswordFile, sec.KeyFile} {
		if f == "" {
			continue
		}
		if err := secretfile.Check(f); err != nil {
			return usagef("etcd security: %v", err)
		}
	}
	ecfg := etcd.Config{Endpoints: endpoints}
	if err := sec.Apply(&ecfg); err != nil {
		return usagef("etcd security: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: ecfg.TLS, Username: ecfg.Username, Password: ecfg.Password,
		DialTimeout: c.opTimeout})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*c.opTimeout+10*time.Second)
	defer cancel()
	if err := etcd.SetupRoles(ctx, cli, layout); err != nil {
		return err
	}
	for _, g := range []struct{ user, role string }{{nerveUser, etcd.RoleNerve}, {synapseUser, etcd.RoleSynapse}, {operatorUser, etcd.RoleOperator}} {
		if g.user == "" {
			continue
		}
		if err := registry.ValidateName(g.user); err != nil {
			return usagef("user %q: %v", g.user, err)
		}
		if _, err := cli.UserGrantRole(ctx, g.user, g.role); err != nil {
			return fmt.Errorf("etcd: grant %s to %s: %w", g.role, g.user, err)
		}
	}
	fmt.Fprintf(env.Stdout, "etcd roles set: %s, %s, %s\n", etcd.RoleNerve, etcd.RoleSynapse, etcd.RoleOperator)
	return nil
}
