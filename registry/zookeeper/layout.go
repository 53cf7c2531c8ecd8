package zookeeper

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

// Layout is who owns what in a fleet with ZooKeeper ACLs. Each node gets
// all permissions for its owner and read for everyone:
//
//	Root, Root/overrides, Root/history   operator (the client running SetupLayout)
//	Root/acks, Root/catalog              synapse
//	each of ServicePaths                 nerve (nerves create what lies below)
//
// Every process then creates nodes with its own identity's ACL, so a
// directory of another identity cannot be created by the wrong one.
type Layout struct {
	// SynapseID and NerveID are digest ids, user:base64(sha1(user:password))
	// (Auth.DigestID), so the operator needs no other identity's password.
	SynapseID string
	NerveID   string
	// ServicePaths are the registration directories (or their common
	// parents, such as /services) to hand to the nerve identity.
	ServicePaths []string
}

// SetupLayout creates the directories of l, or sets their ACL if they
// exist (an open tree from before credentials is taken over this way; it
// needs the admin permission on each, which world:anyone ALL gives). It
// must run with the operator's credentials, before synapses start.
func (c *Client) SetupLayout(ctx context.Context, l Layout) error {
	if c.cfg.Auth == nil {
		return errors.New("zookeeper: setup: needs the operator's credentials (zk_auth_file)")
	}
	if l.SynapseID == "" || (l.NerveID == "" && len(l.ServicePaths) > 0) {
		return errors.New("zookeeper: setup: the synapse (and, with service paths, the nerve) digest id is required")
	}
	for _, p := range l.ServicePaths {
		if err := registry.ValidatePath(p); err != nil {
			return fmt.Errorf("zookeeper: setup: service path: %w", err)
		}
	}
	read := zk.WorldACL(zk.PermRead)
	own := func(id string) []zk.ACL {
		return append([]zk.ACL{{Perms: zk.PermAll, Scheme: "digest", ID: id}}, read...)
	}
	type node struct {
		path    string
		acl     []zk.ACL
		subtree bool // also the persistent nodes below (a service tree from before ACLs)
	}
	nodes := []node{
		{c.cfg.Root, c.acl(), false},
		{c.OverridesDir(), c.acl(), false},
		{c.HistoryDir(), c.acl(), false},
		{c.AcksDir(), own(l.SynapseID), false},
		{c.CatalogDir(), own(l.SynapseID), false},
	}
	for _, p := range l.ServicePaths {
		nodes = append(nodes, node{p, own(l.NerveID), true})
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return err
	}
	return call(ctx, func() error {
		for _, n := range nodes {
			if err := c.ensurePath(parentOf(n.path)); err != nil {
				return err
			}
			_, err := c.conn.Create(n.path, nil, 0, n.acl)
			c.countWrite("create", err)
			if errors.Is(err, zk.ErrNodeExists) {
				_, err = c.conn.SetACL(n.path, n.acl, -1)
				c.countWrite("setacl", err)
				if errors.Is(err, zk.ErrNoAuth) && c.closedToWorld(n.path) {
					// Set up before and handed to its identity: only
					// that identity may change it now, and rightly so.
					continue
				}
			}
			if err != nil {
				return fmt.Errorf("zookeeper: setup %s: %w", n.path, c.denied(n.path, err))
			}
			if n.subtree {
				if err := c.setTreeACL(n.path, n.acl); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// setTreeACL sets acl on the persistent nodes below p: a service tree
// created before ACLs would otherwise stay open to new children. Ephemeral
// nodes (registrations) are left alone: their nerves re-create them with
// their own ACL on their next session.
func (c *Client) setTreeACL(p string, acl []zk.ACL) error {
	children, _, err := c.conn.Children(p)
	c.countRead("children", err)
	if err != nil {
		return fmt.Errorf("zookeeper: setup %s: %w", p, err)
	}
	for _, name := range children {
		child := p + "/" + name
		if p == "/" {
			child = "/" + name
		}
		_, stat, err := c.conn.Exists(child)
		c.countRead("exists", err)
		if err != nil {
			return fmt.Errorf("zookeeper: setup %s: %w", child, err)
		}
		if stat == nil || stat.EphemeralOwner != 0 {
			continue
		}
		_, err = c.conn.SetACL(child, acl, -1)
		c.countWrite("setacl", err)
		if err != nil {
			return fmt.Errorf("zookeeper: setup %s: %w", child, c.denied(child, err))
		}
		if err := c.setTreeACL(child, acl); err != nil {
			return err
		}
	}
	return nil
}

// closedToWorld reports whether p's ACL gives the world nothing but read
// (the server hides the digests from a non-admin, not the permissions).
func (c *Client) closedToWorld(p string) bool {
	acl, _, err := c.conn.GetACL(p)
	c.countRead("getacl", err)
	if err != nil {
		return false
	}
	for _, a := range acl {
		if (a.Scheme == "world" || a.Scheme == "ip") && a.Perms&^zk.PermRead != 0 {
			return false
		}
	}
	return true
}
