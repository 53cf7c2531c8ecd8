package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) catalogDir() string { return c.cfg.Root + "/catalog" }

// PutCatalog implements registry.Backend: a persistent node
// Root/catalog/<id>, created or overwritten.
func (c *Client) PutCatalog(ctx context.Context, cat registry.Catalog) error {
	data, err := cat.Encode()
	if err != nil {
		return err
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return err
	}
	dir := c.catalogDir()
	err = call(ctx, func() error {
		if err := c.ensurePath(dir); err != nil {
			return err
		}
		p := dir + "/" + cat.ID
		_, err := c.conn.Set(p, data, -1)
		c.countWrite("set", err)
		if errors.Is(err, zk.ErrNoNode) {
			_, err = c.conn.Create(p, data, 0, zk.WorldACL(zk.PermAll))
			c.countWrite("create", err)
			if errors.Is(err, zk.ErrNodeExists) { // created meanwhile: set it
				_, err = c.conn.Set(p, data, -1)
				c.countWrite("set", err)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("zookeeper: catalog %s: %w", cat.ID, err)
	}
	return nil
}

// Catalogs implements registry.Backend.
func (c *Client) Catalogs(ctx context.Context) ([]registry.Catalog, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return nil, err
	}
	dir := c.catalogDir()
	var out []registry.Catalog
	err := call(ctx, func() error {
		names, _, err := c.conn.Children(dir)
		c.countRead("children", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return err
		}
		sort.Strings(names)
		for _, n := range names {
			data, _, err := c.conn.Get(dir + "/" + n)
			c.countRead("get", err)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			cat, err := registry.DecodeCatalog(data)
			if err != nil {
				c.skip(dir, n, err)
				continue
			}
			out = append(out, cat)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("zookeeper: catalogs: %w", err)
	}
	return out, nil
}
