package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

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
			_, err = c.conn.Create(p, data, 0, c.acl())
			c.countWrite("create", err)
			if errors.Is(err, zk.ErrNodeExists) { // created meanwhile: set it
				_, err = c.conn.Set(p, data, -1)
				c.countWrite("set", err)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("zookeeper: catalog %s: %w", cat.ID, c.denied(dir+"/"+cat.ID, err))
	}
	return nil
}

// Catalogs implements registry.Backend.
func (c *Client) Catalogs(ctx context.Context) ([]registry.Catalog, error) {
	var out []registry.Catalog
	var pzxid int64
	err := c.readAll(ctx, c.catalogDir(), func(name string, data []byte, _ *zk.Stat) {
		cat, err := registry.DecodeCatalog(data)
		if err != nil {
			c.skip(c.catalogDir(), name, err)
			return
		}
		out = append(out, cat)
	}, &pzxid)
	if err != nil {
		return nil, fmt.Errorf("zookeeper: catalogs: %w", err)
	}
	slices.SortFunc(out, func(a, b registry.Catalog) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
