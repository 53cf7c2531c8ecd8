package etcd

import (
	"context"
	"fmt"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) catalogPrefix() string { return c.cfg.Root + "/catalog/" }

// PutCatalog implements registry.Backend: a key Root/catalog/<id>, on no
// lease.
func (c *Client) PutCatalog(ctx context.Context, cat registry.Catalog) error {
	data, err := cat.Encode()
	if err != nil {
		return err
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	key := c.catalogPrefix() + cat.ID
	cli, err := c.conn(ctx)
	if err != nil {
		return fmt.Errorf("etcd: catalog %s: %w", cat.ID, err)
	}
	_, err = cli.Put(ctx, key, string(data))
	c.count("writes", "put", err)
	if err != nil {
		return fmt.Errorf("etcd: catalog %s: %w", cat.ID, c.explain(err))
	}
	return nil
}

// Catalogs implements registry.Backend.
func (c *Client) Catalogs(ctx context.Context) ([]registry.Catalog, error) {
	resp, err := c.list(ctx, c.catalogPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]registry.Catalog, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		cat, err := registry.DecodeCatalog(kv.Value)
		if err != nil {
			c.skip(c.catalogPrefix(), string(kv.Key), err)
			continue
		}
		out = append(out, cat)
	}
	return out, nil
}
