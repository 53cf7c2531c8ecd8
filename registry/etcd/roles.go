package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The roles of a fleet on etcd with authentication on. Every nerve logs in
// as a user with RoleNerve, every synapse with RoleSynapse, every operator
// (synctl) with RoleOperator.
const (
	RoleNerve    = "syncstack-nerve"
	RoleSynapse  = "syncstack-synapse"
	RoleOperator = "syncstack-operator"
)

// RoleLayout is what SetupRoles grants:
//
//	role       read                      read and write
//	nerve      Root/, service prefixes   service prefixes
//	synapse    Root/, service prefixes   Root/acks/, Root/catalog/
//	operator   Root/, service prefixes   Root/overrides/, Root/overrides-deleted, Root/history/
//
// So nerve cannot write an override, a synapse cannot rewrite (or steal
// the lease of) a registration, an operator cannot plant an ack, and
// nobody outside the roles writes at all. Reading Root/ covers the
// overrides, acks and the key a client watches to probe its member.
type RoleLayout struct {
	// Root is the clients' Root (default /syncstack).
	Root string
	// ServicePrefixes are the registration directories, or a parent
	// such as /services: each grants the keys below it ("/services/...").
	ServicePrefixes []string
}

// Permission is one key range of a role.
type Permission struct {
	Key      string // a prefix when Prefix, else one key
	Prefix   bool
	Writable bool
}

func (p Permission) String() string {
	mode := "read"
	if p.Writable {
		mode = "readwrite"
	}
	if p.Prefix {
		return fmt.Sprintf("%s %s --prefix", mode, p.Key)
	}
	return fmt.Sprintf("%s %s", mode, p.Key)
}

// Permissions returns each role's key ranges, in the order of
// etcdctl role grant-permission <role> <mode> <key> [--prefix].
func (l RoleLayout) Permissions() (map[string][]Permission, error) {
	root := l.Root
	if root == "" {
		root = "/syncstack"
	}
	if err := validatePrefix(root); err != nil {
		return nil, fmt.Errorf("etcd roles: root: %w", err)
	}
	if len(l.ServicePrefixes) == 0 {
		return nil, errors.New("etcd roles: at least one service prefix is required")
	}
	var services, readServices []Permission
	for _, s := range l.ServicePrefixes {
		s = strings.TrimSuffix(s, "/")
		if err := validatePrefix(s); err != nil {
			return nil, fmt.Errorf("etcd roles: service prefix: %w", err)
		}
		p := s + "/"
		services = append(services, Permission{Key: p, Prefix: true, Writable: true})
		readServices = append(readServices, Permission{Key: p, Prefix: true})
	}
	readRoot := Permission{Key: root + "/", Prefix: true}
	rw := func(key string, prefix bool) Permission { return Permission{Key: key, Prefix: prefix, Writable: true} }
	return map[string][]Permission{
		RoleNerve:   append([]Permission{readRoot}, services...),
		RoleSynapse: append([]Permission{readRoot, rw(root+"/acks/", true), rw(root+"/catalog/", true)}, readServices...),
		RoleOperator: append([]Permission{readRoot, rw(root+"/overrides/", true), rw(root+"/overrides-deleted", false),
			rw(root+"/history/", true)}, readServices...),
	}, nil
}

// SetupRoles creates the three roles of l (a role that exists is given
// the permissions again; nothing is revoked) with a client logged in as
// root (or before authentication is enabled). Users are the operator's
// to create, with their passwords, and to give a role with
// clientv3.Auth.UserGrantRole (etcdctl user grant-role).
func SetupRoles(ctx context.Context, cli *clientv3.Client, l RoleLayout) error {
	perms, err := l.Permissions()
	if err != nil {
		return err
	}
	for _, role := range []string{RoleNerve, RoleSynapse, RoleOperator} {
		if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return fmt.Errorf("etcd roles: add %s: %w", role, err)
		}
		for _, p := range perms[role] {
			end := ""
			if p.Prefix {
				end = clientv3.GetPrefixRangeEnd(p.Key)
			}
			typ := clientv3.PermissionType(clientv3.PermRead)
			if p.Writable {
				typ = clientv3.PermissionType(clientv3.PermReadWrite)
			}
			if _, err := cli.RoleGrantPermission(ctx, role, p.Key, end, typ); err != nil {
				return fmt.Errorf("etcd roles: grant %s %s: %w", role, p, err)
			}
		}
	}
	return nil
}
